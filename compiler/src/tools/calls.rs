//! The call around an editor's cursor: which call it is (a layer, a
//! module, or a setting's value such as `adamw(`), which arguments are
//! already given and which one the cursor is on. Signature help and the
//! completion of arguments read it.

use crate::ast::ModuleDef;
use crate::check::{self, param_text, Builtin};

/// A call the cursor is inside, as far as the text around it says.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSite {
    pub callee: String,
    /// The setting whose value the call is (`optimizer = adamw(`), if any.
    pub setting: Option<String>,
    /// The names of the keyword arguments given, before and after the
    /// cursor.
    pub named: Vec<String>,
    /// How many arguments before the cursor's are positional.
    pub positional: usize,
    /// The argument the cursor is in: its position, and its name when it
    /// is written `name: …`.
    pub active: usize,
    pub active_name: Option<String>,
}

/// What a call takes: its label and each parameter's name and text.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// `adamw(lr: float, betas: [float, float] = [0.9, 0.999], …)`.
    pub label: String,
    /// Each parameter: its name and its text in `label`.
    pub params: Vec<(String, String)>,
    /// What the call is: "layer", "module `Block`", "`optimizer`".
    pub what: String,
}

impl Signature {
    /// The parameter the cursor is on, by name or else by position.
    pub fn active(&self, site: &CallSite) -> Option<usize> {
        match &site.active_name {
            Some(name) => self.params.iter().position(|(n, _)| n == name),
            None => (site.active < self.params.len()).then_some(site.active),
        }
    }

    /// The parameters still to give: not named, not filled by position.
    pub fn remaining<'a>(
        &'a self,
        site: &'a CallSite,
    ) -> impl Iterator<Item = &'a (String, String)> {
        self.params
            .iter()
            .enumerate()
            .filter(move |(i, (name, _))| *i >= site.positional && !site.named.contains(name))
            .map(|(_, p)| p)
    }
}

/// The call whose `(` is the innermost still open at `offset` of `text`.
pub fn call_site(text: &str, offset: usize) -> Option<CallSite> {
    let offset = floor_char(text, offset.min(text.len()));
    let (before, after) = text.split_at(offset);
    let open = open_paren(before)?;
    let head = before[..open].trim_end();
    let start = head
        .char_indices()
        .rfind(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.'))
        .map_or(0, |(p, c)| p + c.len_utf8());
    let callee = &head[start..];
    if callee.is_empty() || callee.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let setting = setting_before(&head[..start]).map(str::to_string);
    let given = split_args(&before[open + 1..]);
    let (done, current) = given.split_at(given.len() - 1);
    let arg_name = |arg: &str| -> Option<String> {
        let (name, _) = arg.split_once(':')?;
        let name = name.trim();
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| name.to_string())
    };
    let mut named: Vec<String> = done.iter().filter_map(|a| arg_name(a)).collect();
    let positional = done.iter().filter(|a| arg_name(a).is_none()).count();
    // Keyword arguments after the cursor are given too; the cursor's
    // argument goes on to the next comma.
    let rest = &after[..close_paren(after).unwrap_or(0)];
    let later = split_args(rest);
    named.extend(later.iter().skip(1).filter_map(|a| arg_name(a)));
    let current = format!("{}{}", current[0], later[0]);
    Some(CallSite {
        callee: callee.to_string(),
        setting,
        named,
        positional,
        active: done.len(),
        active_name: arg_name(&current),
    })
}

/// The key of the setting whose value starts right after `before` (the
/// text up to a name): `optimizer` for `  optimizer = `, `schedule` for
/// `train { steps = 9; schedule = `.
pub fn setting_before(before: &str) -> Option<&str> {
    let line = before.rsplit('\n').next().unwrap_or_default();
    let key = line.trim_end().strip_suffix('=')?.trim();
    let key = key.rsplit([';', '{', ' ']).next().unwrap_or(key);
    (!key.is_empty()).then_some(key)
}

/// The signature of `site`'s callee: a setting's value inside a settings
/// block, else a layer or a module (`module` finds one by name).
pub fn signature<'a>(
    site: &CallSite,
    module: impl Fn(&str) -> Option<&'a ModuleDef>,
    param_text_of: impl Fn(&ModuleDef) -> Vec<String>,
) -> Option<Signature> {
    let setting_call = || {
        let call = check::setting_call(&site.callee, site.setting.as_deref())?;
        Some(Signature {
            label: call.text(),
            params: call
                .params
                .iter()
                .map(|p| (p.name.clone(), param_text(p)))
                .collect(),
            what: format!("a value of `{}`", call.setting),
        })
    };
    if site.setting.is_some() {
        if let Some(signature) = setting_call() {
            return Some(signature);
        }
    }
    if let Some(layer) = Builtin::lookup(&site.callee) {
        return Some(Signature {
            label: layer.signature_text(),
            params: layer
                .signature()
                .iter()
                .map(|p| (p.name.clone(), param_text(p)))
                .collect(),
            what: "a layer".into(),
        });
    }
    if let Some(def) = module(&site.callee) {
        let texts = param_text_of(def);
        return Some(Signature {
            label: format!("{}({})", def.name.name, texts.join(", ")),
            params: def
                .params
                .iter()
                .map(|p| p.name.name.clone())
                .zip(texts)
                .collect(),
            what: format!("module `{}`", def.name.name),
        });
    }
    setting_call()
}

/// The offset of the innermost `(` still open at the end of `before`
/// (within its statement: a `{` or `}` at depth 0 ends the search; a call
/// may span lines).
fn open_paren(before: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in before.char_indices().rev() {
        match c {
            ')' | ']' => depth += 1,
            '(' if depth == 0 => return Some(i),
            '(' | '[' => depth -= 1,
            '{' | '}' if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

/// The offset of the `)` that closes the call `after` is inside.
fn close_paren(after: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in after.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' | ']' => depth -= 1,
            '{' | '}' if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

/// Arguments split at the commas outside brackets and strings (always at
/// least one, maybe empty).
fn split_args(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut in_string) = (0i32, 0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn floor_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(text: &str) -> CallSite {
        let at = text.find('$').unwrap();
        let text = text.replacen('$', "", 1);
        call_site(&text, at).unwrap()
    }

    #[test]
    fn the_call_its_setting_and_the_arguments_given() {
        let s = site("train {\n  optimizer = adamw(lr: 3e-4, $)\n}");
        assert_eq!(s.callee, "adamw");
        assert_eq!(s.setting.as_deref(), Some("optimizer"));
        assert_eq!(s.named, ["lr"]);
        assert_eq!((s.active, s.positional, s.active_name), (1, 0, None));
        let s = site("x |> conv2d(1, 16, 3, padd$ing: 1, stride: [2, 2])");
        assert_eq!(s.callee, "conv2d");
        assert_eq!(s.setting, None);
        assert_eq!(s.named, ["stride"]);
        assert_eq!((s.active, s.positional), (3, 3));
        assert_eq!(s.active_name.as_deref(), Some("padding"));
        // A call over several lines.
        let s = site("x |> Block(\n  d: 64,\n  $\n)");
        assert_eq!(
            (s.callee.as_str(), s.named.as_slice()),
            ("Block", &["d".to_string()][..])
        );
        let s = site("train { model = Net; schedule = cosine($) }");
        assert_eq!(s.setting.as_deref(), Some("schedule"));
        assert!(call_site("x |> relu", 5).is_none());
    }

    #[test]
    fn signatures_of_layers_and_setting_values() {
        let none = |_: &str| None;
        let texts = |_: &ModuleDef| Vec::new();
        let adamw = signature(&site("optimizer = adamw($)"), none, texts).unwrap();
        assert_eq!(adamw.what, "a value of `optimizer`");
        let linear = signature(&site("x |> linear($"), none, texts).unwrap();
        assert_eq!(linear.what, "a layer");
        assert_eq!(
            linear.params[0],
            ("in_features".into(), "in_features: int".into())
        );
        // `linear` in a schedule is the schedule.
        let decay = signature(&site("schedule = linear($)"), none, texts).unwrap();
        assert_eq!(decay.what, "a value of `schedule`");
        let s = site("optimizer = adamw(3e-4, weight_decay: 0.1, $)");
        let left: Vec<&str> = adamw.remaining(&s).map(|(n, _)| n.as_str()).collect();
        assert_eq!(left, ["betas", "eps"]);
        assert_eq!(adamw.active(&site("adamw(lr: 1, eps: $")), Some(2));
        assert_eq!(adamw.active(&site("adamw(1, [0.9, 0.99], $")), Some(2));
    }
}
