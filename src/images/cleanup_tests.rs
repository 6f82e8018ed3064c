//! Unit tests of the pure selection and of the batching executor against a fake store.
//! The real-podman tests are in `tests/image_cleanup.rs`.

use super::*;

fn img(id: &str, names: &[&str], created: i64, dangling: bool) -> ImageFacts {
    ImageFacts {
        id: id.into(),
        names: names.iter().map(|s| s.to_string()).collect(),
        digests: names
            .iter()
            .filter_map(|n| n.split_once(':'))
            .map(|(repo, _)| format!("{repo}@sha256:{id}"))
            .collect(),
        created,
        size: 100,
        dangling,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ids<'a>(v: &[&'a ImageFacts]) -> Vec<&'a str> {
    v.iter().map(|i| i.id.as_str()).collect()
}

#[test]
fn candidates_table() {
    let images = vec![
        img("t300", &["r/a:1"], 300, false),
        img("d200", &[], 200, true),
        img("t100", &["r/b:1"], 100, false),
        img("d100", &[], 100, true),
        img("t100b", &["r/c:1"], 100, false),
        img("pin1", &["quay.io/ocp/etcd:1"], 10, false),
        img("use1", &["r/used:1"], 20, false),
        img("d050", &[], 50, true),
    ];
    struct Case {
        name: &'static str,
        pinned: &'static [&'static str],
        in_use: &'static [&'static str],
        want: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "nothing excluded: dangling oldest first, then tagged oldest first, stable",
            pinned: &[],
            in_use: &[],
            want: &[
                "d050", "d100", "d200", "pin1", "use1", "t100", "t100b", "t300",
            ],
        },
        Case {
            name: "pinned by glob and in use by id",
            pinned: &["quay.io/ocp/*"],
            in_use: &["use1"],
            want: &["d050", "d100", "d200", "t100", "t100b", "t300"],
        },
        Case {
            name: "in use by sha256: id, by name and by digested name",
            pinned: &[],
            in_use: &["sha256:d100", "r/a:1", "r/b@sha256:t100"],
            want: &["d050", "d200", "pin1", "use1", "t100b"],
        },
        Case {
            name: "pinned by keyword, by exact name, by id",
            pinned: &["*ETCD*", "r/c:1", "d050"],
            in_use: &[],
            want: &["d100", "d200", "use1", "t100", "t300"],
        },
        Case {
            name: "an in-use reference to an unknown image excludes nothing",
            pinned: &[],
            in_use: &["ffff", "r/gone:1"],
            want: &[
                "d050", "d100", "d200", "pin1", "use1", "t100", "t100b", "t300",
            ],
        },
        Case {
            name: "everything kept",
            pinned: &["*"],
            in_use: &[],
            want: &[],
        },
    ];
    for c in cases {
        let facts = ContainerFacts {
            images: images.clone(),
            in_use: strings(c.in_use),
            pinned_patterns: strings(c.pinned),
        };
        assert_eq!(ids(&candidates(&facts)), c.want, "{}", c.name);
    }
}

#[test]
fn selection_counts_pinned_before_in_use() {
    let facts = ContainerFacts {
        images: vec![
            img("a", &["r/pinned-and-used:1"], 1, false),
            img("b", &["r/used:1"], 2, false),
            img("c", &[], 3, true),
        ],
        in_use: strings(&["a", "b"]),
        pinned_patterns: strings(&["*pinned*"]),
    };
    let sel = select(&facts);
    assert_eq!(ids(&sel.pinned), ["a"]);
    assert_eq!(ids(&sel.in_use), ["b"]);
    assert_eq!(ids(&sel.candidates), ["c"]);
}

fn usage(used_percent: u64) -> FsUsage {
    FsUsage {
        block_size: 4096,
        blocks: 1000,
        blocks_free: 1000 - used_percent * 10,
        blocks_available: 1000 - used_percent * 10,
    }
}

fn cfg(on_prep: bool, threshold: u8) -> ImageCleanup {
    ImageCleanup {
        on_prep,
        disk_usage_threshold_percent: threshold,
    }
}

#[test]
fn needed_is_strictly_above_and_enabled() {
    assert!(needed(&usage(51), &cfg(true, 50)));
    assert!(!needed(&usage(50), &cfg(true, 50)));
    assert!(!needed(&usage(10), &cfg(true, 50)));
    assert!(!needed(&usage(99), &cfg(false, 50)));
    assert!(needed(&usage(1), &cfg(true, 0)));
    assert!(!needed(&usage(100), &cfg(true, 100)));
}

/// A storage where each image occupies `percent_per_image` percent.
struct Fake {
    used_percent: u64,
    percent_per_image: u64,
    /// IDs podman refuses to remove.
    refuse: Vec<String>,
    /// `remove` cannot run podman.
    broken_podman: bool,
    /// Measuring fails from this call on (0 = the first).
    measure_fails_from: Option<usize>,
    measured: usize,
    pauses: usize,
    /// Percent the last removal frees only after a pause (xfs's background inactivation).
    lag_per_batch: u64,
    lagging: u64,
    calls: Vec<Vec<String>>,
}

impl Fake {
    fn new(used_percent: u64, percent_per_image: u64) -> Fake {
        Fake {
            used_percent,
            percent_per_image,
            refuse: Vec::new(),
            broken_podman: false,
            measure_fails_from: None,
            measured: 0,
            pauses: 0,
            lag_per_batch: 0,
            lagging: 0,
            calls: Vec::new(),
        }
    }
}

impl Store for Fake {
    fn path(&self) -> &Path {
        Path::new("/var/lib/containers")
    }

    fn usage(&mut self) -> Result<FsUsage> {
        let n = self.measured;
        self.measured += 1;
        if self.measure_fails_from.is_some_and(|from| n >= from) {
            anyhow::bail!("statvfs failed");
        }
        Ok(usage(self.used_percent))
    }

    fn pause(&mut self, _d: Duration) {
        self.pauses += 1;
        self.used_percent -= self.lagging.min(self.used_percent);
        self.lagging = 0;
    }

    fn remove(&mut self, batch: &[&ImageFacts]) -> Result<RmiOutcome> {
        if self.broken_podman {
            anyhow::bail!("running podman rmi: No such file or directory");
        }
        self.calls
            .push(batch.iter().map(|i| i.id.clone()).collect());
        let mut out = RmiOutcome::default();
        for image in batch {
            if self.refuse.contains(&image.id) {
                out.stderr = format!("Error: image used by {}: image is in use", image.id);
            } else {
                out.deleted.push(image.id.clone());
                self.used_percent -= self.percent_per_image;
            }
        }
        out.success = out.stderr.is_empty();
        self.lagging = self.lag_per_batch;
        Ok(out)
    }
}

/// 12 candidates (c01 oldest), one pinned, one in use.
fn facts12() -> ContainerFacts {
    let mut images: Vec<ImageFacts> = (1..=12)
        .map(|n| img(&format!("c{n:02}"), &[&format!("r/c{n:02}:1")], n, false))
        .collect();
    images.push(img("pinned", &["quay.io/ocp/pause:1"], 0, false));
    images.push(img("used", &["r/used:1"], 0, false));
    ContainerFacts {
        images,
        in_use: strings(&["used"]),
        pinned_patterns: strings(&["quay.io/ocp/pause:1"]),
    }
}

#[test]
fn below_or_at_threshold_removes_nothing() {
    for used in [10, 50] {
        let mut fake = Fake::new(used, 3);
        let r = execute(&mut fake, &cfg(true, 50), &facts12()).unwrap();
        assert_eq!(r.outcome, Outcome::BelowThreshold);
        assert!(r.removed.is_empty() && fake.calls.is_empty() && r.warnings.is_empty());
        assert_eq!(r.batches, 0);
    }
}

#[test]
fn disabled_removes_nothing() {
    let mut fake = Fake::new(90, 3);
    let r = execute(&mut fake, &cfg(false, 50), &facts12()).unwrap();
    assert_eq!(r.outcome, Outcome::Disabled);
    assert!(fake.calls.is_empty());
    assert_eq!(
        r.summary(),
        "image cleanup disabled; container storage at 90%"
    );
}

#[test]
fn stops_after_the_batch_that_reaches_the_threshold() {
    // 60% -> 45% after one batch of 5 (3% each), threshold 50.
    let mut fake = Fake::new(60, 3);
    let r = execute(&mut fake, &cfg(true, 50), &facts12()).unwrap();
    assert_eq!(r.outcome, Outcome::ReachedThreshold);
    assert_eq!(fake.calls, [strings(&["c01", "c02", "c03", "c04", "c05"])]);
    assert_eq!(r.removed.len(), 5);
    assert_eq!(r.removed[0].names, ["r/c01:1"]);
    assert_eq!(r.bytes_freed, 500);
    assert_eq!((r.before.used_percent(), r.after.used_percent()), (60, 45));
    assert_eq!((r.skipped_pinned, r.skipped_in_use), (1, 1));
    assert!(r.warnings.is_empty());
    assert_eq!(
        r.summary(),
        "container storage at 60% > 50%: removed 5 images (500 B); now 45%"
    );
}

#[test]
fn measures_after_every_batch_and_the_last_batch_may_be_short() {
    // 80% -> 65% -> 50%: two batches; threshold 50 is reached exactly. The reading above the
    // threshold is repeated once to see that it is stable; the final one is not.
    let mut fake = Fake::new(80, 3);
    let r = execute(&mut fake, &cfg(true, 50), &facts12()).unwrap();
    assert_eq!(r.outcome, Outcome::ReachedThreshold);
    assert_eq!(r.batches, 2);
    assert_eq!((fake.measured, fake.pauses), (4, 1));
    assert_eq!(r.removed.len(), 10);

    // 12 candidates = batches of 5, 5, 2; never enough.
    let mut fake = Fake::new(90, 1);
    let r = execute(&mut fake, &cfg(true, 10), &facts12()).unwrap();
    assert_eq!(
        fake.calls.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 5, 2]
    );
    assert_eq!(r.outcome, Outcome::OutOfCandidates);
}

#[test]
fn space_freed_late_is_waited_for_before_another_batch() {
    // Each batch frees 10% at once and 5% more a moment later: 60 -> 50 (45 after the pause),
    // so a threshold of 48 is met by one batch, not two.
    let mut fake = Fake::new(60, 2);
    fake.lag_per_batch = 5;
    let r = execute(&mut fake, &cfg(true, 48), &facts12()).unwrap();
    assert_eq!(r.outcome, Outcome::ReachedThreshold);
    assert_eq!(r.batches, 1);
    assert_eq!(r.after.used_percent(), 45);
    assert_eq!(fake.pauses, 1);

    // A reading that never settles is taken after SETTLE_READINGS extra readings.
    struct Drifting(u64, usize);
    impl Store for Drifting {
        fn path(&self) -> &Path {
            Path::new("/x")
        }
        fn usage(&mut self) -> Result<FsUsage> {
            self.0 = if self.0 == 90 { 91 } else { 90 };
            Ok(usage(self.0))
        }
        fn pause(&mut self, _d: Duration) {
            self.1 += 1;
        }
        fn remove(&mut self, _b: &[&ImageFacts]) -> Result<RmiOutcome> {
            Ok(RmiOutcome::default())
        }
    }
    let mut d = Drifting(90, 0);
    let u = settled_usage(&mut d, 50).unwrap();
    assert_eq!(d.1, SETTLE_READINGS);
    assert!(u.used_percent() >= 90);
}

#[test]
fn running_out_of_candidates_is_a_warning() {
    let mut fake = Fake::new(90, 1);
    let r = execute(&mut fake, &cfg(true, 10), &facts12()).unwrap();
    assert_eq!(r.outcome, Outcome::OutOfCandidates);
    assert_eq!(r.removed.len(), 12);
    assert_eq!(r.after.used_percent(), 78);
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains("still at 78% > 10%"),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        r.summary(),
        "container storage at 90% > 10%: removed 12 images (1.2 KiB); now 78%, still above: \
         no more removable images (1 pinned, 1 in use) (1 warning)"
    );

    // No candidates at all.
    let facts = ContainerFacts {
        images: vec![img("pinned", &["quay.io/ocp/pause:1"], 0, false)],
        in_use: vec![],
        pinned_patterns: strings(&["quay.io/ocp/pause:1"]),
    };
    let mut fake = Fake::new(90, 1);
    let r = execute(&mut fake, &cfg(true, 10), &facts).unwrap();
    assert_eq!(r.outcome, Outcome::OutOfCandidates);
    assert!(fake.calls.is_empty());
    assert_eq!(r.warnings.len(), 1);
}

#[test]
fn a_refused_image_is_a_warning_and_the_cleanup_goes_on() {
    let mut fake = Fake::new(90, 3);
    fake.refuse = strings(&["c02", "c07"]);
    let r = execute(&mut fake, &cfg(true, 65), &facts12()).unwrap();
    // Batch 1 frees 4*3 = 12 -> 78; batch 2 frees 12 more -> 66; batch 3 -> 60.
    assert_eq!(r.batches, 3);
    assert_eq!(r.outcome, Outcome::ReachedThreshold);
    assert_eq!(r.removed.len(), 10);
    assert!(!r.removed.iter().any(|i| i.id == "c02" || i.id == "c07"));
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(
        r.warnings[0]
            .starts_with("podman rmi left 1 of 5 images: c02 (r/c02:1): Error: image used by c02"),
        "{}",
        r.warnings[0]
    );
    assert!(r.summary().ends_with("(2 warnings)"), "{}", r.summary());
}

#[test]
fn podman_not_runnable_is_a_warning() {
    let mut fake = Fake::new(90, 3);
    fake.broken_podman = true;
    let r = execute(&mut fake, &cfg(true, 50), &facts12()).unwrap();
    assert_eq!(r.outcome, Outcome::RemovalFailed);
    assert_eq!(r.batches, 1);
    assert!(r.removed.is_empty());
    assert!(r.warnings[0].contains("No such file"), "{:?}", r.warnings);
    assert_eq!(r.after, r.before);
}

#[test]
fn only_failing_to_measure_is_an_error() {
    let mut fake = Fake::new(90, 3);
    fake.measure_fails_from = Some(0);
    let e = execute(&mut fake, &cfg(true, 50), &facts12()).unwrap_err();
    assert!(format!("{e:#}").contains("statvfs failed"));

    let mut fake = Fake::new(90, 3);
    fake.measure_fails_from = Some(1);
    let e = execute(&mut fake, &cfg(true, 50), &facts12()).unwrap_err();
    assert!(
        format!("{e:#}").contains("after removing 5 images"),
        "{e:#}"
    );
}

#[test]
fn unexpected_deletions_are_reported() {
    let mut report = execute(&mut Fake::new(10, 1), &cfg(true, 50), &facts12()).unwrap();
    let facts = facts12();
    let batch: Vec<&ImageFacts> = facts.images.iter().take(1).collect();
    let rmi = RmiOutcome {
        deleted: strings(&["c01", "zzz"]),
        untagged: vec![],
        success: true,
        stderr: String::new(),
    };
    assert_eq!(record_batch(&mut report, &batch, &rmi), 0);
    assert_eq!(report.removed.len(), 1);
    assert!(report.warnings[0].contains("zzz"), "{:?}", report.warnings);
}

#[test]
fn live_store_measures_with_statvfs() {
    let mut paths = Paths::host();
    let d = tempfile::tempdir().unwrap();
    paths.var = d.path().join("var");
    let mut store = LiveStore {
        path: paths.container_storage(),
        paths: &paths,
        podman: None,
    };
    let e = store.usage().unwrap_err();
    assert!(format!("{e:#}").contains("var/lib/containers"), "{e:#}");
    std::fs::create_dir_all(paths.container_storage()).unwrap();
    assert!(store.usage().unwrap().blocks > 0);
}
