//! `containers.list` from real podman storage in a seed sandbox.
//!
//! The sandbox's `/var/lib/containers` is a tmpfs mount; images are built locally with buildah
//! (no registry needed) into the storage ibu's podman uses for that sandbox
//! ([`Podman::global_args`]), tagged with podman, and one tag is rebuilt so its first image is
//! left dangling. Expected pull-specs are read back from podman itself (`image inspect`).
//!
//! Needs root, the `ostree` CLI, podman and buildah.

mod common;

use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context, Result, bail};
use common::{CommitSpec, Deploy, TestFs, TestSysroot};
use ibu::facts::{Live, Observe};
use ibu::images::podman::Podman;
use ibu::paths::Paths;
use ibu::seed::collect;
use ibu::status::store::Recorded;

fn run(program: &str, args: &[OsString]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn podman(paths: &Paths, args: &[&str]) -> Result<String> {
    let mut a = Podman::global_args(paths);
    a.extend(os(args));
    run("podman", &a)
}

fn buildah(paths: &Paths, args: &[&str]) -> Result<String> {
    let (root, runroot) = paths
        .podman_storage()
        .context("a sandbox has its own storage")?;
    let mut a: Vec<OsString> = vec![
        "--root".into(),
        root.into(),
        "--runroot".into(),
        runroot.into(),
    ];
    a.extend(os(args));
    run("buildah", &a)
}

/// Build a one-file image from scratch named `name` (or unnamed); returns its ID.
fn build(
    paths: &Paths,
    scratch: &std::path::Path,
    name: Option<&str>,
    content: &str,
) -> Result<String> {
    let file = scratch.join("payload");
    std::fs::write(&file, content)?;
    let ctr = buildah(paths, &["from", "scratch"])?;
    let f = file.to_string_lossy().into_owned();
    buildah(paths, &["copy", &ctr, &f, "/payload"])?;
    let mut commit = vec!["commit", "-q", &ctr];
    commit.extend(name);
    let id = buildah(paths, &commit)?;
    buildah(paths, &["rm", &ctr])?;
    Ok(id)
}

#[test]
fn containers_list_from_real_storage() -> Result<()> {
    let mut sr = TestSysroot::new()?;
    sr.commit(CommitSpec::new("seed", "4.16.3"))?;
    let d = sr.deploy("debian", "seed", &Deploy::new())?;
    sr.boot(&d)?;
    sr.mount_container_storage(TestFs::Tmpfs { size_mib: 128 })?;
    let paths = sr.paths()?;
    let scratch = tempfile::tempdir()?;

    let app = build(
        &paths,
        scratch.path(),
        Some("example.com/team/app:1"),
        "app 1\n",
    )?;
    podman(
        &paths,
        &[
            "tag",
            "example.com/team/app:1",
            "example.com/team/app:stable",
            "mirror.example.com:5000/team/app:1",
        ],
    )?;
    let tool = build(
        &paths,
        scratch.path(),
        Some("quay.io/team/tool:2"),
        "tool 2\n",
    )?;
    let first = build(
        &paths,
        scratch.path(),
        Some("example.com/team/rebuilt:1"),
        "first\n",
    )?;
    let rebuilt = build(
        &paths,
        scratch.path(),
        Some("example.com/team/rebuilt:1"),
        "second\n",
    )?;
    let unnamed = build(&paths, scratch.path(), None, "no name\n")?;
    assert_ne!(first, rebuilt);

    let digest = |name: &str| {
        podman(
            &paths,
            &["image", "inspect", "--format", "{{.Digest}}", name],
        )
    };
    let (app_d, tool_d, rebuilt_d) = (
        digest("example.com/team/app:1")?,
        digest("quay.io/team/tool:2")?,
        digest("example.com/team/rebuilt:1")?,
    );
    assert!(app_d.starts_with("sha256:"), "{app_d}");
    // Every tag, pinned to its image's digest (the image `app` has three names).
    let mut want = vec![
        format!("example.com/team/app:1@{app_d}"),
        format!("example.com/team/app:stable@{app_d}"),
        format!("example.com/team/rebuilt:1@{rebuilt_d}"),
        format!("mirror.example.com:5000/team/app:1@{app_d}"),
        format!("quay.io/team/tool:2@{tool_d}"),
    ];
    want.sort();

    let facts = Live::new(&paths);
    // The storage really holds the dangling and the unnamed image that must be skipped.
    let images = &facts.containers()?.images;
    for id in [&first, &unnamed] {
        let i = images
            .iter()
            .find(|i| &i.id == id)
            .context("image listed")?;
        assert!(i.names.is_empty(), "{i:?}");
    }
    let size = |id: &str| -> Result<u64> {
        Ok(images
            .iter()
            .find(|i| i.id == id)
            .context("image listed")?
            .size)
    };
    let bytes = size(&app)? + size(&tool)? + size(&rebuilt)?;

    let work = tempfile::tempdir()?;
    let c = collect::collect(&paths, &facts, &Recorded::default(), work.path())?;
    assert_eq!(c.containers, want);
    assert_eq!(
        c.containers_list_file(),
        want.iter().map(|s| format!("{s}\n")).collect::<String>()
    );
    assert_eq!(c.info.images, 3);
    assert_eq!(c.info.sizes.images_bytes, bytes);
    assert!(bytes > 0);
    // The container storage's content is never part of /var.
    assert!(
        !c.var
            .iter()
            .any(|e| e.path.starts_with("lib/containers/storage"))
    );

    // Leave nothing mounted by podman or buildah behind.
    let _ = buildah(&paths, &["rm", "--all"]);
    Ok(())
}
