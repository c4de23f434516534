//! Lower: a checked [`Experiment`] and a world size → the execution
//! [`Plan`]. This is where the layout is decided: the data-parallel degree,
//! the step count of `epochs`, the pipeline stages and what crosses between
//! them, the gradient buckets, each stage's schedule and the step program.
//! Errors that depend on the world size (and so cannot be found by `check`
//! alone) are reported here with the spans `check` kept.
//!
//! Imports run one way: `lower` reads `check`'s output and writes `plan`'s
//! types; neither of them imports anything from here.

mod buckets;
pub mod cost;
mod fragments;
mod ranks;
pub mod schedule;
mod stages;
mod step_program;
pub(crate) mod tensor;
mod topology;
mod units;

use crate::check::{CheckError, Degree, Experiment};
use crate::plan::{Parallelism, Plan, Shard, Sharding, Topology, TrainPlan, PLAN_VERSION};

/// The plan of `experiment` for `world` ranks (`None`: the ranks the
/// parallel block fixes; `data = auto` then needs one). `source` names the
/// `.dtl` file in the plan.
pub fn lower(
    experiment: &Experiment,
    world: Option<u64>,
    source: &str,
) -> Result<Plan, Vec<CheckError>> {
    lower_for(experiment, world, source, topology::Purpose::Plan)
}

fn lower_for(
    experiment: &Experiment,
    world: Option<u64>,
    source: &str,
    purpose: topology::Purpose,
) -> Result<Plan, Vec<CheckError>> {
    let mut errors = Vec::new();
    let resolved = topology::resolve(experiment, world, purpose, &mut errors);
    let starts = stages::starts(&experiment.model, &experiment.parallel, &mut errors);
    let (Some(resolved), Some(starts)) = (resolved, starts) else {
        return Err(errors);
    };
    let Experiment {
        model, data, train, ..
    } = experiment;
    let layout = &experiment.parallel;
    let parallelism = Parallelism {
        data: resolved.data,
        pipeline: layout.pipeline,
        micro_batches: layout.micro_batches,
        schedule: layout.schedule,
        sync: layout.sync,
        backend: layout.backend,
        bucket_bytes: layout.bucket_bytes,
        batch_norm: layout.batch_norm,
        shard: layout.shard,
        shard_group: layout.shard_group,
        reshard_after_forward: layout.reshard_after_forward,
        tensor: layout.tensor,
        groups: layout.groups,
        sequence: !layout.sequence.is_empty(),
    };
    let d = parallelism.data;
    let train = TrainPlan {
        loss: train.loss.clone(),
        optimizer: train.optimizer.clone(),
        schedule: train.schedule.clone(),
        steps: resolved.steps,
        micro_batch: train.micro_batch,
        accumulate: train.accumulate,
        global_batch: train.micro_batch * train.accumulate * d,
        clip: train.clip.clone(),
        seed: train.seed,
        eval_every: train.eval_every,
        init: train.init.clone(),
        init_skip: train.init_skip.clone(),
        init_rename: train.init_map.rename.clone(),
        init_transpose: train.init_map.transpose.clone(),
        init_fuse: train.init_map.fuse.clone(),
        init_squeeze: train.init_map.squeeze.clone(),
        precision: train.precision,
        checkpoint_every: train.checkpoint_every,
        on_nan: train.on_nan,
        tracking: train.tracking.clone(),
        groups: train.groups.clone(),
        recompute: train.recompute,
    };
    let stages = stages::stages(model, &starts);
    let local = crate::plan::tensor_local_shapes(model, &layout.tensor_splits, layout.tensor);
    let buckets = if d > 1 {
        buckets::buckets(model, &stages, parallelism.bucket_bytes, &local)
    } else {
        Vec::new()
    };
    let units = match (parallelism.shard, d > 1) {
        (Shard::Parameters, true) => units::units(
            model,
            &stages,
            parallelism.shard_degree(),
            layout.unit_bytes,
        ),
        _ => Vec::new(),
    };
    let fragments = fragments::fragments(model, &stages, &local, &parallelism);
    let splits = (layout.tensor_splits.as_slice(), layout.tensor);
    let local: Vec<u64> = stages
        .iter()
        .map(|stage| crate::plan::local_parameters(model, splits, stage))
        .collect();
    let collectives = tensor::collectives(
        (model, &stages),
        (&layout.tensor_splits, &layout.sequence),
        (train.micro_batch, train.recompute),
        layout.tensor,
    );
    let step_program = step_program::step_program(
        &train,
        &parallelism,
        (&stages, &local),
        &buckets,
        &units,
        collectives,
        fragments,
    );
    let global_micro_batch = d * train.micro_batch;
    let rows_per_replica = data.train_rows() / global_micro_batch * train.micro_batch;
    let (ranks, communicators) = ranks::ranks(&parallelism, train.micro_batch);
    Ok(Plan {
        version: PLAN_VERSION,
        source: source.to_string(),
        topology: Topology {
            ranks,
            communicators,
            stages,
            buckets,
            sharding: Sharding {
                global_micro_batch,
                rows_per_replica,
            },
            units,
            tensor_splits: layout.tensor_splits.clone(),
            sequence: layout.sequence.clone(),
            parallelism,
        },
        model: model.clone(),
        data: data.clone(),
        train,
        step_program,
    })
}

/// The errors lowering finds for each world size in `worlds` (what needs
/// the number of rows is left alone when the data was not read). Without any,
/// a fixed layout is lowered for its own world size, and `data = auto` as
/// if it were 1: every error found that way holds for every world size
/// (more replicas only divide the rows further), so nothing is reported
/// that a real world size would not also report.
pub fn validate(experiment: &Experiment, worlds: &[u64]) -> Vec<CheckError> {
    let per_replica = experiment.parallel.pipeline * experiment.parallel.tensor;
    let worlds: Vec<Option<u64>> = match (worlds, experiment.parallel.data) {
        ([], Degree::Fixed(_)) => vec![None],
        ([], Degree::Auto) => vec![Some(per_replica)],
        (worlds, _) => worlds.iter().copied().map(Some).collect(),
    };
    let mut errors: Vec<CheckError> = worlds
        .into_iter()
        .filter_map(|world| lower_for(experiment, world, "", topology::Purpose::Check).err())
        .flatten()
        .collect();
    errors.dedup();
    errors
}
