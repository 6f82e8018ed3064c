//! A full disk during the restore of `/var`: the target sysroot lives on a small loop-mounted
//! ext4 filesystem, the seed's `/var` is bigger than its free space. The restore fails with a
//! typed, clear ENOSPC error naming the stateroot's `var` and the entry being written, removes
//! its staging (the free space is back, `var` is untouched), and after space is freed the same
//! call converges to what a restore on a roomy filesystem gives.
//!
//! The target sysroot is made with `ostree admin init-fs` and `os-init` on the loop filesystem
//! (nothing is deployed: `restore_var` needs only the stateroot). Needs root, `mkfs.ext4`, a
//! free loop device and the `ostree` CLI.

mod common;
mod seed_restore_fixture;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::snapshot::{assert_same_trees, snapshot};
use common::{TestSysroot, run, sh};
use ibu::archive::{Meta, TarBuilder};
use ibu::oci::layout::Compression;
use ibu::seed::restore::{RestoreError, VAR_STAGING, restore_var};
use seed_restore_fixture::{NEW_STATEROOT, layout_with, source};
use xshell::cmd;

/// An ext4 image mounted through a loop device; unmounted (and the loop device released) on
/// drop.
struct LoopFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    fn new(size_mib: u64) -> Result<LoopFs> {
        let dir = tempfile::Builder::new().prefix("ibu-loopfs-").tempdir()?;
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)?.set_len(size_mib << 20)?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        let sh = sh()?;
        // No blocks reserved for root: the test runs as root and must really fill it up.
        run(cmd!(sh, "mkfs.ext4 -q -F -m 0 {image}"))?;
        run(cmd!(sh, "mount -o loop {image} {mnt}"))?;
        Ok(LoopFs { mnt, _dir: dir })
    }

    fn free(&self) -> Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.mnt)?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.mnt, nix::mount::MntFlags::empty()).is_err() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `ostree admin init-fs` + `os-init` in `root`; returns the new stateroot directory.
fn sysroot_with_stateroot(root: &Path) -> Result<PathBuf> {
    let sh = sh()?;
    run(cmd!(sh, "ostree admin init-fs {root}"))?;
    run(cmd!(
        sh,
        "ostree admin --sysroot={root} os-init {NEW_STATEROOT}"
    ))?;
    Ok(root.join("ostree/deploy").join(NEW_STATEROOT))
}

const FILES: usize = 12;
const FILE_BYTES: usize = 3 << 20;

/// A seed whose `/var` holds `FILES` files of `FILE_BYTES` (stored uncompressed: the restore
/// does not care, and the test does not spend its time in a debug-build deflate).
fn big_seed() -> Result<(tempfile::TempDir, ibu::oci::ImageManifest)> {
    let mut etc = TarBuilder::new(Vec::new());
    etc.append_dir(Path::new("seed/etc"), &Meta::root(0o755))?;
    let mut var = TarBuilder::new(Vec::new());
    for d in ["seed/var", "seed/var/lib", "seed/var/lib/big"] {
        var.append_dir(Path::new(d), &Meta::root(0o755))?;
    }
    var.append_bytes(
        Path::new("seed/var/lib/small.conf"),
        &Meta::root(0o644),
        b"small\n",
    )?;
    for i in 0..FILES {
        let data: Vec<u8> = (0..FILE_BYTES).map(|j| (j * 31 + i * 7) as u8).collect();
        var.append_bytes(
            Path::new(&format!("seed/var/lib/big/f{i:02}")),
            &Meta::root(0o600),
            &data,
        )?;
    }
    layout_with(&[
        ("etc", etc.finish()?.0, Compression::Gzip),
        ("var", var.finish()?.0, Compression::None),
    ])
}

#[test]
fn a_full_disk_is_a_clear_error_cleans_up_and_a_run_after_freeing_space_converges() -> Result<()> {
    let (layout, manifest) = big_seed()?;
    let src = source(layout.path())?;

    // What the restore gives where there is room.
    let roomy = TestSysroot::new()?;
    roomy.os_init(NEW_STATEROOT)?;
    restore_var(&src, &manifest, &roomy.stateroot_dir(NEW_STATEROOT))?;
    let want = snapshot(&roomy.stateroot_dir(NEW_STATEROOT).join("var"), false);

    let fs = LoopFs::new(64)?;
    let stateroot = sysroot_with_stateroot(&fs.mnt)?;
    let var = stateroot.join("var");
    // Fill the filesystem so that less than the seed's /var fits.
    let filler = fs.mnt.join("filler");
    let filler_bytes = fs.free()? - (FILES * FILE_BYTES) as u64 / 2;
    let (sh, len) = (sh()?, filler_bytes.to_string());
    run(cmd!(sh, "fallocate -l {len} {filler}")).context("allocating the filler")?;
    let free_before = fs.free()?;
    assert!(free_before < (FILES * FILE_BYTES) as u64, "{free_before}");
    let var_before = snapshot(&var, true);

    let err = restore_var(&src, &manifest, &stateroot).expect_err("the seed's /var cannot fit");
    let msg = format!("{err:#}");
    match err.downcast_ref::<RestoreError>() {
        Some(RestoreError::NoSpace { dir, tree }) => {
            assert_eq!(dir, &var, "{msg}");
            assert_eq!(*tree, "/var");
        }
        _ => panic!("not a NoSpace error: {msg}"),
    }
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        msg.contains("lib/big/f"),
        "the error names the entry being written: {msg}"
    );
    assert!(msg.contains(&var.display().to_string()), "{msg}");
    // Staging removed, the space is back, var untouched.
    let names: Vec<String> = std::fs::read_dir(&stateroot)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(
        !names.iter().any(|n| n.contains(VAR_STAGING)),
        "staging left behind: {names:?}"
    );
    let free_after = fs.free()?;
    assert!(
        free_after + (64 << 10) >= free_before,
        "free space before {free_before}, after {free_after}"
    );
    assert_same_trees(&var_before, &snapshot(&var, true));

    // Free space; the same call now converges.
    std::fs::remove_file(&filler)?;
    let report = restore_var(&src, &manifest, &stateroot)?;
    assert_eq!(report.files, FILES as u64 + 1);
    assert_same_trees(&want, &snapshot(&var, false));
    Ok(())
}
