//! Restoring a seed's `/var` and `/etc` on a target (Prep, LCA §4 step 6): a real seed host →
//! `write_image` → a target sysroot with the seed's commit deployed into a new stateroot →
//! `restore_var` + `restore_etc` read through `LayoutSource`. The target's `etc` ends up equal
//! to the seed's for every path that travels (content, kind, mode, owner, xattrs, symlink
//! target, mtime of what the seed carried), excluded site files keep the target's defaults,
//! deleted paths are gone, `var` is the seed's `/var` minus exclusions, and nothing outside the
//! new stateroot changes. Also: the first-attempt rule for missing deletion paths.
//!
//! Needs root, the `ostree` CLI and podman (seed collection lists images).

mod common;
mod seed_restore_fixture;

use std::path::{Path, PathBuf};

use anyhow::Result;
use common::snapshot::{assert_same_trees, snapshot};
use ibu::archive::{Meta, TarBuilder};
use ibu::oci::layout::Compression;
use ibu::seed::restore::{ETC_STAMP, RestoreError, discard_etc_attempt, restore_etc, restore_var};
use seed_restore_fixture::{Seed, Target, layout_with, same, same_etc, source};

fn under(p: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| p.starts_with(r))
}

#[test]
fn a_seed_restores_onto_a_target_and_a_second_run_changes_nothing() -> Result<()> {
    let seed = Seed::build()?;
    let t = Target::new()?;
    // Site state on a directory the seed also has: the seed's metadata replaces it exactly.
    rustix::fs::lsetxattr(
        t.etc().join("ssh"),
        "user.target.only",
        b"x",
        rustix::fs::XattrFlags::empty(),
    )?;
    let before = snapshot(&t.etc(), false);
    let outside = t.outside();
    let src = seed.source()?;

    let var = restore_var(&src, &seed.manifest, &t.stateroot())?;
    let etc = restore_etc(
        &src,
        &seed.manifest,
        &t.deployment(),
        &t.stateroot(),
        &seed.deletions,
    )?;

    // /var: exactly what the seed carried, every field.
    assert_same_trees(&seed.expected_var(), &snapshot(&t.var(), false));
    assert!(!t.var().join("lib/ibu").exists() && !t.var().join("tmp/scratch").exists());
    assert_eq!(
        std::fs::read_link(t.var().join("lib/app/passwd-link"))?,
        Path::new("/etc/passwd")
    );

    // /etc, path by path.
    let after = snapshot(&t.etc(), false);
    let excluded: Vec<PathBuf> = seed
        .collected
        .etc_excluded
        .iter()
        .map(|e| e.path.clone())
        .collect();
    let deleted: Vec<PathBuf> = seed
        .deletions
        .iter()
        .map(|d| PathBuf::from(d.strip_prefix("/etc/").unwrap()))
        .collect();
    let entries = seed.etc_entries();
    let mut all: Vec<&PathBuf> = seed
        .etc
        .keys()
        .chain(before.keys())
        .chain(after.keys())
        .collect();
    all.sort();
    all.dedup();
    for p in all {
        let what = format!("etc/{}", p.display());
        let special = seed
            .etc
            .get(p)
            .is_some_and(|s| !matches!(s.kind, "file" | "dir" | "symlink"));
        if under(p, &excluded) || special {
            // Site data and runtime objects: the target keeps what it had.
            match (before.get(p), after.get(p)) {
                (None, None) => {}
                (Some(b), Some(a)) => same(b, a, b.kind != "dir", &what),
                (b, a) => panic!(
                    "{what}: was {:?}, is {:?}",
                    b.map(|s| s.kind),
                    a.map(|s| s.kind)
                ),
            }
        } else if under(p, &deleted) {
            assert!(!after.contains_key(p), "{what} must be deleted");
        } else if !seed.etc.contains_key(p) {
            // Only a default below an entry the seed replaced by a non-directory goes away.
            let replaced = p
                .ancestors()
                .skip(1)
                .any(|a| seed.etc.get(a).is_some_and(|s| s.kind != "dir"));
            assert!(
                replaced && !after.contains_key(p),
                "{what} is not in the seed"
            );
        } else {
            let want = &seed.etc[p];
            let got = after
                .get(p)
                .unwrap_or_else(|| panic!("{what} was not restored"));
            same(want, got, entries.contains(p), &what);
        }
    }
    // The merge rules by example.
    assert_eq!(
        std::fs::read_to_string(t.etc().join("hostname"))?,
        "localhost\n"
    );
    assert!(
        t.etc().join("adjtime").exists(),
        "excluded: the target keeps its default"
    );
    assert!(!t.etc().join("olddir").exists() && !t.etc().join("deleteme.conf").exists());
    assert!(t.etc().join("typechange").is_dir(), "file → directory");
    assert!(t.etc().join("unchanged").is_file(), "directory → file");
    assert_eq!(
        std::fs::read_link(t.etc().join("hosts"))?,
        Path::new("/run/ibu-test/hosts"),
        "file → symlink pointing outside, restored as a symlink"
    );
    assert!(
        !after[Path::new("ssh")]
            .xattrs
            .contains_key("user.target.only")
    );
    assert!(!t.etc().join("ssh/ssh_host_ed25519_key").exists());

    assert_eq!(etc.replaced, 3, "{etc:?}");
    assert_eq!(etc.deleted, seed.deletions.len() as u64);
    assert_eq!((etc.already_deleted, etc.resumed), (0, false));
    assert!(etc.files > 0 && etc.dirs > 0 && etc.symlinks > 0 && etc.bytes > 0);
    assert!(var.files > 0 && var.dirs > 0 && var.symlinks > 0 && var.bytes > 0);
    assert!(etc.summary().contains("3 replaced"), "{}", etc.summary());
    assert!(var.summary().contains(&format!("{} files", var.files)));

    // Nothing else changed; the stamp stays until the caller discards the attempt.
    assert_same_trees(&outside, &t.outside());
    assert_eq!(t.stateroot_names(), ["deploy", ETC_STAMP, "var"]);

    // Running both again (a crash right before the caller recorded success) converges: the
    // stamp makes it a resumed attempt, so the deletions already done are accepted.
    let var2 = restore_var(&src, &seed.manifest, &t.stateroot())?;
    let etc2 = restore_etc(
        &src,
        &seed.manifest,
        &t.deployment(),
        &t.stateroot(),
        &seed.deletions,
    )?;
    assert_eq!(var2, var);
    assert!(etc2.resumed);
    assert_eq!(
        (etc2.deleted, etc2.already_deleted),
        (0, seed.deletions.len() as u64)
    );
    assert!(
        etc2.summary().contains("already gone"),
        "{}",
        etc2.summary()
    );
    assert_same_trees(&seed.expected_var(), &snapshot(&t.var(), false));
    same_etc(&after, &snapshot(&t.etc(), false), &entries);
    assert_same_trees(&outside, &t.outside());

    discard_etc_attempt(&t.stateroot())?;
    assert_eq!(t.stateroot_names(), ["deploy", "var"]);
    Ok(())
}

/// A small tar of synthesized entries: (path, Some(content)) for files, (path, None) for dirs.
fn tar_of(entries: &[(&str, Option<&str>)]) -> Result<Vec<u8>> {
    let mut tar = TarBuilder::new(Vec::new());
    for (path, content) in entries {
        match content {
            Some(c) => {
                tar.append_bytes(Path::new(path), &Meta::root(0o644), c.as_bytes())?;
            }
            None => tar.append_dir(Path::new(path), &Meta::root(0o755))?,
        }
    }
    Ok(tar.finish()?.0)
}

#[test]
fn a_first_attempt_fails_on_a_missing_deletion_path_before_changing_anything() -> Result<()> {
    let t = Target::new()?;
    let etc_layer = tar_of(&[("seed/etc", None), ("seed/etc/motd", Some("seed motd\n"))])?;
    let var_layer = tar_of(&[("seed/var", None)])?;
    let (layout, manifest) = layout_with(&[
        ("etc", etc_layer, Compression::Gzip),
        ("var", var_layer, Compression::Gzip),
    ])?;
    let src = source(layout.path())?;
    // The target's defaults differ from the seed's: one deletion path is not there.
    std::fs::remove_file(t.etc().join("xattr.conf"))?;
    let before = snapshot(&t.etc(), true);
    let deletions = vec![
        "/etc/deleteme.conf".to_string(),
        "/etc/xattr.conf".to_string(),
        "/etc/olddir/nope".to_string(),
    ];
    for attempt in 0..2 {
        let err = restore_etc(&src, &manifest, &t.deployment(), &t.stateroot(), &deletions)
            .expect_err("a missing deletion path fails a first attempt");
        match err.downcast_ref::<RestoreError>() {
            Some(RestoreError::MissingDeletions { paths }) => {
                assert_eq!(paths, &["/etc/xattr.conf", "/etc/olddir/nope"], "{err:#}")
            }
            _ => panic!("attempt {attempt}: not MissingDeletions: {err:#}"),
        }
        assert!(format!("{err:#}").contains("/etc/xattr.conf"));
        // Nothing changed (the motd was not moved in), no stamp: the retry is a first attempt.
        assert_same_trees(&before, &snapshot(&t.etc(), true));
        assert_eq!(t.stateroot_names(), ["deploy", "var"]);
    }
    // With the paths that exist it goes through.
    let r = restore_etc(
        &src,
        &manifest,
        &t.deployment(),
        &t.stateroot(),
        &deletions[..1],
    )?;
    assert_eq!((r.files, r.deleted, r.replaced), (1, 1, 0));
    assert_eq!(
        std::fs::read_to_string(t.etc().join("motd"))?,
        "seed motd\n"
    );
    Ok(())
}
