//! Lowering of a checked experiment into the plan: topology, stages,
//! gradient buckets and the ordered step program.

use super::parallel::{self, SyncMode};
use super::{Clip, Plan, RankPlan, Sharding, StepOp, Topology, PLAN_VERSION};
use crate::check::Experiment;

/// Bytes a rank sends in a ring all-reduce of `bytes` over `n` ranks.
pub fn ring_bytes(bytes: u64, n: u64) -> u64 {
    2 * (n - 1) * bytes / n
}

/// `experiment.parallel.data` must be resolved (not 0): the compiler
/// checks that first.
pub fn build(experiment: Experiment, source: &str) -> Plan {
    let Experiment {
        model,
        data,
        mut train,
        parallel: layout,
        stage_starts,
    } = experiment;
    let (d, p) = (layout.data, layout.pipeline);
    train.global_batch = train.micro_batch * train.accumulate * d;
    let stages = parallel::stages(&model, &stage_starts);
    let buckets = if d > 1 {
        parallel::buckets(&model, &stages, layout.bucket_bytes)
    } else {
        Vec::new()
    };
    // The stage with the most parameters sets the all-reduce volume.
    let stage_bytes = stages.iter().map(|s| s.parameters * 4).max().unwrap_or(0);

    let mut step_program = vec![if p == 1 {
        StepOp::ForwardBackward {
            micro_batches: train.accumulate,
            loss_scale: 1.0 / train.accumulate as f64,
            precision: train.precision,
        }
    } else {
        StepOp::Pipeline {
            schedule: layout.schedule,
            rounds: train.accumulate,
            micro_batches: layout.micro_batches,
            loss_scale: 1.0 / (train.accumulate * layout.micro_batches) as f64,
            precision: train.precision,
            stages: parallel::stage_programs(&stages, layout.schedule, layout.micro_batches),
        }
    }];
    if d > 1 {
        let staleness = match layout.sync {
            SyncMode::EveryStep => Some(0),
            SyncMode::Async { staleness } => Some(staleness),
            SyncMode::LocalSgd { .. } => None,
        };
        if let Some(staleness) = staleness {
            step_program.push(StepOp::AllReduceGradients {
                buckets: buckets.len() as u64,
                bytes_per_rank: ring_bytes(stage_bytes, d),
                staleness,
            });
        }
    }
    if p > 1 {
        step_program.push(StepOp::AllReduceGradNorm { stages: p });
    }
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
    if let (SyncMode::LocalSgd { period }, true) = (layout.sync, d > 1) {
        step_program.push(StepOp::AverageParameters {
            every: period,
            bytes_per_rank: ring_bytes(stage_bytes, d),
        });
    }
    step_program.push(StepOp::ZeroGrad);

    let train_rows = data.rows - (data.rows as f64 * data.valid_fraction).round() as u64;
    Plan {
        version: PLAN_VERSION,
        source: source.to_string(),
        topology: Topology {
            world_size: d * p,
            data_parallel: d,
            pipeline_stages: p,
            ranks: (0..d * p)
                .map(|rank| RankPlan {
                    rank,
                    data_group: rank % d,
                    stage: rank / d,
                })
                .collect(),
            stages,
            buckets,
            sharding: Sharding {
                replicas: d,
                rows_per_replica: train_rows / d,
            },
            parallelism: layout,
        },
        model,
        data,
        train,
        step_program,
    }
}
