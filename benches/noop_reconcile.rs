//! Benchmark: a converged `ibu reconcile` against `ostree admin status` on the same sysroot.
//!
//! A converged run is what ibu does at every boot and every time the path unit fires; it must be
//! cheap. Both commands run alternately, many times, in one process, on one real directory
//! sysroot made by the ostree CLI; the result is the ratio of medians. Run with:
//!
//!     sudo cargo bench --bench noop_reconcile
//!
//! and the table in `benches/RESULTS.md` is rewritten (section "noop_reconcile").

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/results.rs"]
mod results;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{CommitSpec, Deploy, TestSysroot};

const ROUNDS: usize = 300;
const WARMUP: usize = 10;

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
/// then it only checks that the benchmark works (a few rounds, nothing written).
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn time(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd.output().context("running the benchmarked command")?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(d)
}

fn main() -> Result<()> {
    let mut sr = TestSysroot::new()?;
    sr.commit(CommitSpec::new("old", "1.0.0").payload_bytes(4 << 20))?;
    let d = sr.deploy("debian", "old", &Deploy::new())?;
    sr.boot(&d)?;
    sr.commit(CommitSpec::new("new", "1.1.0"))?;
    sr.deploy("debian_1.1.0", "new", &Deploy::new().not_as_default())?;
    let paths = sr.paths()?;
    std::fs::create_dir_all(paths.config_dir())?;
    std::fs::write(
        paths.desired_file(),
        "apiVersion: lca.openshift.io/v1\nkind: ImageBasedUpgrade\nmetadata:\n  name: upgrade\n\
         spec:\n  stage: Idle\n  seedImageRef:\n    image: registry.example.com/seed:1.1.0\n    \
         version: 1.1.0\n",
    )?;
    let ibu = env!("CARGO_BIN_EXE_ibu");
    let root = sr.path().to_path_buf();
    let ibu_cmd = || {
        let mut c = Command::new(ibu);
        c.arg("--sysroot").arg(&root).arg("reconcile").arg("-q");
        c
    };
    let ostree_cmd = || {
        let mut c = Command::new("ostree");
        c.arg("admin")
            .arg(format!("--sysroot={}", root.display()))
            .arg("status");
        c
    };
    // Converge first: from here on every ibu run is a no-op.
    time(&mut ibu_cmd())?;
    let state = std::fs::read(paths.state_file())?;

    let (rounds, warmup) = if benchmarking() {
        (ROUNDS, WARMUP)
    } else {
        (3, 1)
    };
    for _ in 0..warmup {
        time(&mut ibu_cmd())?;
        time(&mut ostree_cmd())?;
    }
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds {
        // Alternate which goes first so neither always runs on a warmer cache.
        if i % 2 == 0 {
            a.push(time(&mut ibu_cmd())?);
            b.push(time(&mut ostree_cmd())?);
        } else {
            b.push(time(&mut ostree_cmd())?);
            a.push(time(&mut ibu_cmd())?);
        }
    }
    if std::fs::read(paths.state_file())? != state {
        bail!("a converged ibu run changed the state file: the benchmark is not measuring a no-op");
    }
    let ibu_stats = results::Stats::of(&mut a);
    let ostree_stats = results::Stats::of(&mut b);
    let ratio = ibu_stats.median.as_secs_f64() / ostree_stats.median.as_secs_f64();
    let table = format!(
        "| command | median | p10 | p90 |\n|---|---|---|---|\n\
         | `ibu --sysroot DIR reconcile` (converged, no-op) | {} | {} | {} |\n\
         | `ostree admin --sysroot=DIR status` | {} | {} | {} |\n\n\
         **ratio ibu / ostree admin status (medians): {ratio:.2}×** (target ≤ 1.5×; \
         {rounds} alternating runs each)\n",
        ibu_stats.median_ms(),
        ibu_stats.p10_ms(),
        ibu_stats.p90_ms(),
        ostree_stats.median_ms(),
        ostree_stats.p10_ms(),
        ostree_stats.p90_ms(),
    );
    print!("{table}");
    if !benchmarking() {
        return Ok(());
    }
    results::write_section(
        "noop_reconcile",
        "A converged `ibu reconcile` against `ostree admin status` on the same directory \
         sysroot (two stateroots, booted deployment named by the sandbox file).",
        "sudo cargo bench --bench noop_reconcile",
        &table,
    )?;
    if ratio > 1.5 {
        eprintln!("warning: ratio {ratio:.2} is above the 1.5x target");
    }
    Ok(())
}
