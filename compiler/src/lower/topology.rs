//! The arithmetic that needs the world size: the data-parallel degree
//! (`data = auto` is world / stages), the rows each replica reads, and the
//! step count of `epochs` — then everything that depends on the step count
//! (the warm-up). One place for each, so `dtl check --world`, `dtl
//! compile` and the runtime agree.

use crate::check::{CheckError, Degree, Experiment, Length, MAX_RANKS};

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
    let layout = &experiment.parallel;
    let train = &experiment.train;
    let stages = layout.pipeline;
    let for_world = |world: u64| format!("for --world {world}");
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
    let data = match (layout.data, world) {
        (Degree::Fixed(d), Some(world)) if d * stages != world => {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "world size {world} ≠ data {d} × pipeline {stages} = {}",
                    d * stages
                ),
                span: layout.spans.data,
                label: for_world(world),
                help: Some("set `data = auto` to use every rank the world size gives".into()),
            });
            return None;
        }
        (Degree::Fixed(d), _) => d,
        (Degree::Auto, None) => {
            errors.push(CheckError::MissingItem {
                message: "`data = auto`: a plan is for one world size, and none was given".into(),
                span: layout.spans.data,
                help: Some(
                    "give it with `--world N` (`dtl run`, `dtl compile`, `dtl explain`), or set `data` to a number".into(),
                ),
            });
            return None;
        }
        (Degree::Auto, Some(world)) if !world.is_multiple_of(stages) => {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "world size {world} is not a multiple of the {stages} pipeline stages"
                ),
                span: layout.spans.pipeline,
                label: for_world(world),
                help: None,
            });
            return None;
        }
        (Degree::Auto, Some(world)) => world / stages,
    };

    // Rows per step: with the settings' bounds (micro_batch ≤ 2³¹,
    // accumulate ≤ 2²⁰, data ≤ 2²⁰) the product still needs a check.
    if train
        .micro_batch
        .checked_mul(train.accumulate)
        .and_then(|n| n.checked_mul(data))
        .is_none_or(|n| n > 1 << 53)
    {
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

    // Each global micro-batch (data × micro_batch rows) must fit in the
    // training rows, when the data was read.
    let data_plan = &experiment.data;
    let rows = data_plan.train_rows();
    let m = train.micro_batch;
    if data_plan.rows > 0 && data * m > rows {
        errors.push(if data == 1 {
            CheckError::InvalidValue {
                message: format!("micro_batch {m} is larger than the {rows} training rows"),
                span: train.spans.micro_batch,
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
                span: layout.spans.data,
                label: world.map_or(format!("for data = {data}"), for_world),
                help: Some("use fewer ranks or a smaller micro_batch".into()),
            }
        });
        return None;
    }

    // `epochs = N`: enough optimizer steps to see every full global
    // micro-batch of the training rows N times.
    let steps = match train.length {
        Length::Steps(steps) => steps,
        // Without the rows (`--no-data`, or `dtl check` without `--data`).
        Length::Epochs(_) if rows == 0 => {
            if purpose == Purpose::Check {
                return Some(Resolved { data, steps: 0 });
            }
            errors.push(CheckError::InvalidValue {
                message: "`epochs` needs the number of rows, which is read from the data".into(),
                span: train.spans.length,
                label: "unknown size".into(),
                help: Some(
                    "let dtl read the data (drop --no-data), or give `steps` instead".into(),
                ),
            });
            return None;
        }
        Length::Epochs(epochs) => {
            let Some(micro_batches) = epochs.checked_mul(rows / (data * m)) else {
                errors.push(CheckError::invalid(
                    format!("{epochs} epochs are more micro-batches than can be counted"),
                    train.spans.length,
                    "too many",
                ));
                return None;
            };
            micro_batches.div_ceil(train.accumulate)
        }
    };
    let warmup = train.schedule.warmup;
    if let (Some(span), true) = (train.spans.warmup, warmup >= steps) {
        let help = match train.length {
            Length::Steps(_) => "make warmup smaller than steps".to_string(),
            Length::Epochs(epochs) => format!(
                "{epochs} epoch(s) of the {rows} training rows are {steps} optimizer steps of {data} replica(s) × micro_batch {m} × accumulate {}: make warmup smaller",
                train.accumulate
            ),
        };
        errors.push(CheckError::InvalidValue {
            message: format!(
                "a warm-up of {warmup} steps leaves none of the {steps} steps to train at the full rate"
            ),
            span,
            label: "warm-up too long".into(),
            help: Some(help),
        });
        return None;
    }
    Some(Resolved { data, steps })
}
