//! Building the typed syntax tree from pest's pairs, one `build_<construct>`
//! per grammar rule. Junk lines go to [`super::recover`]. (Not to be
//! confused with the `lower` phase, which turns a checked experiment into a
//! plan.)

use pest::iterators::Pair;

use super::recover::{
    first_word, item_inside_block, missing_value, recover, recover_line, Context,
};
use super::{Rule, SyntaxError};
use crate::ast::*;
use crate::span::Span;

type Errors = Vec<SyntaxError>;

pub(super) fn build_file(src: &str, file: Pair<'_, Rule>) -> (File, Errors) {
    let mut errors = Errors::new();
    let mut items = Vec::new();
    let mut in_bad_run = false;
    for pair in file.into_inner() {
        let rule = pair.as_rule();
        if rule == Rule::bad_item {
            // A lone `}` after a broken block is fallout of that block's error.
            let lone_brace = pair.as_str().trim() == "}" && !errors.is_empty();
            if !in_bad_run && !lone_brace {
                errors.push(recover(src, pair.as_span().start(), Context::Top));
            }
            in_bad_run = true;
            continue;
        }
        in_bad_run = false;
        match rule {
            Rule::import_def => items.push(Item::Import(build_import(pair))),
            Rule::module_def => items.push(Item::Module(build_module(
                pair,
                ModuleKind::Module,
                &mut errors,
            ))),
            Rule::model_def => items.push(Item::Module(build_module(
                pair,
                ModuleKind::Model,
                &mut errors,
            ))),
            Rule::data_def => items.push(Item::Data(build_data(src, pair, &mut errors))),
            Rule::train_def => {
                items.push(Item::Train(build_settings_block(src, pair, &mut errors)))
            }
            Rule::parallel_def => {
                items.push(Item::Parallel(build_settings_block(src, pair, &mut errors)))
            }
            Rule::test_def => items.push(Item::Test(build_test(pair, &mut errors))),
            Rule::EOI => {}
            _ => unreachable!("file holds only items, got {rule:?}"),
        }
    }
    (File { items }, errors)
}

fn build_import(pair: Pair<'_, Rule>) -> Import {
    let span = Span::from_pest(pair.as_span());
    let string = pair.into_inner().next().expect("an import names a file");
    let path_span = Span::from_pest(string.as_span());
    let inner = string.into_inner().next().expect("a string holds its text");
    Import {
        path: unescape(inner.as_str()),
        path_span,
        span,
    }
}

fn build_ident(pair: Pair<'_, Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: Span::from_pest(pair.as_span()),
    }
}

fn keyword_span(pair: &Pair<'_, Rule>, keyword: &str) -> Span {
    let start = pair.as_span().start();
    Span::new(start, start + keyword.len())
}

fn build_module(pair: Pair<'_, Rule>, kind: ModuleKind, errors: &mut Errors) -> ModuleDef {
    let span = Span::from_pest(pair.as_span());
    let keyword = keyword_span(
        &pair,
        if kind == ModuleKind::Model {
            "model"
        } else {
            "module"
        },
    );
    let src = pair.get_input();
    let mut inner = pair.into_inner();
    let name = build_ident(inner.next().expect("module name"));
    let mut params = Vec::new();
    let mut layers = Vec::new();
    let mut forwards = Vec::new();
    for part in inner {
        match part.as_rule() {
            Rule::params => {
                params = part.into_inner().map(|p| build_param(p, errors)).collect();
            }
            Rule::module_body => {
                let mut in_bad_run = false;
                for item in part.into_inner() {
                    match item.as_rule() {
                        Rule::bad_line => {
                            if !in_bad_run {
                                let at = item.as_span().start();
                                let word = first_word(&src[at..]);
                                let previous = layers.last().map(|l: &LayerDef| l.span);
                                errors.push(if let Some(e) = item_inside_block(src, at) {
                                    e
                                } else if word == "forward" {
                                    recover(src, at, Context::ModuleBody)
                                } else {
                                    recover_line(src, previous, at, Rule::layer_line)
                                });
                            }
                            in_bad_run = true;
                            continue;
                        }
                        Rule::layer_def => layers.push(build_layer_def(item, errors)),
                        Rule::forward_def => forwards.push(build_forward(item, errors)),
                        rule => unreachable!("module body holds layers and forwards, got {rule:?}"),
                    }
                    in_bad_run = false;
                }
            }
            rule => unreachable!("unexpected {rule:?} in a module"),
        }
    }
    ModuleDef {
        kind,
        keyword,
        name,
        params,
        layers,
        forwards,
        span,
    }
}

fn build_test(pair: Pair<'_, Rule>, errors: &mut Errors) -> TestDef {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = build_ident(inner.next().expect("test name"));
    let subject_pair = inner
        .next()
        .expect("test subject")
        .into_inner()
        .next()
        .expect("subject expr");
    let subject = build_expr(subject_pair, errors);
    let input = build_shape(inner.next().expect("input shape"), errors);
    let output = build_shape(inner.next().expect("output shape"), errors);
    let options = inner
        .map(|option| build_expr(option.into_inner().next().expect("option expr"), errors))
        .collect();
    TestDef {
        name,
        subject,
        input,
        output,
        options,
        span,
    }
}

fn build_param(pair: Pair<'_, Rule>, errors: &mut Errors) -> Param {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = build_ident(inner.next().expect("param name"));
    let ty = build_ident(inner.next().expect("param type"));
    let default = inner.next().map(|e| build_expr(e, errors));
    Param {
        name,
        ty,
        default,
        span,
    }
}

fn build_layer_def(pair: Pair<'_, Rule>, errors: &mut Errors) -> LayerDef {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = build_ident(inner.next().expect("layer name"));
    let value = build_expr(inner.next().expect("layer value"), errors);
    LayerDef { name, value, span }
}

fn build_forward(pair: Pair<'_, Rule>, errors: &mut Errors) -> Forward {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let input = build_ident(inner.next().expect("forward input"));
    let input_shape = build_shape(inner.next().expect("input shape"), errors);
    let output_shape = build_shape(inner.next().expect("output shape"), errors);
    let mut lets = Vec::new();
    let mut body = None;
    for part in inner {
        match part.as_rule() {
            Rule::let_def => {
                let span = Span::from_pest(part.as_span());
                let mut kv = part.into_inner();
                let name = build_ident(kv.next().expect("let name"));
                let value = build_expr(kv.next().expect("let value"), errors);
                lets.push(LetDef { name, value, span });
            }
            _ => body = Some(build_expr(part, errors)),
        }
    }
    let body = body.expect("the grammar requires a body expression");
    Forward {
        input,
        input_shape,
        output_shape,
        lets,
        body,
        span,
    }
}

fn build_shape(pair: Pair<'_, Rule>, errors: &mut Errors) -> ShapeExpr {
    let span = Span::from_pest(pair.as_span());
    let dims = pair
        .into_inner()
        .map(|dim| {
            let part = dim.into_inner().next().expect("a dim holds one sum");
            let expr = build_expr(part, errors);
            match expr.kind {
                ExprKind::Int(n) => DimExpr::Size(n, expr.span),
                ExprKind::Name(ident) => DimExpr::Name(ident),
                _ => DimExpr::Expr(Box::new(expr)),
            }
        })
        .collect();
    ShapeExpr { dims, span }
}

fn build_int(pair: &Pair<'_, Rule>, errors: &mut Errors) -> i64 {
    pair.as_str().parse().unwrap_or_else(|_| {
        errors.push(SyntaxError::NumberOutOfRange {
            text: pair.as_str().to_string(),
            span: Span::from_pest(pair.as_span()),
        });
        0
    })
}

pub(super) fn build_expr(pair: Pair<'_, Rule>, errors: &mut Errors) -> Expr {
    let span = Span::from_pest(pair.as_span());
    match pair.as_rule() {
        Rule::expr => build_pipe(pair, span, errors),
        Rule::sum => build_sum(pair, span, errors),
        Rule::product => build_product(pair, span, errors),
        Rule::repeat => build_repeat(pair, span, errors),
        Rule::paren => build_expr(
            pair.into_inner().next().expect("paren holds an expr"),
            errors,
        ),
        Rule::int => Expr {
            kind: ExprKind::Int(build_int(&pair, errors)),
            span,
        },
        Rule::float => {
            let value = pair
                .as_str()
                .parse()
                .expect("the grammar admits only valid floats");
            Expr {
                kind: ExprKind::Float(value),
                span,
            }
        }
        Rule::string => {
            let inner = pair.into_inner().next().expect("string holds its text");
            Expr {
                kind: ExprKind::Str(unescape(inner.as_str())),
                span,
            }
        }
        Rule::boolean => Expr {
            kind: ExprKind::Bool(pair.as_str() == "true"),
            span,
        },
        Rule::name => {
            let ident = build_ident(pair.into_inner().next().expect("name holds an ident"));
            Expr {
                kind: ExprKind::Name(ident),
                span,
            }
        }
        Rule::list => {
            let items = pair.into_inner().map(|p| build_expr(p, errors)).collect();
            Expr {
                kind: ExprKind::List(items),
                span,
            }
        }
        Rule::call => Expr {
            kind: ExprKind::Call(build_call(pair, errors)),
            span,
        },
        rule => unreachable!("not an expression rule: {rule:?}"),
    }
}

/// `x |> f |> g`: the stages, or the one expression when there is no pipe.
fn build_pipe(pair: Pair<'_, Rule>, span: Span, errors: &mut Errors) -> Expr {
    let mut stages: Vec<Expr> = pair
        .into_inner()
        .filter(|p| p.as_rule() != Rule::pipe_op)
        .map(|p| build_expr(p, errors))
        .collect();
    if stages.len() == 1 {
        stages.pop().expect("one stage")
    } else {
        Expr {
            kind: ExprKind::Pipe(stages),
            span,
        }
    }
}

/// `a + b - c`, left to right: a run of `+` makes one n-ary sum (one node
/// on tensors); `-` ends the run.
fn build_sum(pair: Pair<'_, Rule>, span: Span, errors: &mut Errors) -> Expr {
    let mut inner = pair.into_inner();
    let first = build_expr(inner.next().expect("a sum starts with a term"), errors);
    let mut run = vec![first];
    let mut combined = false;
    while let (Some(op), Some(rhs)) = (inner.next(), inner.next()) {
        combined = true;
        let rhs = build_expr(rhs, errors);
        if op.as_str() == "+" {
            run.push(rhs);
            continue;
        }
        let lhs = close_sum(std::mem::take(&mut run));
        run.push(binary(BinOp::Sub, lhs, rhs));
    }
    // A sum's span covers its terms' brackets too; a lone term keeps its
    // own.
    let mut sum = close_sum(run);
    if combined {
        sum.span = span;
    }
    sum
}

/// `a * b / c`, left to right.
fn build_product(pair: Pair<'_, Rule>, span: Span, errors: &mut Errors) -> Expr {
    let mut inner = pair.into_inner();
    let mut acc = build_expr(inner.next().expect("a product starts with a term"), errors);
    let mut combined = false;
    while let (Some(op), Some(rhs)) = (inner.next(), inner.next()) {
        combined = true;
        let op = if op.as_str() == "*" {
            BinOp::Mul
        } else {
            BinOp::Div
        };
        acc = binary(op, acc, build_expr(rhs, errors));
    }
    if combined {
        acc.span = span;
    }
    acc
}

/// `repeat 4 { Block(128) |> relu }`: N copies of a chain.
fn build_repeat(pair: Pair<'_, Rule>, span: Span, errors: &mut Errors) -> Expr {
    let mut inner = pair.into_inner();
    let count_pair = inner.next().expect("repeat count");
    let count = build_int(&count_pair, errors);
    let count_span = Span::from_pest(count_pair.as_span());
    let body = inner
        .filter(|p| p.as_rule() != Rule::pipe_op)
        .map(|p| build_expr(p, errors))
        .collect();
    Expr {
        kind: ExprKind::Repeat {
            count,
            count_span,
            body,
        },
        span,
    }
}

/// One term, or the sum of several.
fn close_sum(mut terms: Vec<Expr>) -> Expr {
    if terms.len() == 1 {
        return terms.pop().expect("one term");
    }
    let span = terms[0].span.to(terms[terms.len() - 1].span);
    Expr {
        kind: ExprKind::Add(terms),
        span,
    }
}

fn binary(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
    Expr {
        span: lhs.span.to(rhs.span),
        kind: ExprKind::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        },
    }
}

fn build_call(pair: Pair<'_, Rule>, errors: &mut Errors) -> Call {
    let mut inner = pair.into_inner();
    let callee = inner
        .next()
        .expect("callee")
        .into_inner()
        .next()
        .expect("callee name");
    let callee = build_ident(callee);
    let args = inner
        .map(|arg| {
            let span = Span::from_pest(arg.as_span());
            let part = arg.into_inner().next().expect("arg holds one part");
            match part.as_rule() {
                Rule::kwarg => {
                    let mut kv = part.into_inner();
                    let name = build_ident(kv.next().expect("kwarg name"));
                    let value = build_expr(kv.next().expect("kwarg value"), errors);
                    Arg {
                        name: Some(name),
                        value,
                        span,
                    }
                }
                _ => Arg {
                    name: None,
                    value: build_expr(part, errors),
                    span,
                },
            }
        })
        .collect();
    Call { callee, args }
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn build_data(src: &str, pair: Pair<'_, Rule>, errors: &mut Errors) -> DataDef {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = build_ident(inner.next().expect("data name"));
    let settings = build_settings(src, inner.next().expect("data settings"), errors);
    DataDef {
        name,
        settings,
        span,
    }
}

fn build_settings_block(src: &str, pair: Pair<'_, Rule>, errors: &mut Errors) -> SettingsBlock {
    let span = Span::from_pest(pair.as_span());
    let word = if pair.as_rule() == Rule::train_def {
        "train"
    } else {
        "parallel"
    };
    let keyword = keyword_span(&pair, word);
    let settings = build_settings(src, pair.into_inner().next().expect("settings"), errors);
    SettingsBlock {
        keyword,
        settings,
        span,
    }
}

fn build_settings(src: &str, pair: Pair<'_, Rule>, errors: &mut Errors) -> Vec<Setting> {
    let mut settings = Vec::new();
    let mut unclosed = false;
    for item in pair.into_inner() {
        match item.as_rule() {
            // After a missing `}`, the lines that follow belong to other
            // items: one error says so.
            Rule::bad_line if unclosed => continue,
            Rule::bad_line => {
                // Settings are one-liners: every broken line is its own error.
                let at = item.as_span().start();
                let error = item_inside_block(src, at)
                    .inspect(|_| unclosed = true)
                    .or_else(|| missing_value(src, settings.last(), at))
                    .unwrap_or_else(|| {
                        recover_line(src, settings.last().map(|s| s.span), at, Rule::setting_line)
                    });
                errors.push(error);
                continue;
            }
            Rule::setting => {
                let span = Span::from_pest(item.as_span());
                let mut kv = item.into_inner();
                let key = build_ident(kv.next().expect("setting key"));
                let value = build_expr(kv.next().expect("setting value"), errors);
                settings.push(Setting { key, value, span });
            }
            rule => unreachable!("settings hold settings, got {rule:?}"),
        }
    }
    settings
}
