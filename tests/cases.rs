//! The golden case corpus: every `tests/cases/err/*.dtl` must fail with
//! exactly the diagnostics in its `.stderr` file (miette's plain rendering),
//! and every `tests/cases/ok/*.dtl` must compile to exactly its `.plan.yaml`.
//! `DTL_BLESS=1 cargo test --test cases` rewrites the expected files.

mod common;

use std::path::{Path, PathBuf};

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dtl"))
        .collect();
    files.sort();
    files
}

/// Compares with the golden file, or writes it under DTL_BLESS.
fn golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if common::bless() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs.\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(_) => failures.push(format!(
            "{} is missing (run with DTL_BLESS=1)",
            path.display()
        )),
    }
}

/// A path relative to the package root, as the CLI would be given it.
fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .to_path_buf()
}

#[test]
fn error_cases_report_their_golden_diagnostics() {
    let files = cases("err");
    assert!(
        files.len() >= 30,
        "the error corpus shrank to {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let rel = relative(path);
        let text = std::fs::read_to_string(path).unwrap();
        let name = rel.file_name().unwrap().to_string_lossy().to_string();
        let options = dtl_compiler::options_for(&rel, true);
        match dtl_compiler::compile_source(&name, &text, &options) {
            Ok(_) => failures.push(format!(
                "{} compiled, but it is an error case",
                rel.display()
            )),
            Err(diagnostics) => {
                for record in diagnostics.records() {
                    assert!(
                        record.end <= text.len(),
                        "{}: span past the end of the file",
                        rel.display()
                    );
                    assert!(
                        !record.code.is_empty(),
                        "{}: a diagnostic without a code",
                        rel.display()
                    );
                }
                golden(
                    &path.with_extension("stderr"),
                    &diagnostics.render_human(false),
                    &mut failures,
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn ok_cases_compile_to_their_golden_plans() {
    let files = cases("ok");
    assert!(files.len() >= 4);
    let mut failures = Vec::new();
    for path in &files {
        let rel = relative(path);
        let text = std::fs::read_to_string(path).unwrap();
        let name = rel.display().to_string();
        // Paths in the plan are relative to where dtl runs: the package root.
        let options = dtl_compiler::options_for(&rel, true);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            cwd,
            Path::new(env!("CARGO_MANIFEST_DIR")),
            "tests run from the package root"
        );
        match dtl_compiler::compile_source_with_warnings(&name, &text, &options) {
            Ok((plan, warnings)) => {
                // Warnings are golden too: `<case>.warnings`, absent when none.
                let warnings_path = path.with_extension("warnings");
                let rendered = warnings.render_human(false);
                if !rendered.is_empty() || warnings_path.exists() {
                    if common::bless() && rendered.is_empty() {
                        std::fs::remove_file(&warnings_path).unwrap();
                    } else {
                        golden(&warnings_path, &rendered, &mut failures);
                    }
                }
                let yaml = plan.to_yaml();
                let back = dtl_compiler::plan::Plan::from_text(&yaml).expect("the plan reads back");
                assert_eq!(back, plan, "{}: YAML round trip", rel.display());
                golden(&path.with_extension("plan.yaml"), &yaml, &mut failures);
            }
            Err(diagnostics) => failures.push(format!(
                "{} should compile:\n{}",
                rel.display(),
                diagnostics.render_human(false)
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Whatever the checker accepts, the runtime runs: every valid case trains
/// (briefly) without an error, parallel ones over their ranks.
#[test]
fn every_valid_case_runs() {
    let mut failures = Vec::new();
    for path in cases("ok") {
        let rel = relative(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let plan =
            dtl_compiler::compile_source("case", &text, &dtl_compiler::options_for(&rel, true))
                .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
        let run = |set: &[&str]| {
            let out = tempfile::tempdir().unwrap();
            std::process::Command::new(env!("CARGO_BIN_EXE_dtl"))
                .args(["run", "--quiet", "--device", "cpu", "--out"])
                .arg(out.path())
                .args(set)
                .arg(&rel)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap()
        };
        let output = run(&[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // NCCL needs a GPU: refused on the CPU, and trained over MPI.
        let output = if plan.topology.parallelism.backend == dtl_compiler::plan::Backend::Nccl {
            if output.status.code() != Some(2) || !stderr.contains("works on CUDA tensors") {
                failures.push(format!(
                    "{}: NCCL on the CPU not refused:\n{stderr}",
                    rel.display()
                ));
            }
            run(&["--set", "parallel.backend=mpi"])
        } else {
            output
        };
        if !output.status.success() {
            failures.push(format!(
                "{}:\n{}",
                rel.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
