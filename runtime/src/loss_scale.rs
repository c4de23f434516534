//! fp16's loss scale: `torch.amp.GradScaler`'s state and its update rule.

use dtl_compiler::plan::{Plan, StepOp};

/// GradScaler's state: the scale (a power of two, kept in float32 as
/// PyTorch keeps it) and the steps in a row without an overflow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    pub scale: f64,
    pub tracker: u64,
}

impl LossScale {
    /// The scale a run starts with: the plan's initial one, or the one a
    /// checkpoint kept. None unless the plan unscales (`precision = fp16`).
    pub fn for_plan(plan: &Plan, saved: Option<LossScale>) -> Option<LossScale> {
        plan.step_program.iter().find_map(|op| match op {
            StepOp::UnscaleGradients { initial_scale, .. } => Some(saved.unwrap_or(LossScale {
                scale: *initial_scale,
                tracker: 0,
            })),
            _ => None,
        })
    }

    /// `GradScaler.update`: after an overflow the scale times `backoff`, after
    /// `interval` steps in a row without one the scale times `growth`. The
    /// scale is a float32 tensor in PyTorch; its products are rounded to
    /// float32 here as there.
    pub fn next(self, overflow: bool, growth: f64, backoff: f64, interval: u64) -> LossScale {
        let now = self;
        let times = |factor: f64| f64::from((now.scale * factor) as f32);
        if overflow {
            LossScale {
                scale: times(backoff),
                tracker: 0,
            }
        } else if now.tracker + 1 == interval {
            LossScale {
                scale: times(growth),
                tracker: 0,
            }
        } else {
            LossScale {
                scale: now.scale,
                tracker: now.tracker + 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_scale_moves_as_grad_scalers() {
        let at = |scale, tracker| LossScale { scale, tracker };
        // An overflow halves it and starts the count again.
        assert_eq!(at(65536.0, 7).next(true, 2.0, 0.5, 2000), at(32768.0, 0));
        // The 2000th step in a row without one doubles it.
        assert_eq!(
            at(32768.0, 1998).next(false, 2.0, 0.5, 2000),
            at(32768.0, 1999)
        );
        assert_eq!(
            at(32768.0, 1999).next(false, 2.0, 0.5, 2000),
            at(65536.0, 0)
        );
        // Past float32's range it is infinite, as PyTorch's tensor becomes.
        assert!(at(2f64.powi(127), 1999)
            .next(false, 2.0, 0.5, 2000)
            .scale
            .is_infinite());
    }
}
