//! Every compatibility check, passing and failing, with messages naming both sides.

use std::net::IpAddr;
use std::path::PathBuf;

use super::*;
use crate::facts::{CpuTopology as HostCpu, FsUsage, MountFacts};
use crate::seed::format::{CpuTopology, SeedSizes};
use crate::status::CheckResult;

const GIB: u64 = 1 << 30;

fn info() -> SeedInfo {
    SeedInfo {
        version: "1.1.0".into(),
        os_id: "debian".into(),
        architecture: "x86_64".into(),
        cpu_topology: CpuTopology {
            sockets: 1,
            cores: 2,
            threads: 2,
        },
        kernel_args: vec!["root=LABEL=root".into()],
        has_proxy: false,
        has_fips: false,
        ip_family: "IPv4".into(),
        container_storage_mountpoint_target: "/dev/disk/by-partlabel/varlibcontainers".into(),
        agent_version: "0.1.0".into(),
        sno_hostname: "seed".into(),
        node_ips: vec![],
        ostree_commit: "c".repeat(64),
        stateroot: "debian".into(),
        sizes: SeedSizes {
            deployment_bytes: GIB,
            boot_bytes: 50 << 20,
            images_bytes: 2 * GIB,
            ..SeedSizes::default()
        },
        images: 3,
        created: "2026-11-21T10:00:00Z".into(),
    }
}

fn labels(i: &SeedInfo) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_FORMAT_VERSION.to_string(), "1".to_string()),
        (
            LABEL_SEED_INFO.to_string(),
            serde_json::to_string(i).unwrap(),
        ),
    ])
}

fn usage(free: u64) -> FsUsage {
    FsUsage {
        block_size: 4096,
        blocks: 100 * GIB / 4096,
        blocks_free: free / 4096,
        blocks_available: free / 4096,
    }
}

fn host() -> HostFacts {
    HostFacts {
        hostname: "target".into(),
        architecture: "x86_64".into(),
        cpu: HostCpu {
            sockets: 1,
            cores: 2,
            threads: 2,
        },
        fips: false,
        proxy: false,
        node_ips: vec!["192.0.2.10".parse::<IpAddr>().unwrap()],
        ip_family: IpFamily::IPv4,
    }
}

fn storage() -> StorageFacts {
    StorageFacts {
        container_storage_path: PathBuf::from("/var/lib/containers"),
        container_storage: Some(MountFacts {
            mount_point: PathBuf::from("/var/lib/containers"),
            source: "/dev/vdb1".into(),
            fs_type: "xfs".into(),
            options: "rw,prjquota".into(),
            usage: usage(10 * GIB),
        }),
        container_storage_unit_what: Some("/dev/disk/by-partlabel/varlibcontainers".into()),
        sysroot: usage(10 * GIB),
        boot: usage(GIB),
    }
}

fn run(i: &SeedInfo, h: &HostFacts, st: &StorageFacts, desired: Option<&str>) -> Vec<CheckOutcome> {
    check(
        &labels(i),
        desired,
        &Host {
            host: h,
            storage: st,
            running_version: Some("1.0.0"),
            missing_images_bytes: None,
        },
    )
    .1
}

fn find<'a>(cs: &'a [CheckOutcome], name: &str) -> &'a CheckOutcome {
    cs.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name}: {cs:#?}"))
}

#[test]
fn a_matching_seed_passes_everything() {
    let cs = run(&info(), &host(), &storage(), Some("1.1.0"));
    for c in &cs {
        assert_eq!(c.result, CheckResult::Passed, "{c:?}");
    }
    assert_eq!(cs.len(), 12);
}

#[test]
fn every_mismatch_fails_naming_both_sides() {
    type Edit = fn(&mut SeedInfo, &mut HostFacts, &mut StorageFacts);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            CHECK_ARCHITECTURE,
            |i, _, _| i.architecture = "aarch64".into(),
            "seed architecture aarch64, this host x86_64",
        ),
        (
            CHECK_CPU_TOPOLOGY,
            |i, _, _| i.cpu_topology.threads = 8,
            "CPU count differs: seed 1 sockets, 2 cores, 8 threads, this host 1 sockets, 2 cores, 2 threads",
        ),
        (
            CHECK_IP_FAMILY,
            |_, h, _| h.ip_family = IpFamily::DualStack,
            "seed IP family IPv4, this host DualStack",
        ),
        (
            CHECK_PROXY,
            |i, _, _| i.has_proxy = true,
            "seed image has a proxy but the cluster being upgraded does not",
        ),
        (
            CHECK_PROXY,
            |_, h, _| h.proxy = true,
            "seed image does not have a proxy but the cluster being upgraded does",
        ),
        (
            CHECK_FIPS,
            |i, _, _| i.has_fips = true,
            "seed image has FIPS enabled but the cluster being upgraded does not",
        ),
        (
            CHECK_FIPS,
            |_, h, _| h.fips = true,
            "seed image does not have FIPS enabled but the cluster being upgraded does",
        ),
        (
            CHECK_CONTAINER_STORAGE_TARGET,
            |_, _, s| s.container_storage_unit_what = Some("/dev/sdb".into()),
            "container storage mountpoint target mismatch: seed=/dev/disk/by-partlabel/varlibcontainers, cluster=/dev/sdb",
        ),
        (
            CHECK_CONTAINER_STORAGE_TARGET,
            |_, _, s| {
                s.container_storage = None;
                s.container_storage_unit_what = None
            },
            "container storage mountpoint target not found",
        ),
        (
            CHECK_SEED_SPACE_SYSROOT,
            |_, _, s| s.sysroot = usage(GIB),
            "not enough free space on /sysroot for the seed: 1.0 GiB available, 1.1 GiB needed",
        ),
        (
            CHECK_SEED_SPACE_BOOT,
            |_, _, s| s.boot = usage(10 << 20),
            "not enough free space on /boot for the seed: 10.0 MiB available, 55.0 MiB needed",
        ),
        (
            "TargetVersion",
            |i, _, _| i.version = "0.9.0".into(),
            "seed OCP version (0.9.0) must be higher than current OCP version (1.0.0)",
        ),
    ];
    for (name, edit, message) in cases {
        let (mut i, mut h, mut s) = (info(), host(), storage());
        edit(&mut i, &mut h, &mut s);
        let cs = run(&i, &h, &s, None);
        let c = find(&cs, name);
        assert_eq!(c.result, CheckResult::Failed, "{name}: {c:?}");
        assert!(c.message.contains(message), "{name}: {}", c.message);
        let others: Vec<_> = cs
            .iter()
            .filter(|x| x.is_failed() && x.name != name)
            .collect();
        assert!(
            others.is_empty(),
            "{name}: only this check fails: {others:?}"
        );
    }
}

#[test]
fn the_requested_version_must_be_the_seeds() {
    let cs = run(&info(), &host(), &storage(), Some("1.2.0"));
    let c = find(&cs, CHECK_SEED_VERSION);
    assert!(c.is_failed());
    assert_eq!(
        c.message,
        "spec.seedImageRef.version is 1.2.0 but the seed is version 1.1.0"
    );
}

#[test]
fn same_cpu_count_other_topology_only_warns() {
    let mut i = info();
    i.cpu_topology = CpuTopology {
        sockets: 2,
        cores: 2,
        threads: 2,
    };
    let cs = run(&i, &host(), &storage(), None);
    assert_eq!(find(&cs, CHECK_CPU_TOPOLOGY).result, CheckResult::Warning);
}

#[test]
fn container_space_fails_only_on_the_precise_count() {
    let mut s = storage();
    s.container_storage.as_mut().unwrap().usage = usage(GIB);
    let cs = run(&info(), &host(), &s, None);
    assert_eq!(
        find(&cs, CHECK_SEED_SPACE_CONTAINERS).result,
        CheckResult::Warning
    );
    let h = host();
    let (_, cs) = check(
        &labels(&info()),
        None,
        &Host {
            host: &h,
            storage: &s,
            running_version: Some("1.0.0"),
            missing_images_bytes: Some(2 * GIB),
        },
    );
    let c = find(&cs, CHECK_SEED_SPACE_CONTAINERS);
    assert!(c.is_failed());
    assert!(
        c.message.contains("the seed's images this host lacks"),
        "{}",
        c.message
    );
}

#[test]
fn format_labels() {
    let h = host();
    let st = storage();
    let hs = Host {
        host: &h,
        storage: &st,
        running_version: Some("1.0.0"),
        missing_images_bytes: None,
    };
    let mut l = labels(&info());
    l.insert(LABEL_FORMAT_VERSION.into(), "3".into());
    let (i, cs) = check(&l, None, &hs);
    assert!(i.is_none());
    assert_eq!(
        cs[0].message,
        "seed image format version mismatch: expected 1, got 3"
    );
    l.remove(LABEL_FORMAT_VERSION);
    let (_, cs) = check(&l, None, &hs);
    assert!(cs[0].message.starts_with(
        "seed image is missing the com.openshift.lifecycle-agent.seed_format_version label"
    ));
    let mut l = labels(&info());
    l.insert(LABEL_SEED_INFO.into(), "{not json".into());
    let (_, cs) = check(&l, None, &hs);
    assert!(cs[0].message.contains("unreadable"), "{}", cs[0].message);
}
