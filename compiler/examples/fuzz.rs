//! The front end under a long fuzz (not part of `cargo test`): mutants of
//! every corpus file and example, each parsed, checked, compiled (and the
//! plan explained), formatted, and asked the editor's questions (hover,
//! definition, completion at random offsets). It fails — exit 1, naming
//! the input — on a panic, on an error whose span leaves the file, or on
//! an input that takes longer than `--limit-ms`; an abort (a stack
//! overflow) ends the process, which `scripts/fuzz.sh` reports.
//!
//!     cargo run --release -p dtl-compiler --example fuzz -- --inputs 1000000
//!
//! Deterministic: `--seed` fixes every mutant.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dtl_compiler::util::mutate::{below, mutate};
use dtl_compiler::util::rng::Rng;

struct Args {
    inputs: u64,
    seed: u64,
    limit: Duration,
}

fn args() -> Args {
    let mut out = Args {
        inputs: 1_000_000,
        seed: 1,
        limit: Duration::from_millis(2000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match arg.as_str() {
            "--inputs" => out.inputs = value(),
            "--seed" => out.seed = value(),
            "--limit-ms" => out.limit = Duration::from_millis(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

fn corpus() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["tests/cases/ok", "tests/cases/err", "examples"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("the corpus") {
            let path = entry.expect("an entry").path();
            if path.extension().is_some_and(|e| e == "dtl") {
                let text = std::fs::read_to_string(&path).expect("readable");
                files.push((path, text));
            }
        }
    }
    files.sort();
    files
}

/// Every phase on one input; `Err` says what went wrong.
fn exercise(text: &str, base: &Path, rng: &mut Rng) -> Result<(usize, bool), String> {
    let options = dtl_compiler::check::Options {
        base_dir: base.to_path_buf(),
        probe_data: false,
        world: Vec::new(),
        overrides: Vec::new(),
        strict: false,
        data_limits: Default::default(),
        memory_limit: None,
    };
    let mut errors = 0;
    let compiled = dtl_compiler::compile_source("fuzz.dtl", text, &options);
    let ok = compiled.is_ok();
    match &compiled {
        Ok(plan) => {
            let cost = dtl_compiler::tools::explain::cost(plan);
            let _ = cost.render(plan);
        }
        Err(diagnostics) => {
            for record in diagnostics.records() {
                errors += 1;
                let inside = record.start <= record.end && record.end <= text.len();
                if !inside
                    || !text.is_char_boundary(record.start)
                    || !text.is_char_boundary(record.end)
                {
                    return Err(format!(
                        "span {}..{} of `{}` is outside the file",
                        record.start, record.end, record.code
                    ));
                }
            }
            let _ = diagnostics.render_human(false);
        }
    }
    if let Ok(formatted) = dtl_compiler::tools::format::format_source(text) {
        // The formatter keeps the meaning: its output parses again.
        if !dtl_compiler::syntax::parse(&formatted).1.is_empty() {
            return Err("the formatter's output does not parse".into());
        }
    }
    let analysis = dtl_compiler::tools::analysis::analyze("fuzz.dtl", text, &options);
    for _ in 0..3 {
        let at = dtl_compiler::util::mutate::floor_boundary(text, below(rng, text.len() + 1));
        if let Some((span, _)) = analysis.hover(at) {
            if span.end > text.len() {
                return Err(format!("hover at {at} points past the end"));
            }
        }
        if let Some(span) = analysis.definition(at) {
            // A module of an imported file: a span in that file.
            if span.end > text.len() && analysis.locate(span).is_none() {
                return Err(format!("definition at {at} points past the end"));
            }
        }
        let _ = analysis.completions(at);
    }
    Ok((errors, ok))
}

fn main() {
    let args = args();
    let files = corpus();
    let mut rng = Rng::from_state(args.seed);
    let started = Instant::now();
    let (mut compiled, mut diagnostics, mut slowest) = (0u64, 0u64, Duration::ZERO);
    for n in 0..args.inputs {
        let (path, original) = &files[below(&mut rng, files.len())];
        let text = mutate(original, &mut rng);
        let base = path.parent().unwrap_or(Path::new("."));
        let at = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exercise(&text, base, &mut rng)
        }));
        let took = at.elapsed();
        slowest = slowest.max(took);
        let fail = |why: String| -> ! {
            let dump = std::env::temp_dir().join(format!("dtl-fuzz-{n}.dtl"));
            let _ = std::fs::write(&dump, &text);
            eprintln!(
                "input {n} (a mutant of {}): {why}; written to {}",
                path.display(),
                dump.display()
            );
            std::process::exit(1);
        };
        match outcome {
            Ok(Ok((errors, ok))) => {
                diagnostics += errors as u64;
                compiled += u64::from(ok);
            }
            Ok(Err(why)) => fail(why),
            Err(_) => fail("a panic".into()),
        }
        if took > args.limit {
            fail(format!("took {took:?}, more than the limit"));
        }
        if (n + 1) % 100_000 == 0 {
            eprintln!("{} inputs, {:.0} s", n + 1, started.elapsed().as_secs_f64());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} inputs in {seconds:.0} s ({:.0} per second): no panic, no abort, no input over {:?} (slowest {:.1} ms); {compiled} compiled, {diagnostics} diagnostics, every span inside its file",
        args.inputs,
        args.inputs as f64 / seconds,
        args.limit,
        slowest.as_secs_f64() * 1e3
    );
}
