//! [`TestSysroot`]: a real ostree directory sysroot, built with the `ostree` CLI.
//!
//! ```ignore
//! let mut sr = TestSysroot::new()?;
//! let old = sr.commit(CommitSpec::new("old", "1.0.0"))?;          // ref test/old
//! let d = sr.deploy("debian", "old", &Deploy::new())?;               // os-init + deploy
//! sr.boot(&d)?;                                                       // the sandbox file
//! let paths = sr.paths()?;                                            // ibu::paths::Paths
//! ```
//!
//! Each commit is a small "bootable" tree: `usr/lib/modules/<kver>/{vmlinuz,initramfs.img}`,
//! `usr/lib/os-release` (with `usr/etc/os-release` linking to it, as on Debian), a few files in
//! `usr/etc` and `usr/bin`, and a payload file so that sizes are plausible. Kernel and payload
//! bytes derive from the commit's name and version, so two commits differ (and so do their
//! boot checksums) while every build of the same spec is identical.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ibu::paths::{Paths, Sandbox, SandboxDeployment};
use ostree::gio;
use tempfile::TempDir;
use xshell::cmd;

use super::{Mount, TestFs, run, sh};

/// The karg every test deployment gets (ostree needs at least one to write a boot entry).
pub const ROOT_KARG: &str = "root=LABEL=root";

/// What to put in a commit. Built with [`CommitSpec::new`] and the setters.
#[derive(Debug, Clone)]
pub struct CommitSpec {
    /// Short name; the commit lands on ref `test/<name>`.
    pub name: String,
    /// The `version` metadata and os-release `VERSION_ID`.
    pub version: String,
    /// os-release `ID` (default `debian`).
    pub os_id: String,
    /// Kernel version directory under `usr/lib/modules` (default `6.1.0-test`).
    pub kver: String,
    pub kernel_bytes: usize,
    pub initramfs_bytes: usize,
    /// Size of `usr/share/ibu-test/payload`.
    pub payload_bytes: usize,
    /// Put os-release only at `usr/etc/os-release` (no `usr/lib/os-release`).
    pub os_release_only_in_etc: bool,
    /// Extra files, paths relative to the tree root (e.g. `usr/lib/systemd/system/x.mount`).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Modes of extra files (default 0644), by path.
    pub modes: Vec<(PathBuf, u32)>,
    /// Extra symlinks: (path relative to the tree root, target as stored).
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    /// Commit without the `version` metadata (os-release still has `VERSION_ID`).
    pub no_version_metadata: bool,
}

impl CommitSpec {
    /// Defaults: ID `debian`, kernel 64 KiB, initramfs 128 KiB, payload 256 KiB.
    pub fn new(name: &str, version: &str) -> CommitSpec {
        CommitSpec {
            name: name.to_string(),
            version: version.to_string(),
            os_id: "debian".into(),
            kver: "6.1.0-test".into(),
            kernel_bytes: 64 * 1024,
            initramfs_bytes: 128 * 1024,
            payload_bytes: 256 * 1024,
            os_release_only_in_etc: false,
            files: Vec::new(),
            modes: Vec::new(),
            symlinks: Vec::new(),
            no_version_metadata: false,
        }
    }

    pub fn os_id(mut self, id: &str) -> Self {
        self.os_id = id.to_string();
        self
    }

    pub fn kver(mut self, kver: &str) -> Self {
        self.kver = kver.to_string();
        self
    }

    pub fn payload_bytes(mut self, n: usize) -> Self {
        self.payload_bytes = n;
        self
    }

    pub fn os_release_only_in_etc(mut self) -> Self {
        self.os_release_only_in_etc = true;
        self
    }

    /// Add a file (relative path in the tree, e.g. `usr/etc/environment`).
    pub fn file(mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.into(), contents.into()));
        self
    }

    /// Commit without `version` metadata (as a hand-made commit might be).
    pub fn without_version_metadata(mut self) -> Self {
        self.no_version_metadata = true;
        self
    }

    /// Set the mode of an extra file added with [`CommitSpec::file`].
    pub fn mode(mut self, path: impl Into<PathBuf>, mode: u32) -> Self {
        self.modes.push((path.into(), mode));
        self
    }

    /// Add a symlink (relative path in the tree, target stored as given).
    pub fn symlink(mut self, path: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.symlinks.push((path.into(), target.into()));
        self
    }
}

/// A commit in the sysroot's repo.
#[derive(Debug, Clone)]
pub struct Commit {
    pub name: String,
    pub version: String,
    /// `test/<name>`.
    pub refname: String,
    pub checksum: String,
    pub spec: CommitSpec,
}

/// Options of `ostree admin deploy`. [`ROOT_KARG`] is always passed first.
#[derive(Debug, Clone, Default)]
pub struct Deploy {
    pub not_as_default: bool,
    pub retain: bool,
    pub kargs: Vec<String>,
}

impl Deploy {
    /// Deploy as the new default (index 0), pruning what ostree prunes by default.
    pub fn new() -> Deploy {
        Deploy::default()
    }

    /// `--not-as-default`: keep the current default; ostree 2022.7 places the new deployment at
    /// index 1, right after it.
    pub fn not_as_default(mut self) -> Self {
        self.not_as_default = true;
        self
    }

    /// `--retain`: keep the stateroot's other deployments (without it ostree keeps only the
    /// stateroot's first deployment, its "merge" deployment, besides the new one).
    pub fn retain(mut self) -> Self {
        self.retain = true;
        self
    }

    /// An extra `--karg=` (e.g. `ibu=1.1.0`).
    pub fn karg(mut self, karg: &str) -> Self {
        self.kargs.push(karg.to_string());
        self
    }
}

/// A deployment made by [`TestSysroot::deploy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub stateroot: String,
    pub checksum: String,
    pub serial: i32,
    /// The [`Commit::name`] it was deployed from.
    pub commit: String,
}

impl Deployed {
    /// `<checksum>.<serial>`.
    pub fn dirname(&self) -> String {
        format!("{}.{}", self.checksum, self.serial)
    }

    pub fn sandbox(&self) -> SandboxDeployment {
        SandboxDeployment {
            stateroot: self.stateroot.clone(),
            checksum: self.checksum.clone(),
            serial: self.serial,
        }
    }
}

/// The usual scene: what a host looks like after Prep.
pub struct Standard {
    pub sysroot: TestSysroot,
    /// Commit `old`, version 1.0.0.
    pub old_commit: Commit,
    /// Commit `new`, version 1.1.0.
    pub new_commit: Commit,
    /// `old` in stateroot `debian`: index 0, booted.
    pub old: Deployed,
    /// `new` in stateroot `debian_1.1.0`, deployed `--not-as-default --karg=ibu=1.1.0`: index 1.
    pub new: Deployed,
}

/// A directory sysroot in a temporary directory; removed on drop.
pub struct TestSysroot {
    mounts: Vec<Mount>,
    commits: BTreeMap<String, Commit>,
    root: PathBuf,
    /// Commit trees and filesystem images.
    scratch: TempDir,
    /// Holds the sysroot; removed last (see the `Drop` impl).
    dir: TempDir,
}

impl TestSysroot {
    /// `ostree admin init-fs` and `sysroot.bootloader none` in a fresh temporary directory.
    pub fn new() -> Result<TestSysroot> {
        TestSysroot::create(None)
    }

    /// Like [`TestSysroot::new`], with the whole sysroot on its own filesystem `fs` (to run it
    /// out of space).
    pub fn new_on(fs: TestFs) -> Result<TestSysroot> {
        TestSysroot::create(Some(fs))
    }

    fn create(fs: Option<TestFs>) -> Result<TestSysroot> {
        let dir = tempfile::Builder::new()
            .prefix("ibu-sysroot-")
            .tempdir()
            .context("creating a temporary directory for a test sysroot")?;
        let scratch = tempfile::Builder::new()
            .prefix("ibu-scratch-")
            .tempdir()
            .context("creating a scratch directory")?;
        let root = dir
            .path()
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.path().display()))?;
        let mut mounts = Vec::new();
        if let Some(fs) = fs {
            mounts.push(Mount::new(fs, &root, scratch.path())?);
        }
        let sh = sh()?;
        run(cmd!(sh, "ostree admin init-fs {root}"))?;
        let repo = root.join("ostree/repo");
        run(cmd!(
            sh,
            "ostree config --repo={repo} set sysroot.bootloader none"
        ))?;
        // A test sysroot never needs to survive a power cut; skipping fsync halves deploy time.
        run(cmd!(sh, "ostree config --repo={repo} set core.fsync false"))?;
        Ok(TestSysroot {
            mounts,
            commits: BTreeMap::new(),
            root,
            scratch,
            dir,
        })
    }

    /// The two-stateroot scene of [`Standard`].
    pub fn standard() -> Result<Standard> {
        let mut sysroot = TestSysroot::new()?;
        let old_commit = sysroot.commit(CommitSpec::new("old", "1.0.0"))?;
        let new_commit = sysroot.commit(CommitSpec::new("new", "1.1.0"))?;
        let old = sysroot.deploy("debian", "old", &Deploy::new())?;
        let new = sysroot.deploy(
            "debian_1.1.0",
            "new",
            &Deploy::new().not_as_default().karg("ibu=1.1.0"),
        )?;
        sysroot.boot(&old)?;
        Ok(Standard {
            sysroot,
            old_commit,
            new_commit,
            old,
            new,
        })
    }

    /// The sysroot directory (canonical).
    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn repo(&self) -> PathBuf {
        self.root.join("ostree/repo")
    }

    /// `ostree/deploy/<stateroot>`.
    pub fn stateroot_dir(&self, stateroot: &str) -> PathBuf {
        self.root.join("ostree/deploy").join(stateroot)
    }

    /// `ostree/deploy/<stateroot>/deploy/<checksum>.<serial>`.
    pub fn deployment_dir(&self, d: &Deployed) -> PathBuf {
        self.stateroot_dir(&d.stateroot)
            .join("deploy")
            .join(d.dirname())
    }

    /// ibu's view of the sandbox (needs [`TestSysroot::boot`] first).
    pub fn paths(&self) -> Result<Paths> {
        Paths::sandbox(&self.root)
    }

    /// Commit a tree built from `spec` on ref `test/<name>`.
    pub fn commit(&mut self, spec: CommitSpec) -> Result<Commit> {
        if self.commits.contains_key(&spec.name) {
            bail!("commit {} already made", spec.name);
        }
        let tree = tempfile::tempdir_in(self.scratch.path()).context("creating a tree dir")?;
        write_tree(tree.path(), &spec)?;
        let refname = format!("test/{}", spec.name);
        let (repo, t, version) = (self.repo(), tree.path(), &spec.version);
        let subject = format!("{} {}", spec.name, spec.version);
        let version_arg: Vec<String> = if spec.no_version_metadata {
            Vec::new()
        } else {
            vec![format!("--add-metadata-string=version={version}")]
        };
        let sh = sh()?;
        let checksum = run(cmd!(
            sh,
            "ostree commit --repo={repo} --branch={refname} --tree=dir={t}
                --owner-uid=0 --owner-gid=0 --subject={subject}
                {version_arg...}"
        ))?
        .trim()
        .to_string();
        if checksum.len() != 64 {
            bail!("ostree commit printed {checksum:?}, not a checksum");
        }
        let c = Commit {
            name: spec.name.clone(),
            version: spec.version.clone(),
            refname,
            checksum,
            spec,
        };
        self.commits.insert(c.name.clone(), c.clone());
        Ok(c)
    }

    /// Commit an existing directory tree `dir` (which must already be "bootable", see the
    /// module docs) on ref `test/<name>` with `version` metadata.
    pub fn commit_dir(&mut self, name: &str, version: &str, dir: &Path) -> Result<Commit> {
        if self.commits.contains_key(name) {
            bail!("commit {name} already made");
        }
        let refname = format!("test/{name}");
        let repo = self.repo();
        let subject = format!("{name} {version}");
        let sh = sh()?;
        let checksum = run(cmd!(
            sh,
            "ostree commit --repo={repo} --branch={refname} --tree=dir={dir}
                --subject={subject} --add-metadata-string=version={version}"
        ))?
        .trim()
        .to_string();
        if checksum.len() != 64 {
            bail!("ostree commit printed {checksum:?}, not a checksum");
        }
        let c = Commit {
            name: name.to_string(),
            version: version.to_string(),
            refname,
            checksum,
            spec: CommitSpec::new(name, version),
        };
        self.commits.insert(c.name.clone(), c.clone());
        Ok(c)
    }

    pub fn commit_named(&self, name: &str) -> Result<&Commit> {
        self.commits
            .get(name)
            .with_context(|| format!("no commit named {name}"))
    }

    /// `ostree admin os-init` (an empty stateroot, e.g. a failed Prep's leftover).
    pub fn os_init(&self, stateroot: &str) -> Result<()> {
        let root = &self.root;
        let sh = sh()?;
        run(cmd!(
            sh,
            "ostree admin --sysroot={root} os-init {stateroot}"
        ))?;
        Ok(())
    }

    /// Deploy commit `commit` (by its ref) into `stateroot`, creating the stateroot if needed.
    pub fn deploy(&self, stateroot: &str, commit: &str, opts: &Deploy) -> Result<Deployed> {
        let c = self.commit_named(commit)?;
        if !self.stateroot_dir(stateroot).is_dir() {
            self.os_init(stateroot)?;
        }
        let before = self.deployment_dirs(stateroot)?;
        let root = &self.root;
        let refname = &c.refname;
        let mut flags: Vec<String> = vec![format!("--karg={ROOT_KARG}")];
        flags.extend(opts.kargs.iter().map(|k| format!("--karg={k}")));
        if opts.not_as_default {
            flags.push("--not-as-default".into());
        }
        if opts.retain {
            flags.push("--retain".into());
        }
        let sh = sh()?;
        run(cmd!(
            sh,
            "ostree admin --sysroot={root} deploy --os={stateroot} {flags...} {refname}"
        ))?;
        let after = self.deployment_dirs(stateroot)?;
        let prefix = format!("{}.", c.checksum);
        let new = after
            .iter()
            .filter(|d| !before.contains(d))
            .find_map(|d| d.strip_prefix(&prefix).and_then(|s| s.parse::<i32>().ok()))
            .with_context(|| {
                format!("deploying {commit} into {stateroot}: no new deployment directory")
            })?;
        Ok(Deployed {
            stateroot: stateroot.to_string(),
            checksum: c.checksum.clone(),
            serial: new,
            commit: commit.to_string(),
        })
    }

    /// Name `d` as the booted deployment in the sandbox file (a "reboot" into it).
    pub fn boot(&self, d: &Deployed) -> Result<()> {
        Sandbox::booted(d.sandbox()).write(&self.root)
    }

    /// A "reboot" into `d`: the sandbox file names `d` as booted, with a new boot id (kept
    /// from the last one's number + 1) and the uptime reset to `uptime_seconds`.
    pub fn reboot_into(&self, d: &Deployed, uptime_seconds: u64) -> Result<()> {
        let old = Sandbox::read(&self.root).ok();
        let n = old
            .as_ref()
            .and_then(|s| s.boot_id.as_deref())
            .and_then(|b| b.strip_prefix("boot-"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let mut s = Sandbox::booted(d.sandbox());
        s.boot_id = Some(format!("boot-{}", n + 1));
        s.uptime_seconds = Some(uptime_seconds);
        s.write(&self.root)
    }

    /// Change the sandbox's uptime or system state without a reboot.
    pub fn set_boot_facts(
        &self,
        uptime_seconds: Option<u64>,
        system_state: Option<&str>,
    ) -> Result<()> {
        let mut s = Sandbox::read(&self.root)?;
        if uptime_seconds.is_some() {
            s.uptime_seconds = uptime_seconds;
        }
        if let Some(st) = system_state {
            s.system_state = Some(st.to_string());
        }
        s.write(&self.root)
    }

    /// Position of `d` in the boot order, as libostree reads it.
    pub fn index_of(&self, d: &Deployed) -> Result<usize> {
        let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(&self.root)));
        sysroot
            .load(gio::Cancellable::NONE)
            .with_context(|| format!("loading sysroot {}", self.root.display()))?;
        sysroot
            .deployments()
            .iter()
            .position(|x| {
                x.osname() == d.stateroot.as_str()
                    && x.csum() == d.checksum.as_str()
                    && x.deployserial() == d.serial
            })
            .with_context(|| format!("{} {} is not deployed", d.stateroot, d.dirname()))
    }

    /// `ostree admin pin` (or `--unpin`).
    pub fn pin(&self, d: &Deployed, pinned: bool) -> Result<()> {
        let index = self.index_of(d)?.to_string();
        let root = &self.root;
        let unpin = (!pinned).then_some("--unpin");
        let sh = sh()?;
        run(cmd!(
            sh,
            "ostree admin --sysroot={root} pin {unpin...} {index}"
        ))?;
        Ok(())
    }

    /// `ostree admin undeploy` (the stateroot stays).
    pub fn undeploy(&self, d: &Deployed) -> Result<()> {
        let index = self.index_of(d)?.to_string();
        let root = &self.root;
        let sh = sh()?;
        run(cmd!(sh, "ostree admin --sysroot={root} undeploy {index}"))?;
        Ok(())
    }

    /// Mount `fs` on the booted stateroot's `var/lib/containers` (created if missing); unmounted
    /// when the sysroot drops. Returns the mount point.
    pub fn mount_container_storage(&mut self, fs: TestFs) -> Result<PathBuf> {
        let target = self.paths()?.container_storage();
        self.mount_at(fs, &target)?;
        Ok(target)
    }

    /// Mount `fs` on `target` (created if missing); unmounted when the sysroot drops.
    pub fn mount_at(&mut self, fs: TestFs, target: &Path) -> Result<()> {
        std::fs::create_dir_all(target)
            .with_context(|| format!("creating mount point {}", target.display()))?;
        let m = Mount::new(fs, target, self.scratch.path())?;
        self.mounts.push(m);
        Ok(())
    }

    /// Names of the deployment directories of a stateroot (`<checksum>.<serial>`).
    fn deployment_dirs(&self, stateroot: &str) -> Result<Vec<String>> {
        let dir = self.stateroot_dir(stateroot).join("deploy");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // os-init leaves no deploy/ directory; the first deploy creates it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }
}

impl Drop for TestSysroot {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            // Tools used on a test filesystem may leave mounts inside it (podman's overlay
            // driver bind-mounts its `overlay` directory onto itself): release those first,
            // deepest first, so the filesystem itself unmounts cleanly.
            super::mount::unmount_below(m.target());
            drop(m);
        }
        // podman's runroot for this sandbox lives in /run (see `Paths::podman_storage`).
        if let Ok(paths) = self.paths()
            && let Some((_, runroot)) = paths.podman_storage()
            && runroot.parent() == Some(Path::new("/run"))
            && runroot
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ibu-podman-"))
        {
            super::mount::unmount_below(&runroot);
            let _ = std::fs::remove_dir_all(&runroot);
        }
        // ostree makes each deployment root immutable (chattr +i); clear that so the temporary
        // directory can be removed.
        let mut immutable = Vec::new();
        if let Ok(stateroots) = std::fs::read_dir(self.root.join("ostree/deploy")) {
            for s in stateroots.flatten() {
                if let Ok(ds) = std::fs::read_dir(s.path().join("deploy")) {
                    immutable.extend(
                        ds.flatten()
                            .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|d| d.path()),
                    );
                }
            }
        }
        if !immutable.is_empty() {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .args(&immutable)
                .output();
        }
    }
}

/// Write the tree of `spec` under `root`.
fn write_tree(root: &Path, spec: &CommitSpec) -> Result<()> {
    let seed = format!("{}-{}", spec.name, spec.version);
    let modules = format!("usr/lib/modules/{}", spec.kver);
    let os_release = format!(
        "NAME=\"Test {id}\"\nID={id}\nPRETTY_NAME=\"Test {id} {v}\"\nVERSION_ID={v}\n",
        id = spec.os_id,
        v = spec.version
    );
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        (
            format!("{modules}/vmlinuz"),
            pseudo_bytes(&format!("{seed}-kernel"), spec.kernel_bytes),
            0o644,
        ),
        (
            format!("{modules}/initramfs.img"),
            pseudo_bytes(&format!("{seed}-initramfs"), spec.initramfs_bytes),
            0o644,
        ),
        (
            "usr/share/ibu-test/payload".into(),
            pseudo_bytes(&format!("{seed}-payload"), spec.payload_bytes),
            0o644,
        ),
        (
            "usr/bin/ibu-test-version".into(),
            format!("#!/bin/sh\necho {}\n", spec.version).into_bytes(),
            0o755,
        ),
        (
            "usr/etc/motd".into(),
            format!("test OS {}\n", spec.version).into_bytes(),
            0o644,
        ),
        (
            "usr/etc/hosts".into(),
            b"127.0.0.1 localhost\n".to_vec(),
            0o644,
        ),
    ];
    if spec.os_release_only_in_etc {
        files.push(("usr/etc/os-release".into(), os_release.into_bytes(), 0o644));
    } else {
        files.push(("usr/lib/os-release".into(), os_release.into_bytes(), 0o644));
    }
    for (p, c) in &spec.files {
        let mode = spec
            .modes
            .iter()
            .rev()
            .find(|(m, _)| m == p)
            .map_or(0o644, |(_, mode)| *mode);
        files.push((p.to_string_lossy().into_owned(), c.clone(), mode));
    }
    for (rel, contents, mode) in files {
        let p = root.join(&rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    for (p, target) in &spec.symlinks {
        let link = root.join(p);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::os::unix::fs::symlink(target, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    if !spec.os_release_only_in_etc {
        let link = root.join("usr/etc/os-release");
        std::os::unix::fs::symlink("../lib/os-release", &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

/// Deterministic, incompressible-looking bytes (xorshift64 seeded by an FNV-1a hash of `seed`).
fn pseudo_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut x = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
