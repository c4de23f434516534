//! Sync groups meeting across: local SGD's average of the parameters and
//! DiLoCo's outer step (`crate::parallel::diloco`), each every `period`
//! steps and after the last.

use dtl_compiler::plan::{StepOp, SyncMode};
use tch::{Kind, Tensor};

use super::Executor;
use crate::error::RunError;
use crate::parallel::data::Buckets;

impl Executor<'_> {
    /// Whether a checkpoint of this run can be resumed: not under DiLoCo
    /// yet (the checker refuses its `checkpoint_every`), whose groups'
    /// own state a checkpoint would lose.
    pub fn checkpoints(&self) -> bool {
        self.outer.is_none()
    }

    /// The error of a run stopped by signal `number` after `step`, with
    /// the checkpoint of that step in `out` when it has one.
    pub fn interrupted(&self, step: u64, number: i32, out: &std::path::Path) -> RunError {
        let signal = crate::signals::name(number);
        match self.checkpoints() {
            true => RunError::Interrupted {
                step,
                signal,
                number,
                out: out.display().to_string(),
            },
            false => RunError::InterruptedUnsaved {
                step,
                signal,
                number,
            },
        }
    }

    /// `average_parameters` or `outer_step` of the step program, at the
    /// steps it is due.
    pub(super) fn meet_across(&mut self, op: &StepOp, step: u64) -> Result<(), RunError> {
        match op {
            StepOp::AverageParameters { every, .. } if step.is_multiple_of(*every) => {
                self.average_replicas(step)
            }
            StepOp::OuterStep { every, .. } if step.is_multiple_of(*every) => self.outer_step(step),
            _ => Ok(()),
        }
    }

    /// After the last step, when the last period was partial: local SGD's
    /// average, DiLoCo's outer step.
    pub(super) fn meet_after_the_last(&mut self, step: u64) -> Result<(), RunError> {
        match self.plan.topology.parallelism.sync {
            SyncMode::LocalSgd { period } if !step.is_multiple_of(period) => {
                self.average_replicas(step)
            }
            SyncMode::Diloco { period, .. } if !step.is_multiple_of(period) => {
                self.outer_step(step)
            }
            _ => Ok(()),
        }
    }

    /// DiLoCo's outer step: the parameters and buffers averaged over the
    /// groups, then θ_global's SGD step, which every replica takes as its
    /// parameters.
    pub(super) fn outer_step(&mut self, step: u64) -> Result<(), RunError> {
        let comm = self.world.across();
        let tensors: Vec<Tensor> = self
            .model
            .params
            .iter()
            .chain(&self.model.buffers)
            .map(|(_, t)| t.shallow_clone())
            .collect();
        if comm.size() > 1 {
            self.across_group_bytes += ring_bytes(&tensors, comm.size());
            Buckets::average_tensors(comm, &tensors, step)?;
        }
        match &mut self.outer {
            Some(outer) => outer.step(&self.model.params, step),
            None => Err(RunError::Torch {
                context: format!("step {step}: DiLoCo's outer step"),
                message: "the plan has an outer step, but this rank holds no global parameters"
                    .into(),
            }),
        }
    }
}

/// What one rank sends in a ring all-reduce of the float tensors of
/// `tensors` over `n` ranks (the others are not averaged), by the plan's
/// formula.
pub(super) fn ring_bytes(tensors: &[Tensor], n: usize) -> u64 {
    let bytes: u64 = tensors
        .iter()
        .filter(|t| t.kind() == Kind::Float)
        .map(|t| t.numel() as u64 * 4)
        .sum();
    dtl_compiler::lower::cost::ring_bytes(bytes, n as u64)
}
