//! Find references and rename: every place a user-chosen name stands for
//! the same thing. A module, model or data source is named across the
//! file; a module's parameter, named layer, `let` or forward input within
//! its module (a parameter also where a call to the module names it,
//! `Block(d: 64)`). Comments, strings and other calls' argument names are
//! left alone.

use crate::ast::{File, Item, ModuleDef};
use crate::span::Span;

use super::format::lexer::{lex, Kind};

/// The name under `offset` and every span where it refers to the same
/// thing (its definition included), in file order.
pub fn references(file: &File, text: &str, offset: usize) -> Option<(String, Vec<Span>)> {
    let tokens = lex(text);
    let at = tokens.iter().position(|t| {
        t.kind == Kind::Word && t.start <= offset && offset <= t.start + t.text.len()
    })?;
    let name = tokens[at].text;
    let followed_by_colon = |i: usize| tokens.get(i + 1).is_some_and(|t| t.is(":"));
    let module = |def: &&&ModuleDef| def.span.start <= offset && offset <= def.span.end;
    let modules: Vec<&ModuleDef> = file
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Module(def) => Some(def),
            _ => None,
        })
        .collect();
    let local = modules
        .iter()
        .find(module)
        .filter(|def| defines_locally(def, name));
    let (scope, param_of) = match local {
        Some(def) => {
            let is_param = def.params.iter().any(|p| p.name.name == name);
            (def.span, is_param.then_some(def.name.name.as_str()))
        }
        None => {
            let global = modules.iter().any(|d| d.name.name == name)
                || file
                    .items
                    .iter()
                    .any(|item| matches!(item, Item::Data(d) if d.name.name == name));
            if !global {
                return None;
            }
            (Span::new(0, text.len()), None)
        }
    };
    let declared = local.and_then(|def| def.params.iter().find(|p| p.name.name == name));
    let mut spans = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.kind != Kind::Word || token.text != name {
            continue;
        }
        let span = Span::new(token.start, token.start + token.text.len());
        let inside = scope.start <= span.start && span.end <= scope.end;
        let keyword_argument = followed_by_colon(i);
        let counts = if declared.is_some_and(|p| p.name.span == span) {
            true
        } else if keyword_argument {
            // `Block(d: 64)` names the parameter `d` of `Block`.
            param_of.is_some_and(|m| {
                super::calls::call_site(text, span.start).is_some_and(|c| c.callee == m)
            })
        } else {
            // A layer is defined as `fc = …`; outside modules that is a
            // setting's key.
            inside && (local.is_some() || !is_setting_key(&tokens, i))
        };
        if counts {
            spans.push(span);
        }
    }
    Some((name.to_string(), spans))
}

/// Whether `def` defines `name` itself: a parameter, a named layer, a
/// forward's input or a `let`.
fn defines_locally(def: &ModuleDef, name: &str) -> bool {
    def.params.iter().any(|p| p.name.name == name)
        || def.layers.iter().any(|l| l.name.name == name)
        || def
            .forwards
            .iter()
            .any(|f| f.input.name == name || f.lets.iter().any(|l| l.name.name == name))
}

/// A setting's key (`model` in `model = Net`): a word after `{`, `;` or a
/// line break and before `=`.
fn is_setting_key(tokens: &[super::format::lexer::Token<'_>], i: usize) -> bool {
    let next_is_eq = tokens.get(i + 1).is_some_and(|t| t.is("="));
    let starts = i == 0 || tokens[i].breaks > 0 || tokens[i - 1].is("{") || tokens[i - 1].is(";");
    next_is_eq && starts && !tokens.get(i + 2).is_some_and(|t| t.is("="))
}

/// Whether `name` may replace a name: an identifier that is not a keyword.
pub fn is_valid_name(name: &str) -> bool {
    const KEYWORDS: [&str; 11] = [
        "module", "model", "data", "train", "parallel", "forward", "let", "repeat", "test", "true",
        "false",
    ];
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "module Block(d: int) {
  fc = linear(d, d)  // fc: the layer
  forward(x: [B, d]) -> [B, d] {
    let h = x |> fc |> relu
    h + x
  }
}
module Other(d: int) { forward(x: [B, d]) -> [B, d] { x |> linear(d, d) } }
model Net {
  forward(x: [B, 64]) -> [B, 64] { x |> Block(d: 64) |> Other(64) |> Block(64) }
}
data digits { source = csv(\"digits.csv\") }
train { model = Net; data = digits }
";

    fn texts(needle: &str, nth: usize) -> Vec<(usize, String)> {
        let (file, errors) = crate::syntax::parse(SOURCE);
        assert!(errors.is_empty(), "{errors:?}");
        let at = SOURCE.match_indices(needle).nth(nth).unwrap().0;
        let (_, spans) = references(&file, SOURCE, at).unwrap();
        let line = |o: usize| SOURCE[..o].matches('\n').count() + 1;
        spans
            .iter()
            .map(|s| (line(s.start), SOURCE[s.start..s.end].to_string()))
            .collect()
    }

    #[test]
    fn a_parameter_in_its_module_and_where_calls_name_it() {
        let lines: Vec<usize> = texts("d: int", 0).into_iter().map(|(l, _)| l).collect();
        // Block's `d` (declaration, the layer's arguments, the shapes) and
        // `Block(d: 64)`; not Other's `d`.
        assert_eq!(lines, [1, 2, 2, 3, 3, 10]);
    }

    #[test]
    fn modules_layers_lets_and_data_by_scope() {
        let lines = |needle, nth| -> Vec<usize> {
            texts(needle, nth).into_iter().map(|(l, _)| l).collect()
        };
        assert_eq!(lines("Block(d: int)", 0), [1, 10, 10]);
        assert_eq!(lines("fc = ", 0), [2, 4], "the comment's `fc` is left");
        assert_eq!(lines("h = x", 0), [4, 5]);
        assert_eq!(lines("digits {", 0), [12, 13]);
        assert_eq!(lines("Net {", 0), [9, 13]);
        let (file, _) = crate::syntax::parse(SOURCE);
        assert!(references(&file, SOURCE, SOURCE.find("linear").unwrap()).is_none());
    }

    #[test]
    fn names_that_may_replace() {
        assert!(is_valid_name("block_2"));
        assert!(!is_valid_name("2block") && !is_valid_name("model") && !is_valid_name("a-b"));
    }
}
