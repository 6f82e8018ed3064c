//! Benchmark: Prep's import of a seed's ostree commit against the raw `ostree pull-local`.
//!
//! The seed (an OS of a few thousand files) is written as an OCI layout on local disk, so the
//! network is out of the picture. ibu's import = read the index, ask the target repository what
//! it lacks (everything: it is empty) and write those objects out of the pack layers straight
//! into the target through libostree, each verified against its checksum. The raw tool = `ostree pull-local` of the same commit from an archive
//! repository holding it, into an equally empty repository — once as ostree does by default
//! (a local pull trusts the source and skips checksums) and once with `--untrusted` (the same
//! guarantee ibu gives). Rounds alternate; medians are compared. Run with:
//!
//!     sudo cargo bench --bench import

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/os.rs"]
mod os;
#[path = "support/results.rs"]
mod results;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::{Deploy, TestFs, TestSysroot};
use ibu::oci::layout::LayoutReader;
use ibu::seed::fetch;
use ibu::seed::source::{LayoutSource, SeedSource};

fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn ostree(args: &[&str]) -> Result<()> {
    let out = Command::new("ostree").args(args).output()?;
    if !out.status.success() {
        bail!("ostree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn fresh_repo(dir: &Path) -> Result<ostree::Repo> {
    let p = dir.to_string_lossy().to_string();
    ostree(&["init", "--mode=bare", &format!("--repo={p}")])?;
    let repo = ostree::Repo::new_for_path(dir);
    repo.open(ostree::gio::Cancellable::NONE)?;
    Ok(repo)
}

fn main() -> Result<()> {
    let (files, rounds) = if benchmarking() { (3000, 5) } else { (50, 1) };
    let mut seed = TestSysroot::new()?;
    seed.commit(os::os("b", "1.1.0", files, 0))?;
    let d = seed.deploy("debian", "b", &Deploy::new())?;
    seed.boot(&d)?;
    seed.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    let work = tempfile::tempdir()?;
    let layout = work.path().join("layout");
    let out = Command::new(env!("CARGO_BIN_EXE_ibu"))
        .arg("--sysroot")
        .arg(seed.path())
        .args(["-q", "seed", "create", "--output"])
        .arg(format!("oci:{}", layout.display()))
        .output()?;
    if !out.status.success() {
        bail!("seed create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let src = LayoutSource {
        reader: LayoutReader::open(&layout)?,
        ref_name: None,
        path: layout.clone(),
    };
    let (manifest, _) = src.manifest()?;
    let meta = fetch::read_meta(&src, &manifest, &work.path().join("meta"))?;
    let commit = meta.info.ostree_commit.clone();
    // The raw tool's source: an archive repository holding the commit.
    let archive = work.path().join("archive");
    let archive_s = archive.to_string_lossy().to_string();
    ostree(&["init", "--mode=archive", &format!("--repo={archive_s}")])?;
    let seed_repo = seed.repo().to_string_lossy().to_string();
    ostree(&[
        "pull-local",
        &format!("--repo={archive_s}"),
        &seed_repo,
        &commit,
    ])?;

    let mut ibu_t: Vec<Duration> = vec![];
    let mut raw_t: Vec<Duration> = vec![];
    let mut raw_untrusted_t: Vec<Duration> = vec![];
    for round in 0..rounds {
        let r = work.path().join(format!("round{round}"));
        std::fs::create_dir_all(&r)?;
        let mut ours = || -> Result<()> {
            let target = fresh_repo(&r.join("ibu"))?;
            let t = Instant::now();
            let stats =
                fetch::fetch_objects(&src, &manifest, &meta.index, &target, &mut |_, _| {})?;
            fetch::verify_complete(&target, &commit)?;
            ibu_t.push(t.elapsed());
            if stats.fetched != stats.objects {
                bail!("expected every object to be fetched into an empty repository");
            }
            Ok(())
        };
        let raw = |untrusted: bool, name: &str, into: &mut Vec<Duration>| -> Result<()> {
            let dest = r.join(name);
            fresh_repo(&dest)?;
            let dest_s = dest.to_string_lossy().to_string();
            let mut args = vec!["pull-local".to_string(), format!("--repo={dest_s}")];
            if untrusted {
                args.push("--untrusted".into());
            }
            args.push(archive_s.clone());
            args.push(commit.clone());
            let t = Instant::now();
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            ostree(&a)?;
            into.push(t.elapsed());
            Ok(())
        };
        if round % 2 == 0 {
            ours()?;
            raw(false, "raw", &mut raw_t)?;
            raw(true, "rawu", &mut raw_untrusted_t)?;
        } else {
            raw(true, "rawu", &mut raw_untrusted_t)?;
            raw(false, "raw", &mut raw_t)?;
            ours()?;
        }
        std::fs::remove_dir_all(&r)?;
    }
    let a = results::Stats::of(&mut ibu_t);
    let b = results::Stats::of(&mut raw_t);
    let c = results::Stats::of(&mut raw_untrusted_t);
    let ratio =
        |x: &results::Stats, y: &results::Stats| x.median.as_secs_f64() / y.median.as_secs_f64();
    let table = format!(
        "Commit of {files} files ({objects} objects, {mib:.1} MiB in archive format), local OCI layout, empty target repository.\n\n\
         | command | median | p10 | p90 |\n|---|---|---|---|\n\
         | ibu import (ranged reads of the packs, checksums verified, written by parallel transactions into the target) | {} | {} | {} |\n\
         | `ostree pull-local` (trusted: no checksums) | {} | {} | {} |\n\
         | `ostree pull-local --untrusted` (checksums verified, as ibu does) | {} | {} | {} |\n\n\
         **ratio ibu / `ostree pull-local`: {:.2}×** (target ≤ 1.2×); ibu / `pull-local --untrusted`: {:.2}×. {rounds} alternating rounds.\n",
        a.median_ms(),
        a.p10_ms(),
        a.p90_ms(),
        b.median_ms(),
        b.p10_ms(),
        b.p90_ms(),
        c.median_ms(),
        c.p10_ms(),
        c.p90_ms(),
        ratio(&a, &b),
        ratio(&a, &c),
        objects = meta
            .index
            .packs
            .iter()
            .map(|p| p.objects.len())
            .sum::<usize>(),
        mib = meta.info.sizes.ostree_archive_bytes as f64 / (1 << 20) as f64,
    );
    print!("{table}");
    if !benchmarking() {
        return Ok(());
    }
    results::write_section(
        "import",
        "Prep's import of a seed's ostree commit (ImportOstree) against the raw `ostree pull-local` \
         of the same commit into an empty repository.",
        "sudo cargo bench --bench import",
        &table,
    )
}
