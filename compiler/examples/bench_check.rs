//! Benchmark (not a test): how `dtl check`'s front end scales with file size.
//!
//!     cargo run --release -p dtl-compiler --example bench_check
//!     target/release/examples/bench_check --lines 1000000 --what fmt
//!
//! Generates files of 1,000 to 20,000 lines (modules of ten lines, each used
//! once by the model, so elaboration grows with the file), parses and checks
//! each several times, and prints the time per 1,000 lines and its ratio to
//! the smallest file's: about 1.0 at every size means linear growth. With
//! `--lines N --what check|fmt` it times one size once and prints one line
//! (`scripts/bench-front-end.sh` runs it per size under `/usr/bin/time` for
//! the peak memory).

use std::time::Instant;

/// A file of about `lines` lines: `lines / 10` modules chained by the model.
fn generate(lines: usize) -> String {
    let modules = (lines / 10).max(1);
    let mut text = String::new();
    for i in 0..modules {
        text.push_str(&format!(
            "// block {i}\nmodule Block{i}(d: int, p: float = 0.1) {{\n  fc = linear(d, d)\n  norm = layer_norm(d)\n  forward(x: [B, d]) -> [B, d] {{\n    let h = x |> norm |> fc |> gelu\n    x + (h |> dropout(p))\n  }}\n}}\n\n"
        ));
    }
    text.push_str("model Net {\n  forward(x: [B, 64]) -> [B, 10] {\n    x\n");
    for i in 0..modules {
        text.push_str(&format!("      |> Block{i}(64)\n"));
    }
    text.push_str("      |> linear(64, 10)\n  }\n}\n");
    text.push_str("data digits { source = csv(\"digits.csv\") }\n");
    text.push_str("train { model = Net; data = digits; loss = cross_entropy; optimizer = adamw(lr: 1e-3); steps = 10; micro_batch = 8 }\n");
    text
}

/// `--lines N --what check|fmt`: one size, one line.
fn one(lines: usize, what: &str) {
    let text = generate(lines);
    let actual = text.lines().count();
    let start = Instant::now();
    match what {
        "check" => {
            let options = dtl_compiler::check::Options {
                base_dir: ".".into(),
                probe_data: false,
                world: Vec::new(),
                overrides: Vec::new(),
                strict: false,
                data_limits: Default::default(),
                memory_limit: None,
            };
            assert!(dtl_compiler::check_source("bench.dtl", &text, &options).is_ok());
        }
        "fmt" => {
            std::hint::black_box(
                dtl_compiler::tools::format::format_source(&text).expect("formats"),
            );
        }
        other => panic!("--what check or fmt, not {other}"),
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{what} {actual} lines {seconds:.3} s {:.3} µs/line",
        seconds * 1e6 / actual as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, lines, what_flag, what] = &args[..] {
        assert!(
            flag == "--lines" && what_flag == "--what",
            "usage: --lines N --what check|fmt"
        );
        return one(lines.parse().expect("--lines N"), what);
    }
    let options = dtl_compiler::check::Options {
        base_dir: ".".into(),
        probe_data: false,
        world: Vec::new(),
        overrides: Vec::new(),
        strict: false,
        data_limits: Default::default(),
        memory_limit: None,
    };
    let mut baseline = None;
    println!(
        "{:>8} {:>10} {:>14} {:>8}",
        "lines", "check ms", "ms/1000 lines", "ratio"
    );
    for target in [1_000usize, 2_000, 5_000, 10_000, 20_000] {
        let text = generate(target);
        let lines = text.lines().count();
        let plan = dtl_compiler::compile_source("bench.dtl", &text, &options)
            .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
        assert!(
            plan.model.nodes.len() > lines / 4,
            "every module is instantiated"
        );
        let runs = 5;
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(dtl_compiler::check_source("bench.dtl", &text, &options).is_ok());
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        let per_k = ms * 1000.0 / lines as f64;
        let base = *baseline.get_or_insert(per_k);
        println!("{lines:>8} {ms:>10.2} {per_k:>14.3} {:>8.2}", per_k / base);
    }
}
