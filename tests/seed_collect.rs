//! Seed collection on real directory sysroots: the `/etc` difference and the `/var` selection.
//!
//! The seed host is [`common::seed::Scene`]. Needs root (mounts, immutable deployments), the
//! `ostree` CLI and podman.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use common::TestFs;
use common::seed::{Scene, tree, write};
use ibu::seed::collect::{self, Change, Collected, Kind};

fn etc_entries(c: &Collected) -> Vec<(String, Change, Kind)> {
    c.etc
        .iter()
        .map(|e| (e.path.to_string_lossy().into_owned(), e.change, e.kind))
        .collect()
}

/// A fresh deployment's `/etc` is its commit's defaults: no difference at all.
#[test]
fn fresh_deployment_has_no_etc_difference() -> Result<()> {
    let s = Scene::new()?;
    let defaults = s.sr.deployment_dir(&s.deployed).join("usr/etc");
    let d = collect::etc_diff::diff(
        &s.etc,
        &defaults,
        &collect::Exclusions::new(collect::ETC_EXCLUSIONS),
    )?;
    assert_eq!(d.entries, vec![], "{d:#?}");
    assert_eq!(d.deletions, Vec::<PathBuf>::new());
    assert_eq!(d.excluded, vec![]);
    assert_eq!(d.bytes, 0);
    Ok(())
}

#[test]
fn etc_difference_and_exclusions() -> Result<()> {
    let s = Scene::new()?;
    s.configure_etc()?;
    let c = s.collect()?;
    assert_eq!(c.etc_dir, s.etc);

    use Change::{Added, Modified, Replaced};
    use Kind::{Dir, File, Symlink};
    let mut want: Vec<(&str, Change, Kind)> = vec![
        ("added.conf", Added, File),
        ("containers", Added, Dir),
        ("containers/registries.conf", Added, File),
        ("environment", Added, File),
        ("fstab", Added, File),
        ("localtime", Modified, Symlink),
        ("modeme.conf", Modified, File),
        ("motd", Modified, File),
        ("NetworkManager", Added, Dir),
        ("NetworkManager/system-connections", Added, Dir),
        ("newdir", Added, Dir),
        ("newdir/sub", Added, Dir),
        ("newdir/sub/y.link", Added, Symlink),
        ("newdir/x.conf", Added, File),
        ("ostree", Added, Dir),
        ("ostree/remotes.d", Added, Dir),
        ("ostree/remotes.d/fleet.conf", Added, File),
        ("shadow", Modified, File),
        ("ssh/sshd_config", Modified, File),
        ("systemd", Added, Dir),
        ("systemd/system", Added, Dir),
        ("systemd/system/var-lib-containers.mount", Added, File),
        ("typechange", Replaced, Dir),
        ("typechange/inner.conf", Added, File),
        ("xattr.conf", Modified, File),
    ];
    want.sort_by(|a, b| Path::new(a.0).cmp(Path::new(b.0)));
    let want: Vec<(String, Change, Kind)> = want
        .into_iter()
        .map(|(p, ch, k)| (p.to_string(), ch, k))
        .collect();
    assert_eq!(etc_entries(&c), want);

    // A deleted directory once, not with its children; the withheld deletion of the excluded
    // /etc/adjtime is not there.
    assert_eq!(
        c.etc_deletions,
        [
            PathBuf::from("/etc/deleteme.conf"),
            PathBuf::from("/etc/olddir")
        ]
    );
    assert_eq!(c.etc_deletions_file()?, "/etc/deleteme.conf\n/etc/olddir\n");

    let excluded: BTreeSet<(String, String)> = c
        .etc_excluded
        .iter()
        .map(|e| (e.path.to_string_lossy().into_owned(), e.pattern.clone()))
        .collect();
    let want_excluded: BTreeSet<(String, String)> = [
        (
            "NetworkManager/system-connections/eth0.nmconnection",
            "NetworkManager/system-connections/*",
        ),
        ("adjtime", "adjtime"),
        ("containers/auth.json", "containers/auth.json"),
        ("hostname", "hostname"),
        ("ibu", "ibu"),
        ("machine-id", "machine-id"),
        ("shadow-", "shadow-"),
        ("ssh/ssh_host_ed25519_key", "ssh/ssh_host_*"),
        ("ssh/ssh_host_ed25519_key.pub", "ssh/ssh_host_*"),
    ]
    .iter()
    .map(|(p, r)| (p.to_string(), r.to_string()))
    .collect();
    assert_eq!(excluded, want_excluded);
    assert!(c.etc_excluded.iter().all(|e| !e.reason.is_empty()));
    // Nothing excluded (nor anything below it) is archived.
    for e in &c.etc {
        for x in &c.etc_excluded {
            assert!(
                !e.path.starts_with(&x.path),
                "{} is archived",
                e.path.display()
            );
        }
    }

    // Sizes are the files' own.
    let mut bytes = 0;
    for e in &c.etc {
        let md = std::fs::symlink_metadata(s.etc.join(&e.path))?;
        match e.kind {
            File => {
                assert_eq!(e.size, md.len(), "{}", e.path.display());
                bytes += md.len();
            }
            _ => assert_eq!(e.size, 0, "{}", e.path.display()),
        }
    }
    assert_eq!(c.info.sizes.etc_bytes, bytes);

    let warnings = c.warnings.join("\n");
    assert!(
        warnings.contains("/etc/fstab goes into the seed and names disks of the seed host (UUID=1234-abcd /boot ext4 defaults 0 2)"),
        "{warnings}"
    );
    assert!(
        warnings
            .contains("1 sockets, FIFOs or device nodes in /etc are not archived: /etc/run.fifo"),
        "{warnings}"
    );
    Ok(())
}

#[test]
fn var_selection() -> Result<()> {
    let mut s = Scene::new()?;
    let base = tree(&s.paths.var)?;
    // What ostree made (lib, lock, log, run, tmp, its .ostree-selabeled stamp) plus the
    // container storage mount point.
    assert!(base.contains_key(Path::new("tmp")), "{base:?}");
    s.configure_var()?;
    let other = s.paths.var.join("mnt/data");
    s.sr.mount_at(TestFs::Tmpfs { size_mib: 8 }, &other)?;
    write(&other.join("inside"), "on another filesystem\n")?;

    let c = s.collect()?;
    assert_eq!(c.var_dir, s.paths.var);

    let kept: &[(&str, Kind)] = &[
        ("cache", Kind::Dir),
        ("home", Kind::Dir),
        ("home/alice", Kind::Dir),
        ("home/alice/notes.txt", Kind::File),
        ("lib/app", Kind::Dir),
        ("lib/app/data-link.db", Kind::File),
        ("lib/app/data.db", Kind::File),
        ("lib/app/passwd-link", Kind::Symlink),
        ("lib/cni", Kind::Dir),
        ("lib/dbus", Kind::Dir),
        ("lib/NetworkManager", Kind::Dir),
        ("lib/systemd", Kind::Dir),
        ("lib/systemd/timers", Kind::Dir),
        ("lib/systemd/timers/stamp-fstrim.timer", Kind::File),
        ("log/journal", Kind::Dir),
        ("mnt", Kind::Dir),
        ("mnt/data", Kind::Dir),
        ("roothome", Kind::Dir),
        ("roothome/.docker", Kind::Dir),
        ("roothome/.profile", Kind::File),
    ];
    let mut want: BTreeMap<PathBuf, Kind> = base.clone();
    want.extend(kept.iter().map(|(p, k)| (PathBuf::from(p), *k)));
    // `log/journal` is below an excluded `log/*`: not kept after all.
    want.remove(Path::new("log/journal"));
    let got: BTreeMap<PathBuf, Kind> = c.var.iter().map(|e| (e.path.clone(), e.kind)).collect();
    assert_eq!(got, want);
    // In path order (a directory right before its subtree).
    let paths: Vec<&PathBuf> = c.var.iter().map(|e| &e.path).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);

    let excluded: BTreeSet<(String, String)> = c
        .var_excluded
        .iter()
        .map(|e| (e.path.to_string_lossy().into_owned(), e.pattern.clone()))
        .collect();
    let want_excluded: BTreeSet<(String, String)> = [
        (".updated", ".updated"),
        ("cache/apt", "cache/*"),
        ("home/alice/.ssh", "home/*/.ssh"),
        ("lib/NetworkManager/secret_key", "lib/NetworkManager/*"),
        ("lib/cni/networks", "lib/cni/*"),
        ("lib/dbus/machine-id", "lib/dbus/machine-id"),
        ("lib/ibu", "lib/ibu"),
        ("lib/systemd/random-seed", "lib/systemd/random-seed"),
        ("log/journal", "log/*"),
        ("roothome/.bash_history", "**/.*_history"),
        ("roothome/.docker/config.json", "**/.docker/config.json"),
        ("roothome/.ssh", "roothome/.ssh"),
        ("tmp/scratch", "tmp/*"),
    ]
    .iter()
    .map(|(p, r)| (p.to_string(), r.to_string()))
    .collect();
    assert_eq!(excluded, want_excluded);

    // The hardlinked file counts once; only metadata was read.
    let expected_bytes = [
        "home/alice/notes.txt",
        "lib/app/data.db",
        "roothome/.profile",
    ]
    .iter()
    .map(|p| std::fs::metadata(s.paths.var.join(p)).map(|m| m.len()))
    .sum::<std::io::Result<u64>>()?;
    assert_eq!(expected_bytes, 6 + 1000 + 16);
    assert_eq!(c.info.sizes.var_bytes, expected_bytes);
    let data = c
        .var
        .iter()
        .find(|e| e.path == Path::new("lib/app/data-link.db"));
    assert_eq!(data.map(|e| e.size), Some(1000));

    let warnings = c.warnings.join("\n");
    assert!(
        warnings.contains(&format!(
            "{} is a mount point of another filesystem",
            s.paths.var.join("mnt/data").display()
        )),
        "{warnings}"
    );
    assert!(
        !warnings.contains("lib/containers is a mount point"),
        "{warnings}"
    );
    assert!(
        warnings.contains(
            "1 sockets, FIFOs or device nodes in /var are not archived: /var/lib/app/control.sock"
        ),
        "{warnings}"
    );
    Ok(())
}
