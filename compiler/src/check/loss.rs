//! `loss = …`: the training objective and its arguments, each ranged as
//! PyTorch ranges it. Whether the loss fits the data's targets and the
//! model's output is [`super::fit`]'s question.

use super::args::{ParamSig, Ty, Value, ABSENT};
use super::settings::choose;
use super::CheckError;
use crate::ast::Setting;
use crate::plan::Loss;

#[derive(Clone, Copy)]
enum Kind {
    CrossEntropy,
    Nll,
    Mse,
    BinaryCrossEntropy,
    SmoothL1,
    Huber,
}

fn number(name: &str, default: f64) -> Vec<ParamSig> {
    vec![ParamSig::optional(name, Ty::Float, Value::Float(default))]
}

/// Each loss's name and signature, for [`choose`].
fn choices() -> [(&'static str, Kind, Vec<ParamSig>); 6] {
    [
        (
            "cross_entropy",
            Kind::CrossEntropy,
            number("label_smoothing", 0.0),
        ),
        ("nll", Kind::Nll, vec![]),
        ("mse", Kind::Mse, vec![]),
        (
            "binary_cross_entropy",
            Kind::BinaryCrossEntropy,
            vec![ParamSig::optional(
                "pos_weight",
                Ty::FloatOrList,
                Value::Name(ABSENT.into()),
            )],
        ),
        ("smooth_l1", Kind::SmoothL1, number("beta", 1.0)),
        ("huber", Kind::Huber, number("delta", 1.0)),
    ]
}

/// Each loss's name and signature (for editors).
pub(super) fn signatures() -> impl Iterator<Item = (&'static str, Vec<ParamSig>)> {
    choices().into_iter().map(|(name, _, sig)| (name, sig))
}

pub fn loss(setting: &Setting, errors: &mut Vec<CheckError>) -> Option<Loss> {
    let choices = choices();
    let (kind, v) = choose(setting, "loss", &choices, errors)?;
    let span = setting.value.span;
    let out_of_range = |message: String, errors: &mut Vec<CheckError>| {
        errors.push(CheckError::invalid(message, span, "out of range"));
        None
    };
    match kind {
        Kind::CrossEntropy => {
            let smoothing = v[0].as_float();
            if !(0.0..1.0).contains(&smoothing) {
                return out_of_range(
                    format!("label_smoothing must be in [0, 1), got {smoothing}"),
                    errors,
                );
            }
            Some(Loss::CrossEntropy {
                label_smoothing: smoothing,
            })
        }
        Kind::Nll => Some(Loss::Nll),
        Kind::Mse => Some(Loss::Mse),
        Kind::BinaryCrossEntropy => {
            let pos_weight = (!v[0].is_absent()).then(|| v[0].as_floats());
            if let Some(bad) = pos_weight.iter().flatten().find(|w| **w <= 0.0) {
                return out_of_range(
                    format!("every pos_weight must be greater than 0, got {bad}"),
                    errors,
                );
            }
            Some(Loss::BinaryCrossEntropy { pos_weight })
        }
        Kind::SmoothL1 => {
            let beta = v[0].as_float();
            if beta < 0.0 {
                return out_of_range(format!("smooth_l1: beta must be ≥ 0, got {beta}"), errors);
            }
            Some(Loss::SmoothL1 { beta })
        }
        Kind::Huber => {
            let delta = v[0].as_float();
            if delta <= 0.0 {
                return out_of_range(format!("huber: delta must be > 0, got {delta}"), errors);
            }
            Some(Loss::Huber { delta })
        }
    }
}
