//! Seed collection on real directory sysroots: the ostree export, the seed info, and the seed
//! host left as it was.
//!
//! The seed host is [`common::seed::Scene`]. Needs root, the `ostree` CLI and podman.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::seed::{Scene, VERSION, tree};
use common::{run, sh};
use ibu::facts::{Live, Observe};
use ibu::seed::collect::{self, Kind};
use ibu::status::store::Recorded;
use xshell::cmd;

/// The objects `ostree ls -R -C` says the commit is made of, as `<checksum>.<ext>` names:
/// the commit, a dirtree and a dirmeta per directory, a content object per file or symlink.
fn objects_by_ostree_ls(repo: &Path, commit: &str) -> Result<BTreeSet<String>> {
    let sh = sh()?;
    let listing = run(cmd!(sh, "ostree ls --repo={repo} -R -C {commit}"))?;
    let mut names = BTreeSet::from([format!("{commit}.commit")]);
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with('d') {
            names.insert(format!("{}.dirtree", f[4]));
            names.insert(format!("{}.dirmeta", f[5]));
        } else {
            names.insert(format!("{}.filez", f[4]));
        }
    }
    Ok(names)
}

#[test]
fn ostree_export_is_the_commit_in_archive_form() -> Result<()> {
    let s = Scene::new()?;
    let commit = s.deployed.checksum.clone();
    // Detached metadata (where signatures live) must come along.
    let system = ostree::Repo::new_for_path(s.sr.repo());
    system.open(ostree::gio::Cancellable::NONE)?;
    let meta = ostree::glib::VariantDict::new(None);
    meta.insert("ibu.test", "detached");
    system.write_commit_detached_metadata(
        &commit,
        Some(&meta.end()),
        ostree::gio::Cancellable::NONE,
    )?;

    let c = s.collect()?;
    let e = &c.ostree;
    let archive = s.work.path().canonicalize()?.join("ostree");
    assert_eq!(e.repo, archive);
    assert_eq!(e.commit, commit);
    assert_eq!(c.info.ostree_commit, commit);

    // Archive mode.
    let config = std::fs::read_to_string(archive.join("config"))?;
    assert!(config.contains("mode=archive"), "{config}");

    // Exactly the objects ostree itself lists, plus the detached metadata.
    let names: Vec<String> = e.objects.iter().map(|o| o.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by object name");
    let mut want = objects_by_ostree_ls(&s.sr.repo(), &commit)?;
    want.insert(format!("{commit}.commitmeta"));
    assert_eq!(names.iter().cloned().collect::<BTreeSet<_>>(), want);

    // Each path is the object's file, with its size; nothing else is in the repository.
    let on_disk: BTreeMap<PathBuf, u64> = tree(&archive.join("objects"))?
        .into_iter()
        .filter(|(_, k)| *k == Kind::File)
        .map(|(p, _)| {
            let size = std::fs::metadata(archive.join("objects").join(&p))?.len();
            Ok((Path::new("objects").join(p), size))
        })
        .collect::<Result<_>>()?;
    let listed: BTreeMap<PathBuf, u64> =
        e.objects.iter().map(|o| (o.path.clone(), o.size)).collect();
    assert_eq!(listed, on_disk);
    for o in &e.objects {
        let (csum, ext) = o.name.split_once('.').context("object name")?;
        assert_eq!(
            o.path,
            PathBuf::from(format!("objects/{}/{}.{ext}", &csum[..2], &csum[2..]))
        );
    }
    assert_eq!(e.bytes, on_disk.values().sum::<u64>());
    assert_eq!(c.info.sizes.ostree_archive_bytes, e.bytes);
    assert_eq!(c.info.sizes.ostree_objects, e.objects.len() as u64);

    // ostree fsck verifies every object (it does not count detached metadata).
    let sh = sh()?;
    let fsck = run(cmd!(sh, "ostree fsck --repo={archive}"))?;
    let n = e.objects.len() - 1;
    assert!(fsck.contains(&format!("fsck objects ({n}/{n})")), "{fsck}");
    assert!(fsck.contains("no errors found"), "{fsck}");
    let detached = run(cmd!(
        sh,
        "ostree show --repo={archive} --print-detached-metadata-key=ibu.test {commit}"
    ))?;
    assert_eq!(detached.trim(), "'detached'");
    Ok(())
}

/// A snapshot of everything a collection could change: every path's kind, mode, owner, size,
/// mtime, link target and xattrs.
fn snapshot(root: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            let md = std::fs::symlink_metadata(&p)?;
            let target = if md.file_type().is_symlink() {
                std::fs::read_link(&p)?.display().to_string()
            } else {
                String::new()
            };
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p.clone(),
                format!(
                    "{:o} {}:{} {} {}.{} {target} {:?}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.len(),
                    md.mtime(),
                    md.mtime_nsec(),
                    xattrs(&p)?
                ),
            );
        }
    }
    Ok(out)
}

/// Names and values of the extended attributes of `p` (not following a symlink).
fn xattrs(p: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let n = rustix::fs::llistxattr_query(p)?;
    if n == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; n];
    let got = rustix::fs::llistxattr(p, &mut names)?;
    names.truncate(got);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = std::ffi::OsStr::from_bytes(name);
        let len = rustix::fs::lgetxattr_query(p, name_os)?;
        let mut value = vec![0u8; len];
        if len > 0 {
            let got = rustix::fs::lgetxattr(p, name_os, &mut value)?;
            value.truncate(got);
        }
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

#[test]
fn seed_host_is_left_as_it_was() -> Result<()> {
    let s = Scene::new()?;
    s.configure_etc()?;
    s.configure_var()?;
    // Container storage is podman's: its first run initializes it. Let it happen first.
    Live::new(&s.paths).containers()?;
    let before = snapshot(s.sr.path())?;
    let c = s.collect()?;
    assert!(!c.etc.is_empty() && !c.var.is_empty() && !c.ostree.objects.is_empty());
    let after = snapshot(s.sr.path())?;
    // podman rewrites its lock files on every call, also a read-only one (c/storage records
    // the last user in them); that is podman's protocol, not a change collection makes.
    let storage = s.paths.container_storage();
    let podman_lock =
        |p: &Path| p.starts_with(&storage) && p.extension().is_some_and(|e| e == "lock");
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p)
        .chain(before.keys().filter(|p| !after.contains_key(*p)))
        .filter(|p| !podman_lock(p))
        .collect();
    assert!(changed.is_empty(), "changed on the seed host: {changed:#?}");
    Ok(())
}

#[test]
fn seed_info_matches_the_facts() -> Result<()> {
    let s = Scene::new()?;
    s.configure_etc()?;
    let started = chrono::Utc::now();
    let c = s.collect()?;
    let facts = Live::new(&s.paths);
    let host = facts.host()?;
    let footprint = facts.footprint()?;
    let i = &c.info;
    assert_eq!(i.version, VERSION);
    assert_eq!(i.os_id, "debian");
    assert_eq!(
        i.architecture,
        nix::sys::utsname::uname()?.machine().to_string_lossy()
    );
    assert_eq!(
        (
            i.cpu_topology.sockets,
            i.cpu_topology.cores,
            i.cpu_topology.threads
        ),
        (host.cpu.sockets, host.cpu.cores, host.cpu.threads)
    );
    assert!(i.cpu_topology.threads >= 1);
    assert_eq!(i.kernel_args, ["root=LABEL=root", "console=ttyS0,115200"]);
    assert!(i.has_proxy, "HTTPS_PROXY in /etc/environment");
    assert_eq!(i.has_fips, host.fips);
    assert_eq!(i.ip_family, collect::info::ip_family_name(host.ip_family));
    assert_eq!(
        i.container_storage_mountpoint_target,
        "/dev/disk/by-label/containers"
    );
    assert_eq!(i.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        i.sno_hostname,
        nix::unistd::gethostname()?.to_string_lossy()
    );
    let ips: Vec<String> = host.node_ips.iter().map(|ip| ip.to_string()).collect();
    assert_eq!(i.node_ips, ips);
    assert_eq!(i.ostree_commit, s.deployed.checksum);
    assert_eq!(i.stateroot, "debian");
    assert_eq!(i.sizes.deployment_bytes, footprint.deployment_bytes);
    assert_eq!(i.sizes.boot_bytes, footprint.boot_bytes);
    assert!(
        i.sizes.boot_bytes >= (64 + 128) * 1024,
        "{}",
        i.sizes.boot_bytes
    );
    assert_eq!(i.sizes.images_bytes, 0);
    assert_eq!(i.images, 0);
    assert!(c.containers.is_empty());
    assert_eq!(c.containers_list_file(), "");
    let created = chrono::DateTime::parse_from_rfc3339(&i.created)?;
    assert!(
        created >= started - chrono::Duration::seconds(1),
        "{created}"
    );
    assert!(created <= chrono::Utc::now(), "{created}");

    // The origin is the deployment's own file.
    let origin_file =
        s.sr.stateroot_dir("debian")
            .join("deploy")
            .join(format!("{}.origin", s.deployed.dirname()));
    assert_eq!(c.origin, std::fs::read_to_string(origin_file)?);
    assert!(c.origin.contains("refspec=test/seed"), "{}", c.origin);

    // Without the unit, the mount source is the target.
    std::fs::remove_file(s.etc.join("systemd/system/var-lib-containers.mount"))?;
    let work = tempfile::tempdir()?;
    let c = collect::collect(
        &s.paths,
        &Live::new(&s.paths),
        &Recorded::default(),
        work.path(),
    )?;
    assert_eq!(c.info.container_storage_mountpoint_target, "tmpfs");
    Ok(())
}
