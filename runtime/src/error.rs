//! Errors of the run phase. Each carries what a user needs to find the cause:
//! the step, the file path, the tensor shape.

use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum RunError {
    #[error("data file `{path}`: {message}")]
    #[diagnostic(code(dtl::run::data))]
    Data { path: String, message: String },

    #[error("{context}: {message}")]
    #[diagnostic(code(dtl::run::torch))]
    Torch { context: String, message: String },

    #[error("step {step}: the {what} is {value}; {kept}")]
    #[diagnostic(
        code(dtl::run::non_finite),
        help("lower the learning rate, add `clip = norm(1.0)`, or set `on_nan = skip` in the train block to drop such steps")
    )]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
        /// Which checkpoint is left to resume from.
        kept: String,
    },

    #[error("the plan is for {world} ranks (data {data} × pipeline {pipeline}); this dtl trains in one process")]
    #[diagnostic(
        code(dtl::run::multi_rank),
        help("`dtl explain` shows what the layout would cost; compile with `data = 1` and `pipeline = 1` (no `parallel` block) to train here")
    )]
    MultiRank {
        world: u64,
        data: u64,
        pipeline: u64,
    },

    #[error("cannot resume from `{path}`: {message}")]
    #[diagnostic(code(dtl::run::resume))]
    Resume { path: String, message: String },

    #[error("cannot write `{path}`: {message}")]
    #[diagnostic(code(dtl::run::io))]
    Io { path: String, message: String },

    #[error("{message}")]
    #[diagnostic(code(dtl::run::device))]
    Device { message: String },
}

/// Adds context to libtorch's errors.
pub trait TorchContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, RunError>;
}

impl<T> TorchContext<T> for Result<T, tch::TchError> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, RunError> {
        self.map_err(|e| RunError::Torch {
            context: context(),
            message: first_line(&e.to_string()),
        })
    }
}

/// libtorch messages carry a C++ backtrace after the first line.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}

/// For in-place libtorch calls, whose returned alias is not needed.
pub trait InPlace {
    fn in_place(self, context: impl FnOnce() -> String) -> Result<(), RunError>;
}

impl InPlace for Result<tch::Tensor, tch::TchError> {
    fn in_place(self, context: impl FnOnce() -> String) -> Result<(), RunError> {
        self.context(context).map(drop)
    }
}
