//! Errors of the check phase. Each variant has a stable code, a label on the
//! offending span and, where the fix is known, a help line.

use miette::Diagnostic;
use thiserror::Error;

use crate::span::Span;

#[derive(Debug, Clone, Error, Diagnostic, PartialEq)]
pub enum CheckError {
    #[error("unknown {kind} `{name}`")]
    #[diagnostic(code(dtl::check::unknown_name))]
    UnknownName {
        kind: &'static str,
        name: String,
        #[label("not defined")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{kind} `{name}` is defined twice")]
    #[diagnostic(code(dtl::check::duplicate))]
    Duplicate {
        kind: &'static str,
        name: String,
        #[label("defined again here")]
        span: Span,
        #[label("first defined here")]
        first: Span,
    },

    #[error("`{callee}` takes {expected} argument(s), but {found} were given")]
    #[diagnostic(code(dtl::check::arity))]
    Arity {
        callee: String,
        expected: String,
        found: usize,
        #[label("{found} argument(s)")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("`{callee}` has no argument named `{name}`")]
    #[diagnostic(code(dtl::check::unknown_argument))]
    UnknownArgument {
        callee: String,
        name: String,
        #[label("unknown argument")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("`{callee}` needs the argument `{name}`")]
    #[diagnostic(code(dtl::check::missing_argument))]
    MissingArgument {
        callee: String,
        name: String,
        #[label("`{name}` is missing")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("argument `{name}` is given twice")]
    #[diagnostic(code(dtl::check::duplicate_argument))]
    DuplicateArgument {
        name: String,
        #[label("given again here")]
        span: Span,
    },

    #[error("expected {expected}, found {found}")]
    #[diagnostic(code(dtl::check::type_mismatch))]
    TypeMismatch {
        expected: String,
        found: String,
        #[label("this is {found}")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(dtl::check::invalid_value))]
    InvalidValue {
        message: String,
        #[label("{label}")]
        span: Span,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("width mismatch: {layer} expects {expected} {unit}, but its input has {found}")]
    #[diagnostic(code(dtl::check::width_mismatch))]
    WidthMismatch {
        layer: String,
        /// "input features" or "input channels".
        unit: &'static str,
        expected: i64,
        found: i64,
        #[label("expects {expected}, gets {found}")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("shape mismatch: expected {expected}, found {found}")]
    #[diagnostic(code(dtl::check::shape_mismatch))]
    ShapeMismatch {
        expected: String,
        found: String,
        #[label("{what}")]
        span: Span,
        what: String,
        #[help]
        help: Option<String>,
    },

    #[error("`{block}` needs the setting `{key}`")]
    #[diagnostic(code(dtl::check::missing_setting))]
    MissingSetting {
        block: String,
        key: &'static str,
        #[label("`{key}` is not set in this block")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("unknown setting `{key}` in `{block}`")]
    #[diagnostic(code(dtl::check::unknown_setting))]
    UnknownSetting {
        block: String,
        key: String,
        #[label("not a setting of `{block}`")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(dtl::check::missing_item))]
    MissingItem {
        message: String,
        #[label("in this file")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(dtl::check::import))]
    Import {
        message: String,
        #[label("this import")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("cannot read the data: {reason}")]
    #[diagnostic(code(dtl::check::data_file))]
    DataFile {
        reason: String,
        #[label("this data source")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    /// A `--set` path that names nothing in the file.
    #[error("{message}")]
    #[diagnostic(
        code(dtl::check::bad_override),
        help("paths are train.KEY, train.KEY.ARG, parallel.KEY, data.NAME.KEY")
    )]
    BadOverride {
        message: String,
        #[label("in this file")]
        span: Span,
    },

    #[error("`{path}` leads out of the project folder {project}")]
    #[diagnostic(
        code(dtl::check::path_outside_project),
        help("keep the data inside the project, or name it by an absolute path (this is an error under --strict)")
    )]
    PathOutsideProject {
        path: String,
        project: String,
        #[label("outside the project")]
        span: Span,
    },

    #[error("{message}")]
    #[diagnostic(code(dtl::check::unsupported))]
    Unsupported {
        message: String,
        #[label("not supported")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    /// A module's own structure is wrong (it contains itself, it nests too
    /// deep): the same at every instance, whatever the values.
    #[error("{message}")]
    #[diagnostic(code(dtl::check::invalid_value))]
    Structure {
        message: String,
        #[label("{label}")]
        span: Span,
        label: String,
        #[help]
        help: Option<String>,
    },

    /// An `embedding` reading the data's features as ids when they are not
    /// (real values, or ids past its rows).
    #[error("{message}")]
    #[diagnostic(code(dtl::check::invalid_value))]
    EmbeddingInput {
        message: String,
        #[label("{label}")]
        span: Span,
        label: String,
        /// The data's `scale`, which made the features real values.
        #[label("this scale makes the features real values")]
        scale: Option<Span>,
        #[help]
        help: Option<String>,
    },

    /// An error inside a module instance or a copy of a `repeat`, reported
    /// at the call that led there ([`super::context`]).
    #[error(transparent)]
    #[diagnostic(transparent)]
    InInstance(super::context::InInstance),
}

impl CheckError {
    /// The primary span, used to order diagnostics and to de-duplicate those
    /// found once per module instance.
    pub fn span(&self) -> Span {
        use CheckError::*;
        match self {
            UnknownName { span, .. }
            | Duplicate { span, .. }
            | Arity { span, .. }
            | UnknownArgument { span, .. }
            | MissingArgument { span, .. }
            | DuplicateArgument { span, .. }
            | TypeMismatch { span, .. }
            | InvalidValue { span, .. }
            | WidthMismatch { span, .. }
            | ShapeMismatch { span, .. }
            | MissingSetting { span, .. }
            | UnknownSetting { span, .. }
            | MissingItem { span, .. }
            | DataFile { span, .. }
            | Import { span, .. }
            | BadOverride { span, .. }
            | PathOutsideProject { span, .. }
            | Unsupported { span, .. }
            | EmbeddingInput { span, .. }
            | Structure { span, .. } => *span,
            InInstance(wrapped) => wrapped.span(),
        }
    }

    /// Whether the error comes from the values a module instance was
    /// given (and so is reported at the call that gave them), rather than
    /// from how the module is written (the same at every instance).
    pub fn depends_on_values(&self) -> bool {
        use CheckError::*;
        matches!(
            self,
            InvalidValue { .. }
                | WidthMismatch { .. }
                | ShapeMismatch { .. }
                | EmbeddingInput { .. }
                | InInstance(_)
        )
    }

    pub fn invalid(message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        CheckError::InvalidValue {
            message: message.into(),
            span,
            label: label.into(),
            help: None,
        }
    }
}
