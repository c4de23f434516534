//! Values of constant expressions and the binding of call arguments to a
//! signature: arity, keyword names, defaults and types, each with its own
//! error.

use std::collections::BTreeMap;

use super::CheckError;
use crate::ast::{Arg, BinOp, Expr, ExprKind};
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

    /// An integer, or a list of two, as `[first, second]` (`3` is `[3, 3]`).
    pub fn as_int_pair(&self) -> [i64; 2] {
        match self {
            Value::List(items) if items.len() == 2 => [items[0].as_int(), items[1].as_int()],
            other => [other.as_int(); 2],
        }
    }

    /// A number, or a list of two, as `[first, second]`.
    pub fn as_float_pair(&self) -> [f64; 2] {
        match self {
            Value::List(items) if items.len() == 2 => [items[0].as_float(), items[1].as_float()],
            other => [other.as_float(); 2],
        }
    }

    /// A number, or a list of numbers, as a list.
    pub fn as_floats(&self) -> Vec<f64> {
        match self {
            Value::List(items) => items.iter().map(Value::as_float).collect(),
            other => vec![other.as_float()],
        }
    }

    /// Whether this is the default of an argument that has none: `none`,
    /// which no written value can be.
    pub fn is_absent(&self) -> bool {
        matches!(self, Value::Name(n) if n == ABSENT)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Value::Str(s) | Value::Name(s) => s,
            _ => "",
        }
    }

    /// A [`Ty::StrPairs`] value's pairs.
    pub fn as_str_pairs(&self) -> Vec<[String; 2]> {
        match self {
            Value::List(items) => items
                .iter()
                .filter_map(|pair| match pair {
                    Value::List(two) if two.len() == 2 => {
                        Some([two[0].as_str().to_string(), two[1].as_str().to_string()])
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A [`Ty::StrGroups`] value's lists.
    pub fn as_str_groups(&self) -> Vec<Vec<String>> {
        match self {
            Value::List(items) => items
                .iter()
                .filter_map(|group| match group {
                    Value::List(all) => Some(all.iter().map(|v| v.as_str().to_string()).collect()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A [`Ty::StrOrList`] value's strings: the list's, or the one.
    pub fn as_strings(&self) -> Vec<String> {
        match self {
            Value::List(items) => items.iter().map(|i| i.as_str().to_string()).collect(),
            one => vec![one.as_str().to_string()],
        }
    }
}

/// The default of an argument that may be left out and has no value then
/// (`upsample`'s `scale` when a `size` is given).
pub const ABSENT: &str = "none";

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
    /// A bare name, one of a fixed set the caller checks (`bf16`).
    Name,
    /// A list of exactly two numbers.
    FloatPair,
    /// A list of integers.
    IntList,
    /// An integer, or a list of two (height and width).
    IntOrPair,
    /// A number, or a list of two numbers.
    FloatOrPair,
    /// A number, or a list of numbers.
    FloatOrList,
    /// A string, or a non-empty list of strings.
    StrOrList,
    /// A list of `[from, to]` pairs of strings.
    StrPairs,
    /// A list of lists of three or more strings (`fuse`'s parts, then the
    /// whole).
    StrGroups,
}

impl Ty {
    pub fn describe(self) -> &'static str {
        match self {
            Ty::Int => "an integer",
            Ty::Float => "a number",
            Ty::FloatOrInf => "a number or `inf`",
            Ty::Bool => "`true` or `false`",
            Ty::Str => "a string",
            Ty::Name => "a name",
            Ty::FloatPair => "a list of two numbers",
            Ty::IntList => "a list of integers",
            Ty::IntOrPair => "an integer or a list of two integers",
            Ty::FloatOrPair => "a number or a list of two numbers",
            Ty::FloatOrList => "a number or a list of numbers",
            Ty::StrOrList => "a string or a list of strings",
            Ty::StrPairs => "a list of [from, to] pairs of strings",
            Ty::StrGroups => "a list of [part, part, ..., whole] lists of strings",
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
            (Ty::Name, Value::Name(_)) => true,
            (Ty::IntList, Value::List(items)) => items.iter().all(|v| matches!(v, Value::Int(_))),
            (Ty::FloatPair | Ty::FloatOrPair, Value::List(items)) => {
                items.len() == 2 && items.iter().all(|v| Ty::Float.accepts(v))
            }
            (Ty::IntOrPair, Value::Int(_)) => true,
            (Ty::IntOrPair, Value::List(items)) => {
                items.len() == 2 && items.iter().all(|v| matches!(v, Value::Int(_)))
            }
            (Ty::FloatOrPair | Ty::FloatOrList, Value::Int(_) | Value::Float(_)) => true,
            (Ty::FloatOrList, Value::List(items)) => {
                !items.is_empty() && items.iter().all(|v| Ty::Float.accepts(v))
            }
            (Ty::StrOrList, Value::Str(_)) => true,
            (Ty::StrOrList, Value::List(items)) => {
                !items.is_empty() && items.iter().all(|v| matches!(v, Value::Str(_)))
            }
            (Ty::StrPairs, Value::List(items)) => items.iter().all(|pair| {
                matches!(pair, Value::List(two) if two.len() == 2 && two.iter().all(|v| matches!(v, Value::Str(_))))
            }),
            (Ty::StrGroups, Value::List(items)) => items.iter().all(|group| {
                matches!(group, Value::List(all) if all.len() >= 3 && all.iter().all(|v| matches!(v, Value::Str(_))))
            }),
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
        ExprKind::Add(terms) => {
            let mut sum = number(&terms[0], env)?;
            for term in &terms[1..] {
                sum = arithmetic(sum, ArithOp::Add, number(term, env)?, term.span, expr.span)?;
            }
            sum
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let op = match op {
                BinOp::Sub => ArithOp::Sub,
                BinOp::Mul => ArithOp::Mul,
                BinOp::Div => ArithOp::Div,
            };
            arithmetic(
                number(lhs, env)?,
                op,
                number(rhs, env)?,
                rhs.span,
                expr.span,
            )?
        }
        ExprKind::Pipe(_) | ExprKind::Repeat { .. } => {
            return Err(CheckError::TypeMismatch {
                expected: "a value".into(),
                found: "a tensor expression".into(),
                span: expr.span,
                help: None,
            })
        }
    })
}

/// An operand of arithmetic: an integer or a number.
fn number(expr: &Expr, env: &Env) -> Result<Value, CheckError> {
    match eval(expr, env)? {
        value @ (Value::Int(_) | Value::Float(_)) => Ok(value),
        Value::Name(name) => Err(CheckError::TypeMismatch {
            expected: "a number".into(),
            found: format!("`{name}`, which is not a parameter or a number here"),
            span: expr.span,
            help: Some(
                "arithmetic works on numbers and module parameters (`4 * d`); tensors are combined with `+` and `*` inside `forward`".into(),
            ),
        }),
        other => Err(CheckError::TypeMismatch {
            expected: "a number".into(),
            found: other.describe(),
            span: expr.span,
            help: None,
        }),
    }
}

#[derive(Clone, Copy)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a op b` on numbers: exact on integers (an overflow or a remainder is an
/// error at `span`, the whole expression; `rhs` is the right operand),
/// floating point as soon as one side is a float.
fn arithmetic(a: Value, op: ArithOp, b: Value, rhs: Span, span: Span) -> Result<Value, CheckError> {
    let symbol = match op {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
    };
    if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        if matches!(op, ArithOp::Div) {
            if y == 0 {
                return Err(CheckError::invalid("division by zero", rhs, "this is 0"));
            }
            if x % y != 0 {
                return Err(CheckError::InvalidValue {
                    message: format!("{x} / {y} is not a whole number"),
                    span,
                    label: "`/` must divide exactly".into(),
                    help: Some(format!(
                        "{x} = {} × {y} + {}; pick sizes that divide, or write the result",
                        x.div_euclid(y),
                        x.rem_euclid(y)
                    )),
                });
            }
        }
        let result = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            ArithOp::Div => x.checked_div(y),
        };
        return result.map(Value::Int).ok_or_else(|| {
            CheckError::invalid(
                format!("{x} {symbol} {y} does not fit in 64 bits"),
                span,
                "overflow",
            )
        });
    }
    let (x, y) = (a.as_float(), b.as_float());
    let result = match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div => x / y,
    };
    if !result.is_finite() {
        return Err(CheckError::invalid(
            format!("{x} {symbol} {y} is not a finite number"),
            span,
            "here",
        ));
    }
    Ok(Value::Float(result))
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
                let help = match (sig[index].name.as_str(), &value) {
                    ("padding", Value::Str(mode)) if mode == "same" || mode == "valid" => Some(
                        "write the number: `padding: 1` keeps the size of a 3×3 kernel at stride 1 (`padding: (kernel - 1) / 2`), `padding: 0` is \"valid\"".to_string(),
                    ),
                    _ => None,
                };
                errors.push(CheckError::TypeMismatch {
                    expected: format!("{} for `{}`", sig[index].ty.describe(), sig[index].name),
                    found: value.describe(),
                    span: arg.value.span,
                    help,
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
                Ty::Name => "name",
                Ty::FloatPair => "[float, float]",
                Ty::IntList => "[int, ...]",
                Ty::IntOrPair => "int | [int, int]",
                Ty::FloatOrPair => "float | [float, float]",
                Ty::FloatOrList => "float | [float, ...]",
                Ty::StrOrList => "str | [str, ...]",
                Ty::StrPairs => "[[str, str], ...]",
                Ty::StrGroups => "[[str, str, str, ...], ...]",
            };
            match &p.default {
                Some(d) => format!("{}: {ty} = {}", p.name, value_text(d)),
                None => format!("{}: {ty}", p.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn value_text(value: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `setting`'s right-hand side in `train { x = ... }`.
    fn value(text: &str) -> Result<Value, CheckError> {
        let (file, errors) = crate::syntax::parse(&format!("train {{ x = {text} }}"));
        assert!(errors.is_empty(), "{text}: {errors:?}");
        let crate::ast::Item::Train(block) = &file.items[0] else {
            panic!("a train block")
        };
        eval(&block.settings[0].value, &Env::new())
    }

    #[test]
    fn arithmetic_follows_precedence_and_stays_exact() {
        assert_eq!(value("2 + 3 * 4 - 6 / 2").unwrap(), Value::Int(11));
        assert_eq!(value("(2 + 3) * 4").unwrap(), Value::Int(20));
        assert_eq!(value("10 - 2 - 3").unwrap(), Value::Int(5));
        assert_eq!(value("64 / 4 / 2").unwrap(), Value::Int(8));
        assert_eq!(value("3 * -2").unwrap(), Value::Int(-6));
        assert_eq!(value("1.0 / 4").unwrap(), Value::Float(0.25));
        assert_eq!(value("3e-3 * 2").unwrap(), Value::Float(6e-3));
    }

    #[test]
    fn arithmetic_errors_instead_of_rounding_or_wrapping() {
        let err = value("7 / 2").unwrap_err().to_string();
        assert!(err.contains("7 / 2 is not a whole number"), "{err}");
        let err = value("1 / 0").unwrap_err().to_string();
        assert!(err.contains("division by zero"), "{err}");
        let err = value("9223372036854775807 + 1").unwrap_err().to_string();
        assert!(err.contains("does not fit in 64 bits"), "{err}");
        let err = value("1e308 * 10").unwrap_err().to_string();
        assert!(err.contains("not a finite number"), "{err}");
        let err = value("\"a\" * 2").unwrap_err().to_string();
        assert!(err.contains("expected a number"), "{err}");
    }
}
