//! `schedule = …` and `warmup = …`: how the learning rate moves from step
//! to step. What needs the step count (a warm-up that leaves steps to decay
//! over, one_cycle's rising phase) is checked once it is known (`lower`).

use super::args::{ParamSig, Ty, Value};
use super::settings::choose;
use super::CheckError;
use crate::ast::Setting;
use crate::plan::{Anneal, Decay, Schedule};
use crate::span::Span;
use crate::util::suggest::did_you_mean;

#[derive(Clone, Copy)]
enum Kind {
    Constant,
    Step,
    Cosine,
    Linear,
    OneCycle,
    ConstantWithWarmup,
}

fn number(name: &str, default: f64) -> ParamSig {
    ParamSig::optional(name, Ty::Float, Value::Float(default))
}

fn choices() -> [(&'static str, Kind, Vec<ParamSig>); 6] {
    [
        ("constant", Kind::Constant, vec![]),
        (
            "step",
            Kind::Step,
            vec![ParamSig::required("every", Ty::Int), number("gamma", 0.1)],
        ),
        ("cosine", Kind::Cosine, vec![number("min_lr", 0.0)]),
        ("linear", Kind::Linear, vec![number("end_factor", 0.0)]),
        (
            "one_cycle",
            Kind::OneCycle,
            vec![
                number("pct_start", 0.3),
                ParamSig::optional("anneal", Ty::Str, Value::Str("cos".into())),
                number("div_factor", 25.0),
                number("final_div_factor", 1e4),
            ],
        ),
        (
            "constant_with_warmup",
            Kind::ConstantWithWarmup,
            vec![ParamSig::required("warmup_steps", Ty::Int)],
        ),
    ]
}

/// The schedule of `setting` (constant when absent) after a warm-up of
/// `warmup` steps, written at `warmup_span`.
pub fn schedule(
    setting: Option<&Setting>,
    warmup: u64,
    warmup_span: Option<Span>,
    errors: &mut Vec<CheckError>,
) -> Option<Schedule> {
    let Some(setting) = setting else {
        return Some(Schedule {
            warmup,
            decay: Decay::Constant,
        });
    };
    let (kind, v) = choose(setting, "schedule", &choices(), errors)?;
    let decay = decay(kind, &v, setting.value.span)
        .map_err(|e| errors.push(e))
        .ok()?;
    let warms_itself = match decay {
        Decay::OneCycle { .. } => {
            Some("one_cycle rises from its own start for `pct_start` of the steps")
        }
        Decay::ConstantWithWarmup { .. } => {
            Some("constant_with_warmup warms up over its `warmup_steps`")
        }
        _ => None,
    };
    if let (Some(why), Some(span), true) = (warms_itself, warmup_span, warmup > 0) {
        errors.push(CheckError::InvalidValue {
            message: "this schedule has its own warm-up; `warmup` would add a second".into(),
            span,
            label: "a second warm-up".into(),
            help: Some(format!("{why}: remove `warmup`")),
        });
        return None;
    }
    Some(Schedule { warmup, decay })
}

fn decay(kind: Kind, v: &[Value], span: Span) -> Result<Decay, CheckError> {
    let invalid = |message: &str| CheckError::invalid(message, span, "out of range");
    Ok(match kind {
        Kind::Constant => Decay::Constant,
        Kind::Step => {
            let (every, gamma) = (v[0].as_int(), v[1].as_float());
            if every < 1 || gamma <= 0.0 {
                return Err(CheckError::invalid(
                    "step schedule needs every ≥ 1 and gamma > 0",
                    span,
                    "here",
                ));
            }
            Decay::Step {
                every: every as u64,
                gamma,
            }
        }
        Kind::Cosine => {
            let min_lr = v[0].as_float();
            if min_lr < 0.0 {
                return Err(CheckError::invalid("min_lr must be ≥ 0", span, "negative"));
            }
            Decay::Cosine { min_lr }
        }
        Kind::Linear => {
            let end_factor = v[0].as_float();
            if !(0.0..=1.0).contains(&end_factor) {
                return Err(invalid("end_factor must be in [0, 1]"));
            }
            Decay::Linear { end_factor }
        }
        Kind::OneCycle => one_cycle(v, span)?,
        Kind::ConstantWithWarmup => {
            let warmup_steps = v[0].as_int();
            if warmup_steps < 1 {
                return Err(invalid(
                    "constant_with_warmup: warmup_steps must be at least 1",
                ));
            }
            Decay::ConstantWithWarmup {
                warmup_steps: warmup_steps as u64,
            }
        }
    })
}

fn one_cycle(v: &[Value], span: Span) -> Result<Decay, CheckError> {
    let (pct_start, anneal, div_factor, final_div_factor) = (
        v[0].as_float(),
        v[1].as_str(),
        v[2].as_float(),
        v[3].as_float(),
    );
    let anneals = [("cos", Anneal::Cos), ("linear", Anneal::Linear)];
    let Some(&(_, anneal)) = anneals.iter().find(|(n, _)| *n == anneal) else {
        return Err(CheckError::UnknownName {
            kind: "anneal strategy",
            name: anneal.to_string(),
            span,
            help: did_you_mean(anneal, anneals.iter().map(|(n, _)| *n))
                .or_else(|| Some("one_cycle anneals by \"cos\" or \"linear\"".into())),
        });
    };
    if !(pct_start > 0.0 && pct_start < 1.0) || div_factor <= 0.0 || final_div_factor <= 0.0 {
        return Err(CheckError::InvalidValue {
            message: "one_cycle needs 0 < pct_start < 1, div_factor > 0 and final_div_factor > 0"
                .into(),
            span,
            label: "out of range".into(),
            help: Some("OneCycleLR's defaults: `one_cycle(pct_start: 0.3, anneal: \"cos\", div_factor: 25.0, final_div_factor: 1e4)`".into()),
        });
    }
    Ok(Decay::OneCycle {
        pct_start,
        anneal,
        div_factor,
        final_div_factor,
    })
}

/// Each one's name and signature (for editors).
pub(super) fn signatures() -> impl Iterator<Item = (&'static str, Vec<ParamSig>)> {
    choices().into_iter().map(|(name, _, sig)| (name, sig))
}
