//! Lowering of pest pairs into the typed syntax tree, one `lower_<construct>`
//! per grammar rule, and recovery: each run of junk lines is parsed again with
//! the rule it was meant to match, which yields a precise error.

use pest::iterators::Pair;
use pest::Parser;

use super::{DtlParser, Rule, SyntaxError};
use crate::ast::*;
use crate::span::Span;

type Errors = Vec<SyntaxError>;

pub(super) fn lower_file(src: &str, file: Pair<'_, Rule>) -> (File, Errors) {
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
            Rule::module_def => items.push(Item::Module(lower_module(
                pair,
                ModuleKind::Module,
                &mut errors,
            ))),
            Rule::model_def => items.push(Item::Module(lower_module(
                pair,
                ModuleKind::Model,
                &mut errors,
            ))),
            Rule::data_def => items.push(Item::Data(lower_data(src, pair, &mut errors))),
            Rule::train_def => {
                items.push(Item::Train(lower_settings_block(src, pair, &mut errors)))
            }
            Rule::parallel_def => {
                items.push(Item::Parallel(lower_settings_block(src, pair, &mut errors)))
            }
            Rule::test_def => items.push(Item::Test(lower_test(pair, &mut errors))),
            Rule::EOI => {}
            _ => unreachable!("file holds only items, got {rule:?}"),
        }
    }
    (File { items }, errors)
}

fn lower_ident(pair: Pair<'_, Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: Span::from_pest(pair.as_span()),
    }
}

fn keyword_span(pair: &Pair<'_, Rule>, keyword: &str) -> Span {
    let start = pair.as_span().start();
    Span::new(start, start + keyword.len())
}

fn lower_module(pair: Pair<'_, Rule>, kind: ModuleKind, errors: &mut Errors) -> ModuleDef {
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
    let name = lower_ident(inner.next().expect("module name"));
    let mut params = Vec::new();
    let mut layers = Vec::new();
    let mut forwards = Vec::new();
    for part in inner {
        match part.as_rule() {
            Rule::params => {
                params = part.into_inner().map(|p| lower_param(p, errors)).collect();
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
                                errors.push(if word == "forward" {
                                    recover(src, at, Context::ModuleBody)
                                } else {
                                    recover_line(src, previous, at, Rule::layer_line)
                                });
                            }
                            in_bad_run = true;
                            continue;
                        }
                        Rule::layer_def => layers.push(lower_layer_def(item, errors)),
                        Rule::forward_def => forwards.push(lower_forward(item, errors)),
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

fn lower_test(pair: Pair<'_, Rule>, errors: &mut Errors) -> TestDef {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = lower_ident(inner.next().expect("test name"));
    let subject_pair = inner
        .next()
        .expect("test subject")
        .into_inner()
        .next()
        .expect("subject expr");
    let subject = lower_expr(subject_pair, errors);
    let input = lower_shape(inner.next().expect("input shape"), errors);
    let output = lower_shape(inner.next().expect("output shape"), errors);
    let options = inner
        .map(|option| lower_expr(option.into_inner().next().expect("option expr"), errors))
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

fn lower_param(pair: Pair<'_, Rule>, errors: &mut Errors) -> Param {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = lower_ident(inner.next().expect("param name"));
    let ty = lower_ident(inner.next().expect("param type"));
    let default = inner.next().map(|e| lower_expr(e, errors));
    Param {
        name,
        ty,
        default,
        span,
    }
}

fn lower_layer_def(pair: Pair<'_, Rule>, errors: &mut Errors) -> LayerDef {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = lower_ident(inner.next().expect("layer name"));
    let value = lower_expr(inner.next().expect("layer value"), errors);
    LayerDef { name, value, span }
}

fn lower_forward(pair: Pair<'_, Rule>, errors: &mut Errors) -> Forward {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let input = lower_ident(inner.next().expect("forward input"));
    let input_shape = lower_shape(inner.next().expect("input shape"), errors);
    let output_shape = lower_shape(inner.next().expect("output shape"), errors);
    let mut lets = Vec::new();
    let mut body = None;
    for part in inner {
        match part.as_rule() {
            Rule::let_def => {
                let span = Span::from_pest(part.as_span());
                let mut kv = part.into_inner();
                let name = lower_ident(kv.next().expect("let name"));
                let value = lower_expr(kv.next().expect("let value"), errors);
                lets.push(LetDef { name, value, span });
            }
            _ => body = Some(lower_expr(part, errors)),
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

fn lower_shape(pair: Pair<'_, Rule>, errors: &mut Errors) -> ShapeExpr {
    let span = Span::from_pest(pair.as_span());
    let dims = pair
        .into_inner()
        .map(|dim| {
            let part = dim.into_inner().next().expect("a dim holds one part");
            match part.as_rule() {
                Rule::int => {
                    DimExpr::Size(lower_int(&part, errors), Span::from_pest(part.as_span()))
                }
                Rule::ident => DimExpr::Name(lower_ident(part)),
                rule => unreachable!("dim is an int or a name, got {rule:?}"),
            }
        })
        .collect();
    ShapeExpr { dims, span }
}

fn lower_int(pair: &Pair<'_, Rule>, errors: &mut Errors) -> i64 {
    pair.as_str().parse().unwrap_or_else(|_| {
        errors.push(SyntaxError::NumberOutOfRange {
            text: pair.as_str().to_string(),
            span: Span::from_pest(pair.as_span()),
        });
        0
    })
}

fn lower_expr(pair: Pair<'_, Rule>, errors: &mut Errors) -> Expr {
    let span = Span::from_pest(pair.as_span());
    match pair.as_rule() {
        Rule::expr => {
            let mut stages: Vec<Expr> = pair
                .into_inner()
                .filter(|p| p.as_rule() != Rule::pipe_op)
                .map(|p| lower_expr(p, errors))
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
        Rule::sum => {
            let mut terms: Vec<Expr> = pair
                .into_inner()
                .filter(|p| p.as_rule() != Rule::add_op)
                .map(|p| lower_expr(p, errors))
                .collect();
            if terms.len() == 1 {
                terms.pop().expect("one term")
            } else {
                Expr {
                    kind: ExprKind::Add(terms),
                    span,
                }
            }
        }
        Rule::repeat => {
            let mut inner = pair.into_inner();
            let count_pair = inner.next().expect("repeat count");
            let count = lower_int(&count_pair, errors);
            let count_span = Span::from_pest(count_pair.as_span());
            let body = inner
                .filter(|p| p.as_rule() != Rule::pipe_op)
                .map(|p| lower_expr(p, errors))
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
        Rule::paren => lower_expr(
            pair.into_inner().next().expect("paren holds an expr"),
            errors,
        ),
        Rule::int => Expr {
            kind: ExprKind::Int(lower_int(&pair, errors)),
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
            let ident = lower_ident(pair.into_inner().next().expect("name holds an ident"));
            Expr {
                kind: ExprKind::Name(ident),
                span,
            }
        }
        Rule::list => {
            let items = pair.into_inner().map(|p| lower_expr(p, errors)).collect();
            Expr {
                kind: ExprKind::List(items),
                span,
            }
        }
        Rule::call => Expr {
            kind: ExprKind::Call(lower_call(pair, errors)),
            span,
        },
        rule => unreachable!("not an expression rule: {rule:?}"),
    }
}

fn lower_call(pair: Pair<'_, Rule>, errors: &mut Errors) -> Call {
    let mut inner = pair.into_inner();
    let callee = lower_ident(inner.next().expect("callee"));
    let args = inner
        .map(|arg| {
            let span = Span::from_pest(arg.as_span());
            let part = arg.into_inner().next().expect("arg holds one part");
            match part.as_rule() {
                Rule::kwarg => {
                    let mut kv = part.into_inner();
                    let name = lower_ident(kv.next().expect("kwarg name"));
                    let value = lower_expr(kv.next().expect("kwarg value"), errors);
                    Arg {
                        name: Some(name),
                        value,
                        span,
                    }
                }
                _ => Arg {
                    name: None,
                    value: lower_expr(part, errors),
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

fn lower_data(src: &str, pair: Pair<'_, Rule>, errors: &mut Errors) -> DataDef {
    let span = Span::from_pest(pair.as_span());
    let mut inner = pair.into_inner();
    let name = lower_ident(inner.next().expect("data name"));
    let settings = lower_settings(src, inner.next().expect("data settings"), errors);
    DataDef {
        name,
        settings,
        span,
    }
}

fn lower_settings_block(src: &str, pair: Pair<'_, Rule>, errors: &mut Errors) -> SettingsBlock {
    let span = Span::from_pest(pair.as_span());
    let word = if pair.as_rule() == Rule::train_def {
        "train"
    } else {
        "parallel"
    };
    let keyword = keyword_span(&pair, word);
    let settings = lower_settings(src, pair.into_inner().next().expect("settings"), errors);
    SettingsBlock {
        keyword,
        settings,
        span,
    }
}

fn lower_settings(src: &str, pair: Pair<'_, Rule>, errors: &mut Errors) -> Vec<Setting> {
    let mut settings = Vec::new();
    for item in pair.into_inner() {
        match item.as_rule() {
            Rule::bad_line => {
                // Settings are one-liners: every broken line is its own error.
                let at = item.as_span().start();
                let error = missing_value(src, settings.last(), at).unwrap_or_else(|| {
                    recover_line(src, settings.last().map(|s| s.span), at, Rule::setting_line)
                });
                errors.push(error);
                continue;
            }
            Rule::setting => {
                let span = Span::from_pest(item.as_span());
                let mut kv = item.into_inner();
                let key = lower_ident(kv.next().expect("setting key"));
                let value = lower_expr(kv.next().expect("setting value"), errors);
                settings.push(Setting { key, value, span });
            }
            rule => unreachable!("settings hold settings, got {rule:?}"),
        }
    }
    settings
}

/// `data =` with nothing after it reads the next line's key as its value and
/// leaves `= ...` behind; say what really happened.
fn missing_value(src: &str, previous: Option<&Setting>, bad_at: usize) -> Option<SyntaxError> {
    let previous = previous?;
    let value_is_name = matches!(previous.value.kind, ExprKind::Name(_));
    let key_line = src[..previous.key.span.end].matches('\n').count();
    let value_line = src[..previous.value.span.start].matches('\n').count();
    if !(src[bad_at..].starts_with('=') && value_is_name && value_line > key_line) {
        return None;
    }
    let line_end = src[previous.key.span.end..]
        .find('\n')
        .map_or(src.len(), |i| previous.key.span.end + i);
    Some(SyntaxError::Unexpected {
        expected: format!("a value for `{}`", previous.key.name),
        found: "the end of the line".into(),
        span: Span::new(line_end, line_end),
        help: Some(format!(
            "write `{} = <value>` on one line",
            previous.key.name
        )),
    })
}

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

const TOP_KEYWORDS: [&str; 6] = ["module", "model", "data", "train", "parallel", "test"];

#[derive(Clone, Copy)]
enum Context {
    Top,
    ModuleBody,
    Settings,
}

fn first_word(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Parses a broken one-line statement again with `rule`, which must match the
/// whole line. The statement starts at the bad text, or at the previous
/// statement when the bad text continues its line (`optimizer = sgd(lr: 1`
/// parses as `optimizer = sgd` followed by junk).
fn recover_line(src: &str, previous: Option<Span>, bad_at: usize, rule: Rule) -> SyntaxError {
    let start = match previous {
        Some(prev) if !src[prev.end..bad_at].contains('\n') => prev.start,
        _ => bad_at,
    };
    let end = src[bad_at..].find('\n').map_or(src.len(), |i| bad_at + i);
    match DtlParser::parse(rule, &src[start..end]) {
        Err(err) => error_from_pest(src, start, err),
        Ok(_) => recover(src, bad_at, Context::Settings),
    }
}

/// Parses the text at `start` again with the rule that the context and the
/// line's first word call for, and turns the failure into an error.
fn recover(src: &str, start: usize, context: Context) -> SyntaxError {
    let rest = &src[start..];
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let rule = match context {
        Context::Top => match word.as_str() {
            "module" => Rule::module_def,
            "model" => Rule::model_def,
            "data" => Rule::data_def,
            "train" => Rule::train_def,
            "parallel" => Rule::parallel_def,
            "test" => Rule::test_def,
            _ => {
                return SyntaxError::Unexpected {
                    expected: "`module`, `model`, `data`, `train`, `parallel` or `test`".into(),
                    found: describe_found(src, start),
                    span: token_span(src, start),
                    help: crate::check::suggest::did_you_mean(&word, TOP_KEYWORDS).or_else(|| {
                        Some(
                            "a file is a list of items; each starts with one of these keywords"
                                .into(),
                        )
                    }),
                }
            }
        },
        Context::ModuleBody if word == "forward" => Rule::forward_def,
        Context::ModuleBody => Rule::layer_def,
        Context::Settings => Rule::setting,
    };
    match DtlParser::parse(rule, rest) {
        Err(err) => error_from_pest(src, start, err),
        Ok(pairs) => {
            let end = start + pairs.last().map_or(0, |p| p.as_span().end());
            let at = skip_blank(src, end);
            SyntaxError::Unexpected {
                expected: "the end of the line".into(),
                found: describe_found(src, at),
                span: token_span(src, at),
                help: Some("put each statement on its own line or separate them with `;`".into()),
            }
        }
    }
}

fn skip_blank(src: &str, mut at: usize) -> usize {
    let bytes = src.as_bytes();
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\r') {
        at += 1;
    }
    at
}

/// Converts a pest error found in `src[offset..]` into a [`SyntaxError`].
pub(super) fn error_from_pest(
    src: &str,
    offset: usize,
    err: pest::error::Error<Rule>,
) -> SyntaxError {
    let mut pos = match err.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let mut expected: Vec<String> = Vec::new();
    let attempts = err.parse_attempts();
    // pest's location is the furthest *rule* attempt; a literal token (`=`,
    // `)`) tried further on is the better place to point at.
    let further = attempts
        .as_ref()
        .filter(|a| a.max_position > pos && !a.expected_tokens().is_empty());
    if let Some(attempts) = further {
        pos = attempts.max_position;
    } else if let pest::error::ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for rule in positives {
            if let Some(words) = describe_rule(*rule) {
                push_unique(&mut expected, words);
            }
        }
    }
    if let Some(attempts) = &attempts {
        if attempts.max_position == pos {
            // pest does not export its token type; its Display is the literal
            // text for plain tokens, `a..z` for ranges and `BUILTIN_RULE`.
            for token in attempts.expected_tokens() {
                let token = token.to_string();
                let noise = matches!(
                    token.as_str(),
                    " " | "\t"
                        | "\r"
                        | "\n"
                        | "//"
                        | "#"
                        | "/*"
                        | "-"
                        | "."
                        | "_"
                        | "E"
                        | "BUILTIN_RULE"
                ) || token.contains("..");
                if !noise {
                    push_unique(&mut expected, format!("`{token}`"));
                }
            }
        }
    }
    collapse_expression(&mut expected);
    // A chain or sum could always go on; when a closing token is also
    // possible, that is what was meant far more often.
    if expected
        .iter()
        .any(|e| ["`)`", "`,`", "`]`", "`}`"].contains(&e.as_str()))
    {
        expected.retain(|e| !["`|>`", "`+`", "`(`"].contains(&e.as_str()));
    }
    let expected = if expected.is_empty() {
        "something else".to_string()
    } else {
        join_or(&expected)
    };
    let help = help_for(&expected);
    let pos = offset + pos;
    SyntaxError::Unexpected {
        expected,
        found: describe_found(src, pos),
        span: token_span(src, pos),
        help,
    }
}

fn push_unique(list: &mut Vec<String>, item: impl Into<String>) {
    let item = item.into();
    if !list.contains(&item) {
        list.push(item);
    }
}

const EXPRESSION_PARTS: [&str; 6] = [
    "a number",
    "a string",
    "`true` or `false`",
    "a list",
    "a name",
    "`(`",
];

/// A list of every kind of term reads better as "an expression".
fn collapse_expression(expected: &mut Vec<String>) {
    // The literal tokens that open a term are part of "an expression" too.
    let openers = ["`[`", "`(`", "`\"`", "`true`", "`false`"];
    let is_part =
        |e: &String| EXPRESSION_PARTS.contains(&e.as_str()) || openers.contains(&e.as_str());
    let hits = expected
        .iter()
        .filter(|e| EXPRESSION_PARTS.contains(&e.as_str()))
        .count();
    let has_expression = expected.iter().any(|e| e == "an expression");
    if hits >= 3 || (has_expression && expected.iter().any(is_part)) {
        let at = expected
            .iter()
            .position(|e| is_part(e) || e == "an expression")
            .unwrap_or(0);
        expected.retain(|e| !is_part(e) && e != "an expression");
        expected.insert(at.min(expected.len()), "an expression".to_string());
    }
}

fn help_for(expected: &str) -> Option<String> {
    if expected.contains("`}`") {
        Some("is a closing `}` missing?".into())
    } else if expected.contains("`)`") {
        Some("is a closing `)` or a `,` between arguments missing?".into())
    } else {
        None
    }
}

/// The user-facing words for a grammar rule, or `None` for rules that are
/// no use to name (recovery rules, end of input).
fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::ident | Rule::name | Rule::key => "a name",
        Rule::int | Rule::float => "a number",
        Rule::string => "a string",
        Rule::boolean => "`true` or `false`",
        Rule::list => "a list",
        Rule::call => "a name",
        Rule::paren => "`(`",
        Rule::expr | Rule::arg | Rule::sum => "an expression",
        Rule::add_op => "`+`",
        Rule::repeat => "`repeat`",
        Rule::let_def => "`let`",
        Rule::kwarg => "a keyword argument",
        Rule::pipe_op => "`|>`",
        Rule::shape => "a shape like `[B, 64]`",
        Rule::dim => "a dimension (a number or a name)",
        Rule::param | Rule::params => "a parameter (`name: type`)",
        Rule::setting => "a setting (`key = value`)",
        Rule::layer_def => "a layer (`name = layer(...)`)",
        Rule::forward_def => "`forward`",
        Rule::module_def => "`module`",
        Rule::model_def => "`model`",
        Rule::data_def => "`data`",
        Rule::train_def => "`train`",
        Rule::parallel_def => "`parallel`",
        Rule::test_def => "`test`",
        Rule::test_subject => "a layer or module",
        Rule::test_option => "a test option",
        Rule::keyword => "a keyword",
        _ => return None,
    })
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

/// The span of the token at `at`: a word, a number, or one character.
fn token_span(src: &str, at: usize) -> Span {
    let at = at.min(src.len());
    let rest = &src[at..];
    let word_len: usize = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .map(char::len_utf8)
        .sum();
    let len = if word_len > 0 {
        word_len
    } else {
        rest.chars().next().map_or(0, char::len_utf8)
    };
    Span::new(at, at + len)
}

fn describe_found(src: &str, at: usize) -> String {
    let span = token_span(src, at);
    match &src[span.start..span.end] {
        "" => "the end of the file".to_string(),
        "\n" | "\r" => "the end of the line".to_string(),
        text => format!("`{text}`"),
    }
}
