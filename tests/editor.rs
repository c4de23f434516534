//! The VS Code extension in `editors/vscode/` keeps in step with the
//! language: its TextMate grammar knows every keyword of `grammar/dtl.pest`
//! and every layer of the checker's library, `package.json` contributes it,
//! and the extension's own grammar tests (`editors/vscode/test.sh`, run on
//! vscode-textmate, the engine VS Code uses) pass. A real client, Neovim's,
//! drives `dtl lsp` through an edit session (`editors/nvim/smoke.lua`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Map, Value};

const GRAMMAR: &str = "editors/vscode/syntaxes/dtl.tmLanguage.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// The double-quoted literals of one line of pest, unescaped.
fn quoted_literals(line: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut literal = String::new();
    let (mut inside, mut escaped) = (false, false);
    for c in line.chars() {
        if !inside {
            inside = c == '"';
        } else if escaped {
            literal.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            literals.push(std::mem::take(&mut literal));
            inside = false;
        } else {
            literal.push(c);
        }
    }
    literals
}

/// A literal that is a word a user types: `"module"`, `"on"`. One letter is
/// not a word here: the exponent's `^"e"`, the escapes `"n"` and `"t"`.
fn is_word(literal: &str) -> bool {
    literal.len() >= 2 && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The words the pest grammar spells out: the alternatives of its `keyword`
/// rule, and the words other rules match literally (`"on"` and `"gives"` in
/// tests, which are not keywords but read as such). Comment lines are skipped.
fn pest_words() -> BTreeSet<String> {
    let pest = read("grammar/dtl.pest");
    let lines: Vec<&str> = pest
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect();

    let start = lines
        .iter()
        .position(|line| line.starts_with("keyword ") || line.starts_with("keyword="))
        .expect("grammar/dtl.pest has a `keyword` rule");
    let mut keywords = BTreeSet::new();
    for line in &lines[start..] {
        keywords.extend(quoted_literals(line).into_iter().filter(|l| is_word(l)));
        if line.contains('}') {
            break;
        }
    }
    assert!(
        keywords.contains("module") && keywords.contains("train"),
        "could not read the `keyword` rule of grammar/dtl.pest, got {keywords:?}"
    );

    let literal_words = lines
        .iter()
        .copied()
        .flat_map(quoted_literals)
        .filter(|l| is_word(l));
    keywords.extend(literal_words);
    keywords
}

/// The layer names of the checker's library, read from its
/// `("name", Builtin::Variant)` table.
fn builtin_layers() -> BTreeSet<String> {
    let source = read("compiler/src/check/library/mod.rs");
    let layers: BTreeSet<String> = source
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().strip_prefix("(\"")?.split_once('"')?;
            let rest = rest.trim_start().strip_prefix(',')?.trim_start();
            rest.starts_with("Builtin::").then(|| name.to_string())
        })
        .collect();
    assert!(
        layers.contains("linear") && layers.contains("relu"),
        "could not read the layer table of compiler/src/check/library/mod.rs, got {layers:?}"
    );
    layers
}

/// Every rule of a TextMate grammar (an object with `match` or `begin`),
/// wherever it sits: top level, repository, nested patterns, captures.
fn collect_rules<'a>(value: &'a Value, rules: &mut Vec<&'a Map<String, Value>>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("match") || map.contains_key("begin") {
                rules.push(map);
            }
            for child in map.values() {
                collect_rules(child, rules);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_rules(item, rules);
            }
        }
        _ => {}
    }
}

/// The scopes a rule gives: its own name and those of its captures.
fn scopes(rule: &Map<String, Value>) -> Vec<&str> {
    let mut scopes: Vec<&str> = ["name", "contentName"]
        .iter()
        .filter_map(|key| rule.get(*key)?.as_str())
        .collect();
    for key in ["captures", "beginCaptures", "endCaptures"] {
        if let Some(Value::Object(captures)) = rule.get(key) {
            scopes.extend(captures.values().filter_map(|c| c.get("name")?.as_str()));
        }
    }
    scopes
}

/// The words a regex spells out literally: runs of letters, digits and `_`,
/// with escapes such as `\b` and `\s` taken out (`\bon\b` spells `on`).
fn regex_words(regex: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut escaped = false;
    for c in regex.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The words of every rule of the grammar that gives a scope starting with
/// one of `prefixes`.
fn words_scoped(grammar: &Value, prefixes: &[&str]) -> BTreeSet<String> {
    let mut rules = Vec::new();
    collect_rules(grammar, &mut rules);
    let mut words = BTreeSet::new();
    for rule in rules {
        let scoped = scopes(rule)
            .iter()
            .any(|scope| prefixes.iter().any(|prefix| scope.starts_with(*prefix)));
        if !scoped {
            continue;
        }
        for key in ["match", "begin"] {
            if let Some(regex) = rule.get(key).and_then(Value::as_str) {
                words.extend(regex_words(regex));
            }
        }
    }
    words
}

#[test]
fn grammar_scopes_every_keyword_of_the_pest_grammar() {
    let highlighted = words_scoped(
        &json(GRAMMAR),
        &["keyword.other.", "keyword.control.", "constant.language."],
    );
    let missing: Vec<String> = pest_words()
        .into_iter()
        .filter(|word| !highlighted.contains(word))
        .collect();
    assert!(
        missing.is_empty(),
        "grammar/dtl.pest has words that no keyword.* or constant.language.* rule of \
         {GRAMMAR} matches: {missing:?}"
    );
}

#[test]
fn grammar_scopes_exactly_the_builtin_layers() {
    let layers = builtin_layers();
    let highlighted = words_scoped(&json(GRAMMAR), &["support.function.builtin.layer"]);
    let missing: Vec<&String> = layers.difference(&highlighted).collect();
    let stale: Vec<&String> = highlighted.difference(&layers).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the support.function.builtin.layer rules of {GRAMMAR} are out of step with \
         compiler/src/check/library/mod.rs: missing {missing:?}, no longer layers {stale:?}"
    );
}

#[test]
fn package_json_contributes_the_language_and_grammar() {
    let package = json("editors/vscode/package.json");
    let grammar = json(GRAMMAR);
    let contributes = &package["contributes"];

    let languages = contributes["languages"]
        .as_array()
        .expect("contributes.languages");
    assert!(
        languages.iter().any(|l| l["id"] == "dtl"
            && l["extensions"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == ".dtl"))),
        "package.json does not register `.dtl` files as the language `dtl`"
    );

    let grammars = contributes["grammars"]
        .as_array()
        .expect("contributes.grammars");
    let contributed = grammars.iter().any(|g| {
        g["language"] == "dtl"
            && g["scopeName"] == grammar["scopeName"]
            && g["path"] == "./syntaxes/dtl.tmLanguage.json"
    });
    assert!(
        contributed,
        "package.json does not contribute {GRAMMAR} for `dtl`"
    );
    assert_eq!(grammar["scopeName"], "source.dtl");
}

#[test]
fn grammar_tests_pass() {
    if std::env::var("DTL_SKIP_EDITOR_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipped: DTL_SKIP_EDITOR_TESTS=1");
        return;
    }
    let npm = Command::new("npm").arg("--version").output();
    assert!(
        npm.is_ok_and(|out| out.status.success()),
        "npm is not on PATH: scripts/setup.sh installs it (or set DTL_SKIP_EDITOR_TESTS=1 to skip the grammar tests)"
    );
    let out = Command::new("bash")
        .arg(root().join("editors/vscode/test.sh"))
        .output()
        .expect("running bash");
    assert!(
        out.status.success(),
        "editors/vscode/test.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Neovim's own LSP client, headless, against `dtl lsp`: diagnostics,
/// hover, completion inside `adamw(`, inlay hints, an edit, formatting and
/// rename, each checked by `editors/nvim/smoke.lua`.
#[test]
fn neovim_drives_the_language_server() {
    if std::env::var("DTL_SKIP_EDITOR_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipped: DTL_SKIP_EDITOR_TESTS=1");
        return;
    }
    let nvim = Command::new("nvim").arg("--version").output();
    assert!(
        nvim.is_ok_and(|out| out.status.success()),
        "nvim is not on PATH: scripts/setup.sh installs it (or set DTL_SKIP_EDITOR_TESTS=1)"
    );
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg("nvim")
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "-c"])
        .arg(format!(
            "luafile {}",
            root().join("editors/nvim/smoke.lua").display()
        ))
        .env("DTL_BIN", env!("CARGO_BIN_EXE_dtl"))
        .env("DTL_SMOKE_DIR", scratch.path())
        .output()
        .expect("running nvim");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Neovim's checks failed:\n{said}");
    assert!(said.contains("checks passed"), "{said}");
}
