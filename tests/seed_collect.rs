//! Seed collection on real directory sysroots built by the `ostree` CLI.
//!
//! The scene ([`Scene::new`]) is a seed host: a commit whose `usr/etc` has defaults to modify
//! and delete, deployed and booted, then configured the way an administrator would (modified,
//! added, deleted files, a deleted directory, a retargeted symlink, a changed mode and xattr, a
//! file replaced by a directory) and littered with site data that must not travel (host name,
//! machine ID, SSH host keys, connections, ibu's own state, credentials, histories, leases).
//! Its `/var/lib/containers` is a tmpfs mount, so the host passes validation; podman runs
//! against it (an empty storage here; images are in `seed_collect_images.rs`).
//!
//! Needs root (mounts, immutable deployments), the `ostree` CLI and podman.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::{CommitSpec, Deploy, Deployed, TestFs, TestSysroot, run, sh};
use ibu::facts::{Live, Observe};
use ibu::paths::Paths;
use ibu::seed::collect::{self, Change, Collected, Kind};
use ibu::status::store::Recorded;
use xshell::cmd;

const VERSION: &str = "4.16.3";

fn seed_commit() -> CommitSpec {
    CommitSpec::new("seed", VERSION)
        .file("usr/etc/deleteme.conf", "delete me\n")
        .file("usr/etc/olddir/a.conf", "a\n")
        .file("usr/etc/olddir/sub/b.conf", "b\n")
        .file("usr/etc/modeme.conf", "mode\n")
        .file("usr/etc/xattr.conf", "xattr\n")
        .file("usr/etc/ssh/sshd_config", "PermitRootLogin no\n")
        .file("usr/etc/hostname", "localhost\n")
        .file("usr/etc/adjtime", "0.0 0 0.0\n0\nUTC\n")
        .file("usr/etc/typechange", "a file in the defaults\n")
        .file("usr/etc/shadow", "root:*:19000:0:99999:7:::\n")
        .mode("usr/etc/shadow", 0o600)
        .file("usr/etc/unchanged/keep.conf", "same\n")
        .symlink("usr/etc/localtime", "../usr/share/zoneinfo/UTC")
}

/// A booted seed host in a directory sysroot.
struct Scene {
    paths: Paths,
    deployed: Deployed,
    etc: PathBuf,
    work: tempfile::TempDir,
    /// Last: dropped after everything that points into it.
    sr: TestSysroot,
}

impl Scene {
    /// The seed commit deployed in stateroot `debian` with extra kernel arguments, booted,
    /// container storage mounted (tmpfs).
    fn new() -> Result<Scene> {
        let mut sr = TestSysroot::new()?;
        sr.commit(seed_commit())?;
        let deployed = sr.deploy(
            "debian",
            "seed",
            &Deploy::new()
                .karg("console=ttyS0,115200")
                .karg("ibu=4.16.3"),
        )?;
        sr.boot(&deployed)?;
        sr.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
        let paths = sr.paths()?;
        let etc = sr.deployment_dir(&deployed).join("etc");
        let work = tempfile::Builder::new().prefix("ibu-seedwork-").tempdir()?;
        Ok(Scene {
            paths,
            deployed,
            etc,
            work,
            sr,
        })
    }

    fn collect(&self) -> Result<Collected> {
        let facts = Live::new(&self.paths);
        collect::collect(&self.paths, &facts, &Recorded::default(), self.work.path())
    }

    fn etc_write(&self, rel: &str, text: &str) -> Result<()> {
        write(&self.etc.join(rel), text)
    }

    fn var_write(&self, rel: &str, text: &str) -> Result<()> {
        write(&self.paths.var.join(rel), text)
    }

    /// Configure `/etc` like an administrator; returns nothing, [`expected_etc`] says what
    /// collection must find.
    fn configure_etc(&self) -> Result<()> {
        let etc = &self.etc;
        self.etc_write("motd", "welcome to the golden image\n")?;
        std::fs::remove_file(etc.join("deleteme.conf"))?;
        std::fs::remove_dir_all(etc.join("olddir"))?;
        std::fs::remove_file(etc.join("localtime"))?;
        std::os::unix::fs::symlink("../usr/share/zoneinfo/Europe/Paris", etc.join("localtime"))?;
        std::fs::set_permissions(
            etc.join("modeme.conf"),
            std::fs::Permissions::from_mode(0o600),
        )?;
        rustix::fs::setxattr(
            etc.join("xattr.conf"),
            "user.ibu.test",
            b"changed",
            rustix::fs::XattrFlags::empty(),
        )?;
        self.etc_write("added.conf", "new\n")?;
        self.etc_write("newdir/x.conf", "x\n")?;
        std::fs::set_permissions(etc.join("newdir"), std::fs::Permissions::from_mode(0o750))?;
        std::fs::create_dir(etc.join("newdir/sub"))?;
        std::os::unix::fs::symlink("../x.conf", etc.join("newdir/sub/y.link"))?;
        self.etc_write("ssh/sshd_config", "PermitRootLogin prohibit-password\n")?;
        self.etc_write("ssh/ssh_host_ed25519_key", "PRIVATE KEY\n")?;
        self.etc_write("ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA\n")?;
        self.etc_write("hostname", "seed-host\n")?;
        self.etc_write("machine-id", "0123456789abcdef0123456789abcdef\n")?;
        self.etc_write(
            "NetworkManager/system-connections/eth0.nmconnection",
            "[connection]\nid=eth0\n",
        )?;
        self.etc_write("ibu/upgrade.yaml", "stage: Idle\n")?;
        self.etc_write("containers/auth.json", "{\"auths\":{}}\n")?;
        self.etc_write(
            "containers/registries.conf",
            "unqualified-search-registries = []\n",
        )?;
        self.etc_write("shadow", "root:$6$salt$hash:19000:0:99999:7:::\n")?;
        self.etc_write("shadow-", "root:*:19000:0:99999:7:::\n")?;
        self.etc_write(
            "ostree/remotes.d/fleet.conf",
            "[remote \"fleet\"]\nurl=https://os.example.com/repo\n",
        )?;
        std::fs::remove_file(etc.join("adjtime"))?;
        std::fs::remove_file(etc.join("typechange"))?;
        self.etc_write("typechange/inner.conf", "now a directory\n")?;
        nix::unistd::mkfifo(
            &etc.join("run.fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )?;
        self.etc_write("fstab", "UUID=1234-abcd /boot ext4 defaults 0 2\n")?;
        self.etc_write("environment", "HTTPS_PROXY=http://proxy.example.com:3128\n")?;
        self.etc_write(
            "systemd/system/var-lib-containers.mount",
            "[Mount]\nWhat=/dev/disk/by-label/containers\nWhere=/var/lib/containers\n",
        )?;
        Ok(())
    }

    /// Fill `/var` with kept and excluded content; returns the kept regular files' bytes.
    fn configure_var(&self) -> Result<()> {
        let var = &self.paths.var;
        self.var_write("tmp/scratch", "tmp\n")?;
        self.var_write("log/journal/0123/system.journal", "journal\n")?;
        self.var_write("cache/apt/pkgcache.bin", "cache\n")?;
        self.var_write("lib/ibu/state.yaml", "status: {}\n")?;
        self.var_write("lib/systemd/random-seed", "entropy")?;
        self.var_write("lib/systemd/timers/stamp-fstrim.timer", "")?;
        self.var_write("lib/dbus/machine-id", "0123\n")?;
        self.var_write("lib/NetworkManager/secret_key", "secret")?;
        self.var_write("lib/cni/networks/podman/10.88.0.2", "ctr\n")?;
        self.var_write("roothome/.bash_history", "ls\n")?;
        self.var_write("roothome/.ssh/authorized_keys", "ssh-ed25519 AAAA admin\n")?;
        self.var_write("roothome/.docker/config.json", "{}\n")?;
        self.var_write("roothome/.profile", "export PS1='# '\n")?;
        self.var_write("home/alice/.ssh/id_ed25519", "PRIVATE KEY\n")?;
        self.var_write("home/alice/notes.txt", "notes\n")?;
        self.var_write("lib/app/data.db", &"d".repeat(1000))?;
        std::fs::hard_link(
            var.join("lib/app/data.db"),
            var.join("lib/app/data-link.db"),
        )?;
        std::os::unix::fs::symlink("/etc/passwd", var.join("lib/app/passwd-link"))?;
        let _sock = std::os::unix::net::UnixListener::bind(var.join("lib/app/control.sock"))?;
        self.var_write(".updated", "# stamp\n")?;
        self.var_write(
            "lib/containers/storage/marker",
            "in the container storage\n",
        )?;
        Ok(())
    }
}

fn write(p: &Path, text: &str) -> Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

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

/// Every path under `root` (relative), with its kind, through `std::fs` (an independent walk).
fn tree(root: &Path) -> Result<BTreeMap<PathBuf, Kind>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel))? {
            let e = e?;
            let p = rel.join(e.file_name());
            let t = e.file_type()?;
            let kind = if t.is_dir() {
                stack.push(p.clone());
                Kind::Dir
            } else if t.is_symlink() {
                Kind::Symlink
            } else if t.is_file() {
                Kind::File
            } else {
                Kind::Special
            };
            out.insert(p, kind);
        }
    }
    Ok(out)
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
                p,
                format!(
                    "{:o} {}:{} {} {}.{} {target}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.len(),
                    md.mtime(),
                    md.mtime_nsec()
                ),
            );
        }
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

fn error_of(r: Result<Collected>) -> String {
    match r {
        Ok(_) => panic!("collection succeeded where it must refuse"),
        Err(e) => format!("{e:#}"),
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(p)?.next().is_none())
}

#[test]
fn refuses_without_a_container_storage_mount() -> Result<()> {
    let mut sr = TestSysroot::new()?;
    sr.commit(seed_commit())?;
    let d = sr.deploy("debian", "seed", &Deploy::new())?;
    sr.boot(&d)?;
    let paths = sr.paths()?;
    std::fs::create_dir_all(paths.container_storage())?;
    let work = tempfile::tempdir()?;
    let e = error_of(collect::collect(
        &paths,
        &Live::new(&paths),
        &Recorded::default(),
        work.path(),
    ));
    assert!(
        e.contains(&format!(
            "the seed host must have a separate /var/lib/containers mount: {} is not a mount point",
            paths.container_storage().display()
        )),
        "{e}"
    );
    assert!(is_empty_dir(work.path())?, "a refusal writes nothing");
    Ok(())
}

#[test]
fn refuses_while_an_upgrade_is_in_progress() -> Result<()> {
    let s = Scene::new()?;
    let mut recorded = Recorded::default();
    let cx = ibu::status::conditions::Ctx {
        generation: 2,
        now: ibu::status::Timestamp::from_unix(1_700_000_000),
    };
    recorded.status.reset_to_idle(cx);
    recorded
        .status
        .set_idle_in_progress(cx, ibu::status::Reason::InProgress, "In progress");
    recorded.status.set_prep_in_progress(cx, "In progress");
    let e = error_of(collect::collect(
        &s.paths,
        &Live::new(&s.paths),
        &recorded,
        s.work.path(),
    ));
    assert!(
        e.contains("an ibu upgrade is in progress on this host (Prep in progress)"),
        "{e}"
    );
    assert!(is_empty_dir(s.work.path())?);

    // Through the state file, as the CLI would read it: Prep completed.
    recorded.status.set_prep_completed(cx, "Prep completed");
    recorded.save(&s.paths.state_file())?;
    let loaded = Recorded::load(&s.paths.state_file())?;
    let e = error_of(collect::collect(
        &s.paths,
        &Live::new(&s.paths),
        &loaded,
        s.work.path(),
    ));
    assert!(e.contains("(Prep completed, not finalized)"), "{e}");
    Ok(())
}

#[test]
fn refuses_a_commit_without_version_metadata() -> Result<()> {
    let mut sr = TestSysroot::new()?;
    let commit = sr.commit(CommitSpec::new("nover", "1.0.0").without_version_metadata())?;
    let d = sr.deploy("debian", "nover", &Deploy::new())?;
    sr.boot(&d)?;
    sr.mount_container_storage(TestFs::Tmpfs { size_mib: 16 })?;
    let paths = sr.paths()?;
    let work = tempfile::tempdir()?;
    let e = error_of(collect::collect(
        &paths,
        &Live::new(&paths),
        &Recorded::default(),
        work.path(),
    ));
    assert!(
        e.contains(&format!(
            "the booted commit {} (deployment debian {}) has no \"version\" metadata",
            commit.checksum,
            d.dirname()
        )),
        "{e}"
    );
    Ok(())
}

#[test]
fn warns_about_other_stateroots() -> Result<()> {
    let mut s = Scene::new()?;
    s.sr.commit(CommitSpec::new("other", "4.15.0"))?;
    s.sr.deploy("debian_4.15.0", "other", &Deploy::new().not_as_default())?;
    s.paths = s.sr.paths()?;
    let c = s.collect()?;
    assert!(
        c.warnings.iter().any(|w| w
            == "the sysroot has 2 stateroots (debian, debian_4.15.0); only the booted one (debian) goes into the seed"),
        "{:#?}",
        c.warnings
    );
    assert_eq!(c.info.stateroot, "debian");
    Ok(())
}

#[test]
fn work_directory_rules() -> Result<()> {
    let s = Scene::new()?;
    s.var_write("lib/app/keep", "kept\n")?;

    // Inside /var: collected into, but left out of the seed.
    let work = s.paths.var.join("lib/seedwork");
    std::fs::create_dir_all(&work)?;
    let c = collect::collect(&s.paths, &Live::new(&s.paths), &Recorded::default(), &work)?;
    assert!(c.ostree.repo.starts_with(&work));
    assert!(c.var.iter().any(|e| e.path == Path::new("lib/app/keep")));
    assert!(!c.var.iter().any(|e| e.path.starts_with("lib/seedwork")));
    let x = c
        .var_excluded
        .iter()
        .find(|x| x.path == Path::new("lib/seedwork"))
        .context("the work directory is reported as excluded")?;
    assert_eq!(x.reason, "the work directory this seed is collected into");

    // A second collection into the same work directory refuses to mix with the first.
    let e = error_of(collect::collect(
        &s.paths,
        &Live::new(&s.paths),
        &Recorded::default(),
        &work,
    ));
    assert!(
        e.contains("already exists (left over from an earlier collection?)"),
        "{e}"
    );

    // Inside /etc: refused.
    let in_etc = s.etc.join("seedwork");
    std::fs::create_dir_all(&in_etc)?;
    let e = error_of(collect::collect(
        &s.paths,
        &Live::new(&s.paths),
        &Recorded::default(),
        &in_etc,
    ));
    assert!(e.contains("is inside the seed's /etc"), "{e}");
    assert!(is_empty_dir(&in_etc)?);
    Ok(())
}
