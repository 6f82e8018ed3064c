//! `status.history`: when each stage and its phases started and completed (LCA's history.go).

use super::{Phase, StageHistory, Status, Timestamp};
use crate::spec::Stage;

/// Phase names LCA reports.
pub const PHASE_STATEROOT: &str = "Stateroot";
pub const PHASE_PRECACHE: &str = "Precache";
pub const PHASE_PREPIVOT: &str = "PrePivot";
pub const PHASE_POSTPIVOT: &str = "PostPivot";

impl Status {
    /// `ResetHistory`: the history is cleared while the desired stage is Idle.
    pub fn reset_history(&mut self) {
        self.history.clear();
    }

    /// `StartStageHistory`: open an entry for `stage` unless one is already started. Idle has none.
    pub fn start_stage_history(&mut self, stage: Stage, now: Timestamp) {
        if stage == Stage::Idle || self.history.iter().any(|h| h.stage == stage) {
            return;
        }
        self.history.push(StageHistory {
            stage,
            start_time: now,
            completion_time: None,
            phases: Vec::new(),
        });
    }

    /// `StopStageHistory`: close the open entry of `stage`.
    pub fn stop_stage_history(&mut self, stage: Stage, now: Timestamp) {
        for h in self.history.iter_mut().filter(|h| h.stage == stage) {
            if h.completion_time.is_none() {
                h.completion_time = Some(now);
            }
        }
    }

    /// `StartPhase`: open `phase` in the entry of `stage` unless already started.
    pub fn start_phase(&mut self, stage: Stage, phase: &str, now: Timestamp) {
        if let Some(h) = self.history.iter_mut().find(|h| h.stage == stage)
            && !h.phases.iter().any(|p| p.phase == phase)
        {
            h.phases.push(Phase {
                phase: phase.to_string(),
                start_time: now,
                completion_time: None,
            });
        }
    }

    /// `StopPhase`: close `phase` in the entry of `stage`.
    pub fn stop_phase(&mut self, stage: Stage, phase: &str, now: Timestamp) {
        for h in self.history.iter_mut().filter(|h| h.stage == stage) {
            for p in h.phases.iter_mut().filter(|p| p.phase == phase) {
                if p.completion_time.is_none() {
                    p.completion_time = Some(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_and_phase_lifecycle() {
        let t = |s: i64| Timestamp::from_unix(1_700_000_000 + s);
        let mut s = Status::default();
        s.start_stage_history(Stage::Idle, t(0));
        assert!(s.history.is_empty(), "Idle has no history entry");
        s.start_stage_history(Stage::Prep, t(0));
        s.start_stage_history(Stage::Prep, t(5));
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.history[0].start_time, t(0));
        s.start_phase(Stage::Prep, PHASE_STATEROOT, t(1));
        s.start_phase(Stage::Prep, PHASE_STATEROOT, t(2));
        s.stop_phase(Stage::Prep, PHASE_STATEROOT, t(3));
        s.stop_phase(Stage::Prep, PHASE_STATEROOT, t(4));
        assert_eq!(s.history[0].phases.len(), 1);
        assert_eq!(s.history[0].phases[0].start_time, t(1));
        assert_eq!(s.history[0].phases[0].completion_time, Some(t(3)));
        s.stop_stage_history(Stage::Prep, t(6));
        assert_eq!(s.history[0].completion_time, Some(t(6)));
        s.reset_history();
        assert!(s.history.is_empty());
    }
}
