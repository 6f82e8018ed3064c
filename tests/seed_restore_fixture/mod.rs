//! Shared by the `seed_restore*` tests: a real seed (the [`Scene`] seed host, configured, then
//! written by `ibu::seed::create::write_image`), a target sysroot with the seed's commit
//! deployed into a new stateroot, hand-made OCI layouts for hostile layers, and comparisons.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ibu::oci::layout::{Compression, LayoutReader, LayoutWriter};
use ibu::oci::{
    ContainerConfig, ImageConfig, ImageManifest, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, RootFs,
};
use ibu::seed::collect::{Collected, Kind};
use ibu::seed::format::{ANNOTATION_ROLE, LABEL_FORMAT_VERSION};
use ibu::seed::source::{LayoutSource, SeedSource};

use crate::common::seed::{Scene, seed_commit, write};
use crate::common::snapshot::{Snap, snapshot};
use crate::common::{CommitSpec, Deploy, Deployed, TestSysroot};

pub const NEW_STATEROOT: &str = "debian_4.16.3";

/// A seed image in an OCI layout, with what collection found on the seed host.
pub struct Seed {
    pub collected: Collected,
    pub manifest: ImageManifest,
    pub deletions: Vec<String>,
    /// The seed host's `etc` and `var`, snapshotted after the image was written.
    pub etc: BTreeMap<PathBuf, Snap>,
    pub var: BTreeMap<PathBuf, Snap>,
    pub layout: tempfile::TempDir,
    pub scene: Scene,
}

pub fn source(layout: &Path) -> Result<LayoutSource> {
    Ok(LayoutSource {
        reader: LayoutReader::open(layout)?,
        ref_name: None,
        path: layout.to_path_buf(),
    })
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .with_context(|| format!("setting {name} on {}", path.display()))
}

/// Whether root may set `security.selinux` under `dir` (no LSM needed: the kernel stores it).
pub fn selinux_works(dir: &Path) -> bool {
    let probe = dir.join(".selinux-probe");
    if std::fs::write(&probe, b"").is_err() {
        return false;
    }
    let ok = set_xattr(&probe, "security.selinux", b"system_u:object_r:etc_t:s0\0").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

impl Seed {
    /// The scene's seed host with `/etc` and `/var` configured, plus what exercises every merge
    /// rule: foreign owners, xattrs and SELinux labels on files and on a directory both sides
    /// have, a default directory replaced by a file, a default file replaced by a symlink that
    /// points outside.
    pub fn build() -> Result<Seed> {
        let scene = Scene::new()?;
        scene.configure_etc()?;
        scene.configure_var()?;
        let etc = scene.etc.clone();
        let chown = |p: &Path, u: u32, g: u32| std::os::unix::fs::lchown(p, Some(u), Some(g));
        chown(&etc.join("motd"), 1234, 5678)?;
        set_xattr(&etc.join("motd"), "trusted.ibu.test", b"t")?;
        // `ssh` exists in the defaults: the seed changes the directory itself.
        let ssh = etc.join("ssh");
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o710))?;
        chown(&ssh, 0, 4242)?;
        set_xattr(&ssh, "user.ibu.dir", b"seed's ssh\n")?;
        if selinux_works(&etc) {
            set_xattr(
                &ssh,
                "security.selinux",
                b"system_u:object_r:sshd_key_t:s0\0",
            )?;
            set_xattr(
                &etc.join("newdir"),
                "security.selinux",
                b"system_u:object_r:etc_t:s0\0",
            )?;
        }
        // A default directory becomes a file, a default file a symlink out of /etc.
        std::fs::remove_dir_all(etc.join("unchanged"))?;
        write(&etc.join("unchanged"), "was a directory\n")?;
        std::fs::remove_file(etc.join("hosts"))?;
        std::os::unix::fs::symlink("/run/ibu-test/hosts", etc.join("hosts"))?;
        // A subtree the target lacks, with a foreign owner deep inside.
        write(&etc.join("app/conf.d/10-a.conf"), "a\n")?;
        chown(&etc.join("app/conf.d"), 1000, 1000)?;
        scene.var_write("lib/app/owned", "owned\n")?;
        chown(&scene.paths.var.join("lib/app/owned"), 3_000_000, 4_000_000)?;
        set_xattr(
            &scene.paths.var.join("lib/app"),
            "user.ibu.var",
            b"on a directory",
        )?;

        let collected = scene.collect()?;
        let layout = tempfile::Builder::new().prefix("ibu-seed-").tempdir()?;
        let dir = layout.path().join("oci");
        let (manifest, _) = ibu::seed::create::write_image(&collected, &dir, "latest")?;
        let deletions = collected
            .etc_deletions
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let etc_snap = snapshot(&collected.etc_dir, false);
        let var_snap = snapshot(&collected.var_dir, false);
        Ok(Seed {
            collected,
            manifest,
            deletions,
            etc: etc_snap,
            var: var_snap,
            layout,
            scene,
        })
    }

    pub fn layout_dir(&self) -> PathBuf {
        self.layout.path().join("oci")
    }

    pub fn source(&self) -> Result<LayoutSource> {
        source(&self.layout_dir())
    }

    /// Directories the etc layer names (they get the seed's metadata, mtime included).
    pub fn etc_entries(&self) -> BTreeSet<PathBuf> {
        self.collected
            .etc
            .iter()
            .filter(|e| e.kind != Kind::Special)
            .map(|e| e.path.clone())
            .collect()
    }

    /// The seed's `/var` as it went into the image.
    pub fn expected_var(&self) -> BTreeMap<PathBuf, Snap> {
        self.collected
            .var
            .iter()
            .filter(|e| e.kind != Kind::Special)
            .map(|e| (e.path.clone(), self.var[&e.path].clone()))
            .collect()
    }
}

/// A target: its own sysroot with an old OS booted in `debian` and the seed's commit (the same
/// tree) deployed into [`NEW_STATEROOT`], as Prep leaves it before the restore.
pub struct Target {
    pub new: Deployed,
    pub sr: TestSysroot,
}

impl Target {
    pub fn new() -> Result<Target> {
        let mut sr = TestSysroot::new()?;
        sr.commit(CommitSpec::new("old", "4.15.0"))?;
        sr.commit(seed_commit())?;
        let old = sr.deploy("debian", "old", &Deploy::new())?;
        sr.boot(&old)?;
        let new = sr.deploy(
            NEW_STATEROOT,
            "seed",
            &Deploy::new().not_as_default().karg("ibu=4.16.3"),
        )?;
        Ok(Target { new, sr })
    }

    pub fn stateroot(&self) -> PathBuf {
        self.sr.stateroot_dir(NEW_STATEROOT)
    }

    pub fn deployment(&self) -> PathBuf {
        self.sr.deployment_dir(&self.new)
    }

    pub fn etc(&self) -> PathBuf {
        self.deployment().join("etc")
    }

    pub fn var(&self) -> PathBuf {
        self.stateroot().join("var")
    }

    /// Everything in the sysroot except the new stateroot.
    pub fn outside(&self) -> BTreeMap<PathBuf, Snap> {
        let skip = Path::new("ostree/deploy").join(NEW_STATEROOT);
        let mut s = snapshot(self.sr.path(), false);
        s.retain(|p, _| !p.starts_with(&skip));
        s
    }

    /// Names in the new stateroot directory (no staging, spool or stamp left).
    pub fn stateroot_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.stateroot())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// The fields compared between restored trees: kind, content, symlink target, mode (not of a
/// symlink), owner, xattrs, and the mtime when `mtime` says so.
pub fn same(want: &Snap, got: &Snap, mtime: bool, what: &str) {
    assert_eq!(want.kind, got.kind, "{what}: kind");
    assert_eq!(want.content, got.content, "{what}: content");
    assert_eq!(want.link, got.link, "{what}: symlink target");
    if want.kind != "symlink" {
        assert_eq!(
            format!("{:04o}", want.mode),
            format!("{:04o}", got.mode),
            "{what}: mode"
        );
    }
    assert_eq!((want.uid, want.gid), (got.uid, got.gid), "{what}: owner");
    assert_eq!(want.xattrs, got.xattrs, "{what}: xattrs");
    if mtime {
        assert_eq!(want.mtime, got.mtime, "{what}: mtime");
    }
}

/// Compare two restored `etc` trees: every field, mtimes of files and symlinks always and of
/// directories only for those in `explicit_dirs` (the others are the target's own, touched by
/// renames at whatever time they ran).
pub fn same_etc(
    want: &BTreeMap<PathBuf, Snap>,
    got: &BTreeMap<PathBuf, Snap>,
    explicit: &BTreeSet<PathBuf>,
) {
    let w: Vec<_> = want.keys().collect();
    let g: Vec<_> = got.keys().collect();
    assert_eq!(w, g, "the same paths in etc");
    for (p, ws) in want {
        let mtime = ws.kind != "dir" || explicit.contains(p);
        same(ws, &got[p], mtime, &format!("etc/{}", p.display()));
    }
}

/// An OCI layout in a new temporary directory with the given layers: (role, uncompressed tar
/// bytes, compression).
pub fn layout_with(
    layers: &[(&str, Vec<u8>, Compression)],
) -> Result<(tempfile::TempDir, ImageManifest)> {
    let tmp = tempfile::Builder::new()
        .prefix("ibu-hand-seed-")
        .tempdir()?;
    let layout = LayoutWriter::create(tmp.path())?;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (role, bytes, compression) in layers {
        let mut w = layout.layer(*compression)?;
        w.write_all(bytes)?;
        let (mut d, id) = w.finish()?;
        d.annotations
            .insert(ANNOTATION_ROLE.to_string(), role.to_string());
        descs.push(d);
        diff_ids.push(id);
    }
    let config = ImageConfig {
        created: Some("2024-01-01T00:00:00Z".into()),
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ContainerConfig {
            labels: [(LABEL_FORMAT_VERSION.to_string(), "1".to_string())].into(),
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history: Vec::new(),
    };
    let config = layout.add_json_blob(MEDIA_TYPE_CONFIG, &config)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_MANIFEST.into()),
        config,
        layers: descs,
        annotations: Default::default(),
    };
    layout.finish(&manifest, "latest")?;
    let (read_back, _) = source(tmp.path())?.manifest()?;
    Ok((tmp, read_back))
}

/// Copy a tree with everything (`cp -a`), `from/.` into `to`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let sh = crate::common::sh()?;
    let src = from.join(".");
    crate::common::run(xshell::cmd!(sh, "cp -a {src} {to}"))?;
    Ok(())
}

/// Empty a directory (not the directory itself).
pub fn empty_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if std::fs::symlink_metadata(&p)?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}
