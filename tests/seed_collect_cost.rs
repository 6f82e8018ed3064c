//! What collecting a seed costs on a full-size OS tree (ignored by default: minutes, gigabytes).
//!
//! ```text
//! cargo test --release --test seed_collect_cost -- --ignored --nocapture
//! ```
//!
//! The tree is this machine's `/usr` (minus the directories named in `IBU_COST_SKIP`,
//! default `lib/google-cloud-sdk lib/jvm local`, to come near a real host OS), seen through
//! an overlay mount so that the few files a bootable tree needs (kernel, initramfs, `usr/etc`)
//! are added without touching `/usr`. It is committed into a directory sysroot, deployed,
//! booted through the sandbox file, and collected; the timings of each step and the export's
//! size are printed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use common::{Deploy, TestFs, TestSysroot};
use ibu::facts::{Live, Observe};
use ibu::seed::collect;
use ibu::status::store::Recorded;

/// An overlay of `/usr` at `target`; unmounted on drop.
struct Overlay(PathBuf);

impl Overlay {
    fn new(lower: &Path, scratch: &Path) -> Result<Overlay> {
        let (upper, work, target) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("tree/usr"),
        );
        for d in [&upper, &work, &target] {
            std::fs::create_dir_all(d)?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .with_context(|| {
            format!(
                "mounting an overlay of {} on {}",
                lower.display(),
                target.display()
            )
        })?;
        Ok(Overlay(target))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if nix::mount::umount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn write_new(p: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(p.parent().context("parent")?)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .with_context(|| format!("creating {}", p.display()))?;
    f.write_all(contents)?;
    Ok(())
}

#[test]
#[ignore = "minutes and gigabytes; run explicitly to measure"]
fn export_cost_on_a_full_os_tree() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("ibu-cost-").tempdir()?;
    let overlay = Overlay::new(Path::new("/usr"), scratch.path())?;
    let usr = overlay.0.clone();
    let skip = std::env::var("IBU_COST_SKIP")
        .unwrap_or_else(|_| "lib/google-cloud-sdk lib/jvm local".into());
    for d in skip.split_whitespace() {
        let p = usr.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
    }
    let kver = "6.1.0-cost";
    write_new(
        &usr.join(format!("lib/modules/{kver}/vmlinuz")),
        &vec![1u8; 8 << 20],
    )?;
    write_new(
        &usr.join(format!("lib/modules/{kver}/initramfs.img")),
        &vec![2u8; 32 << 20],
    )?;
    write_new(&usr.join("etc/motd"), b"cost test\n")?;
    if !usr.join("etc/os-release").exists() {
        std::os::unix::fs::symlink("../lib/os-release", usr.join("etc/os-release"))?;
    }

    let mut sr = TestSysroot::new()?;
    let t = Instant::now();
    let commit = sr.commit_dir("full", "9.9.9", &scratch.path().join("tree"))?;
    let commit_s = t.elapsed().as_secs_f64();
    drop(overlay);
    let t = Instant::now();
    let d = sr.deploy("debian", "full", &Deploy::new())?;
    let deploy_s = t.elapsed().as_secs_f64();
    sr.boot(&d)?;
    sr.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    let paths = sr.paths()?;
    let facts = Live::new(&paths);
    let t = Instant::now();
    let footprint = *facts.footprint()?;
    let footprint_s = t.elapsed().as_secs_f64();

    let work = tempfile::Builder::new()
        .prefix("ibu-cost-work-")
        .tempdir()?;
    let t = Instant::now();
    let c = collect::collect(&paths, &facts, &Recorded::default(), work.path())?;
    let collect_s = t.elapsed().as_secs_f64();
    assert_eq!(c.ostree.commit, commit.checksum);

    let files = c
        .ostree
        .objects
        .iter()
        .filter(|o| o.name.ends_with(".filez"))
        .count();
    println!(
        "commit {}: ostree commit {commit_s:.1} s, deploy {deploy_s:.1} s",
        commit.checksum
    );
    println!(
        "deployment: {} bytes on disk (footprint walk {footprint_s:.1} s), boot {} bytes",
        footprint.deployment_bytes, footprint.boot_bytes
    );
    println!(
        "collect (incl. export): {collect_s:.1} s; {} objects ({files} content), archive {} bytes ({:.1} % of the deployment)",
        c.ostree.objects.len(),
        c.ostree.bytes,
        c.ostree.bytes as f64 * 100.0 / footprint.deployment_bytes.max(1) as f64
    );
    Ok(())
}
