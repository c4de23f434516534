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

    #[error("rank {rank}: {ranks} ranks were started, but the plan is for {plan} (data {data} × pipeline {pipeline})")]
    #[diagnostic(
        code(dtl::run::world_size),
        help("start as many ranks as the plan has (`mpirun -n {plan} dtl run ...`, or `dtl run FILE` and let it start them), or compile for this world size: `dtl run FILE --world {ranks}` with `data = auto`")
    )]
    WorldSize {
        rank: usize,
        ranks: usize,
        plan: usize,
        data: u64,
        pipeline: u64,
    },

    /// A collective backend that is missing or cannot start.
    #[error("{message}")]
    #[diagnostic(code(dtl::run::backend))]
    Backend { message: String },

    /// Starting the ranks failed.
    #[error("{message}")]
    #[diagnostic(code(dtl::run::launch))]
    Launch { message: String },

    /// Ctrl-C or SIGTERM: the run stopped at a step boundary and wrote a
    /// checkpoint.
    #[error("stopped by {signal} after step {step}; a checkpoint of that step is in {out}")]
    #[diagnostic(
        code(dtl::run::interrupted),
        help("continue with `dtl run --resume {out}`")
    )]
    Interrupted {
        step: u64,
        signal: &'static str,
        /// The signal's number (the exit code is 128 + it).
        number: i32,
        out: String,
    },

    /// A collective failed during training.
    #[error("step {step}: {message}")]
    #[diagnostic(code(dtl::run::collective))]
    Collective { step: u64, message: String },

    /// A step the ranks decided together to stop at: another rank's loss or
    /// gradients were not finite.
    #[error("step {step}: the {what} is not finite on rank(s) {ranks}; {kept}")]
    #[diagnostic(
        code(dtl::run::non_finite),
        help("lower the learning rate, add `clip = norm(1.0)`, or set `on_nan = skip` in the train block to drop such steps")
    )]
    NonFiniteOnRanks {
        step: u64,
        what: &'static str,
        ranks: String,
        kept: String,
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

    /// The run folder cannot be this run's: it holds another run, or
    /// another run is using it.
    #[error("run folder `{path}`: {message}")]
    #[diagnostic(code(dtl::run::folder))]
    RunFolder { path: String, message: String },

    /// The run would not fit in this machine's memory.
    #[error("not enough memory: {message}")]
    #[diagnostic(
        code(dtl::run::memory),
        help("use more ranks (pipeline stages split the model), a smaller micro_batch, or `--force` to try anyway")
    )]
    Memory { message: String },

    /// A tensor could not be allocated.
    #[error("cannot allocate `{tensor}` ({bytes} bytes): out of memory")]
    #[diagnostic(code(dtl::run::allocation))]
    Allocation { tensor: String, bytes: u64 },

    /// A weights file (`--init`, `init = weights(…)`) that does not fit the
    /// model.
    #[error("`tensor = {tensor}`: the runtime does not run tensor parallelism {what} yet (`dtl explain` shows the layout, its collectives and its memory per rank)")]
    #[diagnostic(
        code(dtl::run::tensor),
        help("tensor parallelism runs with `data` and `pipeline`, in float32, bf16 or tf32; for this run, use `tensor = 1`")
    )]
    TensorNotRun { tensor: u64, what: String },

    #[error("weights file `{path}`: {message}")]
    #[diagnostic(code(dtl::run::weights))]
    Weights { path: String, message: String },
}

impl RunError {
    /// Errors of the set-up, found before anything ran or was written: the
    /// command line's exit code 2 rather than 1.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            RunError::WorldSize { .. }
                | RunError::TensorNotRun { .. }
                | RunError::Backend { .. }
                | RunError::Launch { .. }
                | RunError::Device { .. }
                | RunError::RunFolder { .. }
                | RunError::Memory { .. }
        )
    }

    /// Errors every rank of a run meets at the same point, from values the
    /// ranks agreed on (a non-finite averaged loss or gradient): each rank
    /// stops by itself, nobody is left waiting.
    pub fn is_collective(&self) -> bool {
        matches!(
            self,
            RunError::NonFinite { .. }
                | RunError::NonFiniteOnRanks { .. }
                | RunError::Interrupted { .. }
        )
    }

    /// The process's exit code for this error: 2 for set-up errors, 128 +
    /// the signal for an interrupted run, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Interrupted { number, .. } => (128 + number).clamp(1, 255) as u8,
            error if error.is_setup() => 2,
            _ => 1,
        }
    }
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
