//! The parts of an experiment that must fit each other: the data's samples
//! are the model's input, the model's output is what the loss compares with
//! the data's targets.

use super::model::passes_input_through;
use super::settings::Settings;
use super::{CheckError, Lint, Options};
use crate::ast::{Forward, ModuleDef};
use crate::plan::{shape_to_string, DataPlan, Dim, Features, Loss, ModelPlan, Op, TargetKind};
use crate::span::Span;

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
        let (expected, what) = match loss.target() {
            TargetKind::Class => ("[B, classes] or [B, T, classes]", "one score per class"),
            TargetKind::Float => (
                "[B, outputs]",
                "fixed-size outputs to compare with the targets",
            ),
        };
        errors.push(CheckError::ShapeMismatch {
            expected: expected.into(),
            found: shape_to_string(&model.output),
            span: forward.output_shape.span,
            what: format!("{} needs {what}", loss.name()),
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
    let classes = loss.target() == TargetKind::Class;
    if classes {
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
    if classes {
        data.classes = sizes(output)[output.len() - 1];
    }
    pos_weight_fits(model, loss, s, errors)
}

/// Where each node of the model was written, and its name in the user's
/// terms.
pub type NodeSources<'a> = (&'a [Span], &'a [String]);

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
    match loss.target() {
        TargetKind::Class => {
            data.target_shape = sizes(&output[..output.len() - 1]);
            data.classes = sizes(output)[output.len() - 1];
        }
        TargetKind::Float => data.target_shape = sizes(output),
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
    let name = loss.name();
    let (what, help) = match loss.target() {
        TargetKind::Class if data.target_shape.is_empty() => (
            format!("data `{}` has {} classes", data.name, data.classes),
            format!(
                "make the last layer produce at least {} outputs (labels go up to {})",
                data.classes,
                data.classes - 1
            ),
        ),
        TargetKind::Class => (
            format!(
                "data `{}` has a label at each of {:?} positions, {} classes",
                data.name, data.target_shape, data.classes
            ),
            "score every class at every position (no flatten before the last layer)".into(),
        ),
        TargetKind::Float => (
            format!(
                "data `{}` has targets of shape {:?} per row",
                data.name, data.target_shape
            ),
            format!("{name} compares outputs and targets element by element"),
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
/// `scale_span` is the data's `scale`, which may be what made its features
/// real values.
pub fn embeddings_fit_features(
    (model, (spans, names)): (&ModelPlan, NodeSources<'_>),
    data: &DataPlan,
    scale_span: Option<Span>,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    for (i, node) in model.nodes.iter().enumerate() {
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
        let name = &names[i];
        let (message, label, help) = match data.features {
            Features::Float => (
                format!(
                    "data `{}` has real-valued features, but the embedding `{name}` reads its input as token ids",
                    data.name
                ),
                "reads token ids".to_string(),
                "an embedding needs whole-number ids (a text or tokens source, or integer arrays); real-valued features go through `linear`".to_string(),
            ),
            Features::Indices { max } if max >= num_embeddings as u64 => (
                format!(
                    "data `{}` has ids up to {max}, but the embedding `{name}` has {num_embeddings} rows (ids 0..{})",
                    data.name,
                    num_embeddings - 1
                ),
                format!("ids 0..{}", num_embeddings - 1),
                format!("make the embedding at least embedding({}, …)", max + 1),
            ),
            _ => continue,
        };
        let scale = match data.features {
            Features::Float if data.scale != 1.0 => scale_span,
            _ => None,
        };
        errors.push(CheckError::EmbeddingInput {
            message,
            span: spans[i],
            label,
            scale,
            help: Some(help),
        });
        return None;
    }
    Some(())
}

/// Each loss needs the targets it compares with: class labels for
/// `cross_entropy` and `nll`, real values for the others.
fn loss_fits_targets(
    loss: &Loss,
    data: &DataPlan,
    s: &Settings<'_>,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let span = s.get("loss")?.value.span;
    let name = loss.name();
    let (message, help) = match (loss.target(), data.target) {
        (TargetKind::Class, TargetKind::Float) => (
            format!(
                "{name} needs class labels, but data `{}` has `target = float`",
                data.name
            ),
            "for real-valued targets use `mse`, `huber`, `smooth_l1`, or `binary_cross_entropy` for 0/1 targets".to_string(),
        ),
        (TargetKind::Float, TargetKind::Class) => (
            format!(
                "{name} needs real-valued targets, but data `{}` has class labels",
                data.name
            ),
            match loss {
                Loss::BinaryCrossEntropy { .. } => format!(
                    "binary_cross_entropy compares each output with a 0/1 target: add `target = float` to `data {}` (a column per output), or use `loss = cross_entropy` for the classes",
                    data.name
                ),
                _ => format!(
                    "add `target = float` to `data {}`, or use `loss = cross_entropy`",
                    data.name
                ),
            },
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

/// `binary_cross_entropy(pos_weight: [...])` has one factor for all the
/// outputs or one per output (the last dimension).
fn pos_weight_fits(
    model: &ModelPlan,
    loss: &Loss,
    s: &Settings<'_>,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let Loss::BinaryCrossEntropy {
        pos_weight: Some(weights),
    } = loss
    else {
        return Some(());
    };
    let outputs = match model.output.last() {
        Some(Dim::Size(n)) => *n,
        _ => return Some(()),
    };
    if weights.len() == 1 || weights.len() as i64 == outputs {
        return Some(());
    }
    errors.push(CheckError::InvalidValue {
        message: format!(
            "pos_weight has {} factors, but the model has {outputs} output(s) per row",
            weights.len()
        ),
        span: s.get("loss")?.value.span,
        label: "one factor per output".into(),
        help: Some(format!(
            "give one number for every output, or a list of {outputs} (the model's output is {})",
            shape_to_string(&model.output)
        )),
    });
    None
}

/// Warnings for a loss that does not read what the model ends with: `nll`
/// wants log-probabilities (a final `log_softmax`), and
/// `binary_cross_entropy` applies the sigmoid itself.
pub fn loss_on_output(
    (model, (spans, names)): (&ModelPlan, NodeSources<'_>),
    loss: &Loss,
    span: Span,
) -> Option<Lint> {
    let last = &model.nodes.get(model.result)?.op;
    let softmax = |layer, what, help: &str| {
        Some(Lint::SoftmaxBeforeLoss {
            layer,
            span: spans[model.result],
            name: names[model.result].clone(),
            what,
            loss: span,
            help: help.into(),
        })
    };
    let (message, help) = match (loss, last) {
        (Loss::CrossEntropy { .. }, Op::Softmax { .. }) => {
            return softmax(
                "softmax",
                "probabilities",
                "remove the final `softmax` (as with PyTorch's CrossEntropyLoss, which takes logits): squashed into 0..1, the scores leave the loss almost flat and its gradients vanish; apply softmax at inference",
            )
        }
        (Loss::CrossEntropy { .. }, Op::LogSoftmax { .. }) => {
            return softmax(
                "log_softmax",
                "log-probabilities",
                "remove the final `log_softmax`, which cross_entropy applies again (it changes nothing but costs a pass), or keep it and use `loss = nll`",
            )
        }
        (Loss::Nll, Op::LogSoftmax { .. }) => return None,
        (Loss::Nll, _) => (
            "nll reads log-probabilities, but the model does not end with `log_softmax`",
            "end the model with `log_softmax`, or use `loss = cross_entropy`, which takes the scores as they are",
        ),
        (Loss::BinaryCrossEntropy { .. }, Op::Sigmoid) => (
            "binary_cross_entropy applies the sigmoid itself, but the model ends with `sigmoid`",
            "remove the final `sigmoid`: the loss takes logits (BCEWithLogitsLoss)",
        ),
        _ => return None,
    };
    Some(Lint::LossInput {
        message: message.into(),
        span,
        help: help.into(),
    })
}
