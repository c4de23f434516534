//! Unit tests of the layout rules, the lexer and the diff. The corpus-wide
//! properties (idempotent, same meaning, comments kept) are in
//! `compiler/tests/fmt.rs`.

use super::lexer::{lex, Kind};
use super::*;

/// Formats `text`, checks that formatting again changes nothing, and
/// returns the result.
fn fmt(text: &str) -> String {
    let once = format_source(text).expect("the test input parses");
    let twice = format_source(&once).expect("formatted text parses");
    assert_eq!(once, twice, "not idempotent on:\n{text}");
    once
}

const NET: &str = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) } }\n";

#[test]
fn spaces_around_operators_and_after_separators() {
    assert_eq!(
        fmt("model Net{forward( x :[ B,64 ] )->[B , 10]{x+x|>linear( 64 ,10 )}}"),
        "model Net { forward(x: [B, 64]) -> [B, 10] { x + x |> linear(64, 10) } }\n"
    );
    assert_eq!(
        fmt("train{a=f(lr:3e-3,b:-1 ,c:[ 0.9,0.999 ]);d=\"x, y\"}"),
        "train { a = f(lr: 3e-3, b: -1, c: [0.9, 0.999]); d = \"x, y\" }\n"
    );
    assert_eq!(
        fmt("module M(d:int,p : float=0.1){forward(x:[B,d])->[B,d]{x}}"),
        "module M(d: int, p: float = 0.1) { forward(x: [B, d]) -> [B, d] { x } }\n"
    );
    // Arithmetic: a `-` after a value is an operator, elsewhere a sign.
    assert_eq!(
        fmt("train{a=f(4*d-1,b:-1,c:d/2-(3*-2))}"),
        "train { a = f(4 * d - 1, b: -1, c: d / 2 - (3 * -2)) }\n"
    );
    // `repeat` takes a number: a minus after it is the sign of a count the
    // checker refuses, laid out as written (found by the mutant test).
    assert_eq!(
        fmt("model N{forward(x:[B,8])->[B,8]{x|>repeat -2{linear(8,8)}}}"),
        "model N { forward(x: [B, 8]) -> [B, 8] { x |> repeat -2 { linear(8, 8) } } }\n"
    );
    assert_eq!(
        fmt("module M(d:int){forward(x:[B,d*2])->[B,d]{(x|>silu)*(x|>relu)}}"),
        "module M(d: int) { forward(x: [B, d * 2]) -> [B, d] { (x |> silu) * (x |> relu) } }\n"
    );
}

#[test]
fn one_line_blocks_stay_on_one_line() {
    assert_eq!(fmt(NET), NET);
    let repeat = "model Net {\n  forward(x: [B, 8]) -> [B, 8] {\n    x |> repeat 2 { linear(8, 8) |> relu }\n  }\n}\n";
    assert_eq!(fmt(repeat), repeat);
    assert_eq!(fmt("train {}\n"), "train {}\n");
    assert_eq!(fmt("train {  }\n"), "train {}\n");
}

#[test]
fn blocks_over_several_lines_are_expanded() {
    assert_eq!(
        fmt("model Net { forward(x: [B, 64]) -> [B, 10] {\nx |> relu } }\n"),
        "model Net {\n  forward(x: [B, 64]) -> [B, 10] {\n    x |> relu\n  }\n}\n"
    );
    assert_eq!(
        fmt("data d { source = csv(\"a.csv\")\n    valid = 0.2 }"),
        "data d {\n  source = csv(\"a.csv\")\n  valid = 0.2\n}\n"
    );
}

#[test]
fn nested_blocks_indent_two_spaces_each() {
    let text = "module M(d: int) {\nfc = linear(d, d)\nforward(x: [B, d]) -> [B, d] {\n        let h = x |> fc\n   h + x\n}\n}\n";
    assert_eq!(
        fmt(text),
        "module M(d: int) {\n  fc = linear(d, d)\n  forward(x: [B, d]) -> [B, d] {\n    let h = x |> fc\n    h + x\n  }\n}\n"
    );
}

#[test]
fn semicolons_are_kept_and_statements_sharing_a_line_split() {
    assert_eq!(
        fmt("train {\n  model = Net ;data = d\n  steps = 1 micro_batch = 8\n}\n"),
        "train {\n  model = Net; data = d\n  steps = 1\n  micro_batch = 8\n}\n"
    );
    // An item after a block's `}` goes to a line of its own.
    assert_eq!(
        fmt("train {\n  steps = 1\n} parallel { data = 1 }\n"),
        "train {\n  steps = 1\n}\nparallel { data = 1 }\n"
    );
    // Inside a one-line block nothing is split.
    let one_line = "test t { M(1) on [1, 1] gives [1, 1] gradcheck }\n";
    assert_eq!(fmt(one_line), one_line);
}

#[test]
fn continuation_lines_are_one_level_deeper() {
    let text = "model Net {\nforward(x: [B, 64]) -> [B, 10] {\nx\n|> linear(64, 32)\n        |> linear(32, 10)\n}\n}\n";
    assert_eq!(
        fmt(text),
        "model Net {\n  forward(x: [B, 64]) -> [B, 10] {\n    x\n      |> linear(64, 32)\n      |> linear(32, 10)\n  }\n}\n"
    );
    let test = "test t {\nM(1)\non [1, 1]\ngives [1, 1]\ngradcheck\n}\n";
    assert_eq!(
        fmt(test),
        "test t {\n  M(1)\n    on [1, 1]\n    gives [1, 1]\n  gradcheck\n}\n"
    );
}

#[test]
fn lines_inside_open_brackets_indent_per_bracket_line() {
    let text = "train {\noptimizer = adamw(\nlr: 3e-3,\n        weight_decay: 0.01,\n)\nsplit = [[1,\n2]]\n}\n";
    assert_eq!(
        fmt(text),
        "train {\n  optimizer = adamw(\n    lr: 3e-3,\n    weight_decay: 0.01,\n  )\n  split = [[1,\n    2]]\n}\n"
    );
    let paren = "model Net {\n  forward(x: [B, 8]) -> [B, 8] {\n    x + (x\n|> relu)\n  }\n}\n";
    assert_eq!(
        fmt(paren),
        "model Net {\n  forward(x: [B, 8]) -> [B, 8] {\n    x + (x\n      |> relu)\n  }\n}\n"
    );
}

#[test]
fn a_brace_alone_on_a_line_moves_up() {
    assert_eq!(
        fmt("model Net\n{\nforward(x: [B, 1]) -> [B, 1] { x }\n}\n"),
        "model Net {\n  forward(x: [B, 1]) -> [B, 1] { x }\n}\n"
    );
    assert_eq!(
        fmt("model Net  // the net\n// more\n{ forward(x: [B, 1]) -> [B, 1] { x } }\n"),
        "model Net {  // the net\n  // more\n  forward(x: [B, 1]) -> [B, 1] { x }\n}\n"
    );
}

#[test]
fn blank_lines_are_squeezed() {
    let text = "\n\n// top\n\n\n\ntrain {\n\n\n  steps = 1\n\n\n\n  seed = 0\n\n}\n\n\n\nparallel { data = 1 }\n\n\n";
    assert_eq!(
        fmt(text),
        "// top\n\ntrain {\n  steps = 1\n\n  seed = 0\n}\n\nparallel { data = 1 }\n"
    );
}

#[test]
fn trailing_whitespace_goes_and_one_newline_ends_the_file() {
    assert_eq!(fmt("train { steps = 1 }   \t"), "train { steps = 1 }\n");
    assert_eq!(
        fmt("// c   \r\ntrain {\r\n  steps = 1\r\n}\r\n"),
        "// c\ntrain {\n  steps = 1\n}\n"
    );
    assert_eq!(fmt(""), "");
    assert_eq!(fmt("  \n\n"), "");
    assert_eq!(fmt("  // only a comment  \n\n"), "// only a comment\n");
}

#[test]
fn trailing_comments_sit_two_spaces_after_the_code() {
    assert_eq!(
        fmt("train {\n  steps = 1 // one\n\n  seed = 0# zero\n}\n"),
        "train {\n  steps = 1  // one\n\n  seed = 0  # zero\n}\n"
    );
    // Code that grows pushes its comment along.
    assert_eq!(
        fmt("train {\n  s=f(a,b)  // c\n}\n"),
        "train {\n  s = f(a, b)  // c\n}\n"
    );
}

#[test]
fn trailing_comments_on_consecutive_lines_align_after_the_longest_code() {
    let text = "data d {\n  source = csv(\"a.csv\")  // the file\n  valid = 0.2            // held out\n}\n";
    assert_eq!(fmt(text), text);
    // The rule reads the code alone: inputs that differ only in spaces
    // (re-indented, comments set off by hand) format alike.
    for spaced in [
        "data d {\n      source = csv(\"a.csv\")  // the file\n      valid = 0.2            // held out\n}\n",
        "data d {\n source = csv(\"a.csv\") // the file\n valid = 0.2 // held out\n}\n",
        "data d {\n  source = csv(\"a.csv\")                // the file\n  valid = 0.2      // held out\n}\n",
    ] {
        assert_eq!(fmt(spaced), text, "{spaced}");
    }
    // A line without a trailing comment ends the run.
    assert_eq!(
        fmt("train {\n  steps = 100 // a\n  seed = 0\n  s = 1     // b\n}\n"),
        "train {\n  steps = 100  // a\n  seed = 0\n  s = 1  // b\n}\n"
    );
}

#[test]
fn own_line_comments_take_the_indent_of_the_next_line() {
    let text = "model Net {\n// about forward\nforward(x: [B, 1]) -> [B, 1] {\nx\n   // before a stage\n|> relu\n  // at the end\n}\n}\n// the end\n";
    assert_eq!(
        fmt(text),
        "model Net {\n  // about forward\n  forward(x: [B, 1]) -> [B, 1] {\n    x\n      // before a stage\n      |> relu\n    // at the end\n  }\n}\n// the end\n"
    );
}

#[test]
fn block_comments_are_kept_verbatim() {
    assert_eq!(
        fmt("train { s = f(/* a */ 1 , /* b */2) }"),
        "train { s = f(/* a */ 1, /* b */ 2) }\n"
    );
    let multi = "/* one\n     two   */\ntrain {\n  /* x\n y */\n  steps = 1\n}\n";
    assert_eq!(fmt(multi), multi);
}

#[test]
fn tokens_are_kept_as_written() {
    let text = "train { a = 3E-3; b = 1.5e+2; c = -0.5; d = \"x \\\" // y\"; e = true }\n";
    assert_eq!(fmt(text), text);
}

#[test]
fn the_lexer_reads_the_surface() {
    let tokens = lex("a=-1e-3|>f(\"s // \\\"t\")->[B] // c\n# d\n/* e\n*/}");
    let kinds: Vec<(Kind, &str, usize)> =
        tokens.iter().map(|t| (t.kind, t.text, t.breaks)).collect();
    assert_eq!(
        kinds,
        vec![
            (Kind::Word, "a", 0),
            (Kind::Punct, "=", 0),
            (Kind::Number, "-1e-3", 0),
            (Kind::Punct, "|>", 0),
            (Kind::Word, "f", 0),
            (Kind::Punct, "(", 0),
            (Kind::Str, "\"s // \\\"t\"", 0),
            (Kind::Punct, ")", 0),
            (Kind::Punct, "->", 0),
            (Kind::Punct, "[", 0),
            (Kind::Word, "B", 0),
            (Kind::Punct, "]", 0),
            (Kind::LineComment, "// c", 0),
            (Kind::LineComment, "# d", 1),
            (Kind::BlockComment, "/* e\n*/", 1),
            (Kind::Punct, "}", 0),
        ]
    );
    assert_eq!(
        comments("x // a  \n/* b */ \"// not\""),
        vec!["// a", "/* b */"]
    );
}

#[test]
fn a_file_that_does_not_parse_is_refused() {
    let broken = "train {\n  model =\n}\nmodel Net {\n  forward(x: [B, 64) -> [B, 10] { x }\n}\n";
    let errors = format_source(broken).expect_err("a broken file is refused");
    assert_eq!(errors, syntax::parse(broken).1);
    assert!(!errors.is_empty());
}

#[test]
fn the_meaning_is_checked_after_layout() {
    let file = syntax::parse(NET).0;
    let moved = syntax::parse(&NET.replace(' ', "\n")).0;
    assert_eq!(without_spans(&file), without_spans(&moved));
    assert_ne!(
        without_spans(&file),
        without_spans(&syntax::parse(&NET.replace("64", "32")).0)
    );
}

#[test]
fn a_diff_of_equal_texts_is_empty() {
    assert_eq!(unified_diff("f.dtl", "a\nb\n", "a\nb\n"), "");
}

#[test]
fn a_diff_has_hunks_with_three_lines_of_context() {
    let lines = |list: &[&str]| -> String { list.iter().map(|l| format!("{l}\n")).collect() };
    let numbers: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let old: Vec<&str> = numbers.iter().map(String::as_str).collect();
    let mut new = old.clone();
    new[1] = "two";
    new.insert(19, "19b");
    new.remove(16);
    assert_eq!(
        unified_diff("x.dtl", &lines(&old), &lines(&new)),
        "--- a/x.dtl\n+++ b/x.dtl\n\
         @@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n\
         @@ -14,7 +14,7 @@\n 14\n 15\n 16\n-17\n 18\n 19\n+19b\n 20\n"
    );
    // Changes six kept lines apart share a hunk.
    let mut near = old.clone();
    near[3] = "four";
    near[10] = "eleven";
    assert_eq!(
        unified_diff("x.dtl", &lines(&old), &lines(&near)),
        "--- a/x.dtl\n+++ b/x.dtl\n\
         @@ -1,14 +1,14 @@\n 1\n 2\n 3\n-4\n+four\n 5\n 6\n 7\n 8\n 9\n 10\n-11\n+eleven\n 12\n 13\n 14\n"
    );
}

#[test]
fn a_diff_names_the_line_before_an_empty_side() {
    assert_eq!(
        unified_diff("x", "", "a\n"),
        "--- a/x\n+++ b/x\n@@ -0,0 +1,1 @@\n+a\n"
    );
    assert_eq!(
        unified_diff("x", "a\n", ""),
        "--- a/x\n+++ b/x\n@@ -1,1 +0,0 @@\n-a\n"
    );
    assert_eq!(
        unified_diff("x", "b\nc\n", "a\nb\nc\n"),
        "--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n+a\n b\n c\n"
    );
}

#[test]
fn a_diff_marks_a_missing_final_newline() {
    assert_eq!(
        unified_diff("x", "a\nb", "a\nb\n"),
        "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"
    );
}
