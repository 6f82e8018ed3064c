//! Benchmark: deciding that 100 wanted images are already present, ibu's way against LCA's.
//!
//! LCA asks podman about every image separately (`podman image exists`, a process each, after
//! re-pulling them); ibu lists the storage once and matches in memory
//! ([`ibu::precache::missing`]). Both run against the same real podman storage (a sandbox's
//! tmpfs `/var/lib/containers`, podman's default driver) holding 100 distinct images, half
//! wanted by tag and half by digest; the timed ibu side includes the `podman images` it needs.
//! Both sides run alternately in one process, and the result is the ratio of medians. Run with:
//!
//!     sudo cargo bench --bench precache
//!
//! and the section "precache" of `benches/RESULTS.md` is rewritten. Under
//! `cargo test --all-targets` it only checks that the benchmark works (10 images, 2 rounds,
//! nothing written).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/results.rs"]
mod results;

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{CommitSpec, Deploy, TestFs, TestSysroot};
use ibu::facts::ContainerFacts;
use ibu::images::podman::Podman;
use ibu::paths::Paths;
use ibu::precache;

const IMAGES: usize = 100;
const ROUNDS: usize = 15;
const WARMUP: usize = 1;
const TARGET: f64 = 10.0;

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn run(program: &str, args: &[OsString]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// buildah on the sandbox's storage (the one ibu's podman uses).
fn buildah(paths: &Paths, args: &[&str]) -> Result<String> {
    let (root, runroot) = paths.podman_storage().context("sandbox storage")?;
    let mut a: Vec<OsString> = vec![
        "--root".into(),
        root.into(),
        "--runroot".into(),
        runroot.into(),
    ];
    a.extend(args.iter().map(OsString::from));
    run("buildah", &a)
}

/// `n` distinct images named `registry.example.com/bench/app-<i>:1`, each with its own layer
/// (one working container from scratch, a new payload before each commit), as images on a node
/// are. Not label-only variants of one layer: podman 4.3's `images` relates images that share a
/// top layer pairwise, and 100 of them on one layer cost it seconds, which nodes never see.
fn build_images(paths: &Paths, n: usize, scratch: &std::path::Path) -> Result<()> {
    let payload = scratch.join("payload");
    let p = payload.to_string_lossy().into_owned();
    let ctr = buildah(paths, &["from", "scratch"])?;
    for i in 0..n {
        std::fs::write(&payload, format!("benchmark payload {i}\n"))?;
        buildah(paths, &["copy", &ctr, &p, "/payload"])?;
        let name = format!("registry.example.com/bench/app-{i}:1");
        buildah(paths, &["commit", "--quiet", &ctr, &name])?;
    }
    buildah(paths, &["rm", &ctr])?;
    Ok(())
}

/// ibu: one listing, then the in-memory match. Returns how many were found present.
fn ibu_check(paths: &Paths, wanted: &[String]) -> Result<(Duration, usize)> {
    let t = Instant::now();
    let facts = ContainerFacts {
        images: Podman::new(paths)?.images()?,
        ..ContainerFacts::default()
    };
    let m = precache::missing(wanted, &facts);
    Ok((t.elapsed(), m.skipped()))
}

/// LCA: `podman image exists` per image. Returns how many were found present.
fn exists_loop(paths: &Paths, wanted: &[String]) -> Result<(Duration, usize)> {
    let global = Podman::global_args(paths);
    let t = Instant::now();
    let mut present = 0;
    for image in wanted {
        let status = Command::new("podman")
            .args(&global)
            .args(["image", "exists"])
            .arg(image)
            .status()
            .context("running podman image exists")?;
        present += usize::from(status.success());
    }
    Ok((t.elapsed(), present))
}

fn main() -> Result<()> {
    let bench = benchmarking();
    let (images, rounds, warmup) = if bench {
        (IMAGES, ROUNDS, WARMUP)
    } else {
        (10, 2, 0)
    };
    let mut sr = TestSysroot::new()?;
    sr.commit(CommitSpec::new("os", "1.0.0"))?;
    let d = sr.deploy("debian", "os", &Deploy::new())?;
    sr.boot(&d)?;
    sr.mount_container_storage(TestFs::Tmpfs { size_mib: 256 })?;
    let paths = sr.paths()?;
    let scratch = tempfile::tempdir()?;
    build_images(&paths, images, scratch.path())?;

    // Half wanted by tag, half by digest, as podman lists them.
    let listed = Podman::new(&paths)?.images()?;
    let wanted: Vec<String> = listed
        .iter()
        .enumerate()
        .filter_map(|(i, img)| {
            if i % 2 == 0 {
                img.names.first().cloned()
            } else {
                img.digests.first().cloned()
            }
        })
        .collect();
    if wanted.len() != images {
        bail!("expected {images} wanted images, podman lists {listed:#?}");
    }
    let by_digest = wanted.iter().filter(|w| w.contains('@')).count();

    let check = |what: &str, found: usize| -> Result<()> {
        if found != images {
            bail!("{what} found {found} of {images} present images: not measuring the same thing");
        }
        Ok(())
    };
    for _ in 0..warmup {
        check("ibu", ibu_check(&paths, &wanted)?.1)?;
        check("podman image exists", exists_loop(&paths, &wanted)?.1)?;
    }
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds {
        // Alternate which goes first so neither always runs on a warmer cache.
        let (ibu, exists) = if i % 2 == 0 {
            let x = ibu_check(&paths, &wanted)?;
            (x, exists_loop(&paths, &wanted)?)
        } else {
            let y = exists_loop(&paths, &wanted)?;
            (ibu_check(&paths, &wanted)?, y)
        };
        check("ibu", ibu.1)?;
        check("podman image exists", exists.1)?;
        a.push(ibu.0);
        b.push(exists.0);
    }
    let ibu = results::Stats::of(&mut a);
    let exists = results::Stats::of(&mut b);
    let ratio = exists.median.as_secs_f64() / ibu.median.as_secs_f64();
    // The machine may be shared; the load says how much absolute times are inflated (both
    // sides alike, since they alternate).
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let table = format!(
        "{images} present images ({} by tag, {by_digest} by digest), {rounds} alternating rounds; \
         load average at the end: {load}.\n\n\
         | presence check for {images} images | median | p10 | p90 |\n|---|---|---|---|\n\
         | ibu: one `podman images --format json` + `precache::missing` | {} | {} | {} |\n\
         | LCA: {images} × `podman image exists` | {} | {} | {} |\n\n\
         **ibu is {ratio:.1}× faster (medians)** (target ≥ {TARGET:.0}×)\n",
        images - by_digest,
        ibu.median_ms(),
        ibu.p10_ms(),
        ibu.p90_ms(),
        exists.median_ms(),
        exists.p10_ms(),
        exists.p90_ms(),
    );
    print!("{table}");
    if !bench {
        return Ok(());
    }
    results::write_section(
        "precache",
        "Deciding which wanted images are already in container storage: ibu's single listing \
         and in-memory match against LCA's `podman image exists` per image, on the same real \
         podman storage (a directory sysroot's tmpfs `/var/lib/containers`).",
        "sudo cargo bench --bench precache",
        &table,
    )?;
    if ratio < TARGET {
        eprintln!("warning: ratio {ratio:.1} is below the {TARGET}x target");
    }
    Ok(())
}
