//! `dtl fmt`: the canonical layout of a `.dtl` file.
//!
//! The formatter works on the token stream (`lexer`), not on the syntax
//! tree, so that comments and the line breaks a person chose survive. The
//! syntax tree is used twice: to refuse a file that does not parse (a broken
//! file is never touched) and to know where statements begin, which decides
//! how a line is indented. After laying out, the result is parsed again and
//! must give the same tree, spans aside; if it ever did not, that is a bug
//! here and the file is refused rather than damaged. It reads `syntax`
//! only: what a file means (`check`, `plan`) is none of its business.
//!
//! The layout (the files in `examples/` are the house style and come out
//! unchanged):
//!
//! - Line breaks are the author's: a chain written one `|>` per line stays
//!   so, and one written on one line stays on one line. Nothing is joined,
//!   except a `{` at the start of a line, which moves up to the end of the
//!   code before it (ahead of any comments in between, which then open the
//!   block or trail the `{`).
//! - A block written on one line stays on one line: `{ x |> relu }`,
//!   `repeat 3 { Residual(96, 192) }`, `test t { ... ; gradcheck }`. A block
//!   written over several lines is expanded: its content starts on the line
//!   after `{` (a comment may trail the `{`) and its `}` stands on a line of
//!   its own at the indent of the line holding the `{`.
//! - `;` is kept as written: `steps = 1; micro_batch = 8` stays one line.
//!   At the top level and in an expanded block, a statement that shares a
//!   line with the one before it without a `;` between (`} train {`,
//!   `steps = 1 seed = 0`) goes to a line of its own.
//! - Indent: two spaces per open block; a line that continues a statement
//!   one level more than the statement (`x` then `|> linear(64, 10)` below
//!   it). Inside brackets left open on an earlier line, one level per such
//!   line instead; a line that starts with `)` or `]` stands at the level of
//!   the line that opened it.
//! - Spaces: one around `=`, `|>`, `+`, `-`, `*`, `/`, `->`; one after `,`, `:` and `;`;
//!   none before `,` `:` `;` `)` `]`, none after `(` `[`, none between a
//!   name and its `(`; one before `{`; one inside a one-line block
//!   (`{ x }`), none in an empty one (`{}`).
//! - Blank lines: at most one in a row, none right after `{` or right before
//!   `}`, none at the start of the file. No trailing whitespace; the file
//!   ends with exactly one newline (an empty file stays empty).
//! - Comments stay where they were. A comment that trails code stays on its
//!   line, two spaces after the code; where it was set off by two or more
//!   spaces it keeps its column if that is further right, so hand-aligned
//!   comments (a `data` block's settings) stay aligned. A comment on a line
//!   of its own takes the indent of the code line that follows it, or the
//!   block's indent when a `}` follows. The text of a comment is never
//!   changed, save trailing blanks of `//` and `#` comments; the inner lines
//!   of a multi-line `/* */` comment are kept as they are.
//! - Tokens themselves are kept as written: numbers (`3E-3`), strings and
//!   names are not rewritten.

mod diff;
mod layout;
pub(crate) mod lexer;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use crate::ast::{Expr, ExprKind, File, Item, Setting};
use crate::span::Span;
use crate::syntax::{self, SyntaxError};

pub use diff::{line_edits, unified_diff, LineEdit};
pub use lexer::comments;

/// The canonical layout of `text`, or the syntax errors that keep it from
/// being formatted (the file is then left alone). Formatting is idempotent
/// and keeps every comment and the syntax tree.
pub fn format_source(text: &str) -> Result<String, Vec<SyntaxError>> {
    let (file, errors) = syntax::parse(text);
    if !errors.is_empty() {
        return Err(errors);
    }
    let formatted = layout::layout(text, lexer::lex(text), &statement_starts(&file));
    let (again, errors) = syntax::parse(&formatted);
    if !errors.is_empty() || without_spans(&again) != without_spans(&file) {
        return Err(vec![SyntaxError::Unexpected {
            expected: "a file `dtl fmt` can lay out without changing it".into(),
            found: "a layout that would read differently".into(),
            span: Span::new(0, 0),
            help: Some("this is a bug in `dtl fmt`; the file was left as it is".into()),
        }]);
    }
    Ok(formatted)
}

/// The syntax tree's debug form with every span blanked: equal for two
/// texts that differ only in layout and comments.
pub(crate) fn without_spans(file: &File) -> String {
    let text = format!("{file:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("Span { start: ") {
        out.push_str(&rest[..at]);
        out.push_str("Span");
        rest = &rest[at..];
        rest = rest.find(" }").map_or("", |end| &rest[end + 2..]);
    }
    out.push_str(rest);
    out
}

/// Byte offsets where a statement begins: items, layers, `forward`s, `let`s,
/// a forward's final expression, settings, a test's subject and options,
/// the first stage of a `repeat` body.
fn statement_starts(file: &File) -> BTreeSet<usize> {
    let mut starts = BTreeSet::new();
    let mut exprs: Vec<&Expr> = Vec::new();
    fn settings<'f>(list: &'f [Setting], starts: &mut BTreeSet<usize>, exprs: &mut Vec<&'f Expr>) {
        for setting in list {
            starts.insert(setting.span.start);
            exprs.push(&setting.value);
        }
    }
    for item in &file.items {
        match item {
            Item::Module(module) => {
                starts.insert(module.span.start);
                for param in &module.params {
                    exprs.extend(param.default.as_ref());
                }
                for layer in &module.layers {
                    starts.insert(layer.span.start);
                    exprs.push(&layer.value);
                }
                for forward in &module.forwards {
                    starts.insert(forward.span.start);
                    for binding in &forward.lets {
                        starts.insert(binding.span.start);
                        exprs.push(&binding.value);
                    }
                    starts.insert(forward.body.span.start);
                    exprs.push(&forward.body);
                }
            }
            Item::Data(data) => {
                starts.insert(data.span.start);
                settings(&data.settings, &mut starts, &mut exprs);
            }
            Item::Train(block) | Item::Parallel(block) => {
                starts.insert(block.span.start);
                settings(&block.settings, &mut starts, &mut exprs);
            }
            Item::Import(import) => {
                starts.insert(import.span.start);
            }
            Item::Test(test) => {
                starts.insert(test.span.start);
                starts.insert(test.subject.span.start);
                starts.extend(test.options.iter().map(|option| option.span.start));
            }
        }
    }
    while let Some(expr) = exprs.pop() {
        match &expr.kind {
            ExprKind::Repeat { body, .. } => {
                starts.extend(body.first().map(|stage| stage.span.start));
                exprs.extend(body);
            }
            ExprKind::Pipe(parts) | ExprKind::Add(parts) | ExprKind::List(parts) => {
                exprs.extend(parts)
            }
            ExprKind::Binary { lhs, rhs, .. } => exprs.extend([&**lhs, &**rhs]),
            ExprKind::Call(call) => exprs.extend(call.args.iter().map(|arg| &arg.value)),
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Bool(_)
            | ExprKind::Name(_) => {}
        }
    }
    starts
}
