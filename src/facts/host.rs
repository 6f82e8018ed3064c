//! Host facts: identity and configuration that a seed must match.
//!
//! LCA compares only proxy and FIPS between seed and target, and only after pulling the seed;
//! architecture, CPU topology and IP family mismatches surface late or never. ibu gathers all of
//! them up front so the planner can refuse an incompatible seed before spending a pull on it.
//!
//! These facts describe the machine ibu runs on, also in a sandbox (`--sysroot DIR`): the kernel,
//! the CPUs and the network are the builder's own. Only configuration files (`/etc/environment`,
//! systemd's `system.conf`) are read through [`Paths`], so a sandbox sees its deployment's `/etc`.
//!
//! Whether a proxy is configured follows the rule documented in [`proxy`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

use super::{CpuTopology, HostFacts, IpFamily};
use crate::paths::Paths;

pub mod proxy;

pub use proxy::{PROXY_VARS, proxy_configured};

/// Observe the host.
pub fn gather(paths: &Paths) -> Result<HostFacts> {
    let hostname = nix::unistd::gethostname()
        .context("reading the hostname")?
        .to_string_lossy()
        .into_owned();
    let architecture = nix::sys::utsname::uname()
        .context("uname")?
        .machine()
        .to_string_lossy()
        .into_owned();
    let node_ips = node_ips()?;
    Ok(HostFacts {
        hostname,
        architecture,
        cpu: cpu_topology()?,
        fips: fips_enabled()?,
        proxy: proxy_configured(&paths.etc)?,
        ip_family: ip_family(&node_ips),
        node_ips,
    })
}

/// CPU topology from `/proc/cpuinfo`; where it lacks `physical id`/`core id` (e.g. on some arm64
/// and s390x kernels), from sysfs topology; failing that, sysinfo's counts in one socket.
pub fn cpu_topology() -> Result<CpuTopology> {
    let cpuinfo = Path::new("/proc/cpuinfo");
    let text = std::fs::read_to_string(cpuinfo)
        .with_context(|| format!("reading {}", cpuinfo.display()))?;
    if let Some(t) = topology_from_cpuinfo(&text) {
        return Ok(t);
    }
    if let Some(t) = topology_from_sysfs(Path::new("/sys/devices/system/cpu")) {
        return Ok(t);
    }
    let sys = sysinfo::System::new_with_specifics(
        sysinfo::RefreshKind::nothing().with_cpu(sysinfo::CpuRefreshKind::nothing()),
    )
    .context("counting CPUs with sysinfo")?;
    let threads = u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX).max(1);
    let cores = sysinfo::System::physical_core_count()
        .ok()
        .and_then(|c| u32::try_from(c).ok())
        .filter(|c| *c > 0)
        .unwrap_or(threads);
    Ok(CpuTopology {
        sockets: 1,
        cores,
        threads,
    })
}

/// Count sockets (distinct package ids), cores (distinct package/core pairs) and threads
/// (logical CPUs) from one `(package, core)` pair per logical CPU.
fn topology_from_ids(ids: &[(String, String)]) -> CpuTopology {
    let sockets: BTreeSet<&str> = ids.iter().map(|(p, _)| p.as_str()).collect();
    let cores: BTreeSet<(&str, &str)> = ids.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    CpuTopology {
        sockets: n(sockets.len()),
        cores: n(cores.len()),
        threads: n(ids.len()),
    }
}

/// Topology from cpuinfo text: one block per logical CPU (blocks start at `processor`). `None`
/// when there is no such block or any lacks `physical id` or `core id`.
fn topology_from_cpuinfo(text: &str) -> Option<CpuTopology> {
    let mut blocks: Vec<(Option<String>, Option<String>)> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_string());
        match (key.trim(), blocks.last_mut()) {
            ("processor", _) => blocks.push((None, None)),
            ("physical id", Some(b)) => b.0 = value,
            ("core id", Some(b)) => b.1 = value,
            _ => {}
        }
    }
    let ids: Vec<(String, String)> = blocks
        .into_iter()
        .map(|(p, c)| Some((p?, c?)))
        .collect::<Option<_>>()?;
    (!ids.is_empty()).then(|| topology_from_ids(&ids))
}

/// Topology from `cpuN/topology/{physical_package_id,core_id}` of the online CPUs.
fn topology_from_sysfs(dir: &Path) -> Option<CpuTopology> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu {
            continue;
        }
        let p = entry.path();
        // cpu0 usually has no `online` file: it cannot go offline.
        if let Ok(online) = std::fs::read_to_string(p.join("online"))
            && online.trim() == "0"
        {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(p.join("topology").join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        ids.push((read("physical_package_id")?, read("core_id")?));
    }
    (!ids.is_empty()).then(|| topology_from_ids(&ids))
}

/// `/proc/sys/crypto/fips_enabled` is `1`; a kernel without the file is not in FIPS mode.
fn fips_enabled() -> Result<bool> {
    let p = Path::new("/proc/sys/crypto/fips_enabled");
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(s.trim() == "1"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// The node's addresses: every address on a non-loopback interface that is neither loopback,
/// unspecified, link-local nor multicast (private and ULA addresses count: they are how nodes of
/// a cluster usually reach each other). Sorted, IPv4 first, without duplicates.
pub fn node_ips() -> Result<Vec<IpAddr>> {
    let mut ips = BTreeSet::new();
    for ifa in getifaddrs().context("listing network interfaces (getifaddrs)")? {
        if ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if is_node_address(&ip) {
            ips.insert(ip);
        }
    }
    Ok(ips.into_iter().collect())
}

/// Whether an address can be a node IP (see [`node_ips`]).
pub fn is_node_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            let link_local = (a.segments()[0] & 0xffc0) == 0xfe80;
            !(a.is_loopback() || a.is_unspecified() || link_local || a.is_multicast())
        }
    }
}

/// The families present among `ips`.
pub fn ip_family(ips: &[IpAddr]) -> IpFamily {
    let v4 = ips.iter().any(IpAddr::is_ipv4);
    let v6 = ips.iter().any(IpAddr::is_ipv6);
    match (v4, v6) {
        (true, true) => IpFamily::DualStack,
        (true, false) => IpFamily::IPv4,
        (false, true) => IpFamily::IPv6,
        (false, false) => IpFamily::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(sockets: u32, cores: u32, threads: u32) -> CpuTopology {
        CpuTopology {
            sockets,
            cores,
            threads,
        }
    }

    #[test]
    fn cpuinfo_topologies() {
        // x86 block: the fields that matter plus noise.
        let x86 = |cpu: u32, phys: u32, core: u32| {
            format!(
                "processor\t: {cpu}\nvendor_id\t: GenuineIntel\nphysical id\t: {phys}\n\
                 siblings\t: 4\ncore id\t\t: {core}\ncpu cores\t: 2\nflags\t\t: fpu vme\n\n"
            )
        };
        let two_socket_ht: String = [
            x86(0, 0, 0),
            x86(1, 0, 1),
            x86(2, 1, 0),
            x86(3, 1, 1),
            x86(4, 0, 0),
            x86(5, 0, 1),
            x86(6, 1, 0),
            x86(7, 1, 1),
        ]
        .concat();
        let cases: Vec<(&str, String, Option<CpuTopology>)> = vec![
            ("one vm cpu", x86(0, 0, 0), Some(topo(1, 1, 1))),
            (
                "this vm",
                [x86(0, 0, 0), x86(1, 0, 1)].concat(),
                Some(topo(1, 2, 2)),
            ),
            ("two sockets with ht", two_socket_ht, Some(topo(2, 4, 8))),
            (
                "core ids repeat across sockets",
                [x86(0, 0, 0), x86(1, 1, 0)].concat(),
                Some(topo(2, 2, 2)),
            ),
            (
                "arm64 without ids",
                "processor\t: 0\nBogoMIPS\t: 50.00\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n".into(),
                None,
            ),
            (
                "one block lacks core id",
                format!("{}processor\t: 1\nphysical id\t: 0\n", x86(0, 0, 0)),
                None,
            ),
            ("empty", String::new(), None),
        ];
        for (name, text, want) in cases {
            assert_eq!(topology_from_cpuinfo(&text), want, "{name}");
        }
    }

    #[test]
    fn sysfs_topology() {
        let d = tempfile::tempdir().unwrap();
        for (cpu, pkg, core, online) in [
            (0, 0, 0, None),
            (1, 0, 1, Some("1")),
            (2, 0, 0, Some("1")),
            (3, 0, 1, Some("0")),
        ] {
            let t = d.path().join(format!("cpu{cpu}/topology"));
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("physical_package_id"), format!("{pkg}\n")).unwrap();
            std::fs::write(t.join("core_id"), format!("{core}\n")).unwrap();
            if let Some(o) = online {
                std::fs::write(d.path().join(format!("cpu{cpu}/online")), o).unwrap();
            }
        }
        std::fs::create_dir_all(d.path().join("cpufreq")).unwrap();
        assert_eq!(topology_from_sysfs(d.path()), Some(topo(1, 2, 3)));
        assert_eq!(topology_from_sysfs(&d.path().join("missing")), None);
    }

    #[test]
    fn node_address_rules() {
        let cases = [
            ("192.0.2.2", true),
            ("10.0.0.1", true),
            ("fd00::2", true),
            ("2001:db8::1", true),
            ("127.0.0.1", false),
            ("0.0.0.0", false),
            ("169.254.1.1", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("::1", false),
            ("::", false),
            ("fe80::fc:ff:fe00:1", false),
            ("febf::1", false),
            ("ff02::1", false),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(is_node_address(&ip), want, "{ip}");
        }
    }

    #[test]
    fn ip_families() {
        let p = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(ip_family(&[]), IpFamily::None);
        assert_eq!(ip_family(&[p("10.0.0.1")]), IpFamily::IPv4);
        assert_eq!(ip_family(&[p("fd00::1")]), IpFamily::IPv6);
        assert_eq!(
            ip_family(&[p("10.0.0.1"), p("fd00::1")]),
            IpFamily::DualStack
        );
    }
}
