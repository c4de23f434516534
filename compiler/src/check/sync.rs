//! `sync = …`: how the replicas (or the sync groups) meet, read into the
//! plan's [`SyncMode`] with every rule on its arguments checked at the
//! argument.

use super::args::{ParamSig, Ty, Value};
use super::error::CheckError;
use super::settings::choose;
use crate::ast::ExprKind;
use crate::plan::{OuterPrecision, SyncMode};
use crate::span::Span;

/// `sync = every_step | local_sgd(period: N) | async(staleness: N) |
/// diloco(period: H, outer_lr: 0.7, outer_momentum: 0.9)`.
pub(super) fn sync_setting(
    setting: &crate::ast::Setting,
    errors: &mut Vec<CheckError>,
) -> Option<SyncMode> {
    let choices = choices();
    let (kind, v) = choose(setting, "sync mode", &choices, errors)?;
    if let Kind::Diloco = kind {
        return diloco_setting(setting, &v, errors);
    }
    let n = v.first().map_or(1, Value::as_int);
    // `async(staleness: 0)` is the degenerate case: the all-reduce still
    // runs in the background and is waited for before the step.
    let least = match kind {
        Kind::Async => 0,
        Kind::EveryStep | Kind::LocalSgd | Kind::Diloco => 1,
    };
    if n < least {
        let name = match kind {
            Kind::EveryStep => "every_step",
            Kind::LocalSgd => "local_sgd",
            Kind::Async => "async",
            Kind::Diloco => "diloco",
        };
        errors.push(CheckError::invalid(
            format!("{name} needs a value ≥ {least}"),
            setting.value.span,
            "here",
        ));
        return None;
    }
    Some(match kind {
        Kind::EveryStep => SyncMode::EveryStep,
        Kind::LocalSgd => SyncMode::LocalSgd { period: n as u64 },
        Kind::Async => SyncMode::Async {
            staleness: n as u64,
        },
        Kind::Diloco => unreachable!("read by diloco_setting"),
    })
}

/// `diloco(period: H, outer_lr: η, outer_momentum: μ, fragments: F,
/// delay: τ, outer_precision: fp32 | bf16)`: H ≥ 1, η > 0, 0 ≤ μ < 1;
/// streaming's rules (as torchft checks them at run time): F ≥ 1, H ≥ F,
/// F divides H (the fragments meet H/F steps apart), 0 ≤ τ < H/F (a
/// fragment's all-reduce lands before the next one starts). Each error at
/// the argument that breaks the rule.
fn diloco_setting(
    setting: &crate::ast::Setting,
    v: &[Value],
    errors: &mut Vec<CheckError>,
) -> Option<SyncMode> {
    let (period, outer_lr, outer_momentum) = (v[0].as_int(), v[1].as_float(), v[2].as_float());
    let (fragments, delay) = (v[3].as_int(), v[4].as_int());
    let at = |name: &str| diloco_argument(setting, name);
    // Each (message, where, help).
    let mut wrong: Vec<(String, Span, Option<String>)> = Vec::new();
    let mut say = |message: String, name: &str, help: Option<String>| {
        wrong.push((message, at(name), help));
    };
    if period < 1 {
        say(
            format!("diloco's period must be at least 1, not {period}"),
            "period",
            None,
        );
    }
    if !(outer_lr > 0.0 && outer_lr.is_finite()) {
        say(
            format!("diloco's outer_lr must be a positive number, not {outer_lr}"),
            "outer_lr",
            None,
        );
    }
    if !(0.0..1.0).contains(&outer_momentum) {
        say(
            format!("diloco's outer_momentum must be at least 0 and below 1, not {outer_momentum}"),
            "outer_momentum",
            Some("0.9 is DiLoCo's; 0 is plain SGD".into()),
        );
    }
    if fragments < 1 {
        say(
            format!("diloco's fragments must be at least 1, not {fragments}"),
            "fragments",
            Some("1 is plain DiLoCo".into()),
        );
    } else if period >= 1 && period < fragments {
        say(
            format!("{fragments} fragments cannot each meet once in a period of {period} steps: the period must be at least the fragments"),
            "fragments",
            Some(format!("use at most {period} fragments, or a period of at least {fragments} steps")),
        );
    } else if period >= 1 && period % fragments != 0 {
        say(
            format!("{fragments} fragments do not divide the period of {period} steps: the fragments meet period / fragments steps apart"),
            "fragments",
            Some(format!("choose one of the divisors of {period}: {}", divisors(period))),
        );
    } else if period >= 1 && !(0..period / fragments).contains(&delay) {
        say(
            format!(
                "a delay of {delay} step(s) must be at least 0 and below period / fragments = {}: a fragment's all-reduce must land before the next fragment's starts",
                period / fragments
            ),
            "delay",
            Some(format!("use a delay of at most {}", period / fragments - 1)),
        );
    }
    let precision = match &v[5] {
        Value::Name(n) if n == "fp32" => Some(OuterPrecision::Fp32),
        Value::Name(n) if n == "bf16" => Some(OuterPrecision::Bf16),
        other => {
            let shown = match other {
                Value::Name(n) => format!("`{n}`"),
                value => value.describe(),
            };
            say(
                format!("diloco's outer_precision is `fp32` or `bf16`, not {shown}"),
                "outer_precision",
                Some("write `outer_precision: bf16` to send the changes in bfloat16".into()),
            );
            None
        }
    };
    if !wrong.is_empty() {
        for (message, span, help) in wrong {
            errors.push(CheckError::InvalidValue {
                message,
                span,
                label: "here".into(),
                help,
            });
        }
        return None;
    }
    Some(SyncMode::Diloco {
        period: period as u64,
        outer_lr,
        outer_momentum,
        fragments: fragments as u64,
        delay: delay as u64,
        outer_precision: precision?,
    })
}

/// The span of `diloco(…)`'s argument `name` (by name, or by its place
/// among the unnamed ones), else of the whole call.
fn diloco_argument(setting: &crate::ast::Setting, name: &str) -> Span {
    const ORDER: [&str; 6] = [
        "period",
        "outer_lr",
        "outer_momentum",
        "fragments",
        "delay",
        "outer_precision",
    ];
    let ExprKind::Call(call) = &setting.value.kind else {
        return setting.value.span;
    };
    let place = ORDER.iter().position(|n| *n == name);
    call.args
        .iter()
        .enumerate()
        .find(|(i, arg)| match &arg.name {
            Some(ident) => ident.name == name,
            None => Some(*i) == place,
        })
        .map_or(setting.value.span, |(_, arg)| arg.value.span)
}

/// The divisors of `n`, listed: found in pairs up to its square root, and
/// no further than a million, so that a huge period costs no time.
fn divisors(n: i64) -> String {
    let mut low = Vec::new();
    let mut high = Vec::new();
    let mut d = 1;
    while d <= n / d {
        if n % d == 0 {
            low.push(d);
            if d != n / d {
                high.push(n / d);
            }
        }
        d += 1;
        if d > 1_000_000 {
            break;
        }
    }
    let all: Vec<String> = low
        .into_iter()
        .chain(high.into_iter().rev())
        .map(|d| d.to_string())
        .collect();
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::divisors;

    #[test]
    fn divisors_come_in_order_and_a_huge_period_costs_no_time() {
        assert_eq!(divisors(12), "1, 2, 3, 4, 6, 12");
        assert_eq!(divisors(49), "1, 7, 49");
        let start = std::time::Instant::now();
        assert!(divisors(1_000_000_000_000_007).starts_with("1, "));
        assert!(start.elapsed().as_secs() < 5);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    EveryStep,
    LocalSgd,
    Async,
    Diloco,
}

/// Each sync mode's name and signature, for [`choose`].
fn choices() -> [(&'static str, Kind, Vec<ParamSig>); 4] {
    [
        ("every_step", Kind::EveryStep, vec![]),
        (
            "local_sgd",
            Kind::LocalSgd,
            vec![ParamSig::required("period", Ty::Int)],
        ),
        (
            "async",
            Kind::Async,
            vec![ParamSig::optional("staleness", Ty::Int, Value::Int(1))],
        ),
        (
            "diloco",
            Kind::Diloco,
            vec![
                ParamSig::required("period", Ty::Int),
                ParamSig::optional("outer_lr", Ty::Float, Value::Float(0.7)),
                ParamSig::optional("outer_momentum", Ty::Float, Value::Float(0.9)),
                ParamSig::optional("fragments", Ty::Int, Value::Int(1)),
                ParamSig::optional("delay", Ty::Int, Value::Int(0)),
                ParamSig::optional("outer_precision", Ty::Name, Value::Name("fp32".into())),
            ],
        ),
    ]
}

/// Each sync mode's name and signature (for editors).
pub(super) fn signatures() -> impl Iterator<Item = (&'static str, Vec<ParamSig>)> {
    choices().into_iter().map(|(name, _, sig)| (name, sig))
}
