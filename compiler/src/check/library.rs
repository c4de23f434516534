//! The built-in layer library: each layer's signature, its shape rule and the
//! plan node (with PyTorch-named parameters) it lowers to.

use super::args::{ParamSig, Ty, Value};
use super::CheckError;
use crate::plan::{shape_to_string, Dim, Init, Op, ParamSpec, Shape};
use crate::span::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Linear,
    LayerNorm,
    Dropout,
    Flatten,
    Relu,
    Gelu,
    Silu,
    Tanh,
    Sigmoid,
}

pub const BUILTIN_NAMES: [&str; 9] = [
    "linear",
    "layer_norm",
    "dropout",
    "flatten",
    "relu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
];

impl Builtin {
    pub fn lookup(name: &str) -> Option<Builtin> {
        Some(match name {
            "linear" => Builtin::Linear,
            "layer_norm" => Builtin::LayerNorm,
            "dropout" => Builtin::Dropout,
            "flatten" => Builtin::Flatten,
            "relu" => Builtin::Relu,
            "gelu" => Builtin::Gelu,
            "silu" => Builtin::Silu,
            "tanh" => Builtin::Tanh,
            "sigmoid" => Builtin::Sigmoid,
            _ => return None,
        })
    }

    pub fn signature(self) -> Vec<ParamSig> {
        match self {
            Builtin::Linear => vec![
                ParamSig::required("in_features", Ty::Int),
                ParamSig::required("out_features", Ty::Int),
                ParamSig::optional("bias", Ty::Bool, Value::Bool(true)),
            ],
            Builtin::LayerNorm => vec![
                ParamSig::required("dim", Ty::Int),
                ParamSig::optional("eps", Ty::Float, Value::Float(1e-5)),
            ],
            Builtin::Dropout => vec![ParamSig::optional("p", Ty::Float, Value::Float(0.5))],
            Builtin::Flatten
            | Builtin::Relu
            | Builtin::Gelu
            | Builtin::Silu
            | Builtin::Tanh
            | Builtin::Sigmoid => vec![],
        }
    }

    /// Checks the bound argument values on their own (before any input is
    /// seen), with `span` on the call.
    pub fn validate(self, args: &[Value], span: Span) -> Result<(), CheckError> {
        match self {
            Builtin::Linear => {
                for (value, what) in [
                    (args[0].as_int(), "in_features"),
                    (args[1].as_int(), "out_features"),
                ] {
                    if value < 1 {
                        return Err(CheckError::invalid(
                            format!("linear `{what}` must be at least 1, got {value}"),
                            span,
                            "here",
                        ));
                    }
                }
            }
            Builtin::LayerNorm if args[0].as_int() < 1 || args[1].as_float() <= 0.0 => {
                return Err(CheckError::invalid(
                    "layer_norm needs `dim` ≥ 1 and `eps` > 0",
                    span,
                    "here",
                ));
            }
            Builtin::Dropout => {
                let p = args[0].as_float();
                if !(0.0..1.0).contains(&p) {
                    return Err(CheckError::InvalidValue {
                        message: format!("dropout probability must be in [0, 1), got {p}"),
                        span,
                        label: "out of range".into(),
                        help: Some(
                            "p is the probability of zeroing an element, e.g. `dropout(0.1)`"
                                .into(),
                        ),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The node for this layer at module path `path` applied to `input`, with
    /// the parameters it creates, or the shape error.
    pub fn lower(
        self,
        args: &[Value],
        path: &str,
        input: &Shape,
        span: Span,
    ) -> Result<(Op, Vec<ParamSpec>, Shape), CheckError> {
        let param = |name: &str| join_path(path, name);
        match self {
            Builtin::Linear => {
                let (in_f, out_f, bias) = (args[0].as_int(), args[1].as_int(), args[2].as_bool());
                check_last_dim("linear", input, in_f, span)?;
                let bound = 1.0 / (in_f as f64).sqrt();
                let mut params = vec![ParamSpec {
                    name: param("weight"),
                    shape: vec![out_f, in_f],
                    init: Init::Uniform { bound },
                }];
                if bias {
                    params.push(ParamSpec {
                        name: param("bias"),
                        shape: vec![out_f],
                        init: Init::Uniform { bound },
                    });
                }
                let op = Op::Linear {
                    in_features: in_f,
                    out_features: out_f,
                    weight: param("weight"),
                    bias: bias.then(|| param("bias")),
                };
                Ok((op, params, with_last(input, out_f)))
            }
            Builtin::LayerNorm => {
                let dim = args[0].as_int();
                check_last_dim("layer_norm", input, dim, span)?;
                let params = vec![
                    ParamSpec {
                        name: param("weight"),
                        shape: vec![dim],
                        init: Init::Ones,
                    },
                    ParamSpec {
                        name: param("bias"),
                        shape: vec![dim],
                        init: Init::Zeros,
                    },
                ];
                let op = Op::LayerNorm {
                    dim,
                    eps: args[1].as_float(),
                    weight: param("weight"),
                    bias: param("bias"),
                };
                Ok((op, params, input.clone()))
            }
            Builtin::Dropout => Ok((
                Op::Dropout {
                    p: args[0].as_float(),
                },
                vec![],
                input.clone(),
            )),
            Builtin::Flatten => Ok((Op::Flatten, vec![], flatten(input, span)?)),
            Builtin::Relu => Ok((Op::Relu, vec![], input.clone())),
            Builtin::Gelu => Ok((Op::Gelu, vec![], input.clone())),
            Builtin::Silu => Ok((Op::Silu, vec![], input.clone())),
            Builtin::Tanh => Ok((Op::Tanh, vec![], input.clone())),
            Builtin::Sigmoid => Ok((Op::Sigmoid, vec![], input.clone())),
        }
    }
}

pub fn join_path(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

fn check_last_dim(layer: &str, input: &Shape, expected: i64, span: Span) -> Result<(), CheckError> {
    match input.last() {
        Some(Dim::Size(found)) if *found == expected => Ok(()),
        Some(Dim::Size(found)) => Err(CheckError::WidthMismatch {
            layer: format!("`{layer}`"),
            expected,
            found: *found,
            span,
            help: Some(format!(
                "the input here has shape {}",
                shape_to_string(input)
            )),
        }),
        _ => Err(CheckError::ShapeMismatch {
            expected: format!("a last dimension of {expected}"),
            found: shape_to_string(input),
            span,
            what: format!("`{layer}` needs a known last dimension"),
            help: None,
        }),
    }
}

fn with_last(input: &Shape, size: i64) -> Shape {
    let mut out = input.clone();
    if let Some(last) = out.last_mut() {
        *last = Dim::Size(size);
    }
    out
}

fn flatten(input: &Shape, span: Span) -> Result<Shape, CheckError> {
    let Some((batch, rest)) = input.split_first() else {
        return Err(CheckError::ShapeMismatch {
            expected: "a batch dimension".into(),
            found: shape_to_string(input),
            span,
            what: "nothing to flatten".into(),
            help: None,
        });
    };
    let mut size = 1i64;
    for dim in rest {
        match dim {
            Dim::Size(n) => size = size.saturating_mul(*n),
            Dim::Symbol(_) => {
                return Err(CheckError::ShapeMismatch {
                    expected: "known sizes after the batch dimension".into(),
                    found: shape_to_string(input),
                    span,
                    what: "cannot flatten a symbolic dimension".into(),
                    help: None,
                })
            }
        }
    }
    Ok(vec![batch.clone(), Dim::Size(size)])
}
