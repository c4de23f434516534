//! `--set train.steps=20`: command-line overrides of settings, applied to the
//! syntax tree before checking, so an overridden value is checked exactly
//! like one written in the file (and lands in the plan).
//!
//! Paths: `train.KEY`, `train.KEY.ARG` (an argument of a call such as
//! `train.optimizer.lr`), `parallel.KEY`, `data.NAME.KEY`,
//! `data.NAME.KEY.ARG`. Diagnostics about an overridden value point at the
//! setting it replaced (or, for a new setting, at its block).

use pest::Parser;

use crate::ast::{Arg, Call, Expr, ExprKind, File, Ident, Item, Setting, SettingsBlock};
use crate::span::Span;
use crate::syntax::{build_expr_text, DtlParser, Rule};

/// One `--set PATH=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub path: Vec<String>,
    pub value: Expr,
    pub text: String,
}

/// Parses `PATH=VALUE`; the value is any dtl expression (`1e-3`,
/// `cosine(min_lr: 0)`, `"data.csv"`).
pub fn parse(text: &str) -> Result<Override, String> {
    let (path, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected PATH=VALUE, e.g. train.steps=20"))?;
    let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("`{text}`: empty name in the path"));
    }
    let value_text = value.trim();
    if let Some(err) = crate::syntax::too_deep(value_text) {
        return Err(format!("`{text}`: {err}"));
    }
    let parsed = DtlParser::parse(Rule::expr_line, value_text)
        .map_err(|_| format!("`{text}`: `{value_text}` is not a dtl value"))?;
    let value = build_expr_text(parsed).map_err(|e| format!("`{text}`: {e}"))?;
    Ok(Override {
        path,
        value,
        text: text.to_string(),
    })
}

/// A file without a `parallel` block gets an empty one (one process), so
/// that `--set parallel.KEY=…` works on any file. A diagnostic about its
/// settings points at the `train` block, where the run is described.
fn add_parallel_block(file: &mut File) {
    if file.items.iter().any(|i| matches!(i, Item::Parallel(_))) {
        return;
    }
    let at = file
        .items
        .iter()
        .find_map(|i| match i {
            Item::Train(b) => Some(b.keyword),
            _ => None,
        })
        .unwrap_or_default();
    file.items.push(Item::Parallel(SettingsBlock {
        keyword: at,
        settings: Vec::new(),
        span: at,
    }));
}

/// Applies the overrides to the file's settings.
pub fn apply(file: &mut File, overrides: &[Override]) -> Result<(), String> {
    for o in overrides {
        apply_one(file, o)?;
    }
    Ok(())
}

fn apply_one(file: &mut File, o: &Override) -> Result<(), String> {
    let path: Vec<&str> = o.path.iter().map(String::as_str).collect();
    let (settings, block_span, rest) = match path.as_slice() {
        ["train", rest @ ..] | ["parallel", rest @ ..] => {
            if path[0] == "parallel" {
                add_parallel_block(file);
            }
            let block = file
                .items
                .iter_mut()
                .find_map(|item| match (item, path[0]) {
                    (Item::Train(b), "train") | (Item::Parallel(b), "parallel") => Some(b),
                    _ => None,
                });
            let block = block
                .ok_or_else(|| format!("--set {}: the file has no `{}` block", o.text, path[0]))?;
            (&mut block.settings, block.keyword, rest)
        }
        ["data", name, rest @ ..] => {
            let names: Vec<String> = file
                .items
                .iter()
                .filter_map(|i| {
                    if let Item::Data(d) = i {
                        Some(d.name.name.clone())
                    } else {
                        None
                    }
                })
                .collect();
            let def = file.items.iter_mut().find_map(|item| match item {
                Item::Data(d) if d.name.name == *name => Some(d),
                _ => None,
            });
            let def = def.ok_or_else(|| {
                format!(
                    "--set {}: no data source `{name}` (there is: {})",
                    o.text,
                    names.join(", ")
                )
            })?;
            (&mut def.settings, def.name.span, rest)
        }
        _ => {
            return Err(format!(
                "--set {}: paths start with `train.`, `parallel.` or `data.NAME.`",
                o.text
            ))
        }
    };
    match rest {
        [key] => {
            set_setting(settings, key, o.value.clone(), block_span);
            Ok(())
        }
        [key, arg] => {
            let setting = settings
                .iter_mut()
                .find(|s| s.key.name == *key)
                .ok_or_else(|| {
                    format!(
                        "--set {}: `{key}` is not set in the file, so it has no `{arg}` to change",
                        o.text
                    )
                })?;
            set_argument(&mut setting.value, arg, o.value.clone())
                .map_err(|e| format!("--set {}: {e}", o.text))
        }
        _ => Err(format!(
            "--set {}: expected BLOCK.KEY or BLOCK.KEY.ARGUMENT",
            o.text
        )),
    }
}

fn set_setting(settings: &mut Vec<Setting>, key: &str, mut value: Expr, block_span: Span) {
    match settings.iter_mut().find(|s| s.key.name == key) {
        Some(setting) => {
            respan(&mut value, setting.value.span);
            setting.value = value;
        }
        None => {
            respan(&mut value, block_span);
            let key = Ident {
                name: key.to_string(),
                span: block_span,
            };
            settings.push(Setting {
                key,
                value,
                span: block_span,
            });
        }
    }
}

/// `optimizer = adamw(lr: 3e-3)` with `lr` set: replaces or adds the keyword
/// argument. A bare name (`cross_entropy`) becomes a call.
fn set_argument(value: &mut Expr, arg: &str, mut new: Expr) -> Result<(), String> {
    respan(&mut new, value.span);
    if let ExprKind::Name(ident) = &value.kind {
        value.kind = ExprKind::Call(Call {
            callee: ident.clone(),
            args: vec![],
        });
    }
    let ExprKind::Call(call) = &mut value.kind else {
        return Err(format!(
            "the value is not a call, so it has no argument `{arg}`"
        ));
    };
    match call
        .args
        .iter_mut()
        .find(|a| a.name.as_ref().is_some_and(|n| n.name == arg))
    {
        Some(existing) => existing.value = new,
        None => call.args.push(Arg {
            name: Some(Ident {
                name: arg.to_string(),
                span: new.span,
            }),
            span: new.span,
            value: new,
        }),
    }
    Ok(())
}

/// Gives every node of an expression the span `span`: the overridden text
/// is not in the file, so diagnostics point at the setting it replaced.
fn respan(expr: &mut Expr, span: Span) {
    expr.span = span;
    match &mut expr.kind {
        ExprKind::Name(ident) => ident.span = span,
        ExprKind::Call(call) => {
            call.callee.span = span;
            for arg in &mut call.args {
                arg.span = span;
                if let Some(name) = &mut arg.name {
                    name.span = span;
                }
                respan(&mut arg.value, span);
            }
        }
        ExprKind::Pipe(items) | ExprKind::Add(items) | ExprKind::List(items) => {
            items.iter_mut().for_each(|e| respan(e, span))
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            respan(lhs, span);
            respan(rhs, span);
        }
        ExprKind::Repeat {
            count_span, body, ..
        } => {
            *count_span = span;
            body.iter_mut().for_each(|e| respan(e, span));
        }
        ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Str(_) | ExprKind::Bool(_) => {}
    }
}
