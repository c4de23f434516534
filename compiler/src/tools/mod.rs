//! The tools around the phases: each reads what a phase produced and
//! answers a question about it for a person or another program. None of
//! them is a phase, and no phase may import them (`compiler/tests/phases.rs`).
//!
//! - [`analysis`]: what an editor asks of a file (diagnostics, shapes under
//!   the cursor, definitions, completions), for `dtl lsp`.
//! - [`calls`]: the call around an editor's cursor and its signature.
//! - [`hints`]: inlay hints, the shapes and parameter counts inferred.
//! - [`outline`]: a file's symbols and folding ranges, for editors.
//! - [`actions`]: quick fixes on diagnostics (did-you-mean, a missing
//!   setting).
//! - [`lens`]: `dtl explain`'s figures above `train` and `parallel`.
//! - [`rename`]: references to a name, and renaming it, by scope.
//! - [`semantic`]: semantic tokens, each word as the checker knows it.
//! - [`format`]: `dtl fmt`, the canonical layout of a file, comments kept.
//! - [`explain`]: `dtl explain`, the cost of one training step, from a plan.
//! - [`cluster`] and [`predict`]: `dtl explain --cluster`, a cluster's
//!   description and the step predicted on it.
//! - [`layout`]: `dtl layout`, the layouts of a file on a cluster, ranked
//!   by their predicted step.
//! - [`graph`]: `dtl graph`, pictures of a plan's model and pipeline.
//! - [`sarif`]: diagnostics as SARIF, for code-scanning services.

pub mod actions;
pub mod analysis;
pub mod calls;
pub mod cluster;
pub mod explain;
pub mod format;
pub mod graph;
pub mod hints;
pub mod layout;
pub mod lens;
pub mod outline;
pub mod predict;
pub mod rename;
pub mod sarif;
pub mod semantic;
