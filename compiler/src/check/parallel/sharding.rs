//! `shard`: what ZeRO's stages are implemented with, and what they need,
//! whatever the world size.

use super::{Degree, ParallelSpec, ShardMode};
use crate::check::lint::Lint;
use crate::check::train::TrainSpec;
use crate::check::CheckError;
use crate::plan::{BatchNormSync, Optimizer, SyncMode};
use crate::span::Span;

/// `shard`: what is implemented, and what it needs. Sharded optimizer
/// state is cut into flat slices, so the update must work value by value
/// and be the same on every replica.
pub(super) fn sharding(
    spec: &ParallelSpec,
    train: &TrainSpec,
    at: &dyn Fn(&str) -> Span,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
) {
    // The settings of `shard = parameters` alone.
    let gathering = [
        (
            "reshard_after_forward",
            spec.reshard_after_forward.is_some(),
        ),
        ("unit_mb", spec.unit_mb.is_some()),
    ];
    let why = match spec.shard {
        ShardMode::None => Some(("nothing is sharded", "no `shard` here")),
        ShardMode::Optimizer => Some((
            "under `shard = optimizer` every replica holds the whole parameters",
            "no gathered units here",
        )),
        ShardMode::Gradients => Some((
            "under `shard = gradients` every replica holds the whole parameters",
            "no gathered units here",
        )),
        ShardMode::Parameters => None,
    };
    if let Some((why, label)) = why {
        for (key, _) in gathering.into_iter().filter(|(_, written)| *written) {
            errors.push(CheckError::InvalidValue {
                message: format!("`{key}` says how `shard = parameters` gathers its units; {why}"),
                span: at(key),
                label: label.into(),
                help: Some(format!(
                    "use `shard = parameters` (ZeRO-3), or remove `{key}`"
                )),
            });
        }
    }
    let mode = match spec.shard {
        ShardMode::None => {
            if spec.shard_group.is_some() {
                errors.push(CheckError::InvalidValue {
                    message: "`shard_group` says how many replicas shard the state, but nothing is sharded".into(),
                    span: at("shard_group"),
                    label: "no `shard` here".into(),
                    help: Some("add `shard = optimizer` (ZeRO-1) or `shard = gradients` (ZeRO-2), or remove `shard_group`".into()),
                });
            }
            return;
        }
        ShardMode::Optimizer => "optimizer",
        ShardMode::Gradients => "gradients",
        ShardMode::Parameters => {
            full_sharding(spec, train, at, errors);
            "parameters"
        }
    };
    sharding_in_groups(spec, mode, at, errors);
    if matches!(train.optimizer, Optimizer::Adafactor { .. }) {
        errors.push(CheckError::Unsupported {
            message: format!("`shard = {mode}` cuts the optimizer state into flat slices; Adafactor's factored second moment spans whole rows and columns of a tensor"),
            span: at("shard"),
            help: Some("use sgd, adam, adamw or lion with `shard`, or `shard = none` with adafactor".into()),
        });
    }
    if let (Some(k), Degree::Fixed(d)) = (spec.shard_group, spec.data) {
        if !d.is_multiple_of(k) || k > d {
            let divisors: Vec<String> = (2..=d)
                .filter(|n| d.is_multiple_of(*n))
                .map(|n| n.to_string())
                .collect();
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "`shard_group = {k}` must divide the {d} replicas into equal groups"
                ),
                span: at("shard_group"),
                label: "does not divide `data`".into(),
                help: Some(format!("one of {}", divisors.join(", "))),
            });
        }
    }
    if spec.data == Degree::Fixed(1) {
        lints.push(Lint::ShardOneReplica {
            mode,
            span: at("shard"),
        });
    }
}

/// `shard = parameters`: what ZeRO-3 does not compose with yet.
fn full_sharding(
    spec: &ParallelSpec,
    train: &TrainSpec,
    at: &dyn Fn(&str) -> Span,
    errors: &mut Vec<CheckError>,
) {
    let refuse = |message: &str, help: &str| CheckError::Unsupported {
        message: message.into(),
        span: at("shard"),
        help: Some(help.into()),
    };
    if spec.batch_norm == BatchNormSync::Sync {
        errors.push(refuse(
            "`shard = parameters` (ZeRO-3) with `batch_norm = sync` is not implemented yet",
            "use `shard = gradients` (ZeRO-2) with synchronised batch norm, or `batch_norm = local`",
        ));
    }
    if train.tracking.ema.is_some() {
        errors.push(refuse(
            "`shard = parameters` (ZeRO-3) with `ema` is not implemented yet: the average would hold the whole weights on every replica",
            "use `shard = gradients` (ZeRO-2) with `ema`, or drop `ema`",
        ));
    }
}

/// `shard` with a `sync` other than every step: each sync group's replicas
/// (`groups`, under local SGD or DiLoCo) apply the same averaged gradients
/// at every step, so they shard their group's state among themselves;
/// replicas that differ (no groups, `async`) cannot, nor can groups of one,
/// and the shard group is the sync group.
fn sharding_in_groups(
    spec: &ParallelSpec,
    mode: &str,
    at: &dyn Fn(&str) -> Span,
    errors: &mut Vec<CheckError>,
) {
    let grouped = spec.sync.meets_every().is_some() && spec.groups.is_some();
    if spec.sync == SyncMode::EveryStep {
        return;
    }
    if !grouped || spec.shard == ShardMode::Parameters {
        let help = match (spec.sync.meets_every(), spec.shard) {
            (Some(_), ShardMode::Parameters) => "use `shard = gradients` within the sync groups, or `shard = none`",
            (Some(_), _) => "add `groups = G`: the replicas of each sync group average every step and shard their group's state; or `shard = none`",
            _ => "use `sync = every_step`, or `shard = none`",
        };
        let within = match (grouped, spec.shard) {
            (true, ShardMode::Parameters) => {
                "; within sync groups only `optimizer` and `gradients` are done"
            }
            _ => "",
        };
        errors.push(CheckError::Unsupported {
            message: format!("`shard = {mode}` needs the replicas that share the state to apply the same averaged gradients at every step; under local SGD, DiLoCo or asynchronous updates without groups the replicas differ{within}"),
            span: at("shard"),
            help: Some(help.into()),
        });
        return;
    }
    if spec.shard_group.is_some() {
        errors.push(CheckError::InvalidValue {
            message: "`shard_group` with `groups`: each sync group's replicas shard their group's state, so the shard group is the sync group".into(),
            span: at("shard_group"),
            label: "the sync group already".into(),
            help: Some("remove `shard_group`".into()),
        });
    }
    if let (Some(g), Degree::Fixed(d)) = (spec.groups, spec.data) {
        if g == d {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "`shard = {mode}` within {g} sync groups of one replica each: nothing to shard"
                ),
                span: at("shard"),
                label: format!("`groups = {g}` of {d} replicas"),
                help: Some("use fewer groups, or `shard = none`".into()),
            });
        }
    }
}
