//! Errors of the syntax phase.

use miette::Diagnostic;
use thiserror::Error;

use crate::span::Span;

#[derive(Debug, Clone, Error, Diagnostic, PartialEq)]
pub enum SyntaxError {
    /// The parser met text it could not read as what the place calls for.
    #[error("expected {expected}, found {found}")]
    #[diagnostic(code(dtl::syntax::unexpected))]
    Unexpected {
        expected: String,
        found: String,
        #[label("expected {expected} here")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    /// A block whose `}` never comes: the next item's keyword is read
    /// inside it.
    #[error("the `{{` of line {line} (`{text}`) is never closed")]
    #[diagnostic(code(dtl::syntax::unclosed))]
    Unclosed {
        line: usize,
        text: String,
        #[label(primary, "opened here")]
        open: Span,
        #[label("`{keyword}` starts the next item, still inside it")]
        span: Span,
        keyword: String,
        #[help]
        help: Option<String>,
    },

    /// Brackets and braces nested deeper than the parser follows.
    #[error("brackets and braces nest more than {limit} deep")]
    #[diagnostic(
        code(dtl::syntax::too_deep),
        help("name the inner parts with `let`, or split them into modules")
    )]
    TooDeep {
        limit: usize,
        #[label("level {} opens here", limit + 1)]
        span: Span,
    },

    /// A number literal that does not fit.
    #[error("number `{text}` is out of range")]
    #[diagnostic(code(dtl::syntax::number_out_of_range))]
    NumberOutOfRange {
        text: String,
        #[label("does not fit in a 64-bit integer")]
        span: Span,
    },
}

impl SyntaxError {
    pub fn span(&self) -> Span {
        match self {
            SyntaxError::Unexpected { span, .. }
            | SyntaxError::Unclosed { open: span, .. }
            | SyntaxError::NumberOutOfRange { span, .. }
            | SyntaxError::TooDeep { span, .. } => *span,
        }
    }
}
