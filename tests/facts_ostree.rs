//! ostree facts on real directory sysroots built by the `ostree` CLI.

mod common;

use std::path::PathBuf;

use anyhow::Result;
use common::{CommitSpec, Deploy, TestSysroot, run, sh};
use ibu::facts::ostree::{footprint, gather};
use ibu::paths::Paths;
use xshell::cmd;

#[test]
fn standard_scene_deployments() -> Result<()> {
    let s = TestSysroot::standard()?;
    let facts = gather(&s.sysroot.paths()?)?;

    assert_eq!(facts.deployments.len(), 2, "{facts:#?}");
    let old = &facts.deployments[0];
    assert_eq!(old.index, 0);
    assert_eq!(old.stateroot, "debian");
    assert_eq!(old.checksum, s.old_commit.checksum);
    assert_eq!(old.serial, 0);
    assert_eq!(old.version.as_deref(), Some("1.0.0"));
    assert_eq!(old.refspec.as_deref(), Some("test/old"));
    assert!(old.booted && old.default && !old.pinned && !old.staged);
    assert!(old.kargs.starts_with("root=LABEL=root "), "{}", old.kargs);
    assert!(old.kargs.contains(" ostree=/ostree/boot."), "{}", old.kargs);
    assert!(!old.kargs.contains("ibu="), "{}", old.kargs);

    let new = &facts.deployments[1];
    assert_eq!(new.index, 1);
    assert_eq!(new.stateroot, "debian_1.1.0");
    assert_eq!(new.checksum, s.new_commit.checksum);
    assert_eq!(new.serial, 0);
    assert_eq!(new.version.as_deref(), Some("1.1.0"));
    assert_eq!(new.refspec.as_deref(), Some("test/new"));
    assert!(!new.booted && !new.default && !new.pinned && !new.staged);
    assert!(new.kargs.contains("ibu=1.1.0"), "{}", new.kargs);

    assert_eq!(facts.stateroots, ["debian", "debian_1.1.0"]);
    assert_eq!(facts.os_id.as_deref(), Some("debian"));
    assert_eq!(facts.booted_stateroot(), Some("debian"));
    assert_eq!(facts.running_version(), Some("1.0.0"));
    assert_eq!(old.dirname(), s.old.dirname());
    Ok(())
}

/// The deployment list and the boot order agree with `ostree admin status`.
#[test]
fn order_matches_ostree_admin_status() -> Result<()> {
    let s = TestSysroot::standard()?;
    let facts = gather(&s.sysroot.paths()?)?;
    let root = s.sysroot.path();
    let sh = sh()?;
    let status = run(cmd!(sh, "ostree admin --sysroot={root} status"))?;
    let listed: Vec<(String, String)> = status
        .lines()
        .filter(|l| !l.starts_with("    ") && !l.trim().is_empty())
        .filter_map(|l| {
            let mut w = l.split_whitespace().filter(|w| *w != "*");
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect();
    let ours: Vec<(String, String)> = facts
        .deployments
        .iter()
        .map(|d| (d.stateroot.clone(), d.dirname()))
        .collect();
    assert_eq!(ours, listed, "{status}");
    Ok(())
}

#[test]
fn leftover_stateroot_pins_serials_and_retained_deployments() -> Result<()> {
    let s = TestSysroot::standard()?;
    let sr = &s.sysroot;
    // A failed Prep's leftover: a stateroot with no deployment.
    sr.os_init("debian_1.2.0")?;
    // The same commit deployed twice into one stateroot: serial 1.
    let again = sr.deploy("debian", "old", &Deploy::new().retain().not_as_default())?;
    assert_eq!(again.serial, 1);
    sr.pin(&s.new, true)?;

    let facts = gather(&sr.paths()?)?;
    assert_eq!(
        facts.stateroots,
        ["debian", "debian_1.1.0", "debian_1.2.0"],
        "a stateroot without deployments is listed"
    );
    let got: Vec<(usize, &str, i32, bool, bool)> = facts
        .deployments
        .iter()
        .map(|d| (d.index, d.stateroot.as_str(), d.serial, d.pinned, d.booted))
        .collect();
    // ostree places a --not-as-default deployment right after the default.
    assert_eq!(
        got,
        [
            (0, "debian", 0, false, true),
            (1, "debian", 1, false, false),
            (2, "debian_1.1.0", 0, true, false),
        ]
    );
    assert_eq!(facts.deployments[1].checksum, s.old_commit.checksum);
    assert_eq!(
        facts.deployments.iter().filter(|d| d.default).count(),
        1,
        "only index 0 is the default"
    );
    Ok(())
}

#[test]
fn booted_comes_from_the_sandbox_file() -> Result<()> {
    let s = TestSysroot::standard()?;
    s.sysroot.boot(&s.new)?;
    let facts = gather(&s.sysroot.paths()?)?;
    let booted = facts.booted().expect("a booted deployment");
    assert_eq!(booted.stateroot, "debian_1.1.0");
    assert_eq!(booted.index, 1);
    assert!(!booted.default, "booted is not what boots next");
    assert_eq!(facts.running_version(), Some("1.1.0"));
    assert_eq!(facts.deployments.iter().filter(|d| d.booted).count(), 1);
    Ok(())
}

#[test]
fn sandbox_naming_a_missing_deployment_is_an_error() -> Result<()> {
    let s = TestSysroot::standard()?;
    s.sysroot.boot(&s.new)?;
    let paths = s.sysroot.paths()?;
    s.sysroot.undeploy(&s.new)?;
    let e = format!(
        "{:#}",
        gather(&paths).expect_err("booted deployment is gone")
    );
    assert!(e.contains(".ibu-sandbox.yaml"), "{e}");
    assert!(e.contains("no such deployment"), "{e}");
    assert!(e.contains(&s.new.checksum), "{e}");
    assert!(
        e.contains(&format!("debian {}", s.old.dirname())),
        "lists what exists: {e}"
    );
    Ok(())
}

#[test]
fn os_id_falls_back_to_etc_os_release() -> Result<()> {
    let mut sr = TestSysroot::new()?;
    sr.commit(
        CommitSpec::new("rh", "4.16.0")
            .os_id("rhcos")
            .os_release_only_in_etc(),
    )?;
    let d = sr.deploy("rhcos", "rh", &Deploy::new())?;
    sr.boot(&d)?;
    assert!(!sr.deployment_dir(&d).join("usr/lib/os-release").exists());
    let facts = gather(&sr.paths()?)?;
    assert_eq!(facts.os_id.as_deref(), Some("rhcos"));
    assert_eq!(facts.running_version(), Some("4.16.0"));
    assert_eq!(facts.stateroots, ["rhcos"]);
    Ok(())
}

#[test]
fn errors_name_the_sysroot() -> Result<()> {
    let d = tempfile::tempdir()?;
    let mut paths = Paths::host();
    paths.sysroot = d.path().to_path_buf();
    let e = format!("{:#}", gather(&paths).expect_err("not a sysroot"));
    assert!(e.contains(&d.path().display().to_string()), "{e}");
    Ok(())
}

#[test]
fn footprint_counts_tree_and_boot_files() -> Result<()> {
    let s = TestSysroot::standard()?;
    let paths = s.sysroot.paths()?;
    let facts = gather(&paths)?;
    let fp = footprint(&paths, &facts)?;
    let spec = &s.old_commit.spec;

    // Boot: exactly the kernel and initramfs of the booted entry (both whole 4 KiB multiples).
    let boot_files = (spec.kernel_bytes + spec.initramfs_bytes) as u64;
    assert!(
        fp.boot_bytes >= boot_files && fp.boot_bytes < boot_files + 64 * 1024,
        "{fp:?}"
    );

    // Tree: at least its file contents (kernel and initramfs are in usr/lib/modules too), and
    // what du counts on one filesystem with each inode once.
    let dir: PathBuf = s.sysroot.deployment_dir(&s.old);
    let content = (spec.kernel_bytes + spec.initramfs_bytes + spec.payload_bytes) as u64;
    assert!(fp.deployment_bytes >= content, "{fp:?}");
    assert!(fp.deployment_bytes < content + 1024 * 1024, "{fp:?}");
    let sh = sh()?;
    let du = run(cmd!(sh, "du -s -x -B1 {dir}"))?;
    let du: u64 = du.split_whitespace().next().unwrap_or("").parse()?;
    assert_eq!(fp.deployment_bytes, du, "du -s -x -B1 {}", dir.display());

    // Booting the other stateroot measures that one instead.
    s.sysroot.boot(&s.new)?;
    let paths = s.sysroot.paths()?;
    let facts = gather(&paths)?;
    let other = footprint(&paths, &facts)?;
    let new_dir = s.sysroot.deployment_dir(&s.new);
    let du = run(cmd!(sh, "du -s -x -B1 {new_dir}"))?;
    let du: u64 = du.split_whitespace().next().unwrap_or("").parse()?;
    assert_eq!(other.deployment_bytes, du);
    Ok(())
}

/// The planner's view: `Live` gathers each group once, from the same sandbox.
#[test]
fn live_observes_the_sandbox_and_caches() -> Result<()> {
    use ibu::facts::{Live, Observe};
    let s = TestSysroot::standard()?;
    let paths = s.sysroot.paths()?;
    let live = Live::new(&paths);
    let ostree = live.ostree()?;
    assert_eq!(ostree.running_version(), Some("1.0.0"));
    assert!(std::ptr::eq(ostree, live.ostree()?), "cached");
    let fp = live.footprint()?;
    assert!(fp.deployment_bytes > 0 && fp.boot_bytes > 0, "{fp:?}");
    assert_eq!(
        live.storage()?.container_storage_path,
        paths.container_storage()
    );
    assert!(!live.host()?.hostname.is_empty());
    Ok(())
}
