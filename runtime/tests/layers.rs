//! The runtime's modules import downwards only: each module may name (with
//! `crate::…`) only the modules before it in [`ORDER`], so the import graph
//! has no arrow that runs back up and no cycle. A module in a folder
//! (`parallel/data.rs`) counts as its folder's (`parallel`). A new module
//! must be placed in the order; an import that runs back up fails here
//! with the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top.
const ORDER: [&str; 42] = [
    // Foundations: no other module of the runtime.
    "error",
    "fault",
    "signals",
    "device",
    "torch_ops",
    "flat",
    "output",
    "tensor_file",
    "run_folder",
    "loss_scale",
    "watch",
    "tensorboard",
    "run_record",
    // Collectives, data and the model's computation.
    "comm",
    "augment",
    "images",
    "data",
    "prefetch",
    "ops",
    "loss",
    "metrics",
    "memory",
    "model",
    "optim",
    "clip",
    "module_test",
    "infer",
    // Where a rank stands, and the strategies over its groups.
    "world",
    // What a checkpoint holds, sharded or not: the strategies save into it.
    "checkpoint",
    "parallel",
    "ema",
    // One rank's interpreter of the plan.
    "executor",
    // The driver and what it keeps.
    "rank_log",
    "progress",
    "board",
    "resume",
    "summary",
    "watchdog",
    "train",
    "launch",
    "selftest",
    "calibrate",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `parallel/data.rs` → `parallel`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Every top-level module a file names through `crate::`, with its line:
/// `crate::comm::X`, and each name of `use crate::{comm, data::X}`.
fn named_modules(code: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push((line_of(at), ident(rest)));
            continue;
        };
        let (mut depth, mut start) = (0, true);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if c.is_whitespace() => {}
                _ if start && depth == 0 => {
                    start = false;
                    out.push((line_of(at), ident(&group[i..])));
                }
                _ => {}
            }
        }
    }
    out
}

/// Code without comments (a doc comment may name any module).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_scanner_sees_grouped_imports() {
    let names: Vec<String> =
        named_modules("use crate::{comm::X, data::{A, B}, model};\ncrate::ops::f()")
            .into_iter()
            .map(|(_, m)| m)
            .collect();
    assert_eq!(names, ["comm", "data", "model", "ops"]);
}

#[test]
fn runtime_modules_import_downwards_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut arrows = BTreeMap::<String, Vec<String>>::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == "lib" {
            continue;
        }
        let Some(&mine) = rank.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` is not in ORDER (tests/layers.rs): place it",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, named) in named_modules(&code_of(&text)) {
            if named == module {
                continue;
            }
            arrows
                .entry(module.clone())
                .or_default()
                .push(named.clone());
            match rank.get(named.as_str()) {
                Some(&theirs) if theirs < mine => {}
                Some(_) => problems.push(format!(
                    "{}:{line}: `{module}` names `{named}`, which comes after it",
                    file.strip_prefix(&src).unwrap().display()
                )),
                None => problems.push(format!(
                    "{}:{line}: `{module}` names `{named}`, which is not in ORDER",
                    file.strip_prefix(&src).unwrap().display()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The layers must be real: the executor and the driver are apart.
    assert!(arrows["train"].iter().any(|m| m == "executor"));
    assert!(!arrows["executor"].iter().any(|m| m == "train"));
}

/// Lines from a `fn` line to its closing brace, for every function of a
/// file (braces in strings, chars and comments ignored).
fn function_lengths(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let Some(at) = code.find("fn ") else {
            continue;
        };
        let before = &code[..at];
        let is_fn = before
            .split_whitespace()
            .all(|w| w.starts_with("pub") || ["const", "async", "unsafe"].contains(&w));
        if !is_fn || code.starts_with("//") {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i64, false);
        for (j, body) in lines.iter().enumerate().skip(i) {
            let mut chars = strip_literals(body);
            if !opened && chars.trim_end().ends_with(';') {
                break;
            }
            chars.retain(|c| c == '{' || c == '}');
            for c in chars.chars() {
                depth += if c == '{' { 1 } else { -1 };
                opened = true;
            }
            if opened && depth == 0 {
                out.push((i + 1, name.clone(), j - i + 1));
                break;
            }
        }
    }
    out
}

/// A line without its comment, strings and char literals.
fn strip_literals(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => break,
            '"' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' => {
                // A char literal ('{', '\n') or a lifetime ('a): skip only
                // the former.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    let skip = rest.find('\'').map_or(0, |k| k + 1);
                    for _ in 0..skip.max(2) {
                        chars.next();
                    }
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[test]
fn the_length_counter_sees_braces_in_code_only() {
    let text = "fn a() {\n    let s = \"{\";\n    let c = '}';\n}\nfn b<'x>(v: &'x str) {\n}\n";
    let found: Vec<(String, usize)> = function_lengths(text)
        .into_iter()
        .map(|(_, n, len)| (n, len))
        .collect();
    assert_eq!(found, [("a".to_string(), 4), ("b".to_string(), 2)]);
}

/// Functions fit on a screen or two: none in the runtime over 120 lines.
#[test]
fn no_runtime_function_is_longer_than_120_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, name, len) in function_lengths(&text) {
            if len > 120 {
                long.push(format!(
                    "{}:{line}: `{name}` is {len} lines",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The driver is the loop and no more: what it keeps (the tally and the
/// summary, the board, the resume) lives in modules of its own.
#[test]
fn the_driver_stays_under_400_lines() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/train.rs");
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    assert!(lines < 400, "runtime/src/train.rs has {lines} lines");
}
