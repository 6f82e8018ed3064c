//! The precache flow against a scripted storage: skip/pull decisions, retries, the concurrency
//! bound, progress, and LCA's "failed but present afterwards". The real-podman, real-registry
//! versions of these are in `tests/precache.rs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// How one pull attempt of a spec ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Ok,
    Transient,
    Unknown,
    Unauthorized,
    /// podman fails, but the image is stored anyway (e.g. another puller got it in between).
    FailButStored,
}

#[derive(Default)]
struct Fake {
    stored: Mutex<Vec<ImageFacts>>,
    /// Outcomes per spec, attempt by attempt; the last one repeats; unscripted specs succeed.
    script: HashMap<String, Vec<Attempt>>,
    attempts: Mutex<HashMap<String, u32>>,
    pull_time: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    list_fails: bool,
    lists: AtomicUsize,
}

fn image(name: &str) -> ImageFacts {
    ImageFacts {
        id: format!("id-{name}"),
        names: vec![name.to_string()],
        digests: Vec::new(),
        created: 0,
        size: 0,
        dangling: false,
    }
}

impl Fake {
    fn with_stored(names: &[&str]) -> Fake {
        Fake {
            stored: Mutex::new(names.iter().map(|n| image(n)).collect()),
            ..Fake::default()
        }
    }

    fn script(mut self, spec: &str, attempts: &[Attempt]) -> Fake {
        self.script.insert(spec.to_string(), attempts.to_vec());
        self
    }

    fn attempts(&self, spec: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(spec)
            .copied()
            .unwrap_or(0)
    }

    fn total_attempts(&self) -> u32 {
        self.attempts.lock().unwrap().values().sum()
    }
}

impl Backend for Fake {
    fn tag(&self, source: &str, name: &str) -> Result<()> {
        let mut stored = self.stored.lock().unwrap();
        for i in stored.iter_mut() {
            if i.digests
                .iter()
                .chain(&i.names)
                .any(|n| crate::precache::normalize(n).ok().as_deref() == Some(source))
            {
                i.names.push(name.to_string());
            }
        }
        Ok(())
    }

    fn images(&self) -> Result<Vec<ImageFacts>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        if self.list_fails {
            anyhow::bail!("podman images failed: storage is locked");
        }
        Ok(self.stored.lock().unwrap().clone())
    }

    fn pull(&self, spec: &str) -> Result<(), PullError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(self.pull_time);
        let n = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(spec.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let outcome = self.script.get(spec).map_or(Attempt::Ok, |s| {
            s[usize::try_from(n - 1).unwrap().min(s.len() - 1)]
        });
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let fail = |kind: &str| PullError::classify(spec, "exit status: 125", kind);
        match outcome {
            Attempt::Ok => {
                self.stored.lock().unwrap().push(image(spec));
                Ok(())
            }
            Attempt::Transient => Err(fail("Error: connection reset by peer")),
            Attempt::Unknown => Err(fail("Error: reading manifest: manifest unknown")),
            Attempt::Unauthorized => Err(fail(
                "Error: reading manifest: unauthorized: authentication required",
            )),
            Attempt::FailButStored => {
                self.stored.lock().unwrap().push(image(spec));
                Err(fail("Error: committing the image: something odd"))
            }
        }
    }
}

fn opts(concurrency: usize, attempts: u32) -> PrecacheOptions {
    PrecacheOptions {
        concurrency,
        attempts,
        backoff: Duration::from_millis(1),
        ..PrecacheOptions::default()
    }
}

fn list(specs: &[&str]) -> Vec<String> {
    specs.iter().map(|s| s.to_string()).collect()
}

/// Run precache, checking on the way that progress only moves forward.
fn precache_fake(
    fake: &Fake,
    wanted: &[String],
    o: &PrecacheOptions,
) -> (PrecacheReport, Vec<PrecacheReport>) {
    let mut seen: Vec<PrecacheReport> = Vec::new();
    let report = run(fake, wanted, o, &mut |r| seen.push(r.clone())).unwrap();
    for pair in seen.windows(2) {
        assert!(pair[1].done() >= pair[0].done(), "{seen:?}");
        assert!(pair[1].pulled >= pair[0].pulled, "{seen:?}");
        assert_eq!(pair[1].total, pair[0].total);
    }
    assert_eq!(
        seen.last().unwrap(),
        &report,
        "the last progress is the report"
    );
    assert_eq!(report.done(), report.total, "every image is accounted for");
    assert_eq!(report.failures.len(), report.failed);
    (report, seen)
}

#[test]
fn present_images_are_skipped_missing_ones_pulled() {
    let fake = Fake::with_stored(&["docker.io/library/busybox:latest", "quay.io/a/b:1"]);
    let wanted = list(&[
        "busybox",
        "quay.io/a/b:1",
        "quay.io/a/c:1",
        "quay.io/a/d",
        "quay.io/a/c:1",
    ]);
    let (report, seen) = precache_fake(&fake, &wanted, &opts(10, 5));
    assert_eq!(
        report.summary(),
        "total: 4 (pulled: 2, skipped: 2, failed: 0)"
    );
    assert_eq!(fake.attempts("quay.io/a/c:1"), 1);
    assert_eq!(
        fake.attempts("quay.io/a/d:latest"),
        1,
        "the normalised spec is pulled"
    );
    assert_eq!(fake.total_attempts(), 2, "nothing present was pulled");
    assert_eq!(fake.lists.load(Ordering::SeqCst), 1, "storage listed once");
    // One call after the presence check, one per pulled image.
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].summary(),
        "total: 4 (pulled: 0, skipped: 2, failed: 0)"
    );
}

#[test]
fn nothing_to_pull_still_reports_once() {
    let fake = Fake::with_stored(&["quay.io/a/b:1"]);
    let (report, seen) = precache_fake(&fake, &list(&["quay.io/a/b:1"]), &opts(10, 5));
    assert_eq!(
        report.summary(),
        "total: 1 (pulled: 0, skipped: 1, failed: 0)"
    );
    assert_eq!(seen.len(), 1);
    let (report, _) = precache_fake(&fake, &[], &opts(10, 5));
    assert_eq!(
        report.summary(),
        "total: 0 (pulled: 0, skipped: 0, failed: 0)"
    );
}

#[test]
fn transient_failures_are_retried_until_success_or_attempts_run_out() {
    use Attempt::*;
    let fake = Fake::default()
        .script("r.io/a/flaky:1", &[Transient, Transient, Ok])
        .script("r.io/a/down:1", &[Transient]);
    let wanted = list(&["r.io/a/flaky:1", "r.io/a/down:1"]);
    let (report, _) = precache_fake(&fake, &wanted, &opts(10, 4));
    assert_eq!(fake.attempts("r.io/a/flaky:1"), 3);
    assert_eq!(fake.attempts("r.io/a/down:1"), 4);
    assert_eq!(
        report.summary(),
        "total: 2 (pulled: 1, skipped: 0, failed: 1)"
    );
    let f = &report.failures[0];
    assert_eq!(f.image, "r.io/a/down:1");
    assert!(f.error.contains("connection reset by peer"), "{}", f.error);
    assert!(f.error.ends_with("(4 attempts)"), "{}", f.error);
}

#[test]
fn unknown_manifests_and_refused_credentials_are_not_retried() {
    use Attempt::*;
    let fake = Fake::default()
        .script("r.io/a/gone:1", &[Unknown])
        .script("r.io/a/secret:1", &[Unauthorized]);
    let wanted = list(&["r.io/a/gone:1", "r.io/a/secret:1"]);
    let (report, _) = precache_fake(&fake, &wanted, &opts(1, 5));
    assert_eq!(fake.attempts("r.io/a/gone:1"), 1);
    assert_eq!(fake.attempts("r.io/a/secret:1"), 1);
    assert_eq!(report.failed, 2);
    let by_image: HashMap<&str, &str> = report
        .failures
        .iter()
        .map(|f| (f.image.as_str(), f.error.as_str()))
        .collect();
    let gone = by_image["r.io/a/gone:1"];
    assert!(
        gone.contains("no such tag or digest") && gone.contains("manifest unknown"),
        "{gone}"
    );
    assert!(gone.ends_with("(1 attempt, not retried)"), "{gone}");
    let secret = by_image["r.io/a/secret:1"];
    assert!(secret.contains("refused the credentials"), "{secret}");
}

#[test]
fn invalid_references_fail_without_a_pull() {
    let fake = Fake::default();
    let (report, _) = precache_fake(
        &fake,
        &list(&["quay.io/Bad/Name", "quay.io/a/ok:1"]),
        &opts(10, 5),
    );
    assert_eq!(
        report.summary(),
        "total: 2 (pulled: 1, skipped: 0, failed: 1)"
    );
    assert_eq!(fake.total_attempts(), 1);
    assert!(
        report.failures[0].error.contains("must be lowercase"),
        "{:?}",
        report.failures
    );
    assert!(report.failures[0].error.ends_with("(not pulled)"));
}

#[test]
fn concurrency_is_bounded_and_used() {
    for concurrency in [1, 3, 10] {
        let fake = Fake {
            pull_time: Duration::from_millis(15),
            ..Fake::default()
        };
        let wanted: Vec<String> = (0..12).map(|i| format!("r.io/a/img{i}:1")).collect();
        let (report, seen) = precache_fake(&fake, &wanted, &opts(concurrency, 5));
        assert_eq!(report.pulled, 12);
        assert_eq!(seen.len(), 13);
        let max = fake.max_in_flight.load(Ordering::SeqCst);
        assert!(
            max <= concurrency,
            "{max} pulls at once, bound {concurrency}"
        );
        assert!(
            max >= concurrency.min(2),
            "{max} pulls at once: no parallelism"
        );
    }
    // 0 means 1, not "nothing".
    let fake = Fake::default();
    let (report, _) = precache_fake(&fake, &list(&["r.io/a/x:1"]), &opts(0, 0));
    assert_eq!(report.pulled, 1);
}

#[test]
fn failed_but_present_afterwards_counts_as_pulled() {
    let fake = Fake::default().script("r.io/a/odd:1", &[Attempt::FailButStored]);
    let wanted = list(&["r.io/a/odd:1", "r.io/a/fine:1"]);
    let (report, seen) = precache_fake(&fake, &wanted, &opts(1, 2));
    assert_eq!(
        report.summary(),
        "total: 2 (pulled: 2, skipped: 0, failed: 0)"
    );
    assert!(report.failures.is_empty());
    assert_eq!(fake.attempts("r.io/a/odd:1"), 2);
    // The failure was reported while it stood, and corrected in one last call.
    assert!(seen.iter().any(|r| r.failed == 1));
    assert_eq!(seen.len(), 4);
    assert_eq!(
        fake.lists.load(Ordering::SeqCst),
        2,
        "one more listing for the recount"
    );
}

#[test]
fn unlistable_storage_is_an_error() {
    let fake = Fake {
        list_fails: true,
        ..Fake::default()
    };
    let mut calls = 0;
    let e = run(&fake, &list(&["r.io/a/x:1"]), &opts(10, 5), &mut |_| {
        calls += 1
    })
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("listing the images in container storage"), "{e}");
    assert!(e.contains("storage is locked"), "{e}");
    assert_eq!(calls, 0);
    assert_eq!(fake.total_attempts(), 0);
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let r = Retry {
        attempts: 5,
        backoff: Duration::from_secs(2),
    };
    let waits: Vec<u64> = (1..=6).map(|a| r.delay(a).as_secs()).collect();
    assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
    assert_eq!(r.delay(1000), pull::MAX_BACKOFF);
}

#[test]
fn summary_format_and_serialisation() {
    let r = PrecacheReport {
        total: 7,
        pulled: 3,
        skipped: 2,
        failed: 2,
        failures: vec![PullFailure {
            image: "x".into(),
            error: "y".into(),
        }],
    };
    assert_eq!(r.summary(), "total: 7 (pulled: 3, skipped: 2, failed: 2)");
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.contains("\"failures\":[{\"image\":\"x\",\"error\":\"y\"}]"),
        "{json}"
    );
    let defaults = PrecacheOptions::default();
    assert_eq!((defaults.concurrency, defaults.attempts), (10, 5));
}
