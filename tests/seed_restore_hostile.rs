//! Hostile seeds against the restore: layers with names, links and files that try to reach
//! outside or that `/etc` has no business carrying, and `etc.deletions` entries that try to
//! delete outside `etc`. Each is rejected with an error naming the entry, and **nothing is
//! written or deleted**: not outside the new stateroot (the whole sysroot is snapshotted), not
//! in the new deployment's `etc` or the stateroot's `var`, and no staging is left behind.
//!
//! The layouts are built by hand with `LayoutWriter` from raw tar bytes
//! (`archive_fixture::RawTar`), since no well-behaved tar writer produces these archives.

// For `RawTar`; it loads `common/snapshot.rs` too, which `common` also does (harmless here).
#[allow(clippy::duplicate_mod)]
mod archive_fixture;
mod common;
mod seed_restore_fixture;

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::Result;
use archive_fixture::{RawTar, capability_value};
use common::snapshot::{Snap, assert_same_trees, snapshot};
use ibu::archive::{ExtractError, Reason};
use ibu::oci::ImageManifest;
use ibu::oci::layout::Compression;
use ibu::seed::restore::{RestoreError, restore_etc, restore_var};
use seed_restore_fixture::{Target, layout_with, source};

/// A target with a victim directory outside the new stateroot, and everything snapshotted.
struct Scene {
    t: Target,
    /// `<sysroot>/ostree/deploy/debian/var/victim` (the booted stateroot), holding `secret`.
    victim: PathBuf,
    outside: BTreeMap<PathBuf, Snap>,
    etc: BTreeMap<PathBuf, Snap>,
    var: BTreeMap<PathBuf, Snap>,
}

impl Scene {
    fn new() -> Result<Scene> {
        let t = Target::new()?;
        let victim = t.sr.stateroot_dir("debian").join("var/victim");
        std::fs::create_dir_all(&victim)?;
        std::fs::write(victim.join("secret"), "untouched")?;
        // Symlinks already in the target's etc: out of the sysroot's reach and inside etc.
        symlink(&victim, t.etc().join("outlink"))?;
        symlink("ssh", t.etc().join("inlink"))?;
        Ok(Scene {
            outside: t.outside(),
            etc: snapshot(&t.etc(), true),
            var: snapshot(&t.var(), true),
            victim,
            t,
        })
    }

    /// `victim` without its leading `/`: a name that reaches it through a symlink to `/`.
    fn victim_rel(&self) -> String {
        self.victim
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string()
    }

    fn unchanged(&self, what: &str) {
        assert_same_trees(&self.outside, &self.t.outside());
        assert_same_trees(&self.etc, &snapshot(&self.t.etc(), true));
        assert_same_trees(&self.var, &snapshot(&self.t.var(), true));
        assert_eq!(
            self.t.stateroot_names(),
            ["deploy", "var"],
            "{what}: leftovers"
        );
        assert_eq!(
            std::fs::read_to_string(self.victim.join("secret")).unwrap(),
            "untouched"
        );
        assert_eq!(
            std::fs::read_dir(&self.victim).unwrap().count(),
            1,
            "{what}: nothing planted next to the victim"
        );
    }

    fn etc(&self, manifest: &ImageManifest, layout: &Path, deletions: &[&str]) -> anyhow::Error {
        let dels: Vec<String> = deletions.iter().map(|d| d.to_string()).collect();
        restore_etc(
            &source(layout).unwrap(),
            manifest,
            &self.t.deployment(),
            &self.t.stateroot(),
            &dels,
        )
        .expect_err("a hostile seed must be rejected")
    }
}

/// A seed whose etc layer is `etc` (raw tar bytes) and whose var layer is empty.
fn seed_with_etc(etc: Vec<u8>) -> (tempfile::TempDir, ImageManifest) {
    let var = RawTar::new().dir("seed/var/").finish();
    layout_with(&[
        ("etc", etc, Compression::Gzip),
        ("var", var, Compression::Gzip),
    ])
    .unwrap()
}

fn seed_with_var(var: Vec<u8>) -> (tempfile::TempDir, ImageManifest) {
    let etc = RawTar::new().dir("seed/etc/").finish();
    layout_with(&[
        ("etc", etc, Compression::Gzip),
        ("var", var, Compression::Gzip),
    ])
    .unwrap()
}

fn rejection(err: &anyhow::Error, entry: &str) -> Reason {
    let msg = format!("{err:#}");
    let (got, why) = ExtractError::find(err).unwrap_or_else(|| panic!("not a rejection: {msg}"));
    assert!(
        got.contains(entry),
        "rejected {got:?}, expected {entry:?}: {msg}"
    );
    assert!(msg.contains("rejected") && msg.contains(entry), "{msg}");
    why.clone()
}

/// An etc layer: a harmless file first (it must not reach etc either), then `hostile`.
fn etc_layer(hostile: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut tar = RawTar::new();
    tar.dir("seed/etc/")
        .file("seed/etc/motd", b"from a hostile seed\n");
    hostile(&mut tar);
    tar.finish()
}

#[test]
fn hostile_etc_layers_are_rejected_and_change_nothing() {
    let s = Scene::new().unwrap();
    let victim_rel = s.victim_rel();
    let victim_abs = s.victim.to_str().unwrap().to_string();
    type Case = (String, Vec<u8>, Reason);
    let link = |c: &str| Reason::ThroughSymlink {
        component: c.into(),
    };
    let mut cases: Vec<Case> = vec![
        (
            "seed/etc/../escape".into(),
            etc_layer(|t| {
                t.file("seed/etc/../escape", b"pwned");
            }),
            Reason::ParentComponent,
        ),
        (
            "/etc/passwd".into(),
            etc_layer(|t| {
                t.file("/etc/passwd", b"pwned");
            }),
            Reason::AbsolutePath,
        ),
        (
            "seed/etc/link/etc/passwd".into(),
            etc_layer(|t| {
                t.symlink("seed/etc/link", "/")
                    .file("seed/etc/link/etc/passwd", b"pwned");
            }),
            link("link"),
        ),
        (
            format!("seed/etc/link/{victim_rel}/planted"),
            etc_layer(|t| {
                let name = format!("seed/etc/link/{victim_rel}/planted");
                t.symlink("seed/etc/link", "/")
                    .pax(&[("path", name.as_bytes())])
                    .file("x", b"pwned");
            }),
            link("link"),
        ),
        (
            "seed/etc/h".into(),
            etc_layer(|t| {
                t.hardlink("seed/etc/h", "../../x");
            }),
            Reason::HardlinkTarget {
                target: "../../x".into(),
                why: "path contains `..`".into(),
            },
        ),
        (
            "seed/etc/h".into(),
            etc_layer(|t| {
                t.pax(&[("linkpath", format!("{victim_abs}/secret").as_bytes())])
                    .hardlink("seed/etc/h", "x");
            }),
            Reason::HardlinkTarget {
                target: format!("{victim_abs}/secret"),
                why: "absolute path".into(),
            },
        ),
        (
            "seed/etc/null".into(),
            etc_layer(|t| {
                t.entry_dev(b"seed/etc/null", b'3', 0o666, b"", b"", (1, 3));
            }),
            Reason::DeviceNotAllowed,
        ),
        (
            "seed/etc/sda".into(),
            etc_layer(|t| {
                t.entry_dev(b"seed/etc/sda", b'4', 0o660, b"", b"", (8, 0));
            }),
            Reason::DeviceNotAllowed,
        ),
        (
            "seed/etc/fifo".into(),
            etc_layer(|t| {
                t.entry(b"seed/etc/fifo", b'6', 0o600, b"", b"");
            }),
            Reason::DeviceNotAllowed,
        ),
        (
            "seed/etc/su".into(),
            etc_layer(|t| {
                t.entry(b"seed/etc/su", b'0', 0o4755, b"", b"#!/bin/sh\n");
            }),
            Reason::SetIdNotAllowed { mode: 0o4755 },
        ),
        (
            "seed/etc/sg".into(),
            etc_layer(|t| {
                t.entry(b"seed/etc/sg", b'0', 0o2711, b"", b"#!/bin/sh\n");
            }),
            Reason::SetIdNotAllowed { mode: 0o2711 },
        ),
        (
            "seed/etc/capable".into(),
            etc_layer(|t| {
                let cap = capability_value();
                t.pax(&[("SCHILY.xattr.security.capability", &cap)])
                    .file("seed/etc/capable", b"#!/bin/sh\n");
            }),
            Reason::CapabilityNotAllowed,
        ),
        (
            "seed/var/x".into(),
            etc_layer(|t| {
                t.file("seed/var/x", b"not etc");
            }),
            Reason::OutsidePrefix {
                prefix: "seed/etc".into(),
            },
        ),
    ];
    for (entry, bytes, want) in cases.drain(..) {
        let (layout, manifest) = seed_with_etc(bytes);
        let err = s.etc(&manifest, layout.path(), &["/etc/deleteme.conf"]);
        assert_eq!(rejection(&err, &entry), want, "{entry}");
        assert!(
            format!("{err:#}").contains("etc layer"),
            "the error names the layer: {err:#}"
        );
        s.unchanged(&entry);
    }
}

#[test]
fn hostile_var_layers_are_rejected_and_change_nothing() {
    let s = Scene::new().unwrap();
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "seed/var/lib/null",
            RawTar::new()
                .dir("seed/var/")
                .dir("seed/var/lib/")
                .entry_dev(b"seed/var/lib/null", b'3', 0o666, b"", b"", (1, 3))
                .finish(),
            Reason::DeviceNotAllowed,
        ),
        (
            "seed/var/../../x",
            RawTar::new()
                .dir("seed/var/")
                .file("seed/var/../../x", b"pwned")
                .finish(),
            Reason::ParentComponent,
        ),
        (
            "seed/var/l/pwned",
            RawTar::new()
                .dir("seed/var/")
                .symlink("seed/var/l", "/")
                .file("seed/var/l/pwned", b"pwned")
                .finish(),
            Reason::ThroughSymlink {
                component: "l".into(),
            },
        ),
    ];
    for (entry, bytes, want) in cases {
        let (layout, manifest) = seed_with_var(bytes);
        let err = restore_var(&source(layout.path()).unwrap(), &manifest, &s.t.stateroot())
            .expect_err("a hostile var layer must be rejected");
        assert_eq!(rejection(&err, entry), want, "{entry}");
        s.unchanged(entry);
    }

    // Setuid files are fine in /var (unlike /etc): the seed's author controls the OS anyway.
    let (layout, manifest) = seed_with_var(
        RawTar::new()
            .dir("seed/var/")
            .entry(b"seed/var/helper", b'0', 0o4755, b"", b"#!/bin/sh\n")
            .finish(),
    );
    restore_var(&source(layout.path()).unwrap(), &manifest, &s.t.stateroot()).unwrap();
    let md = std::fs::metadata(s.t.var().join("helper")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o4755);
}

#[test]
fn hostile_deletions_are_rejected_before_anything_changes() {
    let s = Scene::new().unwrap();
    let victim_abs = s.victim.to_str().unwrap().to_string();
    // The seed brings a symlink out of etc, and a file (neither may arrive when a deletion is bad).
    let etc = RawTar::new()
        .dir("seed/etc/")
        .file("seed/etc/motd", b"seed\n")
        .symlink("seed/etc/seedlink", &victim_abs)
        .finish();
    let (layout, manifest) = seed_with_etc(etc);
    let cases: Vec<(&str, &str)> = vec![
        ("/etc/../../x", "`..`"),
        ("/etc/../../../../../../../../etc/passwd", "`..`"),
        ("/etc/outlink/secret", "/etc/outlink is a symlink"),
        ("/etc/seedlink/secret", "/etc/seedlink is a symlink"),
        ("/etc/inlink/sshd_config", "/etc/inlink is a symlink"),
        ("etc/passwd", "not a path below /etc/"),
        ("/var/lib/x", "not a path below /etc/"),
        ("/etc", "not a path below /etc/"),
        ("/etc/", "empty path component"),
        ("/etc/./motd", "`.`"),
        ("/etc//motd", "empty path component"),
    ];
    for (entry, why) in cases {
        // A good deletion first: it must not happen either.
        let err = s.etc(&manifest, layout.path(), &["/etc/deleteme.conf", entry]);
        let msg = format!("{err:#}");
        match err.downcast_ref::<RestoreError>() {
            Some(RestoreError::BadDeletion { entry: e, why: w }) => {
                assert_eq!(e, entry, "{msg}");
                assert!(w.contains(why), "{entry}: {msg}");
            }
            _ => panic!("{entry}: not a BadDeletion: {msg}"),
        }
        assert!(msg.contains(entry), "{msg}");
        s.unchanged(entry);
    }

    // Deleting a symlink removes the link, never what it points to; a directory goes with its
    // content.
    let r = restore_etc(
        &source(layout.path()).unwrap(),
        &manifest,
        &s.t.deployment(),
        &s.t.stateroot(),
        &[
            "/etc/outlink".to_string(),
            "/etc/seedlink".to_string(),
            "/etc/olddir".to_string(),
        ],
    )
    .unwrap();
    assert_eq!(r.deleted, 3);
    let etc = s.t.etc();
    assert!(std::fs::symlink_metadata(etc.join("outlink")).is_err());
    assert!(std::fs::symlink_metadata(etc.join("seedlink")).is_err());
    assert!(!etc.join("olddir").exists());
    assert_eq!(
        std::fs::read_to_string(s.victim.join("secret")).unwrap(),
        "untouched"
    );
    assert_same_trees(&s.outside, &s.t.outside());
}

#[test]
fn symlinks_in_the_target_are_replaced_never_written_through() {
    let s = Scene::new().unwrap();
    // The target's `outlink` points at the victim directory, `inlink` at `ssh`: the seed has a
    // directory and a file there. The merge must replace the links, not write through them.
    let etc = RawTar::new()
        .dir("seed/etc/")
        .dir("seed/etc/outlink/")
        .file("seed/etc/outlink/secret", b"the seed's own\n")
        .file("seed/etc/inlink", b"a file now\n")
        .finish();
    let (layout, manifest) = seed_with_etc(etc);
    let r = restore_etc(
        &source(layout.path()).unwrap(),
        &manifest,
        &s.t.deployment(),
        &s.t.stateroot(),
        &[],
    )
    .unwrap();
    assert_eq!(r.replaced, 2);
    let etc = s.t.etc();
    assert!(
        std::fs::symlink_metadata(etc.join("outlink"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("outlink/secret")).unwrap(),
        "the seed's own\n"
    );
    assert!(
        std::fs::symlink_metadata(etc.join("inlink"))
            .unwrap()
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("ssh/sshd_config")).unwrap(),
        "PermitRootLogin no\n",
        "nothing written into the directory the link pointed at"
    );
    assert_eq!(
        std::fs::read_to_string(s.victim.join("secret")).unwrap(),
        "untouched"
    );
    assert_same_trees(&s.outside, &s.t.outside());
    // Everything else in etc is as it was.
    let after = snapshot(&etc, false);
    for (p, snap) in &s.etc {
        if p.as_os_str().is_empty() || p.starts_with("outlink") || p == Path::new("inlink") {
            continue;
        }
        assert_eq!(Some(snap), after.get(p), "etc/{}", p.display());
    }
}
