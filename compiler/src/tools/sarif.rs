//! `dtl check --format sarif`: SARIF 2.1.0, the format code-scanning UIs
//! (GitHub's among them) read. One run, one rule per diagnostic code seen,
//! one result per diagnostic with its region in the file.

use serde_json::{json, Value};

use crate::span::line_col;
use crate::Diagnostics;

/// The SARIF log of every file's diagnostics.
pub fn render(files: &[Diagnostics]) -> String {
    let mut rules: Vec<String> = Vec::new();
    let mut results = Vec::new();
    for diagnostics in files {
        for record in diagnostics.records() {
            if !rules.contains(&record.code) {
                rules.push(record.code.clone());
            }
            let (end_line, end_column) = line_col(diagnostics.text_of(&record.file), record.end);
            let mut message = record.message.clone();
            if let Some(help) = &record.help {
                message.push_str(&format!("\nhelp: {help}"));
            }
            results.push(json!({
                "ruleId": record.code,
                "ruleIndex": rules.iter().position(|r| *r == record.code),
                "level": if record.severity == "error" { "error" } else { "warning" },
                "message": { "text": message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&record.file) },
                        "region": {
                            "startLine": record.line,
                            "startColumn": record.column,
                            "endLine": end_line,
                            "endColumn": end_column.max(record.column + usize::from(end_line == record.line)),
                            "byteOffset": record.start,
                            "byteLength": record.end - record.start,
                        }
                    }
                }]
            }));
        }
    }
    let rules: Vec<Value> = rules
        .iter()
        .map(|code| {
            json!({
                "id": code,
                "name": code.rsplit("::").next().unwrap_or(code),
                "helpUri": "https://example.invalid/dtl/docs/language.md",
            })
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "dtl",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://example.invalid/dtl",
                    "rules": rules,
                }
            },
            // Our columns count characters, not UTF-16 units.
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    });
    let mut text = serde_json::to_string_pretty(&log).expect("SARIF serializes");
    text.push('\n');
    text
}

/// A relative path as a URI reference: forward slashes, spaces escaped.
fn uri(path: &str) -> String {
    path.replace('\\', "/").replace(' ', "%20")
}
