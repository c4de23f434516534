//! `tensor_split = [column("blocks.*.fc1"), replicate("head"), …]`: the
//! user's choice for some layers, by instance path or glob (as
//! torchtitan's `parallelize_module` plan); the default split fills in
//! the rest around them, and the placement check holds the whole.

use std::collections::BTreeMap;

use super::super::CheckError;
use crate::ast::{ExprKind, Setting};
use crate::plan::{ModelPlan, Op, TensorSplit};
use crate::span::Span;

/// One entry of `tensor_split`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOverride {
    /// `None`: `replicate`, whole on every rank.
    pub split: Option<TensorSplit>,
    /// A node name or module instance path; `*` stands for one segment.
    pub pattern: String,
    pub span: Span,
}

/// The choices, by the name written.
const CHOICES: [(&str, Option<TensorSplit>, &str); 5] = [
    ("column", Some(TensorSplit::Column), "linear"),
    ("row", Some(TensorSplit::Row), "linear"),
    ("heads", Some(TensorSplit::Heads), "attention"),
    ("vocab", Some(TensorSplit::Vocab), "embedding"),
    ("replicate", None, ""),
];

/// Reads `tensor_split`: a list of `column("path")`, `row(…)`,
/// `heads(…)`, `vocab(…)` and `replicate(…)`.
pub fn parse(setting: &Setting, errors: &mut Vec<CheckError>) -> Option<Vec<SplitOverride>> {
    let wrong = |span: Span| {
        CheckError::InvalidValue {
        message: "`tensor_split` is a list of `column(\"path\")`, `row(…)`, `heads(…)`, `vocab(…)` or `replicate(…)`, each naming layers by instance path (`*` for one segment)".into(),
        span,
        label: "here".into(),
        help: Some("e.g. `tensor_split = [replicate(\"head\"), column(\"blocks.*.fc1\"), row(\"blocks.*.fc2\")]`".into()),
    }
    };
    let ExprKind::List(items) = &setting.value.kind else {
        errors.push(wrong(setting.value.span));
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        let ExprKind::Call(call) = &item.kind else {
            errors.push(wrong(item.span));
            return None;
        };
        let Some(&(_, split, _)) = CHOICES.iter().find(|c| c.0 == call.callee.name) else {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "`{}` is not a tensor split: use column, row, heads, vocab or replicate",
                    call.callee.name
                ),
                span: call.callee.span,
                label: "unknown split".into(),
                help: None,
            });
            return None;
        };
        let pattern = match call.args.as_slice() {
            [arg] if arg.name.is_none() => match &arg.value.kind {
                ExprKind::Str(s) => s.clone(),
                _ => {
                    errors.push(wrong(arg.span));
                    return None;
                }
            },
            _ => {
                errors.push(wrong(item.span));
                return None;
            }
        };
        out.push(SplitOverride {
            split,
            pattern,
            span: item.span,
        });
    }
    Some(out)
}

/// Whether `name` is matched by `pattern`: the name itself or a module
/// instance above it, `*` matching any one segment.
fn matches(pattern: &str, name: &str) -> bool {
    let want: Vec<&str> = pattern.split('.').collect();
    let have: Vec<&str> = name.split('.').collect();
    want.len() <= have.len() && want.iter().zip(&have).all(|(w, h)| *w == "*" || w == h)
}

/// The nodes the overrides fix, each with its split and the override's
/// span (a later entry wins); an entry that matches no layer, or asks a
/// layer for a split of another kind, is an error at it.
pub fn fixed(
    model: &ModelPlan,
    overrides: &[SplitOverride],
    errors: &mut Vec<CheckError>,
) -> BTreeMap<usize, (Option<TensorSplit>, Span)> {
    let mut out = BTreeMap::new();
    for o in overrides {
        let (name, _, kind) = CHOICES.iter().find(|c| c.1 == o.split).expect("listed");
        let (mut any, mut fitted, mut reported) = (false, false, false);
        for (i, node) in model.nodes.iter().enumerate() {
            if !matches(&o.pattern, &node.name) || matches!(node.op, Op::Input) {
                continue;
            }
            any = true;
            let fits = matches!(
                (o.split, &node.op),
                (None, _)
                    | (
                        Some(TensorSplit::Column | TensorSplit::Row),
                        Op::Linear { .. }
                    )
                    | (Some(TensorSplit::Heads), Op::Attention { .. })
                    | (Some(TensorSplit::Vocab), Op::Embedding { .. })
            );
            // A glob or a module instance's path leaves its other layers
            // alone.
            if !fits && o.pattern == node.name {
                reported = true;
                errors.push(CheckError::InvalidValue {
                    message: format!(
                        "`{}` is a {}: only {} {kind} can be `{name}`",
                        node.name,
                        node.op.kind(),
                        if kind.starts_with(['a', 'e']) {
                            "an"
                        } else {
                            "a"
                        }
                    ),
                    span: o.span,
                    label: "this split".into(),
                    help: None,
                });
            }
            if fits {
                fitted = true;
                out.insert(i, (o.split, o.span));
            }
        }
        if any && !fitted && !reported {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "`{}` names no {kind}, which alone can be `{name}`",
                    o.pattern
                ),
                span: o.span,
                label: "this split".into(),
                help: None,
            });
        }
        if !any {
            errors.push(CheckError::InvalidValue {
                message: format!("`{}` names no layer of `{}`", o.pattern, model.name),
                span: o.span,
                label: "matches nothing".into(),
                help: Some(
                    "name a layer or module instance by its path as `dtl compile` lists the nodes (`blocks.0.fc1`, `*` for any one segment: `blocks.*.fc1`)".into(),
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_match_layers_and_the_instances_above_them() {
        use super::matches;
        assert!(matches("1.0.fc", "1.0.fc"));
        assert!(matches("1.*.fc", "1.3.fc"));
        assert!(matches("1.0", "1.0.fc"));
        assert!(matches("*", "head"));
        assert!(!matches("1.0.fc", "1.0"));
        assert!(!matches("1.*.fc", "1.3.fc2"));
        assert!(!matches("10", "1.0"));
    }
}
