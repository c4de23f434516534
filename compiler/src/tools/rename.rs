//! Find references and rename: every place a user-chosen name stands for
//! the same thing. A module, model or data source is named across the
//! file; a module's parameter, named layer, `let` or forward input within
//! its module (a parameter also where a call to the module names it,
//! `Block(d: 64)`). Comments, strings and other calls' argument names are
//! left alone.

use crate::ast::{File, ModuleDef};
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
    let modules: Vec<&ModuleDef> = file.modules().collect();
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
            if !file.defines(name) {
                return None;
            }
            (Span::new(0, text.len()), None)
        }
    };
    // Where the name is declared in its module (`d: int`, `forward(x: …)`
    // are followed by `:` as keyword arguments are).
    let declared: Vec<Span> = local.map_or_else(Vec::new, |def| local_declarations(def, name));
    // A module that declares the name itself hides a global of that name.
    let hidden: Vec<Span> = match local {
        Some(_) => Vec::new(),
        None => modules
            .iter()
            .filter(|def| defines_locally(def, name))
            .map(|def| def.span)
            .collect(),
    };
    let mut spans = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.kind != Kind::Word || token.text != name {
            continue;
        }
        let span = Span::new(token.start, token.start + token.text.len());
        if hidden
            .iter()
            .any(|h| h.start <= span.start && span.end <= h.end)
        {
            continue;
        }
        let inside = scope.start <= span.start && span.end <= scope.end;
        let keyword_argument = followed_by_colon(i);
        let counts = if declared.contains(&span) {
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

/// Where `def` declares `name`: as a parameter, a named layer, a
/// forward's input or a `let`.
fn local_declarations(def: &ModuleDef, name: &str) -> Vec<Span> {
    let mut out: Vec<Span> = def
        .params
        .iter()
        .map(|p| &p.name)
        .chain(def.layers.iter().map(|l| &l.name))
        .filter(|n| n.name == name)
        .map(|n| n.span)
        .collect();
    for forward in &def.forwards {
        let names = std::iter::once(&forward.input).chain(forward.lets.iter().map(|l| &l.name));
        out.extend(names.filter(|n| n.name == name).map(|n| n.span));
    }
    out
}

/// Why `new_name` cannot replace the name under `offset` (`None`: it
/// can): not a name, a keyword, a built-in layer, or a name the scope
/// already has, which the two would then share.
pub fn refusal(file: &File, offset: usize, new_name: &str) -> Option<String> {
    if !is_valid_name(new_name) {
        return Some(format!(
            "`{new_name}` is not a name dtl accepts (letters, digits and `_`, not a keyword)"
        ));
    }
    if crate::check::Builtin::lookup(new_name).is_some() {
        return Some(format!("`{new_name}` is a built-in layer"));
    }
    let global = file.defines(new_name);
    let local = file
        .modules()
        .find(|d| d.span.start <= offset && offset <= d.span.end)
        .is_some_and(|d| defines_locally(d, new_name));
    (global || local).then(|| format!("`{new_name}` is already a name here"))
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
pub(super) fn is_setting_key(tokens: &[super::format::lexer::Token<'_>], i: usize) -> bool {
    let next_is_eq = tokens.get(i + 1).is_some_and(|t| t.is("="));
    let starts = i == 0 || tokens[i].breaks > 0 || tokens[i - 1].is("{") || tokens[i - 1].is(";");
    next_is_eq && starts && !tokens.get(i + 2).is_some_and(|t| t.is("="))
}

/// Whether `name` may replace a name: an identifier that is not a keyword.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !crate::syntax::KEYWORDS.contains(&name)
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
    fn declarations_followed_by_a_colon_and_hidden_globals() {
        // The forward's input is declared `x: [B, d]`.
        let lines: Vec<usize> = texts("x |> fc", 0).into_iter().map(|(l, _)| l).collect();
        assert_eq!(lines, [3, 4, 5]);
        let text = "data tokens { source = csv(\"t.csv\") }
model M { forward(tokens: [B, 4]) -> [B, 4] { tokens |> relu } }
train { model = M; data = tokens }
";
        let (file, _) = crate::syntax::parse(text);
        let (_, spans) = references(&file, text, text.find("tokens {").unwrap()).unwrap();
        let lines: Vec<usize> = spans
            .iter()
            .map(|s| text[..s.start].matches('\n').count() + 1)
            .collect();
        assert_eq!(lines, [1, 3], "the model's own `tokens` is another");
    }

    #[test]
    fn refused_new_names() {
        let (file, _) = crate::syntax::parse(SOURCE);
        let in_block = SOURCE.find("fc = ").unwrap();
        assert!(refusal(&file, in_block, "proj").is_none());
        for taken in ["d", "h", "x", "Other", "digits", "linear", "model", "2x"] {
            assert!(refusal(&file, in_block, taken).is_some(), "{taken}");
        }
    }

    #[test]
    fn names_that_may_replace() {
        assert!(is_valid_name("block_2"));
        assert!(!is_valid_name("2block") && !is_valid_name("model") && !is_valid_name("a-b"));
    }
}
