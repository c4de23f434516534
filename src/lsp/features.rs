//! The editor features built from the analysis' answers: signature help,
//! the outline (document symbols), folding ranges and inlay hints, as the
//! protocol's JSON.

use dtl_compiler::tools::analysis::Analysis;
use dtl_compiler::tools::calls::Signature;
use dtl_compiler::tools::outline::{self, Symbol, SymbolKind};
use dtl_compiler::tools::rename;
use dtl_compiler::tools::semantic;
use lsp_types::{Range, Url};
use serde_json::{json, Value};

use super::{offset, Lines};

/// A call's signature, each parameter by its place in the label.
pub(super) fn signature_help(
    signature: Signature,
    active: Option<usize>,
) -> lsp_types::SignatureHelp {
    let mut from = signature.label.find('(').map_or(0, |i| i + 1);
    let parameters = signature
        .params
        .iter()
        .map(|(_, text)| {
            let start = signature.label[from..]
                .find(text.as_str())
                .map_or(from, |i| from + i);
            from = start + text.len();
            let units = |s: &str| s.encode_utf16().count() as u32;
            lsp_types::ParameterInformation {
                label: lsp_types::ParameterLabel::LabelOffsets([
                    units(&signature.label[..start]),
                    units(&signature.label[..from]),
                ]),
                documentation: None,
            }
        })
        .collect();
    lsp_types::SignatureHelp {
        signatures: vec![lsp_types::SignatureInformation {
            label: signature.label,
            documentation: Some(lsp_types::Documentation::String(signature.what)),
            parameters: Some(parameters),
            active_parameter: active.map(|i| i as u32),
        }],
        active_signature: Some(0),
        active_parameter: active.map(|i| i as u32),
    }
}

/// The outline: items, and their layers, forward and settings.
pub(super) fn symbols(a: &Analysis) -> Value {
    fn one(lines: &Lines, s: &Symbol) -> Value {
        // The protocol's SymbolKind numbers.
        let kind = match s.kind {
            SymbolKind::Module | SymbolKind::Model => 5, // Class
            SymbolKind::Layer => 8,                      // Field
            SymbolKind::Forward => 6,                    // Method
            SymbolKind::Data => 23,                      // Struct
            SymbolKind::Block => 3,                      // Namespace
            SymbolKind::Setting => 7,                    // Property
            SymbolKind::Test => 24,                      // Event
            SymbolKind::Import => 2,                     // Module
        };
        json!({
            "name": s.name,
            "kind": kind,
            "range": lines.range(s.span.start, s.span.end),
            "selectionRange": lines.range(s.name_span.start, s.name_span.end),
            "children": s.children.iter().map(|c| one(lines, c)).collect::<Vec<_>>(),
        })
    }
    let lines = Lines::new(&a.text);
    Value::Array(
        outline::symbols(&a.file)
            .iter()
            .map(|s| one(&lines, s))
            .collect(),
    )
}

/// The lines that fold.
pub(super) fn folding(a: &Analysis) -> Value {
    let ranges: Vec<Value> = outline::folding_ranges(&a.file, &a.text)
        .into_iter()
        .map(|(first, last)| json!({ "startLine": first, "endLine": last }))
        .collect();
    Value::Array(ranges)
}

/// The shapes of the stages and the parameters of the instances in `at`.
pub(super) fn inlay_hints(a: &Analysis, at: Range) -> Value {
    let (start, end) = (offset(&a.text, at.start), offset(&a.text, at.end));
    let lines = Lines::new(&a.text);
    let hints: Vec<Value> = a
        .inlay_hints(start, end)
        .into_iter()
        .map(|hint| {
            json!({
                "position": lines.position(hint.offset),
                "label": hint.label,
                "kind": 1, // Type
                "paddingLeft": true,
            })
        })
        .collect();
    Value::Array(hints)
}

/// Quick fixes for the diagnostics in `at`: a did-you-mean put in place, a
/// missing setting added.
pub(super) fn code_actions(a: &Analysis, uri: &Url, at: Range) -> Value {
    let (start, end) = (offset(&a.text, at.start), offset(&a.text, at.end));
    let lines = Lines::new(&a.text);
    let records = a.diagnostics.records_here();
    let actions: Vec<Value> =
        dtl_compiler::tools::actions::code_actions(&records, &a.text, start, end)
            .into_iter()
            .map(|action| {
                let edits: Vec<Value> = action
                    .edits
                    .iter()
                    .map(|(s, e, text)| json!({ "range": lines.range(*s, *e), "newText": text }))
                    .collect();
                json!({
                    "title": action.title,
                    "kind": "quickfix",
                    "edit": { "changes": { uri.as_str(): edits } },
                })
            })
            .collect();
    Value::Array(actions)
}

/// `dtl explain`'s figures above `train` and `parallel`, for a document
/// that compiles.
pub(super) fn code_lenses(a: &Analysis, uri: &Url) -> Value {
    let path = uri
        .to_file_path()
        .unwrap_or_else(|_| std::path::PathBuf::from(uri.path()));
    let options = dtl_compiler::options_for(&path, false);
    let name = path.display().to_string();
    let lines = Lines::new(&a.text);
    let lenses: Vec<Value> =
        dtl_compiler::tools::lens::code_lenses(&name, (&a.text, &a.file), &options)
            .into_iter()
            .map(|lens| {
                json!({
                    "range": lines.range(lens.span.start, lens.span.end),
                    "command": { "title": lens.title, "command": "" },
                })
            })
            .collect();
    Value::Array(lenses)
}

/// Every place the name under `offset` refers to the same thing.
pub(super) fn references(a: &Analysis, uri: &Url, offset: usize) -> Value {
    let Some((_, spans)) = rename::references(&a.file, &a.text, offset) else {
        return Value::Null;
    };
    let lines = Lines::new(&a.text);
    let locations: Vec<Value> = spans
        .iter()
        .map(|s| json!({ "uri": uri.as_str(), "range": lines.range(s.start, s.end) }))
        .collect();
    Value::Array(locations)
}

/// The edits renaming the name under `offset` to `new_name` everywhere it
/// refers to the same thing; an error for a name that cannot be one.
pub(super) fn rename(
    a: &Analysis,
    uri: &Url,
    offset: usize,
    new_name: &str,
) -> Result<Value, String> {
    if let Some(why) = rename::refusal(&a.file, offset, new_name) {
        return Err(why);
    }
    let Some((_, spans)) = rename::references(&a.file, &a.text, offset) else {
        return Err(
            "nothing to rename here: a module, a data source, a layer, a `let` or a parameter"
                .into(),
        );
    };
    let lines = Lines::new(&a.text);
    let edits: Vec<Value> = spans
        .iter()
        .map(|s| json!({ "range": lines.range(s.start, s.end), "newText": new_name }))
        .collect();
    Ok(json!({ "changes": { uri.as_str(): edits } }))
}

/// The semantic token kinds the server uses, and that it gives whole files.
pub(super) fn semantic_tokens_options() -> lsp_types::SemanticTokensServerCapabilities {
    lsp_types::SemanticTokensServerCapabilities::SemanticTokensOptions(
        lsp_types::SemanticTokensOptions {
            legend: lsp_types::SemanticTokensLegend {
                token_types: semantic::LEGEND
                    .iter()
                    .map(|k| lsp_types::SemanticTokenType::new(k))
                    .collect(),
                token_modifiers: Vec::new(),
            },
            full: Some(lsp_types::SemanticTokensFullOptions::Bool(true)),
            ..Default::default()
        },
    )
}

/// Every classified token, in the protocol's relative encoding: per
/// token the line delta, the start (relative on the same line), the
/// length (UTF-16 units), the kind and no modifiers. A token over several
/// lines (a block comment) is given line by line.
pub(super) fn semantic_tokens(a: &Analysis) -> Value {
    let mut data: Vec<u32> = Vec::new();
    let (mut last_line, mut last_start) = (0u32, 0u32);
    let lines = Lines::new(&a.text);
    for token in a.semantic_tokens() {
        let mut from = token.start;
        for piece in a.text[token.start..token.end].split('\n') {
            let at = lines.position(from);
            let length = piece.encode_utf16().count() as u32;
            from += piece.len() + 1;
            if length == 0 {
                continue;
            }
            let delta_line = at.line - last_line;
            let delta_start = if delta_line == 0 {
                at.character - last_start
            } else {
                at.character
            };
            data.extend([delta_line, delta_start, length, token.kind as u32, 0]);
            (last_line, last_start) = (at.line, at.character);
        }
    }
    json!({ "data": data })
}
