//! The parts of an experiment that must fit each other: the data's samples
//! are the model's input, the model's output is what the loss compares with
//! the data's targets.

use super::model::passes_input_through;
use super::settings::Settings;
use super::{CheckError, Options};
use crate::ast::{Forward, ModuleDef};
use crate::plan::{shape_to_string, DataPlan, Dim, Features, Loss, ModelPlan, Op, TargetKind};

/// The data's features must be the model's input and the model's output
/// what the loss compares with the targets: `[B, *target, classes]` for
/// `cross_entropy`, `[B, *target]` for `mse`. Without a probed file the data
/// takes its shapes from the model.
pub fn check_model_against_data(
    model: &ModelPlan,
    def: &ModuleDef,
    data: &mut DataPlan,
    loss: &Loss,
    s: &Settings<'_>,
    options: &Options,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let forward: &Forward = def.forwards.first()?;
    if !matches!(model.input.first(), Some(Dim::Symbol(_))) {
        errors.push(CheckError::ShapeMismatch {
            expected: "a symbolic batch dimension first, e.g. [B, 64]".into(),
            found: shape_to_string(&model.input),
            span: forward.input_shape.span,
            what: "the batch dimension".into(),
            help: None,
        });
        return None;
    }
    loss_fits_targets(loss, data, s, errors)?;
    let output = &model.output[1..];
    if output.is_empty() || output.iter().any(|d| matches!(d, Dim::Symbol(_))) {
        errors.push(CheckError::ShapeMismatch {
            expected: match loss {
                Loss::CrossEntropy { .. } => "[B, classes] or [B, T, classes]".into(),
                Loss::Mse => "[B, outputs]".into(),
            },
            found: shape_to_string(&model.output),
            span: forward.output_shape.span,
            what: match loss {
                Loss::CrossEntropy { .. } => "cross_entropy needs one score per class".into(),
                Loss::Mse => "mse compares fixed-size outputs with the targets".into(),
            },
            help: None,
        });
        return None;
    }
    if !options.probe_data {
        shapes_from_model(model, data, loss);
        return Some(());
    }
    let batch = model.input[0].clone();
    let with_batch = |rest: &[i64]| -> Vec<Dim> {
        std::iter::once(batch.clone())
            .chain(rest.iter().map(|n| Dim::Size(*n)))
            .collect()
    };
    let expected_input = with_batch(&data.sample_shape);
    if model.input != expected_input {
        errors.push(CheckError::ShapeMismatch {
            expected: shape_to_string(&expected_input),
            found: shape_to_string(&model.input),
            span: forward.input_shape.span,
            what: format!(
                "data `{}` gives {} per batch",
                data.name,
                shape_to_string(&expected_input)
            ),
            help: Some(format!(
                "each row of `{}` has {} features",
                data.name,
                data.sample_shape.iter().product::<i64>()
            )),
        });
        return None;
    }
    let mut target = data.target_shape.clone();
    if matches!(loss, Loss::CrossEntropy { .. }) {
        // More classes than the labels use is normal (a vocabulary whose
        // last ids never occur); fewer is the error.
        let scored = sizes(output)[output.len() - 1];
        target.push(data.classes.max(scored));
    }
    let expected_output = with_batch(&target);
    if model.output != expected_output {
        errors.push(output_mismatch(
            model,
            data,
            loss,
            forward,
            &expected_output,
        ));
        return None;
    }
    if matches!(loss, Loss::CrossEntropy { .. }) {
        data.classes = sizes(output)[output.len() - 1];
    }
    embeddings_fit_features(model, data, forward, errors)
}

/// The sizes of `dims`, 0 for a symbol.
fn sizes(dims: &[Dim]) -> Vec<i64> {
    dims.iter()
        .map(|d| if let Dim::Size(n) = d { *n } else { 0 })
        .collect()
}

/// Without a probed file the data's shapes are what the model says: its
/// input per sample, and its output per sample as targets (with the last
/// size as the class count for `cross_entropy`).
fn shapes_from_model(model: &ModelPlan, data: &mut DataPlan, loss: &Loss) {
    let output = &model.output[1..];
    data.sample_shape = sizes(&model.input[1..]);
    match loss {
        Loss::CrossEntropy { .. } => {
            data.target_shape = sizes(&output[..output.len() - 1]);
            data.classes = sizes(output)[output.len() - 1];
        }
        Loss::Mse => data.target_shape = sizes(output),
    }
}

/// The model's output is not what the loss compares with the data's
/// targets: say what the data has and what to change.
fn output_mismatch(
    model: &ModelPlan,
    data: &DataPlan,
    loss: &Loss,
    forward: &Forward,
    expected_output: &[Dim],
) -> CheckError {
    let (what, help) = match loss {
        Loss::CrossEntropy { .. } if data.target_shape.is_empty() => (
            format!("data `{}` has {} classes", data.name, data.classes),
            format!(
                "make the last layer produce at least {} outputs (labels go up to {})",
                data.classes,
                data.classes - 1
            ),
        ),
        Loss::CrossEntropy { .. } => (
            format!(
                "data `{}` has a label at each of {:?} positions, {} classes",
                data.name, data.target_shape, data.classes
            ),
            "score every class at every position (no flatten before the last layer)".into(),
        ),
        Loss::Mse => (
            format!(
                "data `{}` has targets of shape {:?} per row",
                data.name, data.target_shape
            ),
            "mse compares outputs and targets element by element".into(),
        ),
    };
    CheckError::ShapeMismatch {
        expected: shape_to_string(expected_output),
        found: shape_to_string(&model.output),
        span: forward.output_shape.span,
        what,
        help: Some(help),
    }
}

/// An `embedding` that reads the data must get whole-number ids below its
/// row count: real-valued features would be truncated to ids silently.
fn embeddings_fit_features(
    model: &ModelPlan,
    data: &DataPlan,
    forward: &Forward,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    for node in &model.nodes {
        let Op::Embedding { num_embeddings, .. } = node.op else {
            continue;
        };
        if !node
            .inputs
            .iter()
            .all(|&i| passes_input_through(&model.nodes, i))
        {
            continue;
        }
        let (message, help) = match data.features {
            Features::Float => (
                format!(
                    "data `{}` has real-valued features, but the embedding `{}` reads its input as token ids",
                    data.name, node.name
                ),
                "an embedding needs whole-number ids (a text or tokens source, or integer arrays); real-valued features go through `linear`".to_string(),
            ),
            Features::Indices { max } if max >= num_embeddings as u64 => (
                format!(
                    "data `{}` has ids up to {max}, but the embedding `{}` has {num_embeddings} rows (ids 0..{})",
                    data.name,
                    node.name,
                    num_embeddings - 1
                ),
                format!("make the embedding at least embedding({}, …)", max + 1),
            ),
            _ => continue,
        };
        errors.push(CheckError::InvalidValue {
            message,
            span: forward.input_shape.span,
            label: "the model's input".into(),
            help: Some(help),
        });
        return None;
    }
    Some(())
}

/// `cross_entropy` needs class targets, `mse` real values.
fn loss_fits_targets(
    loss: &Loss,
    data: &DataPlan,
    s: &Settings<'_>,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let span = s.get("loss")?.value.span;
    let (message, help) = match (loss, data.target) {
        (Loss::CrossEntropy { .. }, TargetKind::Float) => (
            format!(
                "cross_entropy needs class labels, but data `{}` has `target = float`",
                data.name
            ),
            "use `loss = mse` for real-valued targets".to_string(),
        ),
        (Loss::Mse, TargetKind::Class) => (
            format!(
                "mse needs real-valued targets, but data `{}` has class labels",
                data.name
            ),
            format!(
                "add `target = float` to `data {}`, or use `loss = cross_entropy`",
                data.name
            ),
        ),
        _ => return Some(()),
    };
    errors.push(CheckError::InvalidValue {
        message,
        span,
        label: "does not fit the targets".into(),
        help: Some(help),
    });
    None
}
