//! Recovery: each run of junk lines is parsed again with the rule it was
//! meant to match, and pest's failure becomes a [`SyntaxError`] in words a
//! user knows (rules renamed, tokens listed, the offending token labelled).

use pest::Parser;

use super::{DtlParser, Rule, SyntaxError};
use crate::ast::{ExprKind, Setting};
use crate::span::Span;

/// `data =` with nothing after it reads the next line's key as its value and
/// leaves `= ...` behind; say what really happened.
pub(super) fn missing_value(
    src: &str,
    previous: Option<&Setting>,
    bad_at: usize,
) -> Option<SyntaxError> {
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

/// A line inside a block that starts the next item (`data digits {`,
/// `train {`): the block's `}` is missing. Named by the line that opened
/// it.
pub(super) fn item_inside_block(src: &str, at: usize) -> Option<SyntaxError> {
    let word = first_word(&src[at..]);
    if !TOP_KEYWORDS.contains(&word) {
        return None;
    }
    // `data = digits` is a setting, `model Net` a setting without its
    // `=`; `data digits {` and `import "a.dtl"` are items.
    let line_end = src[at..].find('\n').map_or(src.len(), |i| at + i);
    let line = &src[at..line_end];
    let code = line.split("//").next().unwrap_or(line).trim_end();
    let header = match word {
        "import" => code[word.len()..].trim_start().starts_with('"'),
        _ => code.ends_with('{') && !code[word.len()..].trim_start().starts_with('='),
    };
    if !header {
        return None;
    }
    let (line, text, open) = unclosed_brace(src, at)?;
    let before = src[..at].matches('\n').count() + 1;
    Some(SyntaxError::Unclosed {
        line,
        text: text.to_string(),
        open: Span::new(open, open + 1),
        span: Span::new(at, at + word.len()),
        keyword: word.to_string(),
        help: Some(format!(
            "add the `}}` that closes it before line {before}, where `{word}` begins"
        )),
    })
}

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

const TOP_KEYWORDS: [&str; 7] = [
    "import", "module", "model", "data", "train", "parallel", "test",
];

#[derive(Clone, Copy)]
pub(super) enum Context {
    Top,
    ModuleBody,
    Settings,
}

pub(super) fn first_word(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Parses a broken one-line statement again with `rule`, which must match the
/// whole line. The statement starts at the bad text, or at the previous
/// statement when the bad text continues its line (`optimizer = sgd(lr: 1`
/// parses as `optimizer = sgd` followed by junk).
pub(super) fn recover_line(
    src: &str,
    previous: Option<Span>,
    bad_at: usize,
    rule: Rule,
) -> SyntaxError {
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
pub(super) fn recover(src: &str, start: usize, context: Context) -> SyntaxError {
    let rest = &src[start..];
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let rule =
        match context {
            Context::Top => match word.as_str() {
                "import" => Rule::import_def,
                "module" => Rule::module_def,
                "model" => Rule::model_def,
                "data" => Rule::data_def,
                "train" => Rule::train_def,
                "parallel" => Rule::parallel_def,
                "test" => Rule::test_def,
                _ => return SyntaxError::Unexpected {
                    expected: "`import`, `module`, `model`, `data`, `train`, `parallel` or `test`"
                        .into(),
                    found: describe_found(src, start),
                    span: token_span(src, start),
                    help: crate::util::suggest::did_you_mean(&word, TOP_KEYWORDS).or_else(|| {
                        Some(if src[start..].starts_with([';', ',']) {
                            "drop it: items follow one another with nothing between them".into()
                        } else {
                            "a file is a list of items; each starts with one of these keywords"
                                .into()
                        })
                    }),
                },
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
        expected.retain(|e| !["`|>`", "`+`", "`*`", "`/`", "`(`"].contains(&e.as_str()));
    }
    let expected = if expected.is_empty() {
        "something else".to_string()
    } else {
        join_or(&expected)
    };
    let pos = offset + pos;
    let help =
        help_for(&expected, src, pos.min(src.len())).map(|help| match unclosed_brace(src, pos) {
            Some((line, text, _)) if help.contains("`}`") => {
                format!("is the `}}` of line {line} (`{text}`) missing?")
            }
            _ => help,
        });
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

/// The likely fix, from what was expected and the text at the error, at
/// `pos` of `src`.
fn help_for(expected: &str, src: &str, pos: usize) -> Option<String> {
    let rest = &src[pos..];
    // `padding=1` inside a call: Python's keyword arguments.
    if expected.contains("`:`") && rest.starts_with('=') && !rest.starts_with("==") {
        let before = src[..pos].trim_end();
        let name_at = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &before[name_at..];
        let value = argument_value(&rest[1..]);
        return Some(match (name.is_empty(), value.is_empty()) {
            (false, false) => format!("arguments are named with `:`: write `{name}: {value}`"),
            _ => "arguments are named with `:`, as in `padding: 1`".into(),
        });
    }
    // `steps = 300,`: a setting or a layer ends with its line.
    if expected.contains("`;`") && rest.starts_with(',') {
        return Some(
            "drop this `,`: a setting or a layer ends at the end of its line (`;` separates two on one line)".into(),
        );
    }
    // `{ x |> f; }`: the last expression of a block is its result.
    if expected.contains("`}`") && rest.starts_with(';') {
        return Some("drop this `;`: the last expression of a `forward` is its result, and nothing follows it".into());
    }
    if expected.contains("`}`") {
        Some("is a closing `}` missing?".into())
    } else if expected.contains("`)`") {
        Some("is a closing `)` or a `,` between arguments missing?".into())
    } else {
        None
    }
}

/// The value an argument starts with in `text`: up to the first `,` or
/// `)` outside brackets, or the end of the line.
fn argument_value(text: &str) -> &str {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' if depth == 0 => return text[..i].trim(),
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => return text[..i].trim(),
            '\n' => return text[..i].trim(),
            _ => {}
        }
    }
    text.trim()
}

/// The innermost `{` before `end` that no `}` closes (strings and
/// comments skipped): its line, from 1, that line's text and its offset.
fn unclosed_brace(src: &str, end: usize) -> Option<(usize, &str, usize)> {
    let bytes = &src.as_bytes()[..end.min(src.len())];
    let mut open = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") || rest[0] == b'#' {
            i += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            continue;
        }
        if rest.starts_with(b"/*") {
            i += rest
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(rest.len(), |p| p + 2);
            continue;
        }
        match rest[0] {
            b'"' => {
                // To the closing quote (strings do not span lines).
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => open.push(i),
            b'}' => {
                open.pop();
            }
            _ => {}
        }
        i += 1;
    }
    let at = *open.last()?;
    let start = src[..at].rfind('\n').map_or(0, |p| p + 1);
    let stop = src[at..].find('\n').map_or(src.len(), |p| at + p);
    Some((
        src[..at].matches('\n').count() + 1,
        src[start..stop].trim(),
        at,
    ))
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
        Rule::call | Rule::callee | Rule::callee_name => "a name",
        Rule::paren => "`(`",
        Rule::expr | Rule::arg | Rule::sum | Rule::product => "an expression",
        Rule::repeat => "`repeat`",
        Rule::let_def => "`let`",
        Rule::kwarg => "a keyword argument",
        Rule::pipe_op => "`|>`",
        Rule::shape => "a shape like `[B, 64]`",
        Rule::dim => "a dimension (a number, a name or arithmetic on them)",
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

#[cfg(test)]
mod tests {
    use super::super::SyntaxError;

    fn errors(text: &str) -> Vec<SyntaxError> {
        super::super::parse(text).1
    }

    #[test]
    fn a_setting_without_its_equals_is_not_an_unclosed_block() {
        let found = errors("train {\n  model Net\n  steps 10\n}\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .all(|e| matches!(e, SyntaxError::Unexpected { .. })));
        let found = errors(
            "train {\n  steps = 1\n\nmodel Net {\n  forward(x: [B, 1]) -> [B, 1] { x }\n}\n",
        );
        assert!(
            matches!(found[0], SyntaxError::Unclosed { line: 1, .. }),
            "{found:?}"
        );
    }

    #[test]
    fn the_keyword_argument_help_keeps_a_whole_list() {
        let found = errors("model M {\n  forward(x: [B, 1, 4, 4]) -> [B, 1, 4, 4] { x |> conv2d(1, 1, 3, padding=[1, 1]) }\n}\n");
        let SyntaxError::Unexpected { help, .. } = &found[0] else {
            panic!("{found:?}")
        };
        assert_eq!(
            help.as_deref(),
            Some("arguments are named with `:`: write `padding: [1, 1]`")
        );
    }
}
