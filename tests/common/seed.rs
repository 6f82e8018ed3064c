//! A seed host for the seed collection tests (`tests/seed_collect*.rs`).
//!
//! [`Scene::new`] is a booted seed host in a directory sysroot: a commit whose `usr/etc` has
//! defaults to modify and delete ([`seed_commit`]), deployed with extra kernel arguments and
//! booted, its `/var/lib/containers` a tmpfs mount (so the host passes validation; podman runs
//! against it). [`Scene::configure_etc`] then changes `/etc` the way an administrator would
//! (modified, added, deleted files, a deleted directory, a retargeted symlink, a changed mode
//! and xattr, a file replaced by a directory) and litters it with site data that must not
//! travel; [`Scene::configure_var`] does the same for `/var`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ibu::facts::Live;
use ibu::paths::Paths;
use ibu::seed::collect::{self, Collected, Kind};
use ibu::status::store::Recorded;

use super::{CommitSpec, Deploy, Deployed, TestFs, TestSysroot};

pub const VERSION: &str = "4.16.3";

pub fn seed_commit() -> CommitSpec {
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
pub struct Scene {
    pub paths: Paths,
    pub deployed: Deployed,
    pub etc: PathBuf,
    pub work: tempfile::TempDir,
    /// Last: dropped after everything that points into it.
    pub sr: TestSysroot,
}

impl Scene {
    /// The seed commit deployed in stateroot `debian` with extra kernel arguments, booted,
    /// container storage mounted (tmpfs).
    pub fn new() -> Result<Scene> {
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

    pub fn collect(&self) -> Result<Collected> {
        let facts = Live::new(&self.paths);
        collect::collect(&self.paths, &facts, &Recorded::default(), self.work.path())
    }

    pub fn etc_write(&self, rel: &str, text: &str) -> Result<()> {
        write(&self.etc.join(rel), text)
    }

    pub fn var_write(&self, rel: &str, text: &str) -> Result<()> {
        write(&self.paths.var.join(rel), text)
    }

    /// Configure `/etc` like an administrator (the tests say what collection must find).
    pub fn configure_etc(&self) -> Result<()> {
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

    /// Fill `/var` with kept and excluded content.
    pub fn configure_var(&self) -> Result<()> {
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

pub fn write(p: &Path, text: &str) -> Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

/// Every path under `root` (relative), with its kind, through `std::fs` (an independent walk).
pub fn tree(root: &Path) -> Result<BTreeMap<PathBuf, Kind>> {
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

pub fn error_of(r: Result<Collected>) -> String {
    match r {
        Ok(_) => panic!("collection succeeded where it must refuse"),
        Err(e) => format!("{e:#}"),
    }
}

pub fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(p)?.next().is_none())
}
