//! Operations on ostree repositories that several stages share.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib;

/// `ostree pull-local` through libostree: copy `rev` and everything it references from the
/// repository at `source` into `target`, skipping objects `target` already has. `untrusted`
/// verifies every object's checksum as it is written (always wanted when the source was
/// assembled from downloads). Progress is logged every few seconds.
///
/// libostree's pull runs its I/O on the calling thread's *thread-default* main context, which is
/// the process-global default one unless a thread pushes its own. Two pulls on different threads
/// (tests run in parallel; a future parallel import) would then dispatch each other's callbacks
/// and crash (a segfault in the test suite, traced to exactly this). So every pull gets a fresh
/// main context of its own, as rpm-ostree does.
pub fn pull_local(target: &ostree::Repo, source: &Path, rev: &str, untrusted: bool) -> Result<()> {
    let url = gio::prelude::FileExt::uri(&gio::File::for_path(source));
    let options = glib::VariantDict::new(None);
    options.insert("refs", vec![rev.to_string()]);
    let flags = if untrusted {
        ostree::RepoPullFlags::UNTRUSTED
    } else {
        ostree::RepoPullFlags::NONE
    };
    options.insert("flags", flags.bits() as i32);
    let progress = ostree::AsyncProgress::new();
    let last = std::cell::Cell::new(Instant::now());
    progress.connect_changed(move |p| {
        if last.get().elapsed() < Duration::from_secs(5) {
            return;
        }
        last.set(Instant::now());
        tracing::info!(
            fetched = p.uint("fetched"),
            requested = p.uint("requested"),
            scanned_metadata = p.uint("scanned-metadata"),
            outstanding_writes = p.uint("outstanding-writes"),
            "copying ostree objects"
        );
    });
    let context = glib::MainContext::new();
    context
        .with_thread_default(|| {
            target.pull_with_options(
                &url,
                &options.end(),
                Some(&progress),
                gio::Cancellable::NONE,
            )
        })
        .context("acquiring a main context for the pull")?
        .with_context(|| format!("pulling {rev} from {}", source.display()))?;
    progress.finish();
    Ok(())
}
