//! The seed info ([`SeedInfo`]): what a target checks before it pulls anything.
//!
//! Everything here is already known from the facts and the other collection steps; this only
//! puts it in the format's shape. Kernel arguments are the booted deployment's boot entry
//! without the two that name a particular deployment: `ostree=` (written by ostree for every
//! boot entry) and `ibu=` (ibu's marker that keeps the boot entries of two stateroots apart).

use anyhow::{Context, Result};

use super::images::ContainersList;
use super::ostree_export::OstreeExport;
use crate::facts::{Footprint, HostFacts, IpFamily, OstreeFacts, StorageFacts};
use crate::seed::format::{CpuTopology, SeedInfo, SeedSizes};

/// What [`seed_info`] combines.
pub struct Parts<'a> {
    pub ostree: &'a OstreeFacts,
    pub storage: &'a StorageFacts,
    pub host: &'a HostFacts,
    pub footprint: &'a Footprint,
    pub export: &'a OstreeExport,
    pub containers: &'a ContainersList,
    pub etc_bytes: u64,
    pub var_bytes: u64,
    pub created: chrono::DateTime<chrono::Utc>,
}

/// Assemble the seed info. Fails only when the facts lack what validation requires (a booted
/// deployment with a version, an os-release ID).
pub fn seed_info(p: &Parts<'_>) -> Result<SeedInfo> {
    let booted = p.ostree.booted().context("no booted deployment")?;
    let what = || {
        format!(
            "booted deployment {} {}",
            booted.stateroot,
            booted.dirname()
        )
    };
    let version = booted
        .version
        .clone()
        .with_context(|| format!("{}: the commit has no version metadata", what()))?;
    let os_id = p
        .ostree
        .os_id
        .clone()
        .with_context(|| format!("{}: os-release has no ID", what()))?;
    let container_storage_mountpoint_target = p
        .storage
        .container_storage_unit_what
        .clone()
        .or_else(|| {
            p.storage
                .container_storage
                .as_ref()
                .map(|m| m.source.clone())
        })
        .unwrap_or_default();
    Ok(SeedInfo {
        version,
        os_id,
        architecture: p.host.architecture.clone(),
        cpu_topology: CpuTopology {
            sockets: p.host.cpu.sockets,
            cores: p.host.cpu.cores,
            threads: p.host.cpu.threads,
        },
        kernel_args: seed_kargs(&booted.kargs),
        has_proxy: p.host.proxy,
        has_fips: p.host.fips,
        ip_family: ip_family_name(p.host.ip_family).to_string(),
        container_storage_mountpoint_target,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        sno_hostname: p.host.hostname.clone(),
        node_ips: p.host.node_ips.iter().map(|ip| ip.to_string()).collect(),
        ostree_commit: booted.checksum.clone(),
        stateroot: booted.stateroot.clone(),
        sizes: SeedSizes {
            ostree_archive_bytes: p.export.bytes,
            ostree_objects: p.export.objects.len() as u64,
            deployment_bytes: p.footprint.deployment_bytes,
            boot_bytes: p.footprint.boot_bytes,
            etc_bytes: p.etc_bytes,
            var_bytes: p.var_bytes,
            images_bytes: p.containers.bytes,
        },
        images: p.containers.images,
        created: p.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The format's spelling of an IP family.
pub fn ip_family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::IPv4 => "IPv4",
        IpFamily::IPv6 => "IPv6",
        IpFamily::DualStack => "DualStack",
        IpFamily::None => "None",
    }
}

/// The kernel arguments of a boot entry's `options`, without `ostree=` and `ibu=`.
///
/// Split like the kernel splits its command line: on spaces, except inside double quotes
/// (`dyndbg="file x.c +p"` is one argument).
pub fn seed_kargs(options: &str) -> Vec<String> {
    split_kargs(options)
        .into_iter()
        .filter(|a| {
            let key = a.split_once('=').map_or(a.as_str(), |(k, _)| k);
            key != "ostree" && key != "ibu"
        })
        .collect()
}

fn split_kargs(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kargs_without_deployment_markers() {
        let cases: &[(&str, &[&str])] = &[
            (
                "root=LABEL=root rw ostree=/ostree/boot.1/debian/abc/0 ibu=1.1.0 console=ttyS0,115200",
                &["root=LABEL=root", "rw", "console=ttyS0,115200"],
            ),
            (
                "  quiet   dyndbg=\"file x.c +p\" ostree=/x ",
                &["quiet", "dyndbg=\"file x.c +p\""],
            ),
            ("ostreeish=1 ibu", &["ostreeish=1"]),
            ("", &[]),
        ];
        for (line, want) in cases {
            assert_eq!(seed_kargs(line), *want, "{line}");
        }
    }

    #[test]
    fn ip_family_names() {
        assert_eq!(ip_family_name(IpFamily::DualStack), "DualStack");
        assert_eq!(ip_family_name(IpFamily::None), "None");
    }
}
