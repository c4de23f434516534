//! The commands that need the runtime: `run` and `test`. Without the
//! `runtime` feature they explain how to get it.

use std::path::PathBuf;

use dtl_compiler::input::{Input, Request};

use crate::{load_plan, Failure};
#[cfg(feature = "runtime")]
use crate::{read, report};

/// Runs every module test of every file; a pytest-like summary line at the end.
#[cfg(feature = "runtime")]
pub fn test(files: &[PathBuf], seed: u64, request: &Request) -> Result<(), Failure> {
    ensure_reproducible_mkl();
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in files {
        let text = read(path)?;
        let name = path.display().to_string();
        let mut options = request.options(path);
        options.probe_data = false;
        let checked = match dtl_compiler::check_source(&name, &text, &options) {
            Ok(checked) => checked,
            Err(diagnostics) => {
                report(&diagnostics);
                return Err(Failure::errors());
            }
        };
        for test in &checked.tests {
            match dtl_runtime::module_test::run(test, seed) {
                Ok(failures) if failures.is_empty() => {
                    passed += 1;
                    out!("test {name}::{} ... ok", test.name);
                }
                Ok(failures) => {
                    failed += 1;
                    out!("test {name}::{} ... FAILED", test.name);
                    for failure in failures {
                        out!("    {failure}");
                    }
                }
                Err(err) => {
                    failed += 1;
                    out!("test {name}::{} ... FAILED", test.name);
                    out!("    {err}");
                }
            }
        }
    }
    out!("{passed} passed, {failed} failed");
    if failed > 0 {
        Err(Failure::errors())
    } else {
        Ok(())
    }
}

#[cfg(not(feature = "runtime"))]
pub fn test(_: &[PathBuf], _: u64, _: &Request) -> Result<(), Failure> {
    Err(Failure::usage("this dtl was built without the runtime (`--no-default-features`); rebuild with the default features to run tests".into()))
}

#[cfg(feature = "runtime")]
pub fn backend_info() -> String {
    dtl_runtime::backend_info()
}

#[cfg(not(feature = "runtime"))]
pub fn backend_info() -> String {
    "built without the runtime (check and compile only)".to_string()
}

/// MKL's multi-threaded matrix products are not run-to-run reproducible:
/// the same seeded run gave one of two results in the last bits about one
/// time in twenty on two threads (`MKL_CBWR=AUTO,STRICT` did not help; one
/// MKL thread did, 40 runs out of 40, with no loss of speed on the examples).
/// MKL reads its settings when libtorch is loaded, before `main`, so `run`
/// starts itself again with `MKL_NUM_THREADS=1`. A user's own setting is kept;
/// libtorch's other kernels still use every core.
#[cfg(feature = "runtime")]
fn ensure_reproducible_mkl() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MKL_NUM_THREADS").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MKL_NUM_THREADS", "1")
        .exec();
    // `exec` returns only when it failed: go on, less reproducibly.
    eprintln!("warning: could not restart with MKL_NUM_THREADS=1 ({err}); runs may differ in the last bits");
}

/// What `dtl run` was asked to do.
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct RunArgs {
    /// The experiment; `None` with `resume`.
    pub file: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub device: String,
    pub init: Option<PathBuf>,
    /// A run folder whose checkpoint to continue from.
    pub resume: Option<PathBuf>,
    pub quiet: bool,
}

#[cfg(feature = "runtime")]
pub fn run(args: RunArgs, request: &Request) -> Result<(), Failure> {
    ensure_reproducible_mkl();
    let device: dtl_runtime::DeviceChoice = args.device.parse().map_err(Failure::usage)?;
    let (plan, out_dir) = match (&args.resume, &args.file) {
        // A resumed run goes on with the plan it was started with.
        (Some(dir), _) => (
            load_plan(&Input::Plan(dir.join("plan.yaml")), request)?,
            dir.clone(),
        ),
        (None, Some(path)) => {
            let stem = path
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            let out = args.out.unwrap_or_else(|| PathBuf::from("runs").join(stem));
            (load_plan(&Input::of(path), request)?, out)
        }
        (None, None) => {
            return Err(Failure::usage(
                "give a .dtl file or plan to run, or --resume DIR".into(),
            ))
        }
    };
    let options = dtl_runtime::RunOptions {
        out_dir,
        device,
        progress: !args.quiet,
        init_weights: args.init,
        resume: args.resume.is_some(),
    };
    match dtl_runtime::train(&plan, &options) {
        Ok(summary) => {
            out!(
                "trained {} steps ({} epochs) on {} in {:.1}s: loss {:.4} -> {:.4}",
                summary.steps,
                summary.epochs,
                summary.device,
                summary.seconds,
                summary.first_loss,
                summary.final_loss
            );
            if let Some(step) = summary.resumed_from {
                out!("resumed from the checkpoint of step {step}");
            }
            if summary.skipped_steps > 0 {
                out!(
                    "{} steps skipped (loss or gradients not finite)",
                    summary.skipped_steps
                );
            }
            match summary.eval {
                Some(eval) if eval.eval_accuracy.is_some() => out!(
                    "held-out accuracy {:.2}% ({} rows), loss {:.4}",
                    eval.eval_accuracy.unwrap_or(0.0) * 100.0,
                    eval.eval_rows,
                    eval.eval_loss
                ),
                Some(eval) => out!(
                    "held-out loss {:.4} ({} rows)",
                    eval.eval_loss,
                    eval.eval_rows
                ),
                None => {}
            }
            out!("outputs in {}", summary.out_dir);
            Ok(())
        }
        Err(err) => {
            let report = miette::Report::new(err);
            eprintln!("{report:?}");
            Err(Failure::errors())
        }
    }
}

#[cfg(not(feature = "runtime"))]
pub fn run(args: RunArgs, request: &Request) -> Result<(), Failure> {
    if let Some(path) = &args.file {
        load_plan(&Input::of(path), request)?;
    }
    Err(Failure::usage("this dtl was built without the runtime (`--no-default-features`); rebuild with the default features to run".into()))
}
