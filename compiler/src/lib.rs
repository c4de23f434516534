//! dtl-compiler: the front end of dtl.
//!
//! The phases are the modules: [`syntax`] (grammar → [`ast`]), [`check`]
//! (names, types, shapes, batch arithmetic → a resolved experiment) and
//! [`plan`] (the execution plan the runtime runs). [`diagnostics`] renders
//! what the phases report. This crate may depend on neither libtorch nor MPI:
//! `dtl check` must run on a machine that has neither.

pub mod ast;
pub mod check;
pub mod dataset;
pub mod diagnostics;
pub mod plan;
pub mod span;
pub mod syntax;

use std::path::Path;

pub use diagnostics::Diagnostics;

/// Parses and checks one file. `name` is how diagnostics name it.
pub fn check_source(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<check::Experiment, Diagnostics> {
    let (file, syntax_errors) = syntax::parse(text);
    let mut diagnostics = Diagnostics::new(name, text);
    if !syntax_errors.is_empty() {
        for err in syntax_errors {
            diagnostics.push(err);
        }
        return Err(diagnostics);
    }
    let (experiment, check_errors) = check::check(&file, options);
    for err in check_errors {
        diagnostics.push(err);
    }
    match experiment {
        Some(experiment) if diagnostics.is_empty() => Ok(experiment),
        _ => Err(diagnostics),
    }
}

/// Parses, checks and plans one file.
pub fn compile_source(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<plan::Plan, Diagnostics> {
    check_source(name, text, options).map(|experiment| plan::build(experiment, name))
}

/// The options for a file at `path`: data paths start from its folder.
pub fn options_for(path: &Path, probe_data: bool) -> check::Options {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    check::Options {
        base_dir,
        probe_data,
    }
}
