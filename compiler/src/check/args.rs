//! Values of constant expressions and the binding of call arguments to a
//! signature: arity, keyword names, defaults and types, each with its own
//! error.

use std::collections::BTreeMap;

use super::CheckError;
use crate::ast::{Arg, Expr, ExprKind};
use crate::span::Span;
use crate::util::suggest::did_you_mean;

/// A constant value, as the checker evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A bare name used as a value, e.g. `cross_entropy` or `inf`.
    Name(String),
    List(Vec<Value>),
}

impl Value {
    pub fn describe(&self) -> String {
        match self {
            Value::Int(n) => format!("the integer {n}"),
            Value::Float(x) => format!("the number {x}"),
            Value::Bool(b) => format!("`{b}`"),
            Value::Str(_) => "a string".to_string(),
            Value::Name(n) => format!("the name `{n}`"),
            Value::List(_) => "a list".to_string(),
        }
    }

    pub fn as_int(&self) -> i64 {
        match self {
            Value::Int(n) => *n,
            _ => 0,
        }
    }

    pub fn as_float(&self) -> f64 {
        match self {
            Value::Int(n) => *n as f64,
            Value::Float(x) => *x,
            Value::Name(n) if n == "inf" => f64::INFINITY,
            _ => 0.0,
        }
    }

    pub fn as_bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Value::Str(s) | Value::Name(s) => s,
            _ => "",
        }
    }
}

/// The type a parameter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    /// A number; integers are accepted.
    Float,
    /// A number or `inf`.
    FloatOrInf,
    Bool,
    Str,
    /// A list of exactly two numbers.
    FloatPair,
    /// A list of integers.
    IntList,
}

impl Ty {
    pub fn describe(self) -> &'static str {
        match self {
            Ty::Int => "an integer",
            Ty::Float => "a number",
            Ty::FloatOrInf => "a number or `inf`",
            Ty::Bool => "`true` or `false`",
            Ty::Str => "a string",
            Ty::FloatPair => "a list of two numbers",
            Ty::IntList => "a list of integers",
        }
    }

    /// The surface name of a parameter type (`d: int`).
    pub fn from_name(name: &str) -> Option<Ty> {
        Some(match name {
            "int" => Ty::Int,
            "float" => Ty::Float,
            "bool" => Ty::Bool,
            "str" => Ty::Str,
            _ => return None,
        })
    }

    pub fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (Ty::Int, Value::Int(_)) => true,
            (Ty::Float, Value::Int(_) | Value::Float(_)) => true,
            (Ty::FloatOrInf, Value::Int(_) | Value::Float(_)) => true,
            (Ty::FloatOrInf, Value::Name(n)) => n == "inf",
            (Ty::Bool, Value::Bool(_)) => true,
            (Ty::Str, Value::Str(_)) => true,
            (Ty::IntList, Value::List(items)) => items.iter().all(|v| matches!(v, Value::Int(_))),
            (Ty::FloatPair, Value::List(items)) => {
                items.len() == 2 && items.iter().all(|v| Ty::Float.accepts(v))
            }
            _ => false,
        }
    }
}

/// One parameter of a signature, with its default if it has one.
#[derive(Debug, Clone)]
pub struct ParamSig {
    pub name: String,
    pub ty: Ty,
    pub default: Option<Value>,
}

impl ParamSig {
    pub fn required(name: &str, ty: Ty) -> Self {
        ParamSig {
            name: name.to_string(),
            ty,
            default: None,
        }
    }

    pub fn optional(name: &str, ty: Ty, default: Value) -> Self {
        ParamSig {
            name: name.to_string(),
            ty,
            default: Some(default),
        }
    }
}

/// Names visible to a constant expression: a module's parameters.
pub type Env = BTreeMap<String, Value>;

/// Evaluates a constant expression. Bare names not in `env` are kept as
/// `Value::Name` for the caller to interpret (`inf`, `cross_entropy`).
pub fn eval(expr: &Expr, env: &Env) -> Result<Value, CheckError> {
    Ok(match &expr.kind {
        ExprKind::Int(n) => Value::Int(*n),
        ExprKind::Float(x) => Value::Float(*x),
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Str(s) => Value::Str(s.clone()),
        ExprKind::Name(ident) => env
            .get(&ident.name)
            .cloned()
            .unwrap_or(Value::Name(ident.name.clone())),
        ExprKind::List(items) => Value::List(
            items
                .iter()
                .map(|e| eval(e, env))
                .collect::<Result<_, _>>()?,
        ),
        ExprKind::Call(call) => {
            return Err(CheckError::TypeMismatch {
                expected: "a value".into(),
                found: format!("a call of `{}`", call.callee.name),
                span: expr.span,
                help: None,
            })
        }
        ExprKind::Pipe(_) | ExprKind::Add(_) | ExprKind::Repeat { .. } => {
            return Err(CheckError::TypeMismatch {
                expected: "a value".into(),
                found: "a tensor expression".into(),
                span: expr.span,
                help: None,
            })
        }
    })
}

/// Binds `args` to `sig`, evaluating them in `env`. On success the values
/// come back in signature order, defaults filled in.
pub fn bind(
    callee: &str,
    call_span: Span,
    sig: &[ParamSig],
    args: &[Arg],
    env: &Env,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<Value>> {
    let mut slots: Vec<Option<(Value, Span)>> = vec![None; sig.len()];
    let mut ok = true;
    let positional = args.iter().take_while(|a| a.name.is_none()).count();
    if positional > sig.len() {
        errors.push(CheckError::Arity {
            callee: callee.to_string(),
            expected: arity_text(sig),
            found: args.len(),
            span: args[sig.len()].span.to(args[positional - 1].span),
            help: Some(format!("`{callee}` takes ({})", signature_text(sig))),
        });
        return None;
    }
    for (i, arg) in args.iter().enumerate() {
        let index = match &arg.name {
            None if i < positional => i,
            None => {
                errors.push(CheckError::TypeMismatch {
                    expected: "a keyword argument".into(),
                    found: "a positional argument after keyword arguments".into(),
                    span: arg.span,
                    help: Some("put positional arguments first".into()),
                });
                ok = false;
                continue;
            }
            Some(name) => match sig.iter().position(|p| p.name == name.name) {
                Some(index) => index,
                None => {
                    errors.push(CheckError::UnknownArgument {
                        callee: callee.to_string(),
                        name: name.name.clone(),
                        span: name.span,
                        help: did_you_mean(&name.name, sig.iter().map(|p| p.name.as_str()))
                            .or_else(|| {
                                Some(format!("`{callee}` takes ({})", signature_text(sig)))
                            }),
                    });
                    ok = false;
                    continue;
                }
            },
        };
        if slots[index].is_some() {
            errors.push(CheckError::DuplicateArgument {
                name: sig[index].name.clone(),
                span: arg.span,
            });
            ok = false;
            continue;
        }
        match eval(&arg.value, env) {
            Ok(value) if sig[index].ty.accepts(&value) => {
                slots[index] = Some((value, arg.value.span))
            }
            Ok(value) => {
                errors.push(CheckError::TypeMismatch {
                    expected: format!("{} for `{}`", sig[index].ty.describe(), sig[index].name),
                    found: value.describe(),
                    span: arg.value.span,
                    help: None,
                });
                ok = false;
            }
            Err(err) => {
                errors.push(err);
                ok = false;
            }
        }
    }
    let mut values = Vec::with_capacity(sig.len());
    for (param, slot) in sig.iter().zip(slots) {
        match (slot, &param.default) {
            (Some((value, _)), _) => values.push(promote(param.ty, value)),
            (None, Some(default)) => values.push(default.clone()),
            (None, None) => {
                if ok {
                    errors.push(CheckError::MissingArgument {
                        callee: callee.to_string(),
                        name: param.name.clone(),
                        span: call_span,
                        help: Some(format!("`{callee}` takes ({})", signature_text(sig))),
                    });
                }
                ok = false;
            }
        }
    }
    ok.then_some(values)
}

/// Integers passed where a number is wanted become floats.
fn promote(ty: Ty, value: Value) -> Value {
    match (ty, value) {
        (Ty::Float, Value::Int(n)) => Value::Float(n as f64),
        (_, value) => value,
    }
}

fn arity_text(sig: &[ParamSig]) -> String {
    let required = sig.iter().filter(|p| p.default.is_none()).count();
    if required == sig.len() {
        format!("{required}")
    } else {
        format!("{required} to {}", sig.len())
    }
}

/// `in_features: int, out_features: int, bias: bool = true`
pub fn signature_text(sig: &[ParamSig]) -> String {
    sig.iter()
        .map(|p| {
            let ty = match p.ty {
                Ty::Int => "int",
                Ty::Float | Ty::FloatOrInf => "float",
                Ty::Bool => "bool",
                Ty::Str => "str",
                Ty::FloatPair => "[float, float]",
                Ty::IntList => "[int, ...]",
            };
            match &p.default {
                Some(d) => format!("{}: {ty} = {}", p.name, value_text(d)),
                None => format!("{}: {ty}", p.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        Value::Float(x) => format!("{x:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => format!("{s:?}"),
        Value::Name(n) => n.clone(),
        Value::List(items) => format!(
            "[{}]",
            items.iter().map(value_text).collect::<Vec<_>>().join(", ")
        ),
    }
}
