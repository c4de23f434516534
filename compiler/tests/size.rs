//! Functions that fit on a screen: no `fn` in `compiler/src` may run over
//! [`MAX_LINES`] lines, counted from the line with `fn` to the line with the
//! brace that closes its body. The scanner matches braces and skips what
//! is not code (comments, strings, character literals), so a `}` inside a
//! message or a comment does not end a function early. Nothing is exempt;
//! a long function fails here with its file, line and length.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 120;

/// A function body found in a file: its name, the line of its `fn`
/// keyword and its length in lines (both ends counted).
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
}

/// The source with everything that is not code (comments, string and
/// character literals) replaced by spaces, newlines kept, so that braces
/// and keywords can be found by position and lines still count.
fn code_only(text: &str) -> Vec<char> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(chars.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || !is_ident(chars[i - 1]);
        let next = chars.get(i + 1).copied();
        match chars[i] {
            '/' if next == Some('/') => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            '/' if next == Some('*') => {
                // Block comments nest in Rust.
                let (mut depth, mut j) = (0usize, i);
                while j < chars.len() {
                    if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 2;
                    } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            'r' | 'b' if at_word_start && raw_string_hashes(&chars[i..]).is_some() => {
                let (prefix, hashes) = raw_string_hashes(&chars[i..]).expect("checked");
                let body = i + prefix + hashes + 1;
                let closing: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let end = (body..chars.len())
                    .find(|&j| chars[j..].starts_with(&closing))
                    .map_or(chars.len(), |j| j + closing.len());
                blank(&mut out, i, end);
                i = end;
            }
            '"' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            '\'' => {
                // A character literal ('x', '\n', '\u{7f}'), or a lifetime
                // ('a), which has no closing quote right after one char.
                let end = if next == Some('\\') {
                    // The escaped character is at i + 2; '\'' ends at i + 3.
                    (i + 3..chars.len()).find(|&j| chars[j] == '\'')
                } else if chars.get(i + 2) == Some(&'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end + 1);
                        i = end + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// For text starting `r"`, `r#"`, `br##"` and so on: the prefix length
/// (`r` or `br`) and the number of `#`s.
fn raw_string_hashes(text: &[char]) -> Option<(usize, usize)> {
    let prefix = match text {
        ['r', ..] => 1,
        ['b', 'r', ..] => 2,
        _ => return None,
    };
    let hashes = text[prefix..].iter().take_while(|&&c| c == '#').count();
    (text.get(prefix + hashes) == Some(&'"')).then_some((prefix, hashes))
}

/// Every function with a body in `text`, nested ones included.
fn functions(text: &str) -> Vec<Function> {
    let code = code_only(text);
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let line_at = |at: usize| code[..at].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    for at in 0..code.len() {
        let keyword = code[at..].starts_with(&['f', 'n'])
            && (at == 0 || !is_ident(code[at - 1]))
            && code.get(at + 2).is_some_and(|c| c.is_whitespace());
        if !keyword {
            continue;
        }
        // `fn name`, not the type `fn(usize) -> bool`.
        let name_at = (at + 2..code.len()).find(|&j| !code[j].is_whitespace());
        let Some(name_at) = name_at.filter(|&j| is_ident(code[j])) else {
            continue;
        };
        let name: String = code[name_at..]
            .iter()
            .take_while(|&&c| is_ident(c))
            .collect();
        let Some(open) = body_start(&code, name_at) else {
            continue;
        };
        let Some(close) = matching_brace(&code, open) else {
            continue;
        };
        found.push(Function {
            name,
            line: line_at(at),
            lines: line_at(close) - line_at(at) + 1,
        });
    }
    found
}

/// The `{` that opens the body of the function whose signature starts at
/// `from`, or `None` for a declaration without one (`fn f();` in a trait).
fn body_start(code: &[char], from: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (j, &c) in code.iter().enumerate().skip(from) {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            '{' if depth == 0 => return Some(j),
            ';' if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

fn matching_brace(code: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, &c) in code.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_scanner_skips_what_is_not_code() {
    let text = r###"
/// fn not_this() { in a doc comment }
fn outer(x: [u8; 2]) -> impl Fn(u8) -> u8 {
    let s = "} fn fake() {";
    let r = r#"}"#;
    let c = '}';
    let q = '"';
    let e = ('\'', '{');
    /* } /* nested } */ } */
    fn inner<'a>(y: &'a str) -> &'a str {
        y
    }
    move |v| v
}
trait T {
    fn declared(&self);
    fn defaulted(&self) {}
}
type F = fn(usize) -> bool;
"###;
    let found = functions(text);
    let summary: Vec<(&str, usize, usize)> = found
        .iter()
        .map(|f| (f.name.as_str(), f.line, f.lines))
        .collect();
    assert_eq!(
        summary,
        [("outer", 3, 12), ("inner", 10, 3), ("defaulted", 17, 1)]
    );
}

#[test]
fn no_function_in_the_compiler_is_longer_than_a_screen() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for f in functions(&text) {
            if f.lines > MAX_LINES {
                long.push(format!(
                    "compiler/src/{}:{}: fn {} is {} lines",
                    file.strip_prefix(&src).unwrap().display(),
                    f.line,
                    f.name,
                    f.lines
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines (split them into named pieces):\n{}",
        long.join("\n")
    );
}
