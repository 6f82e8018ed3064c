//! Pulling many images: a fixed pool of worker threads, retries with backoff per image.
//!
//! Each pull is a `podman pull` process, so a thread per concurrent pull is the simple and
//! sufficient design: the threads only wait. A pool of `concurrency` workers takes images from
//! a shared counter, which bounds the number of pulls in flight by construction (each worker
//! runs one pull at a time, and there are no other pullers). Finished images go back over a
//! channel to the calling thread, which alone touches the report and the progress callback, so
//! neither needs to be `Send` or locked.
//!
//! Retries: up to `attempts` per image, waiting `backoff`, `2 × backoff`, ... (capped at
//! [`MAX_BACKOFF`]) in between, so a registry that hiccups gets time to recover instead of
//! five immediate retries (LCA retries at once). Errors a retry cannot fix
//! ([`PullError::is_permanent`]: unknown tag or digest, refused credentials) end the image
//! after the first attempt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::Backend;
use crate::images::podman::PullError;

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often, and how patiently, one image is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per image, at least 1.
    pub attempts: u32,
    /// The wait after the first failed attempt; doubled after each further one.
    pub backoff: Duration,
}

impl Retry {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// One image finished: how many attempts it took and how the last one ended.
#[derive(Debug)]
pub(crate) struct Done {
    /// Index into the list given to [`pull_all`].
    pub index: usize,
    pub attempts: u32,
    pub result: Result<(), PullError>,
}

/// Pull one image, retrying as `retry` allows.
pub(crate) fn pull_with_retries(
    backend: &dyn Backend,
    spec: &str,
    retry: Retry,
) -> (u32, Result<(), PullError>) {
    let attempts = retry.attempts.max(1);
    let mut attempt = 1;
    loop {
        match backend.pull(spec) {
            Ok(()) => return (attempt, Ok(())),
            Err(e) if e.is_permanent() || attempt >= attempts => return (attempt, Err(e)),
            Err(e) => {
                let wait = retry.delay(attempt);
                tracing::warn!(
                    image = spec,
                    attempt,
                    attempts,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    error = %e,
                    "pull failed, will retry"
                );
                thread::sleep(wait);
                attempt += 1;
            }
        }
    }
}

/// Pull every spec with at most `concurrency` pulls at once; `on_done` runs on the calling
/// thread once per spec, in the order they finish. Returns when all are done.
pub(crate) fn pull_all(
    backend: &dyn Backend,
    specs: &[&str],
    concurrency: usize,
    retry: Retry,
    on_done: &mut dyn FnMut(Done),
) {
    if specs.is_empty() {
        return;
    }
    let workers = concurrency.clamp(1, specs.len());
    let next = AtomicUsize::new(0);
    // Each worker: take the next index, pull it, report it; stop when the list is exhausted or
    // nobody listens any more.
    let work = |report: &mut dyn FnMut(Done) -> bool| {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(spec) = specs.get(index) else { break };
            let (attempts, result) = pull_with_retries(backend, spec, retry);
            if !report(Done {
                index,
                attempts,
                result,
            }) {
                break;
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Done>();
    thread::scope(|scope| {
        let mut spawned = 0;
        for n in 0..workers {
            let tx = tx.clone();
            let work = &work;
            let spawn = thread::Builder::new()
                .name(format!("precache-{n}"))
                .spawn_scoped(scope, move || work(&mut |done| tx.send(done).is_ok()));
            match spawn {
                Ok(_) => spawned += 1,
                Err(e) => {
                    tracing::warn!(error = %e, workers = spawned, "cannot start another pull thread");
                    break;
                }
            }
        }
        drop(tx);
        if spawned == 0 {
            // No thread at all: pull one at a time on this one rather than not at all.
            work(&mut |done| {
                on_done(done);
                true
            });
            return;
        }
        for done in rx {
            on_done(done);
        }
    });
}
