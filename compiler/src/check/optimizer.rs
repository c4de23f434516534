//! `optimizer = …`: the update rule and its arguments, with `torch.optim`'s
//! defaults and ranges (Lion's from its paper and timm).

use super::args::{ParamSig, Ty, Value};
use super::settings::{choose, positive};
use super::CheckError;
use crate::ast::Setting;
use crate::plan::Optimizer;
use crate::span::Span;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sgd,
    Adam,
    AdamW,
    Lion,
    Adafactor,
}

fn pair(a: f64, b: f64) -> Value {
    Value::List(vec![Value::Float(a), Value::Float(b)])
}

fn number(name: &str, default: f64) -> ParamSig {
    ParamSig::optional(name, Ty::Float, Value::Float(default))
}

fn choices() -> [(&'static str, Kind, Vec<ParamSig>); 5] {
    let lr = || ParamSig::required("lr", Ty::Float);
    let adam = |wd: f64| {
        vec![
            lr(),
            ParamSig::optional("betas", Ty::FloatPair, pair(0.9, 0.999)),
            number("eps", 1e-8),
            number("weight_decay", wd),
        ]
    };
    [
        (
            "sgd",
            Kind::Sgd,
            vec![
                lr(),
                number("momentum", 0.0),
                number("dampening", 0.0),
                ParamSig::optional("nesterov", Ty::Bool, Value::Bool(false)),
                number("weight_decay", 0.0),
            ],
        ),
        ("adam", Kind::Adam, adam(0.0)),
        ("adamw", Kind::AdamW, adam(0.01)),
        (
            "lion",
            Kind::Lion,
            vec![
                lr(),
                ParamSig::optional("betas", Ty::FloatPair, pair(0.9, 0.99)),
                number("weight_decay", 0.0),
            ],
        ),
        (
            "adafactor",
            Kind::Adafactor,
            vec![
                lr(),
                number("beta2_decay", -0.8),
                // torch's eps=(None, 1e-3): None is the parameters' machine
                // epsilon, float32's here.
                ParamSig::optional("eps", Ty::FloatPair, pair(f32::EPSILON as f64, 1e-3)),
                number("d", 1.0),
                number("weight_decay", 0.0),
            ],
        ),
    ]
}

pub fn optimizer(setting: &Setting, errors: &mut Vec<CheckError>) -> Option<Optimizer> {
    let (kind, v) = choose(setting, "optimizer", &choices(), errors)?;
    let span = setting.value.span;
    let lr = v[0].as_float();
    if !positive(lr, "the learning rate", span, errors) {
        return None;
    }
    let optimizer = match kind {
        Kind::Sgd => sgd(lr, &v, span),
        Kind::Adam | Kind::AdamW => adam(kind, lr, &v, span),
        Kind::Lion => lion(lr, &v, span),
        Kind::Adafactor => adafactor(lr, &v, span),
    };
    optimizer.map_err(|e| errors.push(e)).ok()
}

fn sgd(lr: f64, v: &[Value], span: Span) -> Result<Optimizer, CheckError> {
    let (momentum, dampening, nesterov, wd) = (
        v[1].as_float(),
        v[2].as_float(),
        v[3].as_bool(),
        v[4].as_float(),
    );
    if momentum < 0.0 || wd < 0.0 {
        return Err(CheckError::invalid(
            "momentum and weight_decay must be ≥ 0",
            span,
            "negative",
        ));
    }
    if nesterov && (momentum <= 0.0 || dampening != 0.0) {
        return Err(CheckError::InvalidValue {
            message: "nesterov momentum needs momentum > 0 and dampening = 0".into(),
            span,
            label: "inconsistent".into(),
            help: Some("e.g. `sgd(lr: 0.1, momentum: 0.9, nesterov: true)`".into()),
        });
    }
    Ok(Optimizer::Sgd {
        lr,
        momentum,
        dampening,
        nesterov,
        weight_decay: wd,
    })
}

/// Both betas in [0, 1).
fn betas(value: &Value) -> Option<[f64; 2]> {
    let pair = value.as_float_pair();
    pair.iter().all(|b| (0.0..1.0).contains(b)).then_some(pair)
}

fn adam(kind: Kind, lr: f64, v: &[Value], span: Span) -> Result<Optimizer, CheckError> {
    let (eps, weight_decay) = (v[2].as_float(), v[3].as_float());
    let betas = match betas(&v[1]) {
        Some(betas) if eps > 0.0 && weight_decay >= 0.0 => betas,
        _ => {
            return Err(CheckError::invalid(
                "betas must be in [0, 1), eps > 0 and weight_decay ≥ 0",
                span,
                "out of range",
            ))
        }
    };
    Ok(if kind == Kind::Adam {
        Optimizer::Adam {
            lr,
            betas,
            eps,
            weight_decay,
        }
    } else {
        Optimizer::AdamW {
            lr,
            betas,
            eps,
            weight_decay,
        }
    })
}

fn lion(lr: f64, v: &[Value], span: Span) -> Result<Optimizer, CheckError> {
    let weight_decay = v[2].as_float();
    let problem = match betas(&v[1]) {
        Some(betas) if weight_decay >= 0.0 => {
            return Ok(Optimizer::Lion {
                lr,
                betas,
                weight_decay,
            })
        }
        Some(_) => format!("weight_decay must be ≥ 0, got {weight_decay}"),
        None => format!("betas must be in [0, 1), got {:?}", v[1].as_float_pair()),
    };
    Err(CheckError::InvalidValue {
        message: format!("lion: {problem}"),
        span,
        label: "out of range".into(),
        help: Some(
            "e.g. `lion(lr: 3e-4, betas: [0.9, 0.99], weight_decay: 0.1)`: Lion's paper runs a learning rate 3–10× below AdamW's and a weight decay as much higher".into(),
        ),
    })
}

fn adafactor(lr: f64, v: &[Value], span: Span) -> Result<Optimizer, CheckError> {
    let (beta2_decay, eps, d, weight_decay) = (
        v[1].as_float(),
        v[2].as_float_pair(),
        v[3].as_float(),
        v[4].as_float(),
    );
    let problem = if beta2_decay > 0.0 {
        Some(format!("beta2_decay must be ≤ 0, got {beta2_decay}"))
    } else if eps.iter().any(|e| *e < 0.0) {
        Some(format!("both eps must be ≥ 0, got {eps:?}"))
    } else if d < 1.0 {
        Some(format!("the clipping threshold d must be ≥ 1, got {d}"))
    } else if weight_decay < 0.0 {
        Some(format!("weight_decay must be ≥ 0, got {weight_decay}"))
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(CheckError::InvalidValue {
            message: format!("adafactor: {problem}"),
            span,
            label: "out of range".into(),
            help: Some("torch.optim.Adafactor's defaults: `adafactor(lr: 1e-2, beta2_decay: -0.8, eps: [1.19e-7, 1e-3], d: 1.0, weight_decay: 0.0)`".into()),
        });
    }
    Ok(Optimizer::Adafactor {
        lr,
        beta2_decay,
        eps,
        d,
        weight_decay,
    })
}

/// Each one's name and signature (for editors).
pub(super) fn signatures() -> impl Iterator<Item = (&'static str, Vec<ParamSig>)> {
    choices().into_iter().map(|(name, _, sig)| (name, sig))
}
