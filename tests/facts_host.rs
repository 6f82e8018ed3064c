//! Host facts against the tools an operator would use to check them.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result};
use common::{TestSysroot, run, sh};
use ibu::facts::IpFamily;
use ibu::facts::host::gather;
use xshell::cmd;

#[test]
fn identity_and_cpus_match_the_system_tools() -> Result<()> {
    let s = TestSysroot::standard()?;
    let facts = gather(&s.sysroot.paths()?)?;
    let sh = sh()?;
    assert_eq!(facts.hostname, run(cmd!(sh, "hostname"))?.trim());
    assert_eq!(facts.architecture, run(cmd!(sh, "uname -m"))?.trim());

    let nproc: u32 = run(cmd!(sh, "nproc"))?.trim().parse()?;
    assert_eq!(facts.cpu.threads, nproc);
    assert!(facts.cpu.sockets >= 1, "{:?}", facts.cpu);
    assert!(facts.cpu.sockets <= facts.cpu.cores, "{:?}", facts.cpu);
    assert!(facts.cpu.cores <= facts.cpu.threads, "{:?}", facts.cpu);
    // lscpu's own count of sockets and cores, where lscpu is installed.
    if let Ok(out) = run(cmd!(sh, "lscpu -p=SOCKET,CORE")) {
        let rows: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        let sockets: BTreeSet<&str> = rows.iter().filter_map(|r| r.split(',').next()).collect();
        let cores: BTreeSet<&str> = rows.iter().copied().collect();
        assert_eq!(facts.cpu.sockets as usize, sockets.len(), "{out}");
        assert_eq!(facts.cpu.cores as usize, cores.len(), "{out}");
    }

    let fips = std::fs::read_to_string("/proc/sys/crypto/fips_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    assert_eq!(facts.fips, fips);
    Ok(())
}

#[test]
fn node_ips_are_the_global_addresses_ip_shows() -> Result<()> {
    let s = TestSysroot::standard()?;
    let facts = gather(&s.sysroot.paths()?)?;
    let sh = sh()?;
    // `ip -o addr show scope global`: "4: eth0    inet 192.0.2.2/24 brd ... scope global eth0".
    let out = run(cmd!(sh, "ip -o addr show scope global"))?;
    let mut want = BTreeSet::new();
    for line in out.lines() {
        let mut w = line.split_whitespace().skip(2);
        let (Some(_family), Some(cidr)) = (w.next(), w.next()) else {
            continue;
        };
        let ip: IpAddr = cidr
            .split('/')
            .next()
            .context("address")?
            .parse()
            .with_context(|| format!("parsing {line}"))?;
        if !ip.is_loopback() {
            want.insert(ip);
        }
    }
    let got: BTreeSet<IpAddr> = facts.node_ips.iter().copied().collect();
    assert_eq!(got, want, "{out}");
    assert_eq!(got.len(), facts.node_ips.len(), "no duplicates");
    let mut sorted = facts.node_ips.clone();
    sorted.sort();
    assert_eq!(sorted, facts.node_ips, "sorted");

    let v4 = want.iter().any(IpAddr::is_ipv4);
    let v6 = want.iter().any(IpAddr::is_ipv6);
    let family = match (v4, v6) {
        (true, true) => IpFamily::DualStack,
        (true, false) => IpFamily::IPv4,
        (false, true) => IpFamily::IPv6,
        (false, false) => IpFamily::None,
    };
    assert_eq!(facts.ip_family, family);
    Ok(())
}

#[test]
fn proxy_is_read_from_the_booted_deployments_etc() -> Result<()> {
    let s = TestSysroot::standard()?;
    let paths = s.sysroot.paths()?;
    assert!(
        !gather(&paths)?.proxy,
        "no proxy configured in a fresh deployment"
    );

    std::fs::write(
        paths.etc.join("environment"),
        "LANG=C.UTF-8\nHTTPS_PROXY=\"http://proxy.example:3128\"\n",
    )?;
    assert!(gather(&paths)?.proxy);

    // The other stateroot's /etc is not the booted one.
    s.sysroot.boot(&s.new)?;
    let other = s.sysroot.paths()?;
    assert_ne!(other.etc, paths.etc);
    assert!(!gather(&other)?.proxy);

    // systemd's manager environment counts too.
    let conf_d = other.etc.join("systemd/system.conf.d");
    std::fs::create_dir_all(&conf_d)?;
    std::fs::write(
        conf_d.join("10-proxy.conf"),
        "[Manager]\nDefaultEnvironment=\"http_proxy=http://proxy.example:3128\" NO_PROXY=.local\n",
    )?;
    assert!(gather(&other)?.proxy);
    Ok(())
}
