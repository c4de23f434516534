//! Warnings: things that are legal but probably not what was meant. They are
//! reported with the errors and never fail `dtl check`.

use miette::Diagnostic;
use thiserror::Error;

use crate::span::Span;

#[derive(Debug, Clone, Error, Diagnostic, PartialEq)]
pub enum Lint {
    #[error("the schedule's min_lr {min_lr} is above the optimizer's lr {lr}: the rate would rise as it decays")]
    #[diagnostic(
        code(dtl::lint::min_lr),
        severity(Warning),
        help("`min_lr` is the rate cosine decays to, below `lr` (often lr / 10)")
    )]
    MinLrAboveLr {
        min_lr: f64,
        lr: f64,
        #[label("above lr")]
        span: Span,
    },

    #[error("{path}: {words}")]
    #[diagnostic(
        code(dtl::lint::skipped_rows),
        severity(Warning),
        help("`on_bad_row = skip` leaves them out of training; mend the file, or drop the setting to see each error")
    )]
    SkippedRows {
        path: String,
        words: String,
        #[label("read with `on_bad_row = skip`")]
        span: Span,
    },

    #[error("{kind} `{name}` is never used")]
    #[diagnostic(code(dtl::lint::unused_module), severity(Warning))]
    UnusedModule {
        kind: &'static str,
        name: String,
        #[label("not part of the trained model")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` is computed but never used")]
    #[diagnostic(
        code(dtl::lint::unused_let),
        severity(Warning),
        help("use it in the result, or remove the `let`")
    )]
    UnusedLet {
        name: String,
        #[label("never used")]
        span: Span,
    },

    #[error("learning rate {lr} is outside the usual range for {optimizer} ({range})")]
    #[diagnostic(code(dtl::lint::learning_rate), severity(Warning))]
    LearningRate {
        lr: f64,
        optimizer: &'static str,
        range: &'static str,
        #[label("unusual")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{layers} layers with weights and no gradient clipping")]
    #[diagnostic(
        code(dtl::lint::no_clipping),
        severity(Warning),
        help("add `clip = norm(1.0)`: deep networks are prone to exploding gradients")
    )]
    NoClipping {
        layers: usize,
        #[label("no `clip` in this block")]
        span: Span,
    },

    #[error("{micro_batches} micro-batches for {stages} pipeline stages leave the pipeline idle {bubble} of the time")]
    #[diagnostic(
        code(dtl::lint::pipeline_bubble),
        severity(Warning),
        help("use at least as many micro-batches as stages (4× keeps the bubble under 20%)")
    )]
    PipelineBubble {
        micro_batches: u64,
        stages: u64,
        bubble: String,
        #[label("fewer micro-batches than stages")]
        span: Span,
    },

    #[error("batch norm sees the pipeline's pieces of {piece} rows, not micro-batches of {micro_batch}: its statistics, and so the losses, differ from one process's")]
    #[diagnostic(
        code(dtl::lint::pipeline_batch_norm),
        severity(Warning),
        help("`micro_batches = 1` keeps the statistics exact (and the pipeline idle); layer_norm or group_norm do not depend on the rows at all")
    )]
    PipelineBatchNorm {
        piece: u64,
        micro_batch: u64,
        #[label("{micro_batches} pieces per micro-batch")]
        span: Span,
        micro_batches: u64,
    },

    #[error("`{key}` applies to pipeline stages; with one stage it does nothing")]
    #[diagnostic(
        code(dtl::lint::no_pipeline),
        severity(Warning),
        help("set `pipeline` to the number of stages, or remove `{key}` (gradient accumulation over smaller batches is `accumulate` in `train`)")
    )]
    NoPipeline {
        key: &'static str,
        #[label("ignored without `pipeline`")]
        span: Span,
    },

    #[error("`{path}` leads out of the project folder {project}")]
    #[diagnostic(
        code(dtl::lint::path_outside_project),
        severity(Warning),
        help("keep the data inside the project, or name it by an absolute path; `dtl check --strict` makes this an error")
    )]
    PathOutsideProject {
        path: String,
        project: String,
        #[label("outside the project")]
        span: Span,
    },

    #[error("{message}")]
    #[diagnostic(code(dtl::lint::loss_input), severity(Warning))]
    LossInput {
        message: String,
        #[label("this loss")]
        span: Span,
        #[help]
        help: String,
    },

    #[error("`shard = {mode}` with one replica per stage splits nothing")]
    #[diagnostic(
        code(dtl::lint::shard_one_replica),
        severity(Warning),
        help("shard over data-parallel replicas: set `data` above 1, or drop `shard`")
    )]
    ShardOneReplica {
        mode: &'static str,
        #[label("data = 1")]
        span: Span,
    },

    #[error("`shard = parameters` on a model without blocks: its one unit is every parameter, gathered whole on every replica for the whole step")]
    #[diagnostic(
        code(dtl::lint::shard_one_unit),
        severity(Warning),
        help("the model's module instances and the copies of its `repeat`s are the units gathered one at a time: build the model from them, or use `shard = gradients`, which holds the same weights for less communication")
    )]
    ShardOneUnit {
        #[label("one unit")]
        span: Span,
    },

    #[error("{layer} stays whole on every tensor rank: its vocabulary, {vocabulary}, does not split into {t} equal parts ({values} values on every rank)")]
    #[diagnostic(code(dtl::lint::tensor_vocabulary), severity(Warning))]
    TensorVocabWhole {
        layer: String,
        vocabulary: i64,
        t: u64,
        values: u64,
        #[label("not split over tensor = {t}")]
        span: Span,
        #[help]
        help: String,
    },

    #[error("a rank needs {needed} by `dtl explain`'s estimate{world}, over the {limit} of `--memory`; the biggest: {biggest}")]
    #[diagnostic(code(dtl::lint::memory), severity(Warning))]
    Memory {
        needed: String,
        world: String,
        limit: String,
        biggest: String,
        #[label("this training does not fit")]
        span: Span,
        /// The layouts of the same ranks that fit, or what else to try.
        #[help]
        help: String,
    },

    /// `cross_entropy` applies log-softmax itself: a model that ends with
    /// `softmax` trains on the log of probabilities squashed twice.
    #[error("the model ends with `{layer}`, but cross_entropy applies log_softmax itself")]
    #[diagnostic(code(dtl::lint::softmax_before_loss), severity(Warning))]
    SoftmaxBeforeLoss {
        layer: &'static str,
        /// The layer, as the user would name it.
        #[label("`{name}` gives {what}")]
        span: Span,
        name: String,
        what: &'static str,
        #[label("takes raw scores (logits)")]
        loss: Span,
        #[help]
        help: String,
    },
}

impl Lint {
    pub fn span(&self) -> Span {
        match self {
            Lint::MinLrAboveLr { span, .. }
            | Lint::SkippedRows { span, .. }
            | Lint::UnusedModule { span, .. }
            | Lint::UnusedLet { span, .. }
            | Lint::LearningRate { span, .. }
            | Lint::NoClipping { span, .. }
            | Lint::PipelineBubble { span, .. }
            | Lint::PipelineBatchNorm { span, .. }
            | Lint::NoPipeline { span, .. }
            | Lint::PathOutsideProject { span, .. }
            | Lint::Memory { span, .. }
            | Lint::ShardOneReplica { span, .. }
            | Lint::ShardOneUnit { span }
            | Lint::TensorVocabWhole { span, .. }
            | Lint::LossInput { span, .. }
            | Lint::SoftmaxBeforeLoss { span, .. } => *span,
        }
    }
}
