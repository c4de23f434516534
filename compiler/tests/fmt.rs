//! `dtl fmt` on the corpus (`examples/`, `tests/cases/ok`, `tests/cases/err`)
//! and on layouts messed up from it: formatting is idempotent, keeps every
//! comment, keeps the syntax tree (spans aside) and what the compiler makes
//! of the file (plan, warnings, errors), and never touches a file that does
//! not parse.

use std::path::{Path, PathBuf};

use dtl_compiler::tools::format::{comments, format_source, unified_diff};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dtl_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "dtl"))
        .collect();
    files.sort();
    files
}

fn corpus() -> Vec<PathBuf> {
    let mut files = dtl_files("examples");
    files.extend(dtl_files("tests/cases/ok"));
    files.extend(dtl_files("tests/cases/err"));
    files
}

fn parses(text: &str) -> bool {
    dtl_compiler::syntax::parse(text).1.is_empty()
}

/// The syntax tree's debug form with every `Span { start: .., end: .. }`
/// blanked.
fn tree_without_spans(text: &str) -> String {
    let tree = format!("{:?}", dtl_compiler::syntax::parse(text).0);
    let mut out = String::new();
    let mut rest = tree.as_str();
    while let Some(at) = rest.find("Span { start: ") {
        out.push_str(&rest[..at]);
        out.push_str("Span");
        let end = rest[at..]
            .find(" }")
            .expect("a span's debug form ends in ` }`");
        rest = &rest[at + end + 2..];
    }
    out.push_str(rest);
    out
}

/// What the compiler makes of a file: its plan (the `source` field aside)
/// and warnings, or its diagnostics; the module tests it would run. Spans
/// and line numbers are left out: layout may move them.
fn meaning(path: &Path, text: &str) -> String {
    let options = dtl_compiler::options_for(path, true);
    let name = path.display().to_string();
    let records = |diagnostics: &dtl_compiler::Diagnostics| -> String {
        diagnostics
            .records()
            .iter()
            .map(|r| format!("{} {} {} {:?}\n", r.severity, r.code, r.message, r.help))
            .collect()
    };
    let tests = match dtl_compiler::check_source(&name, text, &options) {
        Ok(checked) => format!("{:?}", checked.tests),
        Err(_) => String::new(),
    };
    match dtl_compiler::compile_source_with_warnings(&name, text, &options) {
        Ok((mut plan, warnings)) => {
            plan.source.clear();
            format!(
                "plan {plan:?}\nwarnings\n{}tests {tests}",
                records(&warnings)
            )
        }
        Err(diagnostics) => format!("errors\n{}tests {tests}", records(&diagnostics)),
    }
}

/// Checks what formatting `text` must guarantee and returns the result
/// (`None` for a file that does not parse, which must be refused).
fn check_formatting(path: &Path, text: &str, with_meaning: bool) -> Option<String> {
    let (_, syntax_errors) = dtl_compiler::syntax::parse(text);
    let once = match format_source(text) {
        Ok(once) => once,
        Err(errors) => {
            assert!(
                !syntax_errors.is_empty(),
                "{}: a file that parses was refused: {errors:?}\n{text}",
                path.display()
            );
            assert_eq!(
                errors,
                syntax_errors,
                "{}: refused with other errors",
                path.display()
            );
            return None;
        }
    };
    assert!(
        syntax_errors.is_empty(),
        "{}: a broken file was formatted",
        path.display()
    );
    let twice = format_source(&once).expect("formatted text parses");
    assert!(
        once == twice,
        "{}: formatting twice changes the text:\n{}",
        path.display(),
        unified_diff("once", &once, &twice)
    );
    assert_eq!(
        tree_without_spans(text),
        tree_without_spans(&once),
        "{}: the syntax tree changed:\n{}",
        path.display(),
        unified_diff("before", text, &once)
    );
    let trimmed: Vec<String> = comments(text);
    assert_eq!(
        trimmed,
        comments(&once),
        "{}: comments changed",
        path.display()
    );
    if with_meaning {
        assert_eq!(
            meaning(path, text),
            meaning(path, &once),
            "{}: meaning",
            path.display()
        );
    }
    check_house_rules(path, &once);
    Some(once)
}

/// `text` with the line breaks inside `/* */` comments made spaces: the
/// inside of a comment is kept as written, so layout rules skip it.
fn block_comments_on_one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut in_line_comment, mut in_block) = (false, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        match c {
            '\n' if in_block => {
                out.push(' ');
                continue;
            }
            '\n' => (in_string, in_line_comment) = (false, false),
            '*' if in_block && next == Some('/') => in_block = false,
            '"' if !in_block && !in_line_comment => in_string = !in_string,
            '\\' if in_string => {
                out.push(c);
                out.extend(chars.next());
                continue;
            }
            '#' if !in_string && !in_block => in_line_comment = true,
            '/' if !in_string && !in_block && !in_line_comment => match next {
                Some('/') => in_line_comment = true,
                Some('*') => {
                    in_block = true;
                    out.push_str("/*");
                    chars.next();
                    continue;
                }
                _ => {}
            },
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Layout rules that hold for any formatted file whatever its input.
fn check_house_rules(path: &Path, text: &str) {
    if text.is_empty() {
        return;
    }
    let text = &block_comments_on_one_line(text);
    let name = path.display();
    assert!(
        text.ends_with('\n') && !text.ends_with("\n\n"),
        "{name}: file end"
    );
    assert!(!text.starts_with('\n'), "{name}: blank line at the start");
    assert!(!text.contains("\n\n\n"), "{name}: two blank lines in a row");
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line.trim_end(),
            *line,
            "{name}:{}: trailing whitespace",
            i + 1
        );
        let indent = &line[..line.len() - line.trim_start().len()];
        assert!(
            !indent.contains('\t'),
            "{name}:{}: a tab in the indent",
            i + 1
        );
        if line.is_empty() {
            assert!(
                !lines[i - 1].ends_with('{'),
                "{name}:{}: blank after `{{`",
                i + 1
            );
            assert!(
                !lines[i + 1].trim_start().starts_with('}'),
                "{name}:{}: blank before `}}`",
                i + 1
            );
        }
    }
}

#[test]
fn examples_are_in_the_canonical_layout() {
    let files = dtl_files("examples");
    assert!(files.len() >= 5);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let formatted = format_source(&text).expect("examples parse");
        assert!(
            formatted == text,
            "`dtl fmt` would change {}:\n{}",
            path.display(),
            unified_diff(&path.display().to_string(), &text, &formatted)
        );
    }
}

#[test]
fn every_corpus_file_formats_idempotently_keeping_comments_and_meaning() {
    let files = corpus();
    assert!(files.len() > 50);
    let mut formatted = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        match check_formatting(path, &text, true) {
            Some(_) => formatted += 1,
            None => assert!(
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("syntax_"),
                "{} does not parse",
                path.display()
            ),
        }
    }
    // Every file but the syntax-error cases formats.
    let syntax_cases = files
        .iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("syntax_")
        })
        .count();
    assert!(
        formatted + syntax_cases >= files.len() && syntax_cases < 20,
        "only {formatted} of {} formatted ({syntax_cases} syntax cases)",
        files.len()
    );
}

/// A line split into code and the comment that ends it (strings skipped).
fn split_comment(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'#' if !in_string => return line.split_at(i),
            b'/' if !in_string && matches!(bytes.get(i + 1), Some(b'/' | b'*')) => {
                return line.split_at(i)
            }
            _ => {}
        }
        i += 1;
    }
    (line, "")
}

/// The same file laid out badly: indents scrambled, spaces squeezed out
/// or added, blank lines doubled, trailing blanks, some `{` on a line of
/// their own. Line breaks and comments are kept.
fn mess(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let (code, comment) = split_comment(line);
        if code.trim().is_empty() && comment.is_empty() {
            out.push_str("\n\n");
            continue;
        }
        let gap = &code[code.trim_end().len()..];
        let mut code = code.trim().to_string();
        for (tidy, messy) in [
            (" = ", "="),
            (" |> ", "|>  "),
            (", ", " ,"),
            (": ", ":"),
            (" -> ", "->"),
        ] {
            code = code.replace(tidy, messy);
        }
        if i % 3 == 0 && comment.is_empty() && code.ends_with(" {") && code.len() > 2 {
            code = format!("{}\n{{", &code[..code.len() - 2]);
        }
        out.push_str(&" ".repeat(i * 5 % 9));
        out.push_str(&code);
        out.push_str(if comment.is_empty() { "   " } else { gap });
        out.push_str(comment);
        out.push('\n');
    }
    out
}

/// Two spaces between code and a comment that trails it: the comment
/// columns of a messed-up file differ, and this test is not about them.
fn comment_gaps_squeezed(text: &str) -> String {
    text.lines()
        .map(|line| {
            let (code, comment) = split_comment(line);
            if code.trim().is_empty() || comment.is_empty() {
                format!("{line}\n")
            } else {
                format!("{}  {comment}\n", code.trim_end())
            }
        })
        .collect()
}

#[test]
fn messed_up_layouts_come_back_to_the_canonical_one() {
    let mut messed_files = 0;
    for path in corpus() {
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(canonical) = format_source(&text) else {
            continue;
        };
        let messy = mess(&text);
        assert!(
            parses(&messy),
            "{}: the messed-up text must parse:\n{messy}",
            path.display()
        );
        assert_ne!(messy, text);
        let formatted = check_formatting(&path, &messy, true).expect("the messed-up text parses");
        let (want, got) = (
            comment_gaps_squeezed(&canonical),
            comment_gaps_squeezed(&formatted),
        );
        assert!(
            want == got,
            "{}: a messed-up layout does not come back:\n{}",
            path.display(),
            unified_diff(&path.display().to_string(), &want, &got)
        );
        messed_files += 1;
    }
    assert!(messed_files > 50);
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// What a mutation inserts: mostly layout (blanks, breaks, comments),
/// sometimes a token.
const LAYOUT: [&str; 10] = [
    "\n",
    "\n\n\n",
    " ",
    "   ",
    "\t",
    "// note\n",
    "# note\n",
    "/* note */",
    "/* a\n b */",
    "\r\n",
];
const TOKENS: [&str; 9] = ["{", "}", "(", ")", ",", ";", "|>", "x", "-1"];

/// One to four edits: mostly layout inserted where a token ends (so the
/// mutant usually still parses), sometimes a token inserted or a few
/// characters cut anywhere (so it often does not).
fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut out = text.to_string();
    for _ in 0..1 + rng.below(4) {
        let mut at = rng.below(out.len() + 1);
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        match rng.below(10) {
            0 => {
                let mut end = (at + 1 + rng.below(3)).min(out.len());
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.replace_range(at..end, "");
            }
            1 => out.insert_str(at, TOKENS[rng.below(TOKENS.len())]),
            _ => {
                let after_token_end = at > 0 && b"(){}[],:;= \n".contains(&out.as_bytes()[at - 1]);
                if after_token_end {
                    out.insert_str(at, LAYOUT[rng.below(LAYOUT.len())]);
                }
            }
        }
    }
    out
}

#[test]
fn mutants_of_the_corpus_format_safely() {
    let mut rng = Rng(0xF0F0);
    let (mut formatted, mut refused) = (0, 0);
    for path in corpus() {
        let text = std::fs::read_to_string(&path).unwrap();
        for _ in 0..60 {
            let mutant = mutate(&text, &mut rng);
            let outcome = std::panic::catch_unwind(|| check_formatting(&path, &mutant, false));
            match outcome {
                Ok(Some(_)) => formatted += 1,
                Ok(None) => refused += 1,
                Err(_) => panic!("a mutant of {} fails:\n{mutant}", path.display()),
            }
        }
    }
    assert!(
        formatted > 3000 && refused > 300,
        "{formatted} formatted, {refused} refused"
    );
}
