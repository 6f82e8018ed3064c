//! Storage facts on real directory sysroots with real mounts (root required).

mod common;

use std::path::Path;

use anyhow::{Context, Result};
use common::{CommitSpec, Deploy, TestFs, TestSysroot, run, sh};
use ibu::facts::FsUsage;
use ibu::facts::disks::gather;
use xshell::cmd;

/// `df -B1 --output=size,avail PATH` as (size, avail).
fn df(path: &Path) -> Result<(u64, u64)> {
    let sh = sh()?;
    let out = run(cmd!(sh, "df -B1 --output=size,avail {path}"))?;
    let line = out.lines().nth(1).context("df printed no data line")?;
    let mut w = line.split_whitespace().map(str::parse::<u64>);
    Ok((
        w.next().context("df size")??,
        w.next().context("df avail")??,
    ))
}

/// Usage agrees with df: the size exactly, free space within `slack` bytes (others write too).
fn assert_like_df(u: &FsUsage, path: &Path, slack: u64) -> Result<()> {
    let (size, avail) = df(path)?;
    assert_eq!(u.total_bytes(), size, "size of {}", path.display());
    assert!(
        u.available_bytes().abs_diff(avail) <= slack,
        "available {} vs df {avail} at {}",
        u.available_bytes(),
        path.display()
    );
    Ok(())
}

#[test]
fn container_storage_on_the_root_fs_is_not_a_mount() -> Result<()> {
    let s = TestSysroot::standard()?;
    let paths = s.sysroot.paths()?;
    // Missing entirely, then a plain directory: neither is a mount.
    let facts = gather(&paths)?;
    assert_eq!(facts.container_storage_path, paths.container_storage());
    assert!(
        facts
            .container_storage_path
            .ends_with("ostree/deploy/debian/var/lib/containers")
    );
    assert_eq!(facts.container_storage, None);
    std::fs::create_dir_all(paths.container_storage())?;
    let facts = gather(&paths)?;
    assert_eq!(facts.container_storage, None);
    assert_eq!(facts.container_storage_unit_what, None);

    // sysroot and boot: the filesystem holding the sandbox, as df sees it.
    assert_like_df(&facts.sysroot, &paths.sysroot_mount, 64 << 20)?;
    assert_like_df(&facts.boot, &paths.boot, 64 << 20)?;
    assert!(facts.sysroot.blocks > 0 && facts.sysroot.block_size > 0);
    Ok(())
}

#[test]
fn tmpfs_container_storage_is_detected_with_usage() -> Result<()> {
    let mut s = TestSysroot::standard()?;
    let target = s
        .sysroot
        .mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    let paths = s.sysroot.paths()?;
    let facts = gather(&paths)?;
    let m = facts.container_storage.as_ref().context("a mount")?;
    assert_eq!(m.mount_point, target);
    assert_eq!(m.fs_type, "tmpfs");
    assert_eq!(m.source, "tmpfs");
    assert!(m.options.split(',').any(|o| o == "rw"), "{}", m.options);
    assert!(
        m.options.split(',').any(|o| o == "size=65536k"),
        "{}",
        m.options
    );
    assert_eq!(m.usage.total_bytes(), 64 << 20);
    assert_eq!(m.usage.used_percent(), 0);
    assert_like_df(&m.usage, &target, 0)?;

    // Fill a quarter: LCA's percentage follows.
    std::fs::write(target.join("blob"), vec![1u8; 16 << 20])?;
    let m = gather(&paths)?.container_storage.context("a mount")?;
    assert_eq!(m.usage.used_percent(), 25);
    assert_like_df(&m.usage, &target, 0)?;
    Ok(())
}

#[test]
fn xfs_container_storage_on_a_loop_device() -> Result<()> {
    let mut s = TestSysroot::standard()?;
    let target = s
        .sysroot
        .mount_container_storage(TestFs::Xfs { size_mib: 300 })?;
    let m = gather(&s.sysroot.paths()?)?
        .container_storage
        .context("a mount")?;
    assert_eq!(m.mount_point, target);
    assert_eq!(m.fs_type, "xfs");
    assert!(m.source.starts_with("/dev/loop"), "{}", m.source);
    assert!(
        m.options.contains("inode64"),
        "super options included: {}",
        m.options
    );
    assert_like_df(&m.usage, &target, 0)?;
    assert!(m.usage.total_bytes() > 200 << 20, "{:?}", m.usage);
    Ok(())
}

#[test]
fn only_the_booted_stateroot_counts() -> Result<()> {
    let mut s = TestSysroot::standard()?;
    s.sysroot
        .mount_container_storage(TestFs::Tmpfs { size_mib: 8 })?;
    // Booted into the other stateroot, whose var/lib/containers is a plain directory.
    s.sysroot.boot(&s.new)?;
    let paths = s.sysroot.paths()?;
    let facts = gather(&paths)?;
    assert!(
        facts
            .container_storage_path
            .ends_with("ostree/deploy/debian_1.1.0/var/lib/containers")
    );
    assert_eq!(facts.container_storage, None);
    Ok(())
}

#[test]
fn unit_what_comes_from_the_deployment_usr_then_its_etc() -> Result<()> {
    let unit = "usr/lib/systemd/system/var-lib-containers.mount";
    let mut sr = TestSysroot::new()?;
    sr.commit(CommitSpec::new("os", "1.0.0").file(
        unit,
        "[Unit]\nDescription=Container storage\n[Mount]\nWhat=/dev/disk/by-label/usr-containers\n\
         Where=/var/lib/containers\nType=xfs\nOptions=defaults,prjquota\n",
    ))?;
    let d = sr.deploy("debian", "os", &Deploy::new())?;
    sr.boot(&d)?;
    let paths = sr.paths()?;
    assert_eq!(
        gather(&paths)?.container_storage_unit_what.as_deref(),
        Some("/dev/disk/by-label/usr-containers")
    );

    // An admin's unit in the deployment's /etc wins.
    let etc_units = paths.etc.join("systemd/system");
    std::fs::create_dir_all(&etc_units)?;
    std::fs::write(
        etc_units.join("var-lib-containers.mount"),
        "[Mount]\nWhat=/dev/disk/by-label/containers\nWhere=/var/lib/containers\n",
    )?;
    assert_eq!(
        gather(&paths)?.container_storage_unit_what.as_deref(),
        Some("/dev/disk/by-label/containers")
    );

    // A runtime drop-in (sandbox run/) overrides What= of either.
    let dropins = paths.run.join("systemd/system/var-lib-containers.mount.d");
    std::fs::create_dir_all(&dropins)?;
    std::fs::write(dropins.join("50-what.conf"), "[Mount]\nWhat=/dev/vdc\n")?;
    assert_eq!(
        gather(&paths)?.container_storage_unit_what.as_deref(),
        Some("/dev/vdc")
    );
    Ok(())
}
