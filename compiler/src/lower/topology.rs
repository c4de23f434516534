//! The arithmetic that needs the world size: the data-parallel degree
//! (`data = auto` is world / stages), the rows each replica reads, and the
//! step count of `epochs` — then everything that depends on the step count
//! (the warm-up). One place for each, so `dtl check --world`, `dtl
//! compile` and the runtime agree.

use crate::check::{CheckError, Degree, Experiment, Length, MAX_RANKS};
use crate::plan::{Decay, Shard};

/// What the world size decides.
pub(super) struct Resolved {
    /// Data-parallel replicas of every stage.
    pub data: u64,
    /// Optimizer steps.
    pub steps: u64,
}

/// Why the arithmetic is done: for a plan, everything must be known; for
/// `dtl check` without the data, what depends on the number of rows is
/// left unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Plan,
    Check,
}

pub(super) fn resolve(
    experiment: &Experiment,
    world: Option<u64>,
    purpose: Purpose,
    errors: &mut Vec<CheckError>,
) -> Option<Resolved> {
    let data = data_degree(experiment, world, errors)?;
    shard_groups_divide(experiment, data, world, errors)?;
    sync_groups_divide(experiment, data, world, errors)?;
    rows_per_step_countable(experiment, data, errors)?;
    micro_batch_fits(experiment, data, world, errors)?;
    let steps = match step_count(experiment, data, purpose, errors)? {
        Some(steps) => steps,
        // `dtl check` without the rows: nothing depends on the steps yet.
        None => return Some(Resolved { data, steps: 0 }),
    };
    warmup_fits(experiment, data, steps, errors)?;
    Some(Resolved { data, steps })
}

fn for_world(world: u64) -> String {
    format!("for --world {world}")
}

/// `shard_group = k` cuts the replicas into equal groups: with `data =
/// auto`, k must divide the degree the world size gives (a fixed degree is
/// checked with the block). One replica shards nothing (a lint says so),
/// whatever k.
fn shard_groups_divide(
    experiment: &Experiment,
    data: u64,
    world: Option<u64>,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let layout = &experiment.parallel;
    let k = if data == 1 { 0 } else { layout.shard_group };
    let setting = ("shard_group", k, layout.spans.shard_group);
    equal_groups(experiment, (data, world), setting, errors)
}

/// `groups = G` cuts the replicas into equal sync groups, as
/// [`shard_groups_divide`].
fn sync_groups_divide(
    experiment: &Experiment,
    data: u64,
    world: Option<u64>,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let layout = &experiment.parallel;
    let setting = ("groups", layout.groups, layout.spans.groups);
    equal_groups(experiment, (data, world), setting, errors)?;
    // Sharded within groups of one replica (`data = auto`; a fixed degree
    // is checked with the block): nothing would be sharded, and nothing
    // must be averaged across the groups every step.
    let in_groups = layout.sync.meets_every().is_some() && layout.groups > 0;
    if in_groups && layout.shard != Shard::None && layout.groups == data && data > 1 {
        errors.push(CheckError::InvalidValue {
            message: format!(
                "`shard = {}` within {data} sync groups of one replica each: nothing to shard",
                layout.shard.name()
            ),
            span: layout.spans.groups,
            label: world.map_or_else(|| "here".into(), for_world),
            help: Some("use fewer groups, or `shard = none`".into()),
        });
        return None;
    }
    Some(())
}

/// `name = k` (0: not set) cuts the `data` replicas that `world` gives
/// (under `data = auto`) into equal groups, or is an error at `span`.
fn equal_groups(
    experiment: &Experiment,
    (data, world): (u64, Option<u64>),
    (name, k, span): (&str, u64, crate::span::Span),
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    if k == 0 || (data.is_multiple_of(k) && k <= data) || experiment.parallel.data != Degree::Auto {
        return Some(());
    }
    errors.push(CheckError::InvalidValue {
        message: format!("`{name} = {k}` must divide the {data} replicas into equal groups"),
        span,
        label: world.map_or_else(|| "here".into(), for_world),
        help: Some(format!(
            "choose a world size that gives a multiple of it, or another `{name}`"
        )),
    });
    None
}

/// The data-parallel degree: fixed, or `auto` = world size / stages.
fn data_degree(
    experiment: &Experiment,
    world: Option<u64>,
    errors: &mut Vec<CheckError>,
) -> Option<u64> {
    let layout = &experiment.parallel;
    let stages = layout.pipeline;
    if let Some(world) = world.filter(|w| *w > MAX_RANKS as u64) {
        errors.push(CheckError::InvalidValue {
            message: format!(
                "world size {world} is more ranks than a plan is made for (at most {MAX_RANKS})"
            ),
            span: layout.spans.block,
            label: for_world(world),
            help: None,
        });
        return None;
    }
    // The ranks of one replica: its stages, each split `tensor` ways.
    let t = layout.tensor;
    let per_replica = stages * t;
    let written = match t {
        1 => format!("pipeline {stages}"),
        _ => format!("tensor {t} × pipeline {stages}"),
    };
    match (layout.data, world) {
        (Degree::Fixed(d), Some(world)) if d * per_replica != world => {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "world size {world} ≠ data {d} × {written} = {}",
                    d * per_replica
                ),
                span: layout.spans.data,
                label: for_world(world),
                help: Some("set `data = auto` to use every rank the world size gives".into()),
            });
            None
        }
        (Degree::Fixed(d), _) => Some(d),
        (Degree::Auto, None) => {
            errors.push(CheckError::MissingItem {
                message: "`data = auto`: a plan is for one world size, and none was given".into(),
                span: layout.spans.data,
                help: Some(
                    "give it with `--world N` (`dtl run`, `dtl compile`, `dtl explain`), or set `data` to a number".into(),
                ),
            });
            None
        }
        (Degree::Auto, Some(world)) if !world.is_multiple_of(per_replica) => {
            let (what, span) = match t {
                1 => (
                    format!("the {stages} pipeline stages"),
                    layout.spans.pipeline,
                ),
                _ => (
                    format!("the {per_replica} ranks of a replica ({written})"),
                    layout.spans.tensor,
                ),
            };
            errors.push(CheckError::InvalidValue {
                message: format!("world size {world} is not a multiple of {what}"),
                span,
                label: for_world(world),
                help: None,
            });
            None
        }
        (Degree::Auto, Some(world)) => Some(world / per_replica),
    }
}

/// Rows per step: with the settings' bounds (micro_batch ≤ 2³¹,
/// accumulate ≤ 2²⁰, data ≤ 2²⁰) the product still needs a check.
fn rows_per_step_countable(
    experiment: &Experiment,
    data: u64,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let train = &experiment.train;
    let countable = train
        .micro_batch
        .checked_mul(train.accumulate)
        .and_then(|n| n.checked_mul(data))
        .is_some_and(|n| n <= 1 << 53);
    if !countable {
        errors.push(CheckError::invalid(
            format!(
                "{data} replica(s) × micro_batch {} × accumulate {} is more rows per step than can be counted",
                train.micro_batch, train.accumulate
            ),
            train.spans.micro_batch,
            "too many rows per step",
        ));
        return None;
    }
    Some(())
}

/// Each global micro-batch (data × micro_batch rows) must fit in the
/// training rows, when the data was read.
fn micro_batch_fits(
    experiment: &Experiment,
    data: u64,
    world: Option<u64>,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let data_plan = &experiment.data;
    let rows = data_plan.train_rows();
    let m = experiment.train.micro_batch;
    if data_plan.rows == 0 || data * m <= rows {
        return Some(());
    }
    errors.push(if data == 1 {
        CheckError::InvalidValue {
            message: format!("micro_batch {m} is larger than the {rows} training rows"),
            span: experiment.train.spans.micro_batch,
            label: "more rows than the data has".into(),
            help: Some(format!(
                "the data `{}` has {} rows, {} of them held out",
                data_plan.name,
                data_plan.rows,
                data_plan.rows - rows
            )),
        }
    } else {
        CheckError::InvalidValue {
            message: format!(
                "with {data} data-parallel ranks each reads {} of the {rows} training rows, fewer than micro_batch {m}",
                rows / data,
            ),
            span: experiment.parallel.spans.data,
            label: world.map_or(format!("for data = {data}"), for_world),
            help: Some("use fewer ranks or a smaller micro_batch".into()),
        }
    });
    None
}

/// The optimizer steps: `steps`, or for `epochs = N` enough to see every
/// full global micro-batch of the training rows N times. `Some(None)` when
/// `dtl check` has no rows to count with.
fn step_count(
    experiment: &Experiment,
    data: u64,
    purpose: Purpose,
    errors: &mut Vec<CheckError>,
) -> Option<Option<u64>> {
    let train = &experiment.train;
    let rows = experiment.data.train_rows();
    match train.length {
        Length::Steps(steps) => Some(Some(steps)),
        // Without the rows (`--no-data`, or `dtl check` without `--data`).
        Length::Epochs(_) if rows == 0 => {
            if purpose == Purpose::Check {
                return Some(None);
            }
            errors.push(CheckError::InvalidValue {
                message: "`epochs` needs the number of rows, which is read from the data".into(),
                span: train.spans.length,
                label: "unknown size".into(),
                help: Some(
                    "let dtl read the data (drop --no-data), or give `steps` instead".into(),
                ),
            });
            None
        }
        Length::Epochs(epochs) => {
            let Some(micro_batches) = epochs.checked_mul(rows / (data * train.micro_batch)) else {
                errors.push(CheckError::invalid(
                    format!("{epochs} epochs are more micro-batches than can be counted"),
                    train.spans.length,
                    "too many",
                ));
                return None;
            };
            Some(Some(micro_batches.div_ceil(train.accumulate)))
        }
    }
}

/// The warm-up (the `warmup` setting's, or the schedule's own) must leave
/// steps at the full rate, and one_cycle's rising phase must span more
/// than one step.
fn warmup_fits(
    experiment: &Experiment,
    data: u64,
    steps: u64,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let train = &experiment.train;
    let (warmup, span, setting) = match train.schedule.decay {
        Decay::ConstantWithWarmup { warmup_steps } => {
            (warmup_steps, train.spans.schedule, "warmup_steps")
        }
        Decay::OneCycle { pct_start, .. } => {
            return one_cycle_rises(experiment, pct_start, data, steps, errors)
        }
        _ => (train.schedule.warmup, train.spans.warmup, "warmup"),
    };
    let (Some(span), true) = (span, warmup >= steps) else {
        return Some(());
    };
    errors.push(CheckError::InvalidValue {
        message: format!(
            "a warm-up of {warmup} steps leaves none of the {steps} steps to train at the full rate"
        ),
        span,
        label: "warm-up too long".into(),
        help: Some(fewer(
            experiment,
            data,
            steps,
            [
                &format!("make {setting} smaller than steps"),
                &format!("make {setting} smaller"),
            ],
        )),
    });
    None
}

/// OneCycleLR rises over pct_start · steps − 1 steps: with fewer than one
/// there is no rise (and at exactly none PyTorch divides by zero).
fn one_cycle_rises(
    experiment: &Experiment,
    pct_start: f64,
    data: u64,
    steps: u64,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let rising = pct_start * steps as f64;
    let span = experiment.train.spans.schedule?;
    if rising > 1.0 {
        return Some(());
    }
    errors.push(CheckError::InvalidValue {
        message: format!(
            "one_cycle rises over pct_start × steps = {pct_start} × {steps} = {rising} steps; it needs more than 1"
        ),
        span,
        label: "no rising phase".into(),
        help: Some(fewer(
            experiment,
            data,
            steps,
            ["raise pct_start, or train for more steps"; 2],
        )),
    });
    None
}

/// The help for a schedule that does not fit `steps`: the fix for a step
/// count written out, or for one from `epochs`, after how the epochs
/// became steps.
fn fewer(experiment: &Experiment, data: u64, steps: u64, [for_steps, fix]: [&str; 2]) -> String {
    let train = &experiment.train;
    match train.length {
        Length::Steps(_) => for_steps.to_string(),
        Length::Epochs(epochs) => format!(
            "{epochs} epoch(s) of the {} training rows are {steps} optimizer steps of {data} replica(s) × micro_batch {} × accumulate {}: {fix}",
            experiment.data.train_rows(),
            train.micro_batch,
            train.accumulate
        ),
    }
}
