//! Syntax: `grammar/dtl.pest` → typed syntax tree ([`crate::ast`]).
//!
//! Parsing never stops at the first problem: the grammar swallows junk lines
//! (`bad_line`, `bad_item`), and [`build`], building the tree, hands each
//! to [`recover`], which parses it again with the rule the line was meant
//! to match, so every broken line gets its own precise error.

mod build;
mod error;
mod recover;

pub use error::SyntaxError;

use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/dtl.pest"]
pub(crate) struct DtlParser;

/// Builds the expression of a parsed `expr_line` (for `--set`); errors are
/// plain text.
pub(crate) fn build_expr_text(
    mut pairs: pest::iterators::Pairs<'_, Rule>,
) -> Result<crate::ast::Expr, String> {
    let line = pairs.next().ok_or("empty value")?;
    let expr = line.into_inner().next().ok_or("empty value")?;
    let mut errors = Vec::new();
    let value = build::build_expr(expr, &mut errors);
    match errors.first() {
        None => Ok(value),
        Some(err) => Err(err.to_string()),
    }
}

/// The grammar's keywords (its `keyword` rule): words no user-chosen name
/// may be.
pub const KEYWORDS: [&str; 11] = [
    "module", "model", "data", "train", "parallel", "forward", "let", "repeat", "test", "true",
    "false",
];

/// The deepest nesting of brackets and braces a file may have. The parser
/// descends once per level and every later phase walks the tree it builds,
/// so a limit here (checked before parsing, on the raw text) keeps a
/// hostile file from overflowing the stack of any of them.
pub const MAX_NESTING: usize = 200;

/// The first bracket or brace that opens level `MAX_NESTING + 1`, skipping
/// strings and comments as the grammar reads them.
pub(crate) fn too_deep(src: &str) -> Option<SyntaxError> {
    let bytes = src.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(SyntaxError::TooDeep {
                        limit: MAX_NESTING,
                        span: crate::span::Span::new(i, i + 1),
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses a whole file. The tree holds everything that could be read; the
/// errors say what could not.
pub fn parse(src: &str) -> (crate::ast::File, Vec<SyntaxError>) {
    if let Some(err) = too_deep(src) {
        return (crate::ast::File::default(), vec![err]);
    }
    pest::set_error_detail(true);
    match DtlParser::parse(Rule::file, src) {
        Ok(mut pairs) => {
            let file = pairs.next().expect("the file rule always yields one pair");
            build::build_file(src, file)
        }
        // `file` accepts any input through `bad_item`; keep a message anyway.
        Err(err) => (
            crate::ast::File::default(),
            vec![recover::error_from_pest(src, 0, err)],
        ),
    }
}
