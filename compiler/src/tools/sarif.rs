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
            let related: Vec<Value> = record
                .related
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let (end_line, end_column) = line_col(diagnostics.text_of(&r.file), r.end);
                    json!({
                        "id": i,
                        "message": { "text": r.message },
                        "physicalLocation": region(&r.file, (r.line, r.column), (end_line, end_column), (r.start, r.end)),
                    })
                })
                .collect();
            let mut result = json!({
                "ruleId": record.code,
                "ruleIndex": rules.iter().position(|r| *r == record.code),
                "level": if record.severity == "error" { "error" } else { "warning" },
                "message": { "text": message },
                "locations": [{
                    "physicalLocation": region(
                        &record.file,
                        (record.line, record.column),
                        (end_line, end_column),
                        (record.start, record.end),
                    ),
                }]
            });
            if !related.is_empty() {
                result["relatedLocations"] = Value::Array(related);
            }
            results.push(result);
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

/// A physical location: the file and the region from `start` to `end`
/// (lines and columns), at `bytes`.
fn region(
    file: &str,
    (line, column): (usize, usize),
    (end_line, end_column): (usize, usize),
    (start, end): (usize, usize),
) -> Value {
    json!({
        "artifactLocation": { "uri": uri(file) },
        "region": {
            "startLine": line,
            "startColumn": column,
            "endLine": end_line,
            "endColumn": end_column.max(column + usize::from(end_line == line)),
            "byteOffset": start,
            "byteLength": end - start,
        }
    })
}

/// A relative path as a URI reference: forward slashes, spaces escaped.
fn uri(path: &str) -> String {
    path.replace('\\', "/").replace(' ', "%20")
}
