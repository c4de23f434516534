//! What `keep_best` and `stop_early` watch: the measures of each
//! evaluation against the best so far. The standing is kept in every
//! checkpoint, so a resumed run watches on as if it had not stopped.

use dtl_compiler::plan::{EarlyStop, Monitor};
use dtl_compiler::records::EvalRecord;
use serde::{Deserialize, Serialize};

/// What `keep_best` and `stop_early` have seen of the measures they
/// watch: the best value and its step, and for stopping the evaluations
/// in a row without an improvement by more than `min_delta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// `keep_best`: the best value so far (any improvement counts).
    pub best: Option<f64>,
    pub best_step: u64,
    /// `stop_early`: the last value that improved by more than
    /// `min_delta`, and its step.
    pub stop_best: Option<f64>,
    pub stop_best_step: u64,
    pub stale: u64,
}

impl Watch {
    /// Whether the evaluation of `step` is the best so far by `monitor`
    /// (recorded when it is).
    pub fn new_best(&mut self, monitor: Monitor, eval: &EvalRecord, step: u64) -> bool {
        let value = eval.get(&monitor.key()).unwrap_or(f64::NAN);
        let better = monitor.improves(value, self.best, 0.0);
        if better {
            (self.best, self.best_step) = (Some(value), step);
        }
        better
    }

    /// Why the run stops after the evaluation of `step`, when `stop` says
    /// it should: `patience` evaluations in a row without an improvement
    /// by more than `min_delta`. Never after the last step, which ends the
    /// run anyway.
    pub fn stop_early(
        &mut self,
        stop: &EarlyStop,
        eval: &EvalRecord,
        step: u64,
        last_step: bool,
    ) -> Option<String> {
        let key = stop.monitor.key();
        let value = eval.get(&key).unwrap_or(f64::NAN);
        if stop.monitor.improves(value, self.stop_best, stop.min_delta) {
            (self.stop_best, self.stop_best_step, self.stale) = (Some(value), step, 0);
        } else {
            self.stale += 1;
        }
        if self.stale < stop.patience || last_step {
            return None;
        }
        let best = self.stop_best.map_or("none".into(), |b| {
            format!("{b} at step {}", self.stop_best_step)
        });
        Some(format!(
            "stop_early: {key} did not improve by more than {} in {} evaluations (best {best})",
            stop.min_delta, stop.patience
        ))
    }
}
