//! Benchmark: making a seed, its size against the raw content, and what targets download.
//!
//! OS "B" (the seed) shares 90% of its files with OS "A". A seed of B is created and pushed to a
//! real registry (htpasswd auth); then a target running A and a target with an empty repository
//! each fetch the seed's ostree content the way Prep does, counting every byte transferred.
//! LCA's seed carries the whole repository as one `ostree.tgz`, so every target downloads all of
//! it; the "saving" is what ibu's range fetch avoids. Run with:
//!
//!     sudo cargo bench --bench seed
//!
//! and the section "seed" of `benches/RESULTS.md` is rewritten.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/os.rs"]
mod os;
#[path = "support/results.rs"]
mod results;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::{CommitSpec, Deploy, RegistryOpts, TestFs, TestRegistry, TestSysroot};
use ibu::registry::{Client, ClientOptions};
use ibu::seed::fetch;
use ibu::seed::source::{RegistrySource, SeedSource};
use ibu::spec::ImageRef;

fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn dir_bytes(p: &Path) -> Result<u64> {
    let out = Command::new("du").args(["-sb"]).arg(p).output()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .next()
        .context("du output")?
        .parse()
        .context("du output")
}

fn main() -> Result<()> {
    let files = if benchmarking() { 2000 } else { 60 };
    // The seed host runs B.
    let mut seed = TestSysroot::new()?;
    let tree_b = os::os("b", "1.1.0", files, 1);
    seed.commit(tree_b)?;
    let d = seed.deploy("debian", "b", &Deploy::new())?;
    seed.boot(&d)?;
    seed.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    let raw = dir_bytes(&seed.deployment_dir(&d).join("usr"))?;

    let reg = TestRegistry::start(RegistryOpts::new(Some(("bench", "bench-pass")), false))?;
    let creds = tempfile::tempdir()?;
    let authfile = reg.authfile(creds.path());
    let image = reg.image("seeds/bench:1.1.0");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ibu"))
        .arg("--sysroot")
        .arg(seed.path())
        .args([
            "-q",
            "seed",
            "create",
            "--image",
            &image,
            "--tls-verify=false",
        ])
        .arg("--authfile")
        .arg(&authfile)
        .output()?;
    let create_secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("seed create: {}", String::from_utf8_lossy(&out.stderr));
    }

    let opts = ClientOptions {
        authfile: Some(authfile.clone()),
        tls_verify: Some(false),
        ..ClientOptions::default()
    };
    let fetch_into = |target: &TestSysroot| -> Result<(fetch::FetchStats, u64, f64)> {
        let client = Client::new(&ImageRef::parse(&image)?, &opts)?;
        let src = RegistrySource {
            client,
            reference: image.clone(),
        };
        let t = Instant::now();
        let (manifest, _) = src.manifest()?;
        let work = tempfile::tempdir()?;
        let meta = fetch::read_meta(&src, &manifest, work.path())?;
        let repo = ostree::Repo::new_for_path(target.repo());
        repo.open(ostree::gio::Cancellable::NONE)?;
        let stats = fetch::fetch_objects(&src, &manifest, &meta.index, &repo, &mut |_, _| {})?;
        fetch::verify_complete(&repo, &meta.info.ostree_commit)?;
        Ok((stats, src.bytes_downloaded(), t.elapsed().as_secs_f64()))
    };
    let image_bytes = {
        let client = Client::new(&ImageRef::parse(&image)?, &opts)?;
        let m = client.manifest()?.manifest;
        m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>()
    };

    // A target running A: most objects are already there.
    let mut a = TestSysroot::new()?;
    a.commit(os::os("a", "1.0.0", files, 0))?;
    let da = a.deploy("debian", "a", &Deploy::new())?;
    a.boot(&da)?;
    let (sa, down_a, secs_a) = fetch_into(&a)?;
    // A target with nothing in common (only an unrelated tiny OS).
    let mut e = TestSysroot::new()?;
    e.commit(CommitSpec::new("tiny", "0.1.0"))?;
    let de = e.deploy("debian", "tiny", &Deploy::new())?;
    e.boot(&de)?;
    let (se, down_e, secs_e) = fetch_into(&e)?;

    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let pct = |a: u64, b: u64| format!("{:.1}%", a as f64 * 100.0 / b as f64);
    let table = format!(
        "OS B: {files} files, {raw} of raw content in `/usr` (A shares 90% of the files).\n\n\
         | measure | value |\n|---|---|\n\
         | `ibu seed create` (collect, export, pack, push) | {create_secs:.1} s |\n\
         | seed image size (all blobs) | {img} = {img_raw} of the raw content |\n\
         | ostree objects in the seed | {objs} objects, {total} |\n\
         | target running A: objects fetched | {fa} of {objs} ({fab}) in {ra} range requests |\n\
         | target running A: bytes downloaded (incl. manifest, config, metadata) | **{da}** = **{da_img} of the seed** ({secs_a:.1} s) |\n\
         | target with an empty repository: bytes downloaded | {de} = {de_img} of the seed ({secs_e:.1} s) |\n\n\
         **Saving for a target one version behind: {saving} of the seed's bytes are not downloaded** \
         (LCA's `ostree.tgz` is downloaded whole by every target).\n",
        raw = mib(raw),
        img = mib(image_bytes),
        img_raw = pct(image_bytes, raw),
        objs = sa.objects,
        total = mib(sa.total_bytes),
        fa = sa.fetched,
        fab = mib(sa.fetched_bytes),
        ra = sa.range_requests,
        da = mib(down_a),
        da_img = pct(down_a, image_bytes),
        de = mib(down_e),
        de_img = pct(down_e, image_bytes),
        saving = pct(image_bytes.saturating_sub(down_a), image_bytes),
    );
    print!("{table}");
    if se.fetched + se.present != se.objects || sa.fetched + sa.present != sa.objects {
        bail!("not every object was accounted for");
    }
    if !benchmarking() {
        return Ok(());
    }
    results::write_section(
        "seed",
        "Seed creation, seed size against the raw content, and the bytes a target downloads \
         when it already runs the previous OS version (the range fetch of missing ostree \
         objects) against one that has nothing in common.",
        "sudo cargo bench --bench seed",
        &table,
    )
}
