//! Quick fixes an editor offers on a diagnostic: the did-you-mean
//! suggestion put in place of the misspelt name (`lnear` → `linear`,
//! `nn.Linear` → `linear`), and a missing required setting added to its
//! block with the example the error gives.

use crate::diagnostics::Record;

/// One fix: its title and the edits (byte ranges of the text and what
/// replaces them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub title: String,
    /// The code of the diagnostic it fixes.
    pub code: String,
    pub edits: Vec<(usize, usize, String)>,
}

/// The fixes for the diagnostics `records` of `text` that overlap
/// `start..end`.
pub fn code_actions(records: &[Record], text: &str, start: usize, end: usize) -> Vec<Action> {
    records
        .iter()
        .filter(|r| r.start <= end && start <= r.end)
        .filter_map(|r| fix(r, text))
        .collect()
}

fn fix(record: &Record, text: &str) -> Option<Action> {
    let help = record.help.as_deref()?;
    let quoted = |prefix: &str| -> Option<String> {
        let rest = &help[help.find(prefix)? + prefix.len()..];
        Some(rest[..rest.find('`')?].to_string())
    };
    // `did you mean `linear`?`, `… dtl's layer is `linear``: only where
    // the diagnostic marks the misspelt name itself (a name, or a string
    // holding one), not a whole call or an import it was moved to.
    if let Some(name) = quoted("did you mean `").or_else(|| quoted("dtl's layer is `")) {
        let marked = text.get(record.start..record.end)?;
        let is_name = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.".contains(c))
        };
        let new = if is_name(marked) {
            name.clone()
        } else if marked.len() >= 2
            && marked.starts_with('"')
            && marked.ends_with('"')
            && !marked[1..marked.len() - 1].contains(['"', '\\'])
        {
            format!("\"{name}\"")
        } else {
            return None;
        };
        return Some(Action {
            title: format!("Replace with `{name}`"),
            code: record.code.clone(),
            edits: vec![(record.start, record.end, new)],
        });
    }
    // A missing setting: `e.g. `micro_batch = 32``, added after the `{`.
    if record.code == "dtl::check::missing_setting" {
        let example = quoted("e.g. `")?;
        let open = record.start + text.get(record.start..)?.find('{')?;
        let line_end = text[open..].find('\n').map(|i| open + i);
        // A block over several lines gets a line of its own; a one-line
        // block, a statement after its `{`.
        let one_line = line_end.is_none_or(|e| text[open + 1..e].contains('}'));
        let edit = if one_line {
            (open + 1, open + 1, format!(" {example};"))
        } else {
            let indent = block_indent(text, open);
            (open + 1, open + 1, format!("\n{indent}{example}"))
        };
        return Some(Action {
            title: format!("Add `{example}`"),
            code: record.code.clone(),
            edits: vec![edit],
        });
    }
    None
}

/// The indent of the statements of the block opened at `open`: that of
/// its first statement, else two spaces more than the line of its `{`.
fn block_indent(text: &str, open: usize) -> String {
    let after = &text[open + 1..];
    let next = after.split('\n').nth(1).unwrap_or_default();
    let indent: String = next.chars().take_while(|c| *c == ' ').collect();
    if !indent.is_empty() && !next.trim_start().starts_with('}') {
        return indent;
    }
    let line_start = text[..open].rfind('\n').map_or(0, |i| i + 1);
    let outer: String = text[line_start..]
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    format!("{outer}  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(text: &str) -> Vec<Action> {
        let options = crate::options_for(std::path::Path::new("t.dtl"), false);
        let diagnostics = match crate::compile_source("t.dtl", text, &options) {
            Ok(_) => panic!("{text} compiled"),
            Err(d) => d,
        };
        code_actions(&diagnostics.records(), text, 0, text.len())
    }

    fn apply(text: &str, action: &Action) -> String {
        let mut out = text.to_string();
        for (start, end, new) in action.edits.iter().rev() {
            out.replace_range(*start..*end, new);
        }
        out
    }

    const DATA: &str = "data d { source = synthetic(rows: 64, features: 4, classes: 2) }\n";

    #[test]
    fn a_misspelt_layer_is_replaced_and_a_missing_setting_added() {
        let text = format!(
            "model M {{\n  forward(x: [B, 4]) -> [B, 2] {{ x |> lnear(4, 2) }}\n}}\n{DATA}train {{\n  model = M\n  data = d\n  loss = cross_entropy\n  optimizer = sgd(lr: 0.1)\n  steps = 1\n}}\n"
        );
        let found = actions(&text);
        let titles: Vec<&str> = found.iter().map(|a| a.title.as_str()).collect();
        assert_eq!(titles, ["Replace with `linear`", "Add `micro_batch = 32`"]);
        let fixed = apply(&apply(&text, &found[1]), &found[0]);
        assert!(fixed.contains("x |> linear(4, 2)"), "{fixed}");
        assert!(
            fixed.contains("train {\n  micro_batch = 32\n  model = M"),
            "{fixed}"
        );
        let options = crate::options_for(std::path::Path::new("t.dtl"), false);
        assert!(
            crate::compile_source("t.dtl", &fixed, &options).is_ok(),
            "{fixed}"
        );
    }

    #[test]
    fn strings_stay_strings_and_whole_calls_get_no_fix() {
        let text = format!(
            "model M {{ forward(x: [B, 4, 2, 2]) -> [B, 4, 4, 4] {{ x |> upsample(scale: 2, mode: \"nearst\") }} }}\n{DATA}"
        );
        let record = |start: usize, end: usize| Record {
            file: "t.dtl".into(),
            severity: "error",
            code: "dtl::check::invalid_value".into(),
            message: String::new(),
            line: 1,
            column: 1,
            start,
            end,
            help: Some("did you mean `nearest`?".into()),
            related: Vec::new(),
        };
        let string = text.find("\"nearst\"").unwrap();
        let found = code_actions(&[record(string, string + 8)], &text, 0, text.len());
        assert_eq!(found[0].edits[0].2, "\"nearest\"");
        let call = text.find("upsample").unwrap();
        assert!(code_actions(&[record(call, string + 9)], &text, 0, text.len()).is_empty());
    }

    #[test]
    fn one_line_blocks_and_pytorch_names() {
        let text = format!(
            "model M {{ forward(x: [B, 4]) -> [B, 2] {{ x |> nn.Linear(4, 2) }} }}\n{DATA}train {{ model = M; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1 }}\n"
        );
        let found = actions(&text);
        assert_eq!(found.len(), 2, "{found:?}");
        let fixed = apply(&apply(&text, &found[1]), &found[0]);
        assert!(fixed.contains("x |> linear(4, 2)"), "{fixed}");
        assert!(
            fixed.contains("train { micro_batch = 32; model = M;"),
            "{fixed}"
        );
    }
}
