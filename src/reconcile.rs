//! `ibu reconcile`: one convergent step, under an exclusive lock, recorded, then exit.
//!
//! The shell around the pure planner: take the lock, read the desired state and the recorded
//! state, let the planner decide against live facts, persist the planner's bookkeeping *before*
//! touching the host (so a crash mid-step leaves a status that tells the truth), run at most one
//! step, record its outcome, and exit with a code that tells systemd whether to run again.

use std::path::Path;

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use crate::facts::Live;
use crate::logging::message_id;
use crate::paths::Paths;
use crate::plan::{self, Decision, Outcome, SpecRejected, WakeOn};
use crate::spec::Desired;
use crate::spec::load::{self, SpecError};
use crate::status::Timestamp;
use crate::status::store::Recorded;
use crate::steps;

/// Exit codes of `ibu reconcile` (documented in the README; `units/ibu.service` relies on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The desired state is reached; nothing to do until it changes.
    Converged = 0,
    /// Unexpected error (a fact could not be read, the state could not be written).
    Error = 1,
    /// The desired-state document is invalid or the change is refused; nothing was changed.
    InvalidInput = 2,
    /// Waiting for a human: a failed stage, a refused transition, a failed cleanup.
    Blocked = 3,
    /// Waiting for the host; ibu should look again later.
    Waiting = 4,
    /// Another ibu holds the lock.
    Locked = 5,
    /// A step ran; run again to continue (systemd restarts the service on this code).
    Progressed = 75,
}

/// How a pass ended. A wait carries what ends it, so no caller can see one without the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every end but a wait for the host.
    Exit(Exit),
    /// Waiting for the host ([`Exit::Waiting`]): the event that ends the wait, and the longest
    /// to wait for it.
    Waiting { wake_on: WakeOn, max_secs: u64 },
}

impl Ended {
    pub fn exit(self) -> Exit {
        match self {
            Ended::Exit(exit) => exit,
            Ended::Waiting { .. } => Exit::Waiting,
        }
    }
}

impl From<Exit> for Ended {
    fn from(exit: Exit) -> Ended {
        Ended::Exit(exit)
    }
}

/// Read the desired state; a missing file means the default Idle document (a fresh node), as
/// LCA creates an Idle `ImageBasedUpgrade` when it is first deployed.
pub fn load_desired(path: &Path) -> Result<(Desired, Vec<String>), SpecError> {
    if !path.exists() {
        return Ok((Desired::idle(), vec![]));
    }
    let loaded = load::load_file(path)?;
    Ok((loaded.desired, loaded.warnings))
}

/// Digest of the desired file's bytes, to notice an edit made while ibu was running.
fn file_digest(path: &Path) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256};
    std::fs::read(path)
        .ok()
        .map(|b| Sha256::digest(&b).to_vec())
}

/// One reconcile pass.
pub fn run(paths: &Paths, config: &Path) -> Result<Ended> {
    let _lock = match crate::lock::InstanceLock::try_acquire(&paths.lock_file()) {
        Ok(l) => l,
        Err(e) if e.downcast_ref::<crate::lock::Locked>().is_some() => {
            warn!("{e}");
            return Ok(Exit::Locked.into());
        }
        Err(e) => return Err(e),
    };
    let before = file_digest(config);
    let (desired, warnings) = match load_desired(config) {
        Ok(d) => d,
        Err(e) => {
            error!(message_id = message_id::SPEC_REJECTED, "{e}");
            return Ok(Exit::InvalidInput.into());
        }
    };
    for w in &warnings {
        warn!("{w}");
    }
    let state_file = paths.state_file();
    let recorded = Recorded::load(&state_file)?;
    let facts = Live::new(paths);
    let now = Timestamp::now();
    let p = match plan::plan(&desired, &recorded, &facts, now) {
        Ok(p) => p,
        Err(e) => {
            if let Some(r) = e.downcast_ref::<SpecRejected>() {
                error!(
                    message_id = message_id::SPEC_REJECTED,
                    "{}: {r}",
                    config.display()
                );
                return Ok(Exit::InvalidInput.into());
            }
            return Err(e.context("planning"));
        }
    };
    if p.recorded != recorded {
        p.recorded
            .save(&state_file)
            .context("recording status before the step")?;
    }
    let stage = desired.stage.as_str();
    let ended = match &p.decision {
        Decision::Converged { summary } => {
            info!(
                message_id = message_id::CONVERGED,
                stage, "converged: {summary}"
            );
            Exit::Converged.into()
        }
        Decision::Blocked { reason } => {
            warn!(message_id = message_id::BLOCKED, stage, "blocked: {reason}");
            Exit::Blocked.into()
        }
        Decision::Wait {
            reason,
            retry_after_secs,
            wake_on,
        } => {
            info!(
                message_id = message_id::WAITING,
                stage,
                retry_after_secs,
                "waiting ({}): {reason}",
                crate::render::wake_text(*wake_on, *retry_after_secs)
            );
            Ended::Waiting {
                wake_on: *wake_on,
                max_secs: *retry_after_secs,
            }
        }
        Decision::Run(step) => {
            let name = step.name();
            info!(
                message_id = message_id::STEP_STARTED,
                stage,
                step = name,
                "{name}: {}",
                step.describe()
            );
            let started = Timestamp::now();
            let progress = Progress::new(&p.recorded, &state_file, desired.stage);
            let report = |msg: &str| progress.report(msg);
            let outcome = steps::execute(
                step,
                &steps::Env {
                    paths,
                    desired: &desired,
                    facts: &facts,
                    target: p.recorded.target.as_ref(),
                    recorded: &p.recorded,
                    progress: &report,
                },
            );
            // A step's writes must be on disk before its marker is: steps copy many files
            // (identity, backups, the restored /etc and /var) without syncing each, and a power
            // cut after the marker would otherwise leave them empty in a new stateroot that ibu
            // believes complete (the VM scenario `upgrade-power-cut` found empty SSH host keys:
            // sshd did not start after the pivot). One syncfs per step instead of one per file.
            crate::fsutil::sync_filesystem(&paths.sysroot)
                .with_context(|| format!("making the writes of {name} durable"))?;
            fault_point("crash-before-record", name);
            match &outcome {
                Outcome::Failed { message } => error!(
                    message_id = message_id::STEP_FAILED,
                    stage,
                    step = name,
                    "{name} failed: {message}"
                ),
                Outcome::Succeeded { message }
                | Outcome::Produced { message, .. }
                | Outcome::Warning { message } => info!(
                    message_id = message_id::STEP_SUCCEEDED,
                    stage,
                    step = name,
                    "{name}: {message}"
                ),
            }
            let mut rec = progress.into_recorded();
            plan::record(
                &mut rec,
                &desired,
                &facts,
                step,
                &outcome,
                started,
                Timestamp::now(),
            )?;
            rec.save(&state_file)
                .with_context(|| format!("recording the outcome of {name}"))?;
            Exit::Progressed.into()
        }
    };
    if file_digest(config) != before && ended.exit() != Exit::Progressed {
        info!(
            "{} changed during this run; running again",
            config.display()
        );
        return Ok(Exit::Progressed.into());
    }
    Ok(ended)
}

/// Writes a long step's progress into the in-progress condition of the stage, at most every
/// couple of seconds, so `ibu status` shows how far a pull or an import is.
struct Progress<'a> {
    rec: std::cell::RefCell<Recorded>,
    path: &'a Path,
    stage: crate::spec::Stage,
    last: std::cell::Cell<Option<std::time::Instant>>,
}

impl<'a> Progress<'a> {
    fn new(rec: &Recorded, path: &'a Path, stage: crate::spec::Stage) -> Progress<'a> {
        Progress {
            rec: std::cell::RefCell::new(rec.clone()),
            path,
            stage,
            last: std::cell::Cell::new(None),
        }
    }

    fn report(&self, msg: &str) {
        info!(stage = self.stage.as_str(), "{msg}");
        if self
            .last
            .get()
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(2))
        {
            return;
        }
        self.last.set(Some(std::time::Instant::now()));
        let mut rec = self.rec.borrow_mut();
        let cx = crate::status::conditions::Ctx {
            generation: rec.generation,
            now: Timestamp::now(),
        };
        if self.stage == crate::spec::Stage::Prep && rec.status.is_stage_in_progress(self.stage) {
            rec.status.set_prep_in_progress(cx, msg);
            if let Err(e) = rec.save(self.path) {
                warn!("recording progress: {e:#}");
            }
        }
    }

    fn into_recorded(self) -> Recorded {
        self.rec.into_inner()
    }
}

/// Test seam (documented in the README): `IBU_FAULT=<point>:<step>` makes ibu abort at that
/// point of that step, as a power cut would. Only `crash-before-record` (after the step's work,
/// before its outcome is recorded) exists. Never set on a real node.
fn fault_point(point: &str, step: &str) {
    if let Ok(v) = std::env::var("IBU_FAULT")
        && v.split(',').any(|f| f == format!("{point}:{step}"))
    {
        eprintln!("IBU_FAULT: aborting at {point} of {step}");
        std::process::abort();
    }
}
