//! Seed collection on real directory sysroots: the hosts it refuses, what it warns about, and
//! the work directory rules.
//!
//! Needs root, the `ostree` CLI and podman.

mod common;

use std::path::Path;

use anyhow::{Context, Result};
use common::seed::{Scene, error_of, is_empty_dir, seed_commit};
use common::{CommitSpec, Deploy, TestFs, TestSysroot};
use ibu::facts::Live;
use ibu::seed::collect;
use ibu::status::store::Recorded;

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
