//! dtl-compiler: the front end of dtl.
//!
//! The phases are the modules: [`syntax`] (grammar → [`ast`]), [`check`]
//! (names, types, shapes, batch arithmetic → a resolved experiment) and
//! [`plan`] (the execution plan the runtime runs). [`diagnostics`] renders
//! what the phases report. This crate may depend on neither libtorch nor MPI:
//! `dtl check` must run on a machine that has neither.

pub mod analysis;
pub mod ast;
pub mod check;
pub mod dataset;
pub mod diagnostics;
pub mod format;
pub mod graph;
pub mod overrides;
pub mod plan;
pub mod sarif;
pub mod span;
pub mod syntax;

use std::path::Path;

pub use diagnostics::Diagnostics;

/// A file that checked without errors, with its warnings.
pub struct Checked {
    /// `None` for a library file: modules and tests but no `train` block.
    pub experiment: Option<check::Experiment>,
    /// Module tests whose shape claims hold, for `dtl test`.
    pub tests: Vec<plan::TestPlan>,
    pub warnings: Diagnostics,
}

/// Parses and checks one file. `name` is how diagnostics name it. Errors
/// (with any warnings) come back as `Err`.
pub fn check_source(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<Checked, Diagnostics> {
    let (file, syntax_errors) = syntax::parse(text);
    let mut diagnostics = Diagnostics::new(name, text);
    if !syntax_errors.is_empty() {
        for err in syntax_errors {
            diagnostics.push(err);
        }
        return Err(diagnostics);
    }
    let mut file = file;
    if let Err(message) = overrides::apply(&mut file, &options.overrides) {
        diagnostics.push(check::CheckError::BadOverride {
            message,
            span: span::Span::new(0, 0),
        });
        return Err(diagnostics);
    }
    let checked = check::check(&file, options);
    let mut items: Vec<(span::Span, bool, usize)> = Vec::new();
    items.extend(
        checked
            .errors
            .iter()
            .enumerate()
            .map(|(i, e)| (e.span(), true, i)),
    );
    items.extend(
        checked
            .lints
            .iter()
            .enumerate()
            .map(|(i, l)| (l.span(), false, i)),
    );
    items.sort();
    for (_, is_error, i) in items {
        if is_error {
            diagnostics.push(checked.errors[i].clone());
        } else {
            diagnostics.push(checked.lints[i].clone());
        }
    }
    if diagnostics.error_count() > 0 {
        return Err(diagnostics);
    }
    Ok(Checked {
        experiment: checked.experiment,
        tests: checked.tests,
        warnings: diagnostics,
    })
}

/// Parses, checks and plans one file; warnings are dropped (see
/// [`compile_source_with_warnings`]).
pub fn compile_source(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<plan::Plan, Diagnostics> {
    compile_source_with_warnings(name, text, options).map(|(plan, _)| plan)
}

/// Parses, checks and plans one file, keeping the warnings. A library file
/// (no `train` block) has nothing to plan: that is an error here.
pub fn compile_source_with_warnings(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<(plan::Plan, Diagnostics), Diagnostics> {
    let checked = check_source(name, text, options)?;
    match checked.experiment {
        // `data = auto` is resolved by the one world size a plan is for.
        Some(experiment) if experiment.parallel.data == 0 => {
            let mut diagnostics = checked.warnings;
            diagnostics.push(check::CheckError::MissingItem {
                message: "`data = auto`: a plan is for one world size, and none was given".into(),
                span: span::Span::new(0, 0),
                help: Some(
                    "give it: `dtl compile FILE --world 8` (or set `data` to a number)".into(),
                ),
            });
            Err(diagnostics)
        }
        Some(experiment) => Ok((plan::build(experiment, name), checked.warnings)),
        None => {
            let mut diagnostics = checked.warnings;
            diagnostics.push(check::CheckError::MissingItem {
                message: "no `train` block: nothing to train (the file's tests still run with `dtl test`)".into(),
                span: span::Span::new(0, 0),
                help: Some("add `train { model = ...; data = ...; ... }`".into()),
            });
            Err(diagnostics)
        }
    }
}

/// The options for a file at `path`: data paths start from its folder.
pub fn options_for(path: &Path, probe_data: bool) -> check::Options {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    check::Options {
        base_dir,
        probe_data,
        world: Vec::new(),
        overrides: Vec::new(),
    }
}
