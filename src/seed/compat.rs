//! Is a seed compatible with this host? Decided from the seed's labels alone, before anything
//! is pulled.
//!
//! LCA checks only the format version, proxy, FIPS and the container storage target before
//! pulling, and finds everything else out late or never. ibu checks all of it up front, from the
//! seed info label and the host's facts, and every failure names both sides. A pure function:
//! `ibu seed inspect` prints the result, Prep fails on it.

use std::collections::BTreeMap;

use crate::checks::{self, CheckOutcome};
use crate::facts::{HostFacts, IpFamily, StorageFacts};
use crate::humanize;
use crate::seed::format::{LABEL_FORMAT_VERSION, LABEL_SEED_INFO, SEED_FORMAT_VERSION, SeedInfo};

pub const CHECK_SEED_FORMAT: &str = "SeedFormat";
pub const CHECK_SEED_VERSION: &str = "SeedVersion";
pub const CHECK_ARCHITECTURE: &str = "Architecture";
pub const CHECK_CPU_TOPOLOGY: &str = "CpuTopology";
pub const CHECK_IP_FAMILY: &str = "IpFamily";
pub const CHECK_PROXY: &str = "Proxy";
pub const CHECK_FIPS: &str = "FIPS";
pub const CHECK_CONTAINER_STORAGE_TARGET: &str = "ContainerStorageTarget";
pub const CHECK_SEED_SPACE_SYSROOT: &str = "SeedSpaceSysroot";
pub const CHECK_SEED_SPACE_BOOT: &str = "SeedSpaceBoot";
pub const CHECK_SEED_SPACE_CONTAINERS: &str = "SeedSpaceContainers";

/// Head-room on top of the seed's own sizes.
pub const SPACE_MARGIN_PERCENT: u64 = 10;

/// The host side of the comparison.
pub struct Host<'a> {
    pub host: &'a HostFacts,
    pub storage: &'a StorageFacts,
    /// The booted commit's `version`.
    pub running_version: Option<&'a str>,
    /// Bytes of the seed's images this host does not have yet, once known (from the seed's
    /// `containers.list`); until then the seed's total is used and a shortfall only warns.
    pub missing_images_bytes: Option<u64>,
}

/// Read the seed info from the labels. `Err` is LCA's message for a missing or wrong format.
pub fn seed_info(labels: &BTreeMap<String, String>) -> Result<SeedInfo, String> {
    let Some(format) = labels.get(LABEL_FORMAT_VERSION) else {
        return Err(format!(
            "seed image is missing the {LABEL_FORMAT_VERSION} label, please build a new image \
             using the latest version of ibu"
        ));
    };
    if format.trim() != SEED_FORMAT_VERSION.to_string() {
        return Err(format!(
            "seed image format version mismatch: expected {SEED_FORMAT_VERSION}, got {format}"
        ));
    }
    let Some(info) = labels.get(LABEL_SEED_INFO) else {
        return Err(format!("seed image is missing the {LABEL_SEED_INFO} label"));
    };
    serde_json::from_str(info)
        .map_err(|e| format!("seed image has an unreadable {LABEL_SEED_INFO} label: {e}"))
}

fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::IPv4 => "IPv4",
        IpFamily::IPv6 => "IPv6",
        IpFamily::DualStack => "DualStack",
        IpFamily::None => "None",
    }
}

fn space(
    name: &'static str,
    what: &str,
    available: u64,
    seed_bytes: u64,
    basis: &str,
) -> CheckOutcome {
    let need = checks::with_margin(seed_bytes, SPACE_MARGIN_PERCENT);
    let detail = format!(
        "{} available, {} needed ({basis} + {SPACE_MARGIN_PERCENT}%)",
        humanize::bytes(available),
        humanize::bytes(need)
    );
    if available >= need {
        CheckOutcome::passed(name, format!("{what}: {detail}"))
    } else {
        CheckOutcome::failed(
            name,
            format!("not enough free space on {what} for the seed: {detail}"),
        )
    }
}

/// Every compatibility check of `labels` against `host`. `desired_version` is the
/// `seedImageRef.version` the seed must match, when there is one.
pub fn check(
    labels: &BTreeMap<String, String>,
    desired_version: Option<&str>,
    host: &Host<'_>,
) -> (Option<SeedInfo>, Vec<CheckOutcome>) {
    match seed_info(labels) {
        Ok(info) => {
            let checks = check_info(&info, desired_version, host);
            (Some(info), checks)
        }
        Err(e) => (None, vec![CheckOutcome::failed(CHECK_SEED_FORMAT, e)]),
    }
}

/// Every compatibility check of a seed whose labels were already read.
pub fn check_info(
    info: &SeedInfo,
    desired_version: Option<&str>,
    host: &Host<'_>,
) -> Vec<CheckOutcome> {
    let mut out = vec![CheckOutcome::passed(
        CHECK_SEED_FORMAT,
        format!(
            "seed format {SEED_FORMAT_VERSION}, made by ibu {}",
            info.agent_version
        ),
    )];

    if let Some(want) = desired_version {
        out.push(if want == info.version {
            CheckOutcome::passed(
                CHECK_SEED_VERSION,
                format!("seed version {want} as requested"),
            )
        } else {
            CheckOutcome::failed(
                CHECK_SEED_VERSION,
                format!(
                    "spec.seedImageRef.version is {want} but the seed is version {}",
                    info.version
                ),
            )
        });
    }
    out.push(checks::version_newer(&info.version, host.running_version));

    let h = host.host;
    out.push(CheckOutcome::new(
        CHECK_ARCHITECTURE,
        info.architecture == h.architecture,
        format!(
            "seed architecture {}, this host {}",
            info.architecture, h.architecture
        ),
    ));

    let (s, t) = (info.cpu_topology, h.cpu);
    let topo =
        |sockets, cores, threads| format!("{sockets} sockets, {cores} cores, {threads} threads");
    let detail = format!(
        "seed {}, this host {}",
        topo(s.sockets, s.cores, s.threads),
        topo(t.sockets, t.cores, t.threads)
    );
    out.push(if s.threads != t.threads {
        // Kernel arguments and tuning made for one CPU count (isolcpus, reserved CPUs) break on
        // another.
        CheckOutcome::failed(CHECK_CPU_TOPOLOGY, format!("CPU count differs: {detail}"))
    } else if s.sockets != t.sockets || s.cores != t.cores {
        CheckOutcome::warning(
            CHECK_CPU_TOPOLOGY,
            format!("same CPU count, other topology: {detail}"),
        )
    } else {
        CheckOutcome::passed(CHECK_CPU_TOPOLOGY, detail)
    });

    let family = family_name(h.ip_family);
    out.push(CheckOutcome::new(
        CHECK_IP_FAMILY,
        info.ip_family == family,
        format!("seed IP family {}, this host {family}", info.ip_family),
    ));

    // LCA's own messages for proxy and FIPS.
    out.push(match (info.has_proxy, h.proxy) {
        (true, false) => CheckOutcome::failed(
            CHECK_PROXY,
            "seed image has a proxy but the cluster being upgraded does not, this combination is not supported",
        ),
        (false, true) => CheckOutcome::failed(
            CHECK_PROXY,
            "seed image does not have a proxy but the cluster being upgraded does, this combination is not supported",
        ),
        (p, _) => CheckOutcome::passed(
            CHECK_PROXY,
            if p { "proxy on both" } else { "no proxy on either" },
        ),
    });
    out.push(match (info.has_fips, h.fips) {
        (true, false) => CheckOutcome::failed(
            CHECK_FIPS,
            "seed image has FIPS enabled but the cluster being upgraded does not, this combination is not supported",
        ),
        (false, true) => CheckOutcome::failed(
            CHECK_FIPS,
            "seed image does not have FIPS enabled but the cluster being upgraded does, this combination is not supported",
        ),
        (f, _) => CheckOutcome::passed(
            CHECK_FIPS,
            if f { "FIPS on both" } else { "FIPS off on both" },
        ),
    });

    let st = host.storage;
    let target = st
        .container_storage_unit_what
        .clone()
        .or_else(|| st.container_storage.as_ref().map(|m| m.source.clone()));
    out.push(match target {
        None => CheckOutcome::failed(
            CHECK_CONTAINER_STORAGE_TARGET,
            "container storage mountpoint target not found",
        ),
        Some(t) if t == info.container_storage_mountpoint_target => CheckOutcome::passed(
            CHECK_CONTAINER_STORAGE_TARGET,
            format!("container storage on {t} on both"),
        ),
        Some(t) => CheckOutcome::failed(
            CHECK_CONTAINER_STORAGE_TARGET,
            format!(
                "container storage mountpoint target mismatch: seed={}, cluster={t}",
                info.container_storage_mountpoint_target
            ),
        ),
    });

    let sz = info.sizes;
    out.push(space(
        CHECK_SEED_SPACE_SYSROOT,
        "/sysroot",
        st.sysroot.available_bytes(),
        sz.deployment_bytes,
        "size of the seed's deployment",
    ));
    out.push(space(
        CHECK_SEED_SPACE_BOOT,
        "/boot",
        st.boot.available_bytes(),
        sz.boot_bytes,
        "the seed's kernel and initramfs",
    ));
    if let Some(m) = &st.container_storage {
        let (bytes, basis) = match host.missing_images_bytes {
            Some(b) => (b, "the seed's images this host lacks"),
            None => (sz.images_bytes, "all of the seed's images"),
        };
        let mut c = space(
            CHECK_SEED_SPACE_CONTAINERS,
            "/var/lib/containers",
            m.usage.available_bytes(),
            bytes,
            basis,
        );
        if c.is_failed() && host.missing_images_bytes.is_none() {
            // Images already present are not pulled again; only the precise count can fail.
            c.result = crate::status::CheckResult::Warning;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
