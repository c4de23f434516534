//! Lowering of a checked experiment into the plan: topology and the ordered
//! step program.

use super::{Clip, Plan, RankPlan, StepOp, Topology, PLAN_VERSION};
use crate::check::Experiment;

pub fn build(experiment: Experiment, source: &str) -> Plan {
    let train = &experiment.train;
    let mut step_program = vec![StepOp::ForwardBackward {
        micro_batches: train.accumulate,
        loss_scale: 1.0 / train.accumulate as f64,
        precision: train.precision,
    }];
    let check = StepOp::CheckFinite {
        on_nan: train.on_nan,
    };
    // The check reads the total gradient norm: after norm clipping, which
    // computes it anyway, but before value clipping, which would turn an
    // infinite gradient into a finite one.
    match train.clip {
        Some(Clip::Norm {
            max_norm,
            norm_type,
        }) => step_program.extend([
            StepOp::ClipGradNorm {
                max_norm,
                norm_type,
            },
            check,
        ]),
        Some(Clip::Value { clip_value }) => {
            step_program.extend([check, StepOp::ClipGradValue { clip_value }])
        }
        None => step_program.push(check),
    }
    step_program.push(StepOp::OptimizerStep);
    step_program.push(StepOp::ZeroGrad);
    Plan {
        version: PLAN_VERSION,
        source: source.to_string(),
        model: experiment.model,
        data: experiment.data,
        train: experiment.train,
        topology: Topology {
            world_size: 1,
            data_parallel: 1,
            pipeline_stages: 1,
            ranks: vec![RankPlan {
                rank: 0,
                data_group: 0,
                stage: 0,
            }],
        },
        step_program,
    }
}
