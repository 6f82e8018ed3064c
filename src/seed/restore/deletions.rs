//! `etc.deletions`: paths of the commit's `/etc` defaults the seed removed.
//!
//! An entry comes from the seed, so it is checked like an archive name: `/etc/` then a relative
//! path of real components (no `.`, `..`, empty component or NUL). It is resolved one
//! component at a time through `O_NOFOLLOW` directory handles from `etc`; a symlink on the way
//! is an error (even one pointing inside `etc`: the seed named a path, not a link), and the last
//! component is removed as what it is (a symlink is unlinked, a directory removed with its
//! content), so nothing outside `etc` can be reached.
//!
//! [`check`] runs before `etc` is touched and answers for `etc` *as the merge will leave it*:
//! where the staged seed tree has an entry, that entry is what will be there. So a deletion
//! through a symlink the seed brings is rejected before anything changed, and a first attempt
//! fails on a missing path with `etc` as deployed.

use std::ffi::OsString;

use anyhow::{Context, Result};
use cap_std::fs::Dir;

use super::fsops::{self, Kind};
use super::{Checkpoint, RestoreError, RestoreReport, Step};

/// A parsed `etc.deletions` entry.
#[derive(Debug, Clone)]
pub(super) struct Deletion {
    /// As listed.
    pub entry: String,
    /// Components below `etc` (at least one).
    comps: Vec<OsString>,
}

fn bad(entry: &str, why: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(RestoreError::BadDeletion {
        entry: entry.to_string(),
        why: why.into(),
    })
}

/// Parse every entry (an error names the first bad one).
pub(super) fn parse(entries: &[String]) -> Result<Vec<Deletion>> {
    entries.iter().map(|e| parse_one(e)).collect()
}

fn parse_one(entry: &str) -> Result<Deletion> {
    let rest = entry
        .strip_prefix("/etc/")
        .ok_or_else(|| bad(entry, "not a path below /etc/"))?;
    let mut comps = Vec::new();
    for c in rest.split('/') {
        match c {
            "" => return Err(bad(entry, "empty path component")),
            "." => return Err(bad(entry, "`.` component")),
            ".." => return Err(bad(entry, "`..` component")),
            c if c.contains('\0') => return Err(bad(entry, "NUL byte")),
            c if c.len() > 255 => return Err(bad(entry, "path component over 255 bytes")),
            c => comps.push(OsString::from(c)),
        }
    }
    Ok(Deletion {
        entry: entry.to_string(),
        comps,
    })
}

fn through_symlink(d: &Deletion, upto: usize) -> anyhow::Error {
    let link: Vec<_> = d.comps[..=upto]
        .iter()
        .map(|c| c.to_string_lossy())
        .collect();
    bad(
        &d.entry,
        format!(
            "/etc/{} is a symlink; a deletion never goes through one",
            link.join("/")
        ),
    )
}

fn kind(dir: Option<&Dir>, name: &OsString) -> Result<Option<Kind>> {
    match dir {
        None => Ok(None),
        Some(d) => Ok(fsops::lstat(d, name)?.map(|n| n.kind)),
    }
}

fn open(dir: Option<&Dir>, name: &OsString, k: Option<Kind>) -> Result<Option<Dir>> {
    match (dir, k) {
        (Some(d), Some(Kind::Dir)) => Ok(Some(fsops::open_dir(d, name)?)),
        _ => Ok(None),
    }
}

/// Whether `d` names something in `etc` once `staging` is merged into it.
fn present_after_merge(staging: &Dir, etc: &Dir, d: &Deletion) -> Result<bool> {
    let Some((leaf, parents)) = d.comps.split_last() else {
        return Ok(false);
    };
    let mut s = Some(staging.try_clone()?);
    let mut e = Some(etc.try_clone()?);
    for (i, c) in parents.iter().enumerate() {
        let sk = kind(s.as_ref(), c)?;
        let ek = kind(e.as_ref(), c)?;
        // The seed's entry, where it has one, is what the merge leaves there.
        match sk.or(ek) {
            Some(Kind::Dir) => {}
            Some(Kind::Symlink) => return Err(through_symlink(d, i)),
            // Missing, or not a directory: nothing below it.
            _ => return Ok(false),
        }
        let next_s = open(s.as_ref(), c, sk)?;
        let next_e = open(e.as_ref(), c, ek)?;
        s = next_s;
        e = next_e;
    }
    Ok(kind(s.as_ref(), leaf)?.is_some() || kind(e.as_ref(), leaf)?.is_some())
}

/// Check every deletion against `etc` as the merge of `staging` will leave it, before either is
/// changed. Unsafe entries are errors; missing paths are errors on a first attempt and
/// expected on a resumed one.
pub(super) fn check(staging: &Dir, etc: &Dir, dels: &[Deletion], resumed: bool) -> Result<()> {
    let mut missing = Vec::new();
    for d in dels {
        let present = present_after_merge(staging, etc, d).map_err(|e| {
            if e.downcast_ref::<RestoreError>().is_some() {
                e
            } else {
                e.context(format!("checking etc.deletions entry {}", d.entry))
            }
        })?;
        if !present {
            missing.push(d.entry.clone());
        }
    }
    if !missing.is_empty() {
        if !resumed {
            return Err(RestoreError::MissingDeletions { paths: missing }.into());
        }
        tracing::info!(
            "etc.deletions paths already gone after an interrupted attempt: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Delete every path of `dels` from `etc` that is there.
pub(super) fn apply(
    etc: &Dir,
    dels: &[Deletion],
    cp: Checkpoint<'_>,
    report: &mut RestoreReport,
) -> Result<()> {
    for d in dels {
        let found = locate(etc, d).with_context(|| format!("deleting {}", d.entry))?;
        match found {
            None => report.already_deleted += 1,
            Some((parent, leaf)) => {
                cp(&Step::Delete(d.entry.clone()))?;
                fsops::remove_tree(&parent, &leaf)
                    .with_context(|| format!("deleting {}", d.entry))?;
                report.deleted += 1;
            }
        }
    }
    Ok(())
}

/// The parent directory handle and name of `d` in `etc`, if it exists.
fn locate(etc: &Dir, d: &Deletion) -> Result<Option<(Dir, OsString)>> {
    let Some((leaf, parents)) = d.comps.split_last() else {
        return Ok(None);
    };
    let mut dir = etc.try_clone()?;
    for (i, c) in parents.iter().enumerate() {
        match fsops::lstat(&dir, c)?.map(|n| n.kind) {
            Some(Kind::Dir) => dir = fsops::open_dir(&dir, c)?,
            Some(Kind::Symlink) => return Err(through_symlink(d, i)),
            _ => return Ok(None),
        }
    }
    Ok(fsops::lstat(&dir, leaf)?.map(|_| (dir, leaf.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_like_archive_names() {
        for good in ["/etc/a", "/etc/a/b.conf", "/etc/with space", "/etc/.hidden"] {
            assert!(parse_one(good).is_ok(), "{good}");
        }
        for bad in [
            "/etc",
            "/etc/",
            "etc/passwd",
            "/var/lib/x",
            "/etc/../../x",
            "/etc/a/../b",
            "/etc/./a",
            "/etc//a",
            "/etc/a/",
            "/etc/a\0b",
            "/etcetera/x",
        ] {
            let err = parse_one(bad).expect_err(bad);
            assert!(
                matches!(
                    err.downcast_ref::<RestoreError>(),
                    Some(RestoreError::BadDeletion { entry, .. }) if entry == bad
                ),
                "{bad}: {err:#}"
            );
        }
        let long = format!("/etc/{}", "x".repeat(256));
        assert!(parse_one(&long).is_err());
    }
}
