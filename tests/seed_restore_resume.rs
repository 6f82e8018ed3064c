//! Crashes during the restore: a run is stopped at every step it announces (by unwinding out of
//! the checkpoint, so no error-path cleanup runs — as in a real crash), or in the middle of
//! reading a layer, and the next run must converge to exactly what an uninterrupted run gives.
//! A deletion that already happened must not fail the resumed run. Also: leftovers of every
//! kind are cleared, a failure (not a crash) cleans up its staging, and a stamp of another
//! attempt does not make a first attempt lenient.

mod common;
mod seed_restore_fixture;

use std::collections::BTreeMap;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use anyhow::{Result, bail};
use common::snapshot::{Snap, assert_same_trees, snapshot};
use ibu::oci::{Descriptor, ImageConfig, ImageManifest};
use ibu::seed::restore::{
    ETC_SPOOL, ETC_STAGING, ETC_STAMP, RestoreError, RestoreReport, Step, VAR_STAGING,
    discard_etc_attempt, restore_etc_with, restore_var_with,
};
use ibu::seed::source::{LayoutSource, SeedSource};
use seed_restore_fixture::{Seed, Target, copy_tree, empty_dir, same_etc};

/// The panic payload of a simulated crash.
struct Crash;

/// Keep simulated crashes out of the test output (other panics print as usual).
fn quiet_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Crash>() {
                previous(info);
            }
        }));
    });
}

/// Run `f` with a checkpoint that crashes at announced step number `n` (0-based), before taking
/// it; returns the steps taken and the one crashed at, or `None` if the run completed first.
fn crash_at(
    n: usize,
    f: impl FnOnce(&mut dyn FnMut(&Step) -> Result<()>) -> Result<RestoreReport>,
) -> Option<(Vec<Step>, Step)> {
    quiet_crashes();
    let mut steps = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        f(&mut |step: &Step| {
            steps.push(step.clone());
            if steps.len() > n {
                std::panic::panic_any(Crash);
            }
            Ok(())
        })
    }));
    match outcome {
        Ok(r) => {
            r.unwrap();
            None
        }
        Err(payload) if payload.is::<Crash>() => {
            let at = steps.pop()?;
            Some((steps, at))
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// `MoveIn` for `Step::MoveIn(..)`.
fn kind(step: &Step) -> String {
    let s = format!("{step:?}");
    s.split('(').next().unwrap_or(&s).to_string()
}

/// A seed, a target, pristine copies of the target's `etc` and `var` to reset to, and what an
/// uninterrupted run gives.
struct Bench {
    seed: Seed,
    t: Target,
    pristine: tempfile::TempDir,
    want_etc: BTreeMap<PathBuf, Snap>,
    want_var: BTreeMap<PathBuf, Snap>,
}

impl Bench {
    fn new() -> Result<Bench> {
        let seed = Seed::build()?;
        let t = Target::new()?;
        let pristine = tempfile::Builder::new().prefix("ibu-pristine-").tempdir()?;
        std::fs::create_dir(pristine.path().join("etc"))?;
        copy_tree(&t.etc(), &pristine.path().join("etc"))?;
        let sh = common::sh()?;
        let (var, dst) = (t.var(), pristine.path().join("var"));
        common::run(xshell::cmd!(sh, "cp -a {var} {dst}"))?;
        let mut b = Bench {
            seed,
            t,
            pristine,
            want_etc: BTreeMap::new(),
            want_var: BTreeMap::new(),
        };
        b.reset()?;
        b.etc(&mut |_| Ok(()))?;
        b.var(&mut |_| Ok(()))?;
        b.want_etc = snapshot(&b.t.etc(), false);
        b.want_var = snapshot(&b.t.var(), false);
        Ok(b)
    }

    /// The target as the deployment left it: defaults in `etc`, os-init's empty `var`, no
    /// attempt.
    fn reset(&self) -> Result<()> {
        empty_dir(&self.t.etc())?;
        copy_tree(&self.pristine.path().join("etc"), &self.t.etc())?;
        std::fs::remove_dir_all(self.t.var())?;
        let sh = common::sh()?;
        let (src, dst) = (self.pristine.path().join("var"), self.t.var());
        common::run(xshell::cmd!(sh, "cp -a {src} {dst}"))?;
        discard_etc_attempt(&self.t.stateroot())?;
        assert_eq!(self.t.stateroot_names(), ["deploy", "var"]);
        Ok(())
    }

    fn etc_from(
        &self,
        src: &dyn SeedSource,
        cp: &mut dyn FnMut(&Step) -> Result<()>,
    ) -> Result<RestoreReport> {
        restore_etc_with(
            src,
            &self.seed.manifest,
            &self.t.deployment(),
            &self.t.stateroot(),
            &self.seed.deletions,
            cp,
        )
    }

    fn etc(&self, cp: &mut dyn FnMut(&Step) -> Result<()>) -> Result<RestoreReport> {
        self.etc_from(&self.seed.source()?, cp)
    }

    fn var_from(
        &self,
        src: &dyn SeedSource,
        cp: &mut dyn FnMut(&Step) -> Result<()>,
    ) -> Result<RestoreReport> {
        restore_var_with(src, &self.seed.manifest, &self.t.stateroot(), cp)
    }

    fn var(&self, cp: &mut dyn FnMut(&Step) -> Result<()>) -> Result<RestoreReport> {
        self.var_from(&self.seed.source()?, cp)
    }

    fn etc_converged(&self, what: &str) {
        same_etc(
            &self.want_etc,
            &snapshot(&self.t.etc(), false),
            &self.seed.etc_entries(),
        );
        assert_eq!(
            self.t.stateroot_names(),
            ["deploy", ETC_STAMP, "var"],
            "{what}: only the stamp stays"
        );
    }

    fn var_converged(&self, what: &str) {
        assert_same_trees(&self.want_var, &snapshot(&self.t.var(), false));
        assert!(
            !self
                .t
                .stateroot_names()
                .iter()
                .any(|n| n.contains(VAR_STAGING)),
            "{what}: no staging left"
        );
    }
}

#[test]
fn etc_converges_after_a_crash_at_every_step() -> Result<()> {
    let b = Bench::new()?;
    let mut kinds = std::collections::BTreeSet::new();
    let mut n = 0;
    loop {
        b.reset()?;
        let Some((taken, at)) = crash_at(n, |cp| b.etc(cp)) else {
            break;
        };
        let what = format!("crash at step {n}, {at}");
        kinds.insert(kind(&at));
        // Every third time the resumed run crashes too, early (removing leftovers, spooling).
        if n % 3 == 0
            && let Some((_, again)) = crash_at((n / 3) % 4, |cp| b.etc(cp))
        {
            kinds.insert(kind(&again));
        }
        let r = b.etc(&mut |_| Ok(()))?;
        b.etc_converged(&what);
        let deleted_before = taken
            .iter()
            .filter(|s| matches!(s, Step::Delete(_)))
            .count() as u64;
        let stamped = taken.contains(&Step::WriteStamp);
        assert_eq!(r.resumed, stamped, "{what}");
        assert!(r.already_deleted >= deleted_before, "{what}: {r:?}");
        assert_eq!(
            r.deleted + r.already_deleted,
            b.seed.deletions.len() as u64,
            "{what}"
        );
        n += 1;
    }
    // Every kind of step was crashed at.
    for step in [
        "RemoveLeftover",
        "Spool",
        "Extract",
        "RemoveSpool",
        "WriteStamp",
        "MoveIn",
        "Replace",
        "ExchangeKind",
        "RemoveReplaced",
        "DirMetadata",
        "Delete",
        "Sync",
        "RemoveStaging",
    ] {
        assert!(
            kinds.contains(step),
            "never crashed at a {step} step: {kinds:?}"
        );
    }
    // ... at each of the steps an uninterrupted run takes.
    b.reset()?;
    let mut all = Vec::new();
    b.etc(&mut |s| {
        all.push(s.clone());
        Ok(())
    })?;
    assert_eq!(n, all.len(), "{all:#?}");
    Ok(())
}

#[test]
fn var_converges_after_a_crash_at_every_step() -> Result<()> {
    let b = Bench::new()?;
    let mut n = 0;
    loop {
        b.reset()?;
        let Some((taken, at)) = crash_at(n, |cp| b.var(cp)) else {
            break;
        };
        let what = format!("crash at step {n}, {at}");
        // A crashed run that has exchanged leaves the old var under the staging name.
        if taken.contains(&Step::RemoveOldVar) || taken.contains(&Step::ExchangeVar) {
            assert!(b.t.stateroot().join(VAR_STAGING).exists(), "{what}");
        }
        b.var(&mut |_| Ok(()))?;
        b.var_converged(&what);
        n += 1;
    }
    assert_eq!(n, 4, "extract, root metadata, exchange, remove old");
    Ok(())
}

/// A seed source whose stream of one layer dies (a crash) after `after` bytes.
struct DyingSource {
    inner: LayoutSource,
    digest: String,
    after: u64,
}

struct Dying<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Dying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            std::panic::panic_any(Crash);
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl SeedSource for DyingSource {
    fn manifest(&self) -> Result<(ImageManifest, String)> {
        self.inner.manifest()
    }
    fn config(&self, manifest: &ImageManifest) -> Result<ImageConfig> {
        self.inner.config(manifest)
    }
    fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let r = self.inner.open_layer(layer)?;
        if layer.digest != self.digest {
            return Ok(r);
        }
        Ok(Box::new(Dying {
            inner: r,
            left: self.after,
        }))
    }
    fn ranges(&self, layer: &Descriptor, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        self.inner.ranges(layer, ranges)
    }
    fn bytes_downloaded(&self) -> u64 {
        0
    }
    fn describe(&self) -> String {
        "dying".into()
    }
}

fn layer_digest(b: &Bench, role: &str) -> Result<String> {
    Ok(ibu::seed::fetch::layer_with_role(&b.seed.manifest, role)?
        .digest
        .clone())
}

#[test]
fn a_crash_while_a_layer_is_read_leaves_partial_staging_that_the_next_run_clears() -> Result<()> {
    let b = Bench::new()?;
    quiet_crashes();
    let var_digest = layer_digest(&b, "var")?;
    let etc_digest = layer_digest(&b, "etc")?;
    for after in [0u64, 1, 700, 5000, 20_000] {
        // /var: the partial extraction stays behind.
        b.reset()?;
        let src = DyingSource {
            inner: b.seed.source()?,
            digest: var_digest.clone(),
            after,
        };
        let crashed = catch_unwind(AssertUnwindSafe(|| b.var_from(&src, &mut |_| Ok(()))));
        match crashed {
            Err(p) if p.is::<Crash>() => {}
            _ => bail!("the var layer is larger than {after} bytes; the run must crash"),
        }
        let names = b.t.stateroot_names();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!(".{VAR_STAGING}.partial-"))),
            "{names:?}"
        );
        b.var(&mut |_| Ok(()))?;
        b.var_converged(&format!("var layer died after {after} bytes"));

        // /etc: the partial spool stays behind.
        let src = DyingSource {
            inner: b.seed.source()?,
            digest: etc_digest.clone(),
            after,
        };
        let crashed = catch_unwind(AssertUnwindSafe(|| b.etc_from(&src, &mut |_| Ok(()))));
        assert!(matches!(crashed, Err(p) if p.is::<Crash>()));
        assert!(b.t.stateroot().join(ETC_SPOOL).exists());
        b.etc(&mut |_| Ok(()))?;
        b.etc_converged(&format!("etc layer died after {after} bytes"));
    }
    Ok(())
}

#[test]
fn leftovers_of_every_kind_are_cleared_first() -> Result<()> {
    let b = Bench::new()?;
    b.reset()?;
    let root = b.t.stateroot();
    for dir in [
        format!(".{VAR_STAGING}.partial-1-0"),
        VAR_STAGING.to_string(),
        format!(".{ETC_STAGING}.partial-1-7"),
        ETC_STAGING.to_string(),
        format!(".{ETC_SPOOL}.partial-1-0"),
    ] {
        common::seed::write(&root.join(&dir).join("deep/junk"), "junk")?;
    }
    std::fs::write(root.join(ETC_SPOOL), "not a tar")?;
    std::fs::write(root.join(format!(".{ETC_STAMP}.tmp")), "torn")?;
    b.var(&mut |_| Ok(()))?;
    b.var_converged("leftovers");
    let r = b.etc(&mut |_| Ok(()))?;
    assert!(!r.resumed);
    b.etc_converged("leftovers");
    Ok(())
}

#[test]
fn a_failure_cleans_up_staging_and_keeps_the_stamp() -> Result<()> {
    let b = Bench::new()?;
    let failing = |at: &'static str| {
        move |s: &Step| -> Result<()> {
            if format!("{s:?}").starts_with(at) {
                bail!("injected failure at {s}");
            }
            Ok(())
        }
    };
    for (at, stamped) in [("Extract", false), ("MoveIn", true), ("Delete", true)] {
        b.reset()?;
        let err = b.etc(&mut failing(at)).expect_err("injected");
        assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
        let want: Vec<&str> = if stamped {
            vec!["deploy", ETC_STAMP, "var"]
        } else {
            vec!["deploy", "var"]
        };
        assert_eq!(b.t.stateroot_names(), want, "after a failure at {at}");
        let r = b.etc(&mut |_| Ok(()))?;
        assert_eq!(r.resumed, stamped);
        b.etc_converged(at);
    }
    for at in ["VarRootMetadata", "ExchangeVar", "RemoveOldVar"] {
        b.reset()?;
        b.var(&mut failing(at)).expect_err("injected");
        assert_eq!(b.t.stateroot_names(), ["deploy", "var"], "after {at}");
        b.var(&mut |_| Ok(()))?;
        b.var_converged(at);
    }
    Ok(())
}

#[test]
fn a_stamp_of_another_attempt_does_not_make_a_first_attempt_lenient() -> Result<()> {
    let b = Bench::new()?;
    b.reset()?;
    // An earlier attempt of this etc with another seed.
    let md = std::fs::metadata(b.t.etc())?;
    use std::os::unix::fs::MetadataExt;
    let stamp = format!(
        r#"{{"layer":"sha256:{}","etc_dev":{},"etc_ino":{}}}"#,
        "0".repeat(64),
        md.dev(),
        md.ino()
    );
    std::fs::write(b.t.stateroot().join(ETC_STAMP), &stamp)?;
    std::fs::remove_file(b.t.etc().join("deleteme.conf"))?;
    let err = b
        .etc(&mut |_| Ok(()))
        .expect_err("first attempt with a missing path");
    assert!(
        matches!(
            err.downcast_ref::<RestoreError>(),
            Some(RestoreError::MissingDeletions { paths }) if paths == &["/etc/deleteme.conf"]
        ),
        "{err:#}"
    );
    // The same stamp naming this seed's etc layer makes it a resumed attempt.
    let stamp = stamp.replace(
        &format!("sha256:{}", "0".repeat(64)),
        &layer_digest(&b, "etc")?,
    );
    std::fs::write(b.t.stateroot().join(ETC_STAMP), stamp)?;
    let r = b.etc(&mut |_| Ok(()))?;
    assert!(r.resumed, "{r:?}");
    assert_eq!(r.already_deleted, 1, "{r:?}");
    b.etc_converged("resumed with a stamp");
    Ok(())
}
