//! Property test of the front end: mutated versions of every corpus file and
//! example never make the compiler panic, and every diagnostic's span lies
//! inside the file, on character boundaries. Deterministic (a fixed seed),
//! so a failure names the mutant that caused it.

use std::path::{Path, PathBuf};

use dtl_compiler::util::mutate::{below, floor_boundary, mutate};
use dtl_compiler::util::rng::Rng;

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["tests/cases/ok", "tests/cases/err", "examples"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "dtl") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Settings a user might override, and values from the ordinary to the
/// hostile; a pair that `--set` cannot parse is not used.
const OVERRIDE_KEYS: [&str; 9] = [
    "train.steps",
    "train.micro_batch",
    "train.accumulate",
    "train.optimizer.lr",
    "train.warmup",
    "train.seed",
    "parallel.data",
    "parallel.bucket_mb",
    "parallel.micro_batches",
];
const OVERRIDE_VALUES: [&str; 10] = [
    "0",
    "1",
    "-3",
    "7",
    "64",
    "1e12",
    "9223372036854775807",
    "2.5",
    "auto",
    "x",
];

/// How far the mutants got, for the report.
#[derive(Default)]
struct Reached {
    mutants: usize,
    parsed: usize,
    checked: usize,
    compiled: usize,
}

#[test]
fn mutated_inputs_never_panic_and_spans_stay_inside_the_file() {
    let files = corpus();
    assert!(files.len() > 50);
    let mut rng = Rng::from_state(0xD71);
    let mut reached = Reached::default();
    for path in &files {
        let original = std::fs::read_to_string(path).unwrap();
        for n in 0..60 {
            // One input in five goes through as it is; one in five is
            // changed only by its `--world` and `--set`; the rest mutate.
            let (text, hostile_options) = match n % 5 {
                0 => (original.clone(), false),
                1 => (original.clone(), true),
                _ => (mutate(&original, &mut rng), below(&mut rng, 2) == 0),
            };
            // Mostly the world a file's layout fixes; now and then another.
            let world = match (hostile_options, below(&mut rng, 2)) {
                (false, _) => Vec::new(),
                (true, 0) => vec![1],
                (true, _) => vec![1 + below(&mut rng, 8) as u64],
            };
            let count = if hostile_options {
                1 + below(&mut rng, 2)
            } else {
                0
            };
            let overrides: Vec<_> = (0..count)
                .filter_map(|_| {
                    let key = OVERRIDE_KEYS[below(&mut rng, OVERRIDE_KEYS.len())];
                    let value = OVERRIDE_VALUES[below(&mut rng, OVERRIDE_VALUES.len())];
                    dtl_compiler::overrides::parse(&format!("{key}={value}")).ok()
                })
                .collect();
            let options = dtl_compiler::check::Options {
                base_dir: path.parent().unwrap().to_path_buf(),
                probe_data: n % 10 == 0,
                world: world.clone(),
                overrides,
                strict: false,
                data_limits: Default::default(),
                memory_limit: None,
            };
            let label = format!("a mutant of {} (--world {world:?})", path.display());
            let result = std::panic::catch_unwind(|| {
                let parsed = dtl_compiler::syntax::parse(&text).1.is_empty();
                let checked = dtl_compiler::check_source("fuzz.dtl", &text, &options).is_ok();
                let compiled = dtl_compiler::compile_source("fuzz.dtl", &text, &options);
                // What compiles is explained and drawn too.
                if let Ok(plan) = &compiled {
                    let cost = dtl_compiler::tools::explain::cost(plan);
                    let _ = cost.render(plan);
                    let _ = dtl_compiler::tools::graph::model_dot(
                        plan,
                        &plan.topology.stage_of_nodes(),
                    );
                    let back = dtl_compiler::plan::Plan::from_text(&plan.to_yaml())
                        .expect("a plan reads back");
                    assert_eq!(&back, plan, "YAML round trip");
                }
                (parsed, checked, compiled)
            });
            let (parsed, checked, outcome) =
                result.unwrap_or_else(|_| panic!("panic on {label}:\n{text}"));
            reached.mutants += 1;
            reached.parsed += usize::from(parsed);
            reached.checked += usize::from(checked);
            reached.compiled += usize::from(outcome.is_ok());
            if let Err(diagnostics) = outcome {
                assert!(
                    !diagnostics.is_empty(),
                    "an error without diagnostics on {label}:\n{text}"
                );
                let _ = diagnostics.render_human(false);
                for record in diagnostics.records() {
                    let inside = record.start <= record.end && record.end <= text.len();
                    let on_chars =
                        text.is_char_boundary(record.start) && text.is_char_boundary(record.end);
                    assert!(
                        inside && on_chars,
                        "span {}..{} of `{}` is outside {label}:\n{text}",
                        record.start,
                        record.end,
                        record.code,
                    );
                }
            }
        }
    }
    let share = |n: usize| 100.0 * n as f64 / reached.mutants as f64;
    eprintln!(
        "fuzz: {} inputs; {:.1}% parse, {:.1}% check, {:.1}% compile (and are explained and drawn)",
        reached.mutants,
        share(reached.parsed),
        share(reached.checked),
        share(reached.compiled)
    );
    assert!(reached.mutants > 7000, "{}", reached.mutants);
    // The mutants must reach every stage, or the later stages go unfuzzed
    // (half the corpus is error cases, which never compile).
    assert!(share(reached.parsed) > 25.0 && share(reached.compiled) > 5.0);
}

/// What an editor asks while a file is being typed: hover, definition and
/// completion at any offset of any mutant never panic, and what they point
/// at lies inside the file.
#[test]
fn editor_queries_never_panic_on_mutants() {
    let mut rng = Rng::from_state(0xED17);
    let mut asked = 0;
    for path in corpus() {
        let original = std::fs::read_to_string(&path).unwrap();
        for _ in 0..20 {
            let text = mutate(&original, &mut rng);
            let options = dtl_compiler::options_for(&path, false);
            let offsets: Vec<usize> = (0..10)
                .map(|_| floor_boundary(&text, below(&mut rng, text.len() + 1)))
                .collect();
            let result = std::panic::catch_unwind(|| {
                let analysis = dtl_compiler::tools::analysis::analyze("fuzz.dtl", &text, &options);
                for &offset in &offsets {
                    if let Some((span, _)) = analysis.hover(offset) {
                        assert!(span.end <= text.len());
                    }
                    // A module of an imported file: a span in that file.
                    if let Some(span) = analysis.definition(offset) {
                        assert!(span.end <= text.len() || analysis.locate(span).is_some());
                    }
                    analysis.completions(offset);
                }
            });
            assert!(
                result.is_ok(),
                "panic on a mutant of {}:\n{text}",
                path.display()
            );
            asked += 1;
        }
    }
    assert!(asked > 1000, "{asked}");
}
