//! Hostile input: nesting that would overflow a recursive parser or
//! checker is a clear error with a span, never a crash. Each input is
//! checked, compiled, formatted and asked the editor's questions, on a
//! test thread's small stack (2 MiB).

use dtl_compiler::tools::analysis;

const DEPTH: usize = 100_000;

fn options() -> dtl_compiler::check::Options {
    dtl_compiler::options_for(std::path::Path::new("hostile.dtl"), false)
}

/// Every phase a user or an editor can run, on `text`: the diagnostics'
/// codes, which must hold `code`, every span inside the file.
fn survive(text: &str, code: &str) {
    let diagnostics = match dtl_compiler::compile_source("hostile.dtl", text, &options()) {
        Ok(_) => panic!("a hostile file compiled"),
        Err(d) => d,
    };
    let records = diagnostics.records();
    assert!(
        records.iter().any(|r| r.code == code),
        "expected {code}, got {:?}",
        records.iter().map(|r| &r.code).collect::<Vec<_>>()
    );
    for r in &records {
        assert!(
            r.start <= r.end && r.end <= text.len(),
            "span {}..{} outside the file",
            r.start,
            r.end
        );
    }
    let _ = diagnostics.render_human(false);
    // The formatter refuses a file it cannot parse, and formats the rest.
    let formatted = dtl_compiler::tools::format::format_source(text);
    assert_eq!(
        formatted.is_err(),
        code.starts_with("dtl::syntax"),
        "the formatter"
    );
    let analysis = analysis::analyze("hostile.dtl", text, &options());
    for offset in [0, text.len() / 2, text.len()] {
        let _ = analysis.hover(offset);
        let _ = analysis.definition(offset);
        let _ = analysis.completions(offset);
    }
}

fn model_around(body: &str) -> String {
    format!(
        "model Net {{\n  forward(x: [B, 4]) -> [B, 4] {{ {body} }}\n}}\n\
         data d {{ source = synthetic(rows: 16, features: 4, classes: 4) }}\n\
         train {{ model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 4 }}\n"
    )
}

#[test]
fn deep_brackets_braces_and_repeats_are_an_error_not_a_crash() {
    let parens = model_around(&format!("{}x{}", "(".repeat(DEPTH), ")".repeat(DEPTH)));
    survive(&parens, "dtl::syntax::too_deep");
    let brackets = format!(
        "model Net {{ forward(x: {}B, 4{}) -> [B, 4] {{ x }} }}",
        "[".repeat(DEPTH),
        "]".repeat(DEPTH)
    );
    survive(&brackets, "dtl::syntax::too_deep");
    survive(&"{".repeat(DEPTH), "dtl::syntax::too_deep");
    let repeats = model_around(&format!(
        "x |> {}relu{}",
        "repeat 2 { ".repeat(DEPTH),
        " }".repeat(DEPTH)
    ));
    survive(&repeats, "dtl::syntax::too_deep");
    // Only the raw text is scanned: brackets in strings and comments do
    // not count, and the limit itself parses.
    let commented = format!("// {}\n{}", "(".repeat(DEPTH), model_around("x |> relu"));
    dtl_compiler::compile_source("ok.dtl", &commented, &options()).unwrap();
    let limit = dtl_compiler::syntax::MAX_NESTING - 3;
    let deep_ok = model_around(&format!("{}x{}", "(".repeat(limit), ")".repeat(limit)));
    dtl_compiler::compile_source("ok.dtl", &deep_ok, &options())
        .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
}

#[test]
fn a_long_chain_of_modules_inside_modules_is_an_error_not_a_crash() {
    let mut text = String::new();
    for i in 0..DEPTH {
        text.push_str(&format!(
            "module M{i}(d: int) {{ forward(x: [B, d]) -> [B, d] {{ x |> M{}(d) }} }}\n",
            i + 1
        ));
    }
    text.push_str(&format!(
        "module M{DEPTH}(d: int) {{ forward(x: [B, d]) -> [B, d] {{ x |> relu }} }}\n"
    ));
    text.push_str(&model_around("x |> M0(4)"));
    survive(&text, "dtl::check::invalid_value");
}

#[test]
fn a_deep_set_value_is_refused() {
    let value = format!("train.steps={}1{}", "(".repeat(DEPTH), ")".repeat(DEPTH));
    let err = dtl_compiler::overrides::parse(&value).unwrap_err();
    assert!(err.contains("nest more than"), "{err}");
}
