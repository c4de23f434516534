//! The settings blocks: `data`, `train` and `parallel`. Each key has a type
//! and a range; unknown keys, repeated keys and missing required keys are
//! errors. The call-valued train settings have their own files: [`super::loss`],
//! [`super::optimizer`], [`super::schedule`]; `clip` is here.

use std::collections::BTreeMap;

use super::args::{bind, eval, Env, ParamSig, Ty, Value};
use super::CheckError;
use crate::ast::{Arg, Expr, ExprKind, Ident, Setting};
use crate::plan::{Clip, NormType};
use crate::span::Span;
use crate::util::suggest::did_you_mean;

/// The settings of one block by key, after the duplicate and unknown-key checks.
pub struct Settings<'a> {
    block: String,
    block_span: Span,
    by_key: BTreeMap<&'a str, &'a Setting>,
}

impl<'a> Settings<'a> {
    pub fn new(
        block: &str,
        block_span: Span,
        settings: &'a [Setting],
        known: &[&str],
        errors: &mut Vec<CheckError>,
    ) -> Self {
        let mut by_key: BTreeMap<&str, &Setting> = BTreeMap::new();
        for setting in settings {
            let key = setting.key.name.as_str();
            if !known.contains(&key) {
                errors.push(CheckError::UnknownSetting {
                    block: block.to_string(),
                    key: key.to_string(),
                    span: setting.key.span,
                    help: super::foreign::setting(block, key)
                        .map(String::from)
                        .or_else(|| did_you_mean(key, known.iter().copied()))
                        .or_else(|| Some(format!("`{block}` takes: {}", known.join(", ")))),
                });
            } else if let Some(first) = by_key.get(key) {
                errors.push(CheckError::Duplicate {
                    kind: "setting",
                    name: key.to_string(),
                    span: setting.key.span,
                    first: first.key.span,
                });
            } else {
                by_key.insert(key, setting);
            }
        }
        Settings {
            block: block.to_string(),
            block_span,
            by_key,
        }
    }

    /// A lookup-only view, for a block already checked elsewhere: reports
    /// nothing.
    pub fn quiet(settings: &'a [Setting]) -> Self {
        let mut by_key = BTreeMap::new();
        for setting in settings {
            by_key.entry(setting.key.name.as_str()).or_insert(setting);
        }
        Settings {
            block: String::new(),
            block_span: Span::default(),
            by_key,
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Setting> {
        self.by_key.get(key).copied()
    }

    pub fn require(
        &self,
        key: &'static str,
        help: &str,
        errors: &mut Vec<CheckError>,
    ) -> Option<&'a Setting> {
        let found = self.get(key);
        if found.is_none() {
            errors.push(CheckError::MissingSetting {
                block: self.block.clone(),
                key,
                span: self.block_span,
                help: Some(help.to_string()),
            });
        }
        found
    }

    /// An integer setting in `range`, or its default. The upper bounds keep
    /// every product of settings (rows per step, bytes of a bucket) far
    /// from overflowing.
    pub fn int(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: Option<i64>,
        errors: &mut Vec<CheckError>,
    ) -> Option<i64> {
        let Some(setting) = self.get(key) else {
            return default;
        };
        let n = match constant(&setting.value, errors) {
            Err(()) => return None,
            Ok(Some(Value::Int(n))) => n,
            Ok(_) => {
                errors.push(type_error(&setting.value, "an integer", key));
                return None;
            }
        };
        if n < *range.start() {
            errors.push(CheckError::invalid(
                format!("`{key}` must be at least {}, got {n}", range.start()),
                setting.value.span,
                "too small",
            ));
            return None;
        }
        if n > *range.end() {
            errors.push(CheckError::invalid(
                format!("`{key}` must be at most {}, got {n}", range.end()),
                setting.value.span,
                "too large",
            ));
            return None;
        }
        Some(n)
    }

    /// A number in `range`, or its default.
    pub fn float(
        &self,
        key: &str,
        range: std::ops::Range<f64>,
        default: f64,
        errors: &mut Vec<CheckError>,
    ) -> Option<f64> {
        let Some(setting) = self.get(key) else {
            return Some(default);
        };
        let value = match constant(&setting.value, errors) {
            Err(()) => return None,
            Ok(Some(Value::Int(n))) => n as f64,
            Ok(Some(Value::Float(x))) => x,
            Ok(_) => {
                errors.push(type_error(&setting.value, "a number", key));
                return None;
            }
        };
        if !range.contains(&value) {
            errors.push(CheckError::invalid(
                format!(
                    "`{key}` must be in [{}, {}), got {value}",
                    range.start, range.end
                ),
                setting.value.span,
                "out of range",
            ));
            return None;
        }
        Some(value)
    }

    /// A non-empty list of numbers (`mean = [0.49, 0.48, 0.45]`), with its
    /// span; `Some(None)` when not set.
    pub fn floats(
        &self,
        key: &str,
        errors: &mut Vec<CheckError>,
    ) -> Option<Option<(Vec<f64>, Span)>> {
        let Some(setting) = self.get(key) else {
            return Some(None);
        };
        let numbers: Option<Vec<f64>> = match &setting.value.kind {
            ExprKind::List(items) if !items.is_empty() => items
                .iter()
                .map(|e| match constant(e, errors) {
                    Ok(Some(Value::Int(n))) => Some(n as f64),
                    Ok(Some(Value::Float(x))) => Some(x),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        match numbers {
            Some(numbers) => Some(Some((numbers, setting.value.span))),
            None => {
                errors.push(type_error(&setting.value, "a list of numbers", key));
                None
            }
        }
    }

    pub fn bool(&self, key: &str, default: bool, errors: &mut Vec<CheckError>) -> Option<bool> {
        let Some(setting) = self.get(key) else {
            return Some(default);
        };
        match &setting.value.kind {
            ExprKind::Bool(b) => Some(*b),
            _ => {
                errors.push(type_error(&setting.value, "`true` or `false`", key));
                None
            }
        }
    }

    /// A setting that names one of a [`Choice`]'s values (`precision =
    /// bf16`): the value, `Some(None)` when the setting is absent, `None`
    /// when it is wrong (reported as an unknown name, with the choices).
    pub fn choice<T: Choice>(&self, key: &str, errors: &mut Vec<CheckError>) -> Option<Option<T>> {
        let Some(setting) = self.get(key) else {
            return Some(None);
        };
        let choices: Vec<(&'static str, T, Vec<ParamSig>)> =
            T::NAMES.iter().map(|(n, v)| (*n, *v, vec![])).collect();
        choose(setting, T::WHAT, &choices, errors).map(|(value, _)| Some(value))
    }

    /// [`Settings::choice`] with the default for an absent setting.
    pub fn choice_or<T: Choice>(
        &self,
        key: &str,
        default: T,
        errors: &mut Vec<CheckError>,
    ) -> Option<T> {
        self.choice(key, errors).map(|v| v.unwrap_or(default))
    }

    /// A setting whose value names something (`model = Net`).
    pub fn name(&self, key: &str, errors: &mut Vec<CheckError>) -> Option<&'a Ident> {
        let setting = self.get(key)?;
        match &setting.value.kind {
            ExprKind::Name(ident) => Some(ident),
            _ => {
                errors.push(type_error(&setting.value, "a name", key));
                None
            }
        }
    }
}

/// A setting's value as a number: a literal, or arithmetic on literals
/// (`steps = 10 * 100`) worked out. `Ok(None)` when it is something else
/// (the caller reports the type); `Err` once an arithmetic error (overflow,
/// an inexact `/`) is reported.
fn constant(value: &Expr, errors: &mut Vec<CheckError>) -> Result<Option<Value>, ()> {
    match &value.kind {
        ExprKind::Int(n) => Ok(Some(Value::Int(*n))),
        ExprKind::Float(x) => Ok(Some(Value::Float(*x))),
        ExprKind::Add(_) | ExprKind::Binary { .. } => match eval(value, &Env::new()) {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                errors.push(err);
                Err(())
            }
        },
        _ => Ok(None),
    }
}

pub(super) fn type_error(value: &Expr, expected: &str, key: &str) -> CheckError {
    let found = match &value.kind {
        ExprKind::Int(_) => "an integer",
        ExprKind::Float(_) => "a number",
        ExprKind::Str(_) => "a string",
        ExprKind::Bool(_) => "a boolean",
        ExprKind::Name(_) => "a name",
        ExprKind::Call(_) => "a call",
        ExprKind::Pipe(_) => "a `|>` chain",
        ExprKind::Add(_) => "a sum",
        ExprKind::Binary { .. } => "arithmetic",
        ExprKind::Repeat { .. } => "a `repeat`",
        ExprKind::List(_) => "a list",
    };
    // `precision = "bf16"`: a name in quotes.
    let help = match &value.kind {
        ExprKind::Str(text) if expected.contains(&format!("`{text}`")) => Some(format!(
            "names are written without quotes: `{key} = {text}`"
        )),
        _ => None,
    };
    CheckError::TypeMismatch {
        expected: format!("{expected} for `{key}`"),
        found: found.to_string(),
        span: value.span,
        help,
    }
}

/// A value written as a call or, when it takes no arguments, a bare name:
/// `cross_entropy`, `cross_entropy(label_smoothing: 0.1)`.
fn as_call(expr: &Expr) -> Option<(&Ident, &[Arg])> {
    match &expr.kind {
        ExprKind::Name(ident) => Some((ident, &[])),
        ExprKind::Call(call) => Some((&call.callee, &call.args)),
        _ => None,
    }
}

/// A setting's named values and the plan value each stands for, so that
/// a setting resolves to a typed value, never to a string matched later.
pub trait Choice: Copy + 'static {
    /// What the value is, for "unknown ..." messages.
    const WHAT: &'static str;
    const NAMES: &'static [(&'static str, Self)];
}

impl Choice for crate::plan::Precision {
    const WHAT: &'static str = "precision";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("fp32", Self::Fp32),
        ("tf32", Self::Tf32),
        ("bf16", Self::Bf16),
        ("fp16", Self::Fp16),
    ];
}

impl Choice for crate::plan::Recompute {
    const WHAT: &'static str = "recompute mode";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("none", Self::None),
        ("blocks", Self::Blocks),
        ("all", Self::All),
    ];
}

impl Choice for crate::plan::NanPolicy {
    const WHAT: &'static str = "NaN policy";
    const NAMES: &'static [(&'static str, Self)] = &[("stop", Self::Stop), ("skip", Self::Skip)];
}

impl Choice for crate::plan::BadRows {
    const WHAT: &'static str = "bad-row policy";
    const NAMES: &'static [(&'static str, Self)] = &[("error", Self::Error), ("skip", Self::Skip)];
}

impl Choice for crate::plan::TargetKind {
    const WHAT: &'static str = "target kind";
    const NAMES: &'static [(&'static str, Self)] =
        &[("class", Self::Class), ("float", Self::Float)];
}

impl Choice for crate::plan::PipelineSchedule {
    const WHAT: &'static str = "pipeline schedule";
    const NAMES: &'static [(&'static str, Self)] =
        &[("gpipe", Self::Gpipe), ("one_f_one_b", Self::OneFOneB)];
}

impl Choice for crate::plan::Backend {
    const WHAT: &'static str = "backend";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", Self::Auto),
        ("nccl", Self::Nccl),
        ("mpi", Self::Mpi),
    ];
}

impl Choice for super::parallel::ShardMode {
    const WHAT: &'static str = "shard mode";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("none", Self::None),
        ("optimizer", Self::Optimizer),
        ("gradients", Self::Gradients),
        ("parameters", Self::Parameters),
    ];
}

impl Choice for crate::plan::BatchNormSync {
    const WHAT: &'static str = "batch_norm synchronisation";
    const NAMES: &'static [(&'static str, Self)] = &[("sync", Self::Sync), ("local", Self::Local)];
}

/// Resolves a call-valued setting against a table of `(name, tag,
/// signature)`: the tag of the name written, and its arguments bound.
pub(super) fn choose<T: Copy>(
    setting: &Setting,
    what: &'static str,
    choices: &[(&'static str, T, Vec<ParamSig>)],
    errors: &mut Vec<CheckError>,
) -> Option<(T, Vec<Value>)> {
    let Some((name, args)) = as_call(&setting.value) else {
        let names: Vec<String> = choices.iter().map(|(n, _, _)| format!("`{n}`")).collect();
        let mut error = type_error(
            &setting.value,
            &format!("one of {}", names.join(", ")),
            &setting.key.name,
        );
        // `clip = 1.0`: a bare number where a choice takes it as its
        // first argument, `clip = norm(1.0)`.
        let number = match &setting.value.kind {
            ExprKind::Float(x) => Some(format!("{x:?}")),
            ExprKind::Int(n) => Some(n.to_string()),
            _ => None,
        };
        let takes_number = choices.iter().find(|(_, _, sig)| {
            sig.first()
                .is_some_and(|p| p.default.is_none() && p.ty == Ty::Float)
        });
        if let (Some(number), Some((choice, _, _)), CheckError::TypeMismatch { help, .. }) =
            (number, takes_number, &mut error)
        {
            *help = Some(format!("write `{} = {choice}({number})`", setting.key.name));
        }
        errors.push(error);
        return None;
    };
    let Some((choice, tag, sig)) = choices.iter().find(|(n, _, _)| *n == name.name) else {
        let names: Vec<&str> = choices.iter().map(|(n, _, _)| *n).collect();
        errors.push(CheckError::UnknownName {
            kind: what,
            name: name.name.clone(),
            span: name.span,
            help: super::foreign::choice(what, &name.name)
                .map(String::from)
                .or_else(|| did_you_mean(&name.name, names.iter().copied()))
                .or_else(|| Some(format!("choose one of: {}", names.join(", ")))),
        });
        return None;
    };
    let values = bind(choice, setting.value.span, sig, args, &Env::new(), errors)?;
    Some((*tag, values))
}

pub(super) fn positive(value: f64, what: &str, span: Span, errors: &mut Vec<CheckError>) -> bool {
    if value > 0.0 && value.is_finite() {
        return true;
    }
    errors.push(CheckError::invalid(
        format!("{what} must be greater than 0, got {value}"),
        span,
        "must be > 0",
    ));
    false
}

#[derive(Clone, Copy)]
enum Kind {
    Norm,
    Value,
    None,
}

/// Each clipping's name and signature, for [`choose`].
fn clip_choices() -> [(&'static str, Kind, Vec<ParamSig>); 3] {
    [
        (
            "norm",
            Kind::Norm,
            vec![
                ParamSig::required("max", Ty::Float),
                ParamSig::optional("type", Ty::FloatOrInf, Value::Float(2.0)),
            ],
        ),
        (
            "value",
            Kind::Value,
            vec![ParamSig::required("max", Ty::Float)],
        ),
        ("none", Kind::None, vec![]),
    ]
}

/// Each clipping's name and signature (for editors).
pub(super) fn clip_signatures() -> impl Iterator<Item = (&'static str, Vec<ParamSig>)> {
    clip_choices().into_iter().map(|(name, _, sig)| (name, sig))
}

pub fn clip(setting: &Setting, errors: &mut Vec<CheckError>) -> Option<Option<Clip>> {
    let choices = clip_choices();
    let (kind, v) = choose(setting, "clipping", &choices, errors)?;
    let span = setting.value.span;
    match kind {
        Kind::None => Some(None),
        Kind::Norm => {
            let max_norm = v[0].as_float();
            if !positive(max_norm, "the clip threshold", span, errors) {
                return None;
            }
            let norm_type = match &v[1] {
                Value::Name(_) => NormType::Inf,
                other => NormType::P(other.as_float()),
            };
            if let NormType::P(p) = norm_type {
                if p <= 0.0 {
                    errors.push(CheckError::invalid(
                        format!("the norm type must be > 0 or `inf`, got {p}"),
                        span,
                        "here",
                    ));
                    return None;
                }
            }
            Some(Some(Clip::Norm {
                max_norm,
                norm_type,
            }))
        }
        Kind::Value => {
            let clip_value = v[0].as_float();
            positive(clip_value, "the clip value", span, errors)
                .then_some(Some(Clip::Value { clip_value }))
        }
    }
}
