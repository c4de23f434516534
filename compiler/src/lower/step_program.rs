//! The step program: what every rank does in one optimizer step, in order —
//! forward and backward (or the pipeline's rounds), the gradient
//! all-reduce, the norm over the stages, fp16's unscaling, clipping, the
//! finiteness check, the optimizer step, local SGD's parameter averaging,
//! zeroing.

use super::cost::{all_gather_bytes, ring_bytes};
use crate::plan::{
    units_of, Clip, GradBucket, OuterFragment, Parallelism, Pass, Precision, Shard, ShardUnit,
    StagePlan, StepOp, SyncMode, TensorCollective, TrainPlan,
};

/// The step program. `local`: the parameter values one rank of each stage
/// holds (fewer than the stage's under `tensor`); `tensor`: the
/// all-reduces over a tensor group of one micro-batch.
pub(super) fn step_program(
    train: &TrainPlan,
    layout: &Parallelism,
    (stages, local): (&[StagePlan], &[u64]),
    buckets: &[GradBucket],
    units: &[ShardUnit],
    tensor: Vec<TensorCollective>,
    fragments: Vec<OuterFragment>,
) -> Vec<StepOp> {
    let (d, p) = (layout.data, layout.pipeline);
    let k = layout.shard_degree();
    // The stage with the most parameters sets the all-reduce volume.
    let stage_bytes = local.iter().map(|values| values * 4).max().unwrap_or(0);
    let bucket_count = buckets.len() as u64;
    let mut program = Vec::new();
    if !units.is_empty() {
        program.push(gather_units(units, stages, k, layout.reshard_after_forward));
    }
    program.push(if p == 1 {
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
            stages: super::schedule::stage_programs(stages, layout.schedule, layout.micro_batches),
        }
    });
    if !tensor.is_empty() {
        program.push(tensor_all_reduces(tensor, layout.tensor, train.accumulate));
    }
    if d > 1 {
        let (staleness, over) = gradient_average(layout);
        if matches!(layout.shard, Shard::Gradients | Shard::Parameters) {
            if layout.shard == Shard::Gradients {
                program.push(StepOp::ReduceScatterGradients {
                    buckets: bucket_count,
                    bytes_per_rank: shard_bytes(stages, buckets, k),
                });
            }
            // Sharded within sync groups, the gradients stay in each.
            if layout.shard_copies() > 1 && !layout.sharded_in_groups() {
                program.push(StepOp::AllReduceGradientSlices {
                    copies: layout.shard_copies(),
                    bytes_per_rank: ring_bytes(
                        match units {
                            [] => slice_bytes(stages, buckets, k),
                            units => unit_slice_bytes(units, stages),
                        },
                        layout.shard_copies(),
                    ),
                });
            }
        } else if let Some(staleness) = staleness {
            program.push(StepOp::AllReduceGradients {
                buckets: bucket_count,
                bytes_per_rank: ring_bytes(stage_bytes, over),
                staleness,
            });
        }
    }
    if p > 1 {
        program.push(StepOp::AllReduceGradNorm { stages: p });
    }
    if train.precision == Precision::Fp16 {
        // GradScaler's defaults.
        program.push(StepOp::UnscaleGradients {
            initial_scale: 65536.0,
            growth: 2.0,
            backoff: 0.5,
            growth_interval: 2000,
        });
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
        }) => program.extend([
            StepOp::ClipGradNorm {
                max_norm,
                norm_type,
            },
            check,
        ]),
        Some(Clip::Value { clip_value }) => {
            program.extend([check, StepOp::ClipGradValue { clip_value }])
        }
        None => program.push(check),
    }
    program.push(StepOp::OptimizerStep);
    if matches!(layout.shard, Shard::Optimizer | Shard::Gradients) && d > 1 {
        program.push(StepOp::AllGatherParameters {
            buckets: bucket_count,
            bytes_per_rank: shard_bytes(stages, buckets, k),
        });
    }
    program.extend(across_groups(layout, stage_bytes, fragments));
    program.push(StepOp::ZeroGrad);
    program
}

/// What the sync groups exchange across, after the optimizer step:
/// local SGD's average of the parameters (`stage_bytes` of them, in a ring
/// over the groups), DiLoCo's outer step (its `fragments`' all-reduces).
fn across_groups(
    layout: &Parallelism,
    stage_bytes: u64,
    fragments: Vec<OuterFragment>,
) -> Option<StepOp> {
    let groups = layout.sync_groups();
    match layout.sync {
        SyncMode::LocalSgd { period } if groups > 1 => Some(StepOp::AverageParameters {
            every: period,
            bytes_per_rank: ring_bytes(stage_bytes, groups),
        }),
        SyncMode::Diloco {
            period,
            outer_lr,
            outer_momentum,
            delay,
            outer_precision,
            ..
        } => Some(StepOp::OuterStep {
            every: period,
            groups,
            outer_lr,
            outer_momentum,
            delay,
            outer_precision,
            bytes_per_rank: fragments.iter().map(|f| f.bytes_per_rank).sum(),
            fragments,
        }),
        _ => None,
    }
}

/// Whether the replicas average their gradients (with which staleness),
/// and over how many: across sync groups the replicas meet by `sync`;
/// inside a group (`groups`) they average every step.
fn gradient_average(layout: &Parallelism) -> (Option<u64>, u64) {
    let (d, inner) = (layout.data, layout.group_size());
    match layout.sync {
        SyncMode::EveryStep => (Some(0), d),
        SyncMode::Async { staleness } => (Some(staleness), d),
        SyncMode::LocalSgd { .. } | SyncMode::Diloco { .. } => {
            ((layout.groups > 0 && inner > 1).then_some(0), inner)
        }
    }
}

/// `shard = parameters`: what the units of the stage that sends the most
/// send per micro-batch (per piece, in a pipeline) over `k` replicas; a
/// unit spanning its stage is gathered once.
/// `tensor = T`: the all-reduces of each micro-batch, `accumulate` a step.
fn tensor_all_reduces(collectives: Vec<TensorCollective>, t: u64, accumulate: u64) -> StepOp {
    let bytes = |update: bool| -> u64 {
        collectives
            .iter()
            .filter(|c| (c.pass == Pass::Update) == update)
            .map(|c| c.op.ring_bytes(c.bytes, t))
            .sum()
    };
    StepOp::TensorAllReduces {
        bytes_per_rank: bytes(false) * accumulate + bytes(true),
        collectives,
    }
}

fn gather_units(units: &[ShardUnit], stages: &[StagePlan], k: u64, reshard: bool) -> StepOp {
    let sends = |s: u64| units_of(units, s).map(|u| u.sends(stages, k, reshard));
    StepOp::GatherUnits {
        units: largest_stage(stages, |s| units_of(units, s).count() as u64),
        reshard_after_forward: reshard,
        all_gather_bytes_per_rank: largest_stage(stages, |s| sends(s).map(|(g, _)| g).sum()),
        reduce_scatter_bytes_per_rank: largest_stage(stages, |s| sends(s).map(|(_, r)| r).sum()),
    }
}

/// The bytes of one rank's slices of its stage's units, for the stage
/// with the most.
fn unit_slice_bytes(units: &[ShardUnit], stages: &[StagePlan]) -> u64 {
    largest_stage(stages, |s| units_of(units, s).map(|u| u.slice * 4).sum())
}

/// The most `per_stage` gives over the stages.
fn largest_stage(stages: &[StagePlan], per_stage: impl Fn(u64) -> u64) -> u64 {
    stages.iter().map(|s| per_stage(s.stage)).max().unwrap_or(0)
}

/// The bytes of one rank's slices of its stage's buckets cut `k` ways,
/// for the largest stage.
fn slice_bytes(stages: &[StagePlan], buckets: &[GradBucket], k: u64) -> u64 {
    stages
        .iter()
        .map(|s| {
            buckets
                .iter()
                .filter(|b| b.stage == s.stage)
                .map(|b| (b.bytes / 4).div_ceil(k) * 4)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// What a rank of the largest stage sends to all-gather (or
/// reduce-scatter) its stage's buckets over `d` replicas.
fn shard_bytes(stages: &[StagePlan], buckets: &[GradBucket], d: u64) -> u64 {
    stages
        .iter()
        .map(|s| all_gather_bytes(buckets.iter().filter(|b| b.stage == s.stage), d))
        .max()
        .unwrap_or(0)
}
