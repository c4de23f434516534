//! Semantic tokens: what each word of a file is, as the checker knows it,
//! for an editor to colour beyond what a TextMate grammar can see: a
//! module's name where it is used as a layer, a parameter in the body of
//! its module, a named layer, a `let`, a setting's key.

use std::collections::BTreeSet;

use crate::ast::{File, ModuleDef};
use crate::check::builtin_names;

use super::format::lexer::{lex, Kind, Token};

/// The kinds, in the order of the legend an editor is given.
pub const LEGEND: [&str; 10] = [
    "keyword",
    "class",
    "function",
    "parameter",
    "variable",
    "property",
    "number",
    "string",
    "comment",
    "operator",
];

/// One token: its byte range and its index in [`LEGEND`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemanticToken {
    pub start: usize,
    pub end: usize,
    pub kind: usize,
}

/// Every classified token of `text`, in order (`file` is its syntax tree;
/// `modules` the names of the modules it may use, imported ones included).
pub fn semantic_tokens(file: &File, text: &str, modules: &BTreeSet<String>) -> Vec<SemanticToken> {
    let kind = |name: &str| LEGEND.iter().position(|k| *k == name).unwrap_or(0);
    let layers: BTreeSet<&str> = builtin_names().collect();
    let defs: Vec<&ModuleDef> = file.modules().collect();
    let tokens = lex(text);
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let (start, end) = (token.start, token.start + token.text.len());
        let class = match token.kind {
            Kind::Number => Some("number"),
            Kind::Str => Some("string"),
            Kind::LineComment | Kind::BlockComment => Some("comment"),
            Kind::Punct if token.text == "|>" || token.text == "->" => Some("operator"),
            Kind::Word => Some(word(&tokens, i, (&defs, modules, &layers))),
            _ => None,
        };
        if let Some(class) = class {
            out.push(SemanticToken {
                start,
                end,
                kind: kind(class),
            });
        }
    }
    out
}

/// What the word `tokens[i]` is.
fn word(
    tokens: &[Token<'_>],
    i: usize,
    (defs, modules, layers): (&[&ModuleDef], &BTreeSet<String>, &BTreeSet<&str>),
) -> &'static str {
    let token = &tokens[i];
    let name = token.text;
    let next = tokens.get(i + 1);
    // `import` opens an item but is no keyword of the grammar's: names may
    // not be the others.
    let keyword_like = name == "import" || crate::syntax::KEYWORDS.contains(&name);
    let enclosing = defs
        .iter()
        .find(|d| d.span.start <= token.start && token.start < d.span.end);
    // `data = digits`: a setting's key (keywords among them).
    if enclosing.is_none() && super::rename::is_setting_key(tokens, i) {
        return "property";
    }
    if keyword_like {
        return "keyword";
    }
    if next.is_some_and(|t| t.is(":")) {
        // `lr: 1e-3` in a call, `d: int` in a parameter list.
        return "parameter";
    }
    if modules.contains(name) {
        return "class";
    }
    if let Some(def) = enclosing {
        if def.params.iter().any(|p| p.name.name == name) {
            return "parameter";
        }
        let local = def.layers.iter().any(|l| l.name.name == name)
            || def
                .forwards
                .iter()
                .any(|f| f.input.name == name || f.lets.iter().any(|l| l.name.name == name));
        if local {
            return "variable";
        }
    }
    if layers.contains(name) || next.is_some_and(|t| t.is("(")) {
        return "function";
    }
    "variable"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_classified_by_what_they_name() {
        let text = "module Block(d: int) {\n  fc = linear(d, d)\n  forward(x: [B, d]) -> [B, d] { x |> fc |> relu }\n}\nmodel Net { forward(x: [B, 4]) -> [B, 4] { x |> Block(4) } }\ntrain { model = Net; optimizer = sgd(lr: 0.1) } // done\n";
        let (file, errors) = crate::syntax::parse(text);
        assert!(errors.is_empty());
        let modules: BTreeSet<String> = ["Block".to_string(), "Net".to_string()].into();
        let tokens = semantic_tokens(&file, text, &modules);
        let of = |needle: &str, nth: usize| -> &str {
            let at = text.match_indices(needle).nth(nth).unwrap().0;
            let t = tokens.iter().find(|t| t.start == at).unwrap();
            LEGEND[t.kind]
        };
        assert_eq!(of("module", 0), "keyword");
        assert_eq!(of("Block", 0), "class");
        assert_eq!(of("Block", 1), "class");
        assert_eq!(of("d: int", 0), "parameter");
        assert_eq!(of("fc", 0), "variable");
        assert_eq!(of("linear", 0), "function");
        assert_eq!(of("d, d", 0), "parameter");
        assert_eq!(of("relu", 0), "function");
        assert_eq!(of("|>", 0), "operator");
        assert_eq!(of("model = Net", 0), "property");
        assert_eq!(of("Net;", 0), "class");
        assert_eq!(of("lr", 0), "parameter");
        assert_eq!(of("0.1", 0), "number");
        assert_eq!(of("// done", 0), "comment");
    }
}
