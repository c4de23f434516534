//! The compiler is a straight line: syntax → check → lower → plan. Each
//! phase may name only the phases before it (`crate::…` paths anywhere in
//! its files, `use` lines included), and `plan`, the data contract, names
//! none of them. No phase names `tools`, which reads what the phases
//! produce. A phase that reaches forward or back fails here with the file
//! and the line.

use std::path::Path;

/// The phases in order, and the top-level modules each may not name.
/// `tools` (explain, graph, format, analysis, sarif) reads what the phases
/// produce, so no phase may name it.
const RULES: [(&str, &[&str]); 4] = [
    ("syntax", &["check", "lower", "plan", "tools", "input"]),
    ("check", &["lower", "tools", "input"]),
    ("lower", &["syntax", "tools", "input"]),
    (
        "plan",
        &[
            "syntax", "ast", "check", "lower", "tools", "input", "dataset",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module a file names through `crate::`, with the byte
/// offset: `crate::plan::Op`, and each name of `use crate::{check, plan::X}`.
fn named_modules(code: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group, up to its closing brace.
            let mut depth = 0;
            let mut start = true;
            for c_at in group.char_indices() {
                let (i, c) = c_at;
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        start = false;
                        out.push((at, ident(&group[i..])));
                    }
                    _ => {}
                }
            }
        } else {
            out.push((at, ident(rest)));
        }
    }
    out
}

#[test]
fn the_scanner_sees_grouped_imports() {
    let names: Vec<String> =
        named_modules("use crate::{check::X, plan::{A, B}, lower};\ncrate::util::f()")
            .into_iter()
            .map(|(_, m)| m)
            .collect();
    assert_eq!(names, ["check", "plan", "lower", "util"]);
}

/// A rule naming a module that no longer exists (renamed, moved) would
/// pass for ever; every name in the rules must be a module of the crate.
#[test]
fn every_ruled_module_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for (phase, forbidden) in RULES {
        for module in std::iter::once(&phase).chain(forbidden) {
            assert!(
                lib.contains(&format!("pub mod {module};")),
                "the rules name `{module}`, which lib.rs does not declare"
            );
        }
    }
}

#[test]
fn phases_import_only_the_phases_before_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (phase, forbidden) in RULES {
        let mut files = Vec::new();
        let dir = src.join(phase);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(format!("{phase}.rs")));
        }
        assert!(!files.is_empty(), "no files for phase {phase}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code: String = text
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for (at, module) in named_modules(&code) {
                if forbidden.contains(&module.as_str()) {
                    let line = code[..at].matches('\n').count() + 1;
                    violations.push(format!(
                        "{}:{line}: `{phase}` names `{module}`",
                        file.strip_prefix(&src).unwrap().display(),
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
