//! Syntax: `grammar/dtl.pest` → typed syntax tree ([`crate::ast`]).
//!
//! Parsing never stops at the first problem: the grammar swallows junk lines
//! (`bad_line`, `bad_item`) and [`lower`] re-parses each with the rule the
//! line was meant to match, so every broken line gets its own precise error.

mod error;
mod lower;
mod recover;

pub use error::SyntaxError;

use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/dtl.pest"]
pub(crate) struct DtlParser;

/// Lowers a parsed `expr_line` (for `--set`); errors are plain text.
pub(crate) fn lower_expr_text(
    mut pairs: pest::iterators::Pairs<'_, Rule>,
) -> Result<crate::ast::Expr, String> {
    let line = pairs.next().ok_or("empty value")?;
    let expr = line.into_inner().next().ok_or("empty value")?;
    let mut errors = Vec::new();
    let value = lower::lower_expr(expr, &mut errors);
    match errors.first() {
        None => Ok(value),
        Some(err) => Err(err.to_string()),
    }
}

/// Parses a whole file. The tree holds everything that could be read; the
/// errors say what could not.
pub fn parse(src: &str) -> (crate::ast::File, Vec<SyntaxError>) {
    pest::set_error_detail(true);
    match DtlParser::parse(Rule::file, src) {
        Ok(mut pairs) => {
            let file = pairs.next().expect("the file rule always yields one pair");
            lower::lower_file(src, file)
        }
        // `file` accepts any input through `bad_item`; keep a message anyway.
        Err(err) => (
            crate::ast::File::default(),
            vec![recover::error_from_pest(src, 0, err)],
        ),
    }
}
