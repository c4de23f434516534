//! The references keep up with the code: every built-in layer and every
//! train setting is documented in docs/language.md, every field and variant
//! of the plan in docs/plan.md.

use std::path::Path;

fn reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/language.md")).unwrap()
}

fn plan_reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/plan.md")).unwrap()
}

#[test]
fn every_builtin_layer_is_documented() {
    let doc = reference();
    for name in dtl_compiler::check::builtin_names() {
        assert!(
            doc.contains(&format!("`{name}")),
            "docs/language.md does not document `{name}`"
        );
    }
}

#[test]
fn every_train_setting_is_documented() {
    let doc = reference();
    for key in dtl_compiler::check::TRAIN_KEYS {
        assert!(
            doc.contains(&format!("| `{key}`")),
            "docs/language.md has no row for the train setting `{key}`"
        );
    }
}

/// The files that define the plan's types.
const PLAN_TYPES: [&str; 3] = [
    "compiler/src/plan/types.rs",
    "compiler/src/plan/parallel.rs",
    "compiler/src/plan/tracking.rs",
];

/// A variant's name as serde's `rename_all = "snake_case"` writes it:
/// `OneFOneB` → `one_f_one_b`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The names a plan is written with, read from the source of its types: the
/// `pub` fields of every `pub struct`, and the variants of every `pub enum`
/// that derives `Serialize`, in snake_case unless `#[serde(rename = "…")]`
/// says otherwise. Plain text processing: the types are laid out by
/// rustfmt, one field or variant a line.
fn plan_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut attributes: Vec<&str> = Vec::new();
    let mut lines = source.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("#[") || line.starts_with("///") {
            attributes.push(line);
            continue;
        }
        let item_attributes = std::mem::take(&mut attributes);
        let is_struct = line.starts_with("pub struct ") && line.ends_with('{');
        let is_enum = line.starts_with("pub enum ") && line.ends_with('{');
        if !is_struct && !is_enum {
            continue;
        }
        let serialized = item_attributes
            .iter()
            .any(|a| a.starts_with("#[derive(") && a.contains("Serialize"));
        // `Dim` is untagged: a shape is written as bare integers and
        // strings, so its variant names never appear in a plan.
        let untagged = item_attributes.iter().any(|a| a.contains("untagged"));
        let mut depth = 1i32;
        let mut rename: Option<String> = None;
        while depth > 0 {
            let Some(body) = lines.next() else {
                break;
            };
            if body.starts_with("//") {
                continue;
            }
            // Only the item's own lines: not the fields of a struct variant.
            let top_level = depth == 1;
            depth += body.matches('{').count() as i32 - body.matches('}').count() as i32;
            if !top_level {
                continue;
            }
            if is_struct {
                let field = body.strip_prefix("pub ").and_then(|f| f.split_once(':'));
                if let Some((field, _)) = field {
                    names.push(field.trim().to_string());
                }
            } else if serialized && !untagged {
                if let Some(renamed) = body.strip_prefix("#[serde(rename = \"") {
                    rename = renamed.split('"').next().map(str::to_string);
                } else if body.starts_with(|c: char| c.is_ascii_uppercase()) {
                    let variant: String = body
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.push(rename.take().unwrap_or_else(|| snake_case(&variant)));
                }
            }
        }
    }
    names
}

#[test]
fn every_plan_field_is_documented() {
    let doc = plan_reference();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    let mut missing = Vec::new();
    for file in PLAN_TYPES {
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        for name in plan_names(&source) {
            if !doc.contains(&format!("`{name}`")) {
                missing.push(format!("`{name}` ({file})"));
            }
            all.push(name);
        }
    }
    // The reading of the sources itself: a field, a renamed variant and a
    // snake_cased one from types.rs, a variant from parallel.rs.
    for name in ["step_program", "adamw", "one_f_one_b", "send_gradients"] {
        assert!(all.iter().any(|n| n == name), "plan_names missed `{name}`");
    }
    assert!(
        missing.is_empty(),
        "docs/plan.md does not document {}",
        missing.join(", ")
    );
}

/// The complete plan shown in docs/plan.md is the golden plan of
/// `tests/cases/ok/minimal.dtl`, byte for byte.
#[test]
fn the_documented_plan_is_the_golden_one() {
    let doc = plan_reference();
    let marker = "`dtl compile tests/cases/ok/minimal.dtl`, from the repository root:\n\n```yaml\n";
    let start = doc
        .find(marker)
        .expect("docs/plan.md shows minimal.dtl's plan")
        + marker.len();
    let end = start + doc[start..].find("```").expect("the block ends");
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/ok/minimal.plan.yaml"),
    )
    .unwrap();
    assert_eq!(
        &doc[start..end],
        golden,
        "docs/plan.md's sample plan is out of date: copy tests/cases/ok/minimal.plan.yaml into it"
    );
}

/// The ```dtl blocks of README.md and the guides are whole files that
/// compile, data read, paths relative to the page: a renamed setting or
/// layer fails here, not for a reader. (The cookbook's are run by
/// `the_cookbook_recipes_check_and_run`; the language reference's by
/// `the_reference_examples_check`.)
#[test]
fn the_guides_whole_files_compile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut pages = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && name != "cookbook.md" && name != "language.md" {
            pages.push(format!("docs/{name}"));
        }
    }
    pages.sort();
    for page in pages.iter().map(String::as_str) {
        let path = root.join(page);
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, block) in text.split("```dtl\n").skip(1).enumerate() {
            let source = block.split("```").next().unwrap();
            let options = dtl_compiler::options_for(&path, true);
            if let Err(diagnostics) = dtl_compiler::compile_source(page, source, &options) {
                panic!(
                    "{page}, dtl block {}:\n{}",
                    i + 1,
                    diagnostics.render_human(false)
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} dtl blocks found");
}

/// docs/language.md's ```dtl blocks are items, not always whole files (a
/// module, a `data` block, a `train` block): each is checked as a file
/// completed with what it lacks, a `model`, a `data` and a `train` block
/// of the names it uses. (Its untagged blocks are fragments: elided
/// bodies, single expressions, settings out of their block.)
#[test]
fn the_reference_examples_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/language.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let named = |block: &str, key: &str| {
        block.lines().find_map(|l| {
            let rest = l.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
            Some(rest.trim().trim_end_matches(';').to_string())
        })
    };
    let defines = |block: &str, item: &str| {
        block.lines().find_map(|l| {
            let rest = l.strip_prefix(item)?.strip_prefix(' ')?;
            Some(rest.split([' ', '{']).next().unwrap().to_string())
        })
    };
    let mut checked = 0;
    for (line, block) in blocks(&text, "dtl") {
        let model = defines(block, "model");
        let data = defines(block, "data");
        let has_train = block.lines().any(|l| l.starts_with("train"));
        // The names a `train` block uses (a `parallel` block's `data` is a
        // degree, not a name).
        let used = |key| if has_train { named(block, key) } else { None };
        let model_name = model
            .clone()
            .or_else(|| used("model"))
            .unwrap_or_else(|| "DocModel".into());
        let data_name = data
            .clone()
            .or_else(|| used("data"))
            .unwrap_or_else(|| "doc_data".into());
        let mut file = block.to_string();
        if model.is_none() {
            file += &format!(
                "model {model_name} {{ forward(x: [B, 64]) -> [B, 10] {{ x |> linear(64, 10) }} }}\n"
            );
        }
        if data.is_none() {
            file += &format!(
                "data {data_name} {{ source = csv(\"../data/digits.csv.gz\", label: -1) }}\n"
            );
        }
        if !has_train {
            file += &format!(
                "train {{ model = {model_name}; data = {data_name}; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 8; steps = 10 }}\n"
            );
        }
        let options = dtl_compiler::options_for(&path, false);
        if let Err(diagnostics) = dtl_compiler::check_source("docs/language.md", &file, &options) {
            panic!(
                "docs/language.md, the dtl block of line {line}, completed as:\n{file}\n{}",
                diagnostics.render_human(false)
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} dtl blocks found");
}

/// The fenced blocks of `lang` in `text`, with the line each starts on.
fn blocks<'t>(text: &'t str, lang: &str) -> Vec<(usize, &'t str)> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&fence) {
        let body = &rest[at + fence.len()..];
        let end = body.find("\n```").map_or(body.len(), |e| e + 1);
        let line = text[..text.len() - rest.len() + at].lines().count() + 2;
        out.push((line, &body[..end]));
        rest = &body[end..];
    }
    out
}

fn dtl_binary(args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// docs/cookbook.md's recipes, in order, in a scratch folder (data paths
/// made absolute): `// cookbook: run NAME [--set ...]` is checked with its
/// data and trained for three steps into `runs/NAME` (the sets fit the
/// recipe to three steps); `// cookbook: check ARGS` is
/// checked with `dtl check ARGS`.
#[test]
fn the_cookbook_recipes_check_and_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/cookbook.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = format!("{}/", root.join("data").display());
    let (mut ran, mut checked) = (0, 0);
    for (line, block) in blocks(&text, "dtl") {
        let first = block.lines().next().unwrap_or_default();
        let how = first
            .strip_prefix("// cookbook: ")
            .unwrap_or_else(|| panic!("docs/cookbook.md:{line}: a recipe starts with `// cookbook: run NAME` or `// cookbook: check ARGS`"));
        let file = dir.path().join(format!("recipe{line}.dtl"));
        std::fs::write(&file, block.replace("../data/", &data)).unwrap();
        let file = file.to_str().unwrap();
        let fail = |what: &str, out: std::process::Output| {
            panic!(
                "docs/cookbook.md:{line}: {what} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        if let Some(run) = how.strip_prefix("run ") {
            // `run NAME [--set ...]`: the sets fit the recipe to three steps.
            let mut words = run.split_whitespace();
            let name = words.next().unwrap_or_default();
            let out = dtl_binary(&["check", "--data", file], dir.path());
            if !out.status.success() {
                fail("dtl check --data", out);
            }
            let to = format!("runs/{name}");
            let mut args = vec![
                "run",
                file,
                "--quiet",
                "--device",
                "cpu",
                "--no-tensorboard",
                "--out",
                &to,
                "--set",
                "train.steps=3",
                "--set",
                "train.eval_every=0",
            ];
            args.extend(words);
            let out = dtl_binary(&args, dir.path());
            if !out.status.success() {
                fail("a three-step dtl run", out);
            }
            assert!(dir.path().join(&to).join("model.safetensors").is_file());
            ran += 1;
        } else if let Some(args) = how.strip_prefix("check") {
            let mut argv: Vec<&str> = vec!["check"];
            argv.extend(args.split_whitespace());
            argv.push(file);
            let out = dtl_binary(&argv, dir.path());
            if !out.status.success() {
                fail(&format!("dtl check{args}"), out);
            }
            checked += 1;
        } else {
            panic!("docs/cookbook.md:{line}: unknown `// cookbook: {how}`");
        }
    }
    assert!(
        ran >= 3 && checked >= 2,
        "{ran} recipes run, {checked} checked"
    );
}

/// Every `dtl` command in a shell block of README.md and docs/ names a
/// command that exists, with flags its `--help` lists: a renamed flag fails
/// here, not for a reader.
#[test]
fn every_documented_command_has_its_flags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let mut help = std::collections::BTreeMap::<String, String>::new();
    let mut commands = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let name = page.strip_prefix(root).unwrap().display().to_string();
        for lang in ["sh", "bash", "console"] {
            for (start, block) in blocks(&text, lang) {
                for (k, line) in block.lines().enumerate() {
                    if line.trim_start().starts_with('#') {
                        continue;
                    }
                    let code = line.split(" #").next().unwrap_or_default();
                    let words: Vec<&str> = code.split_whitespace().collect();
                    let Some(at) = words
                        .iter()
                        .position(|w| *w == "dtl" || w.ends_with("/dtl"))
                    else {
                        continue;
                    };
                    let Some(command) = words.get(at + 1).filter(|c| !c.starts_with('-')) else {
                        continue;
                    };
                    let text = help.entry(command.to_string()).or_insert_with(|| {
                        let out = dtl_binary(&[command, "--help"], root);
                        assert!(
                            out.status.success(),
                            "{name}:{}: `dtl {command}` is not a command",
                            start + k
                        );
                        String::from_utf8_lossy(&out.stdout).into_owned()
                    });
                    for flag in words[at + 2..].iter().filter(|w| w.starts_with('-')) {
                        let flag = flag.split('=').next().unwrap();
                        if flag == "-" || flag.starts_with("---") {
                            continue;
                        }
                        assert!(
                            text.contains(&format!("{flag} "))
                                || text.contains(&format!("{flag},"))
                                || text.contains(&format!("{flag}\n")),
                            "{name}:{}: `dtl {command}` has no flag {flag}",
                            start + k
                        );
                    }
                    commands += 1;
                }
            }
        }
    }
    assert!(
        commands >= 20,
        "only {commands} dtl commands found in the docs"
    );
}

/// The per-rank ZeRO table of docs/distributed.md: for each zoo model at
/// D = 8 and 64, the parameters, gradients and optimizer state one rank
/// holds with `shard = none`, `optimizer`, `gradients` and `parameters`, as `dtl explain`
/// computes them (the data not read: the zoo's sample data is too small
/// for 512 replicas' rows, and the model states do not depend on it).
/// Each row is checked against the formula too: AdamW keeps 2 values per
/// parameter value, so Ψ parameters cost 4Ψ + 4Ψ + 8Ψ bytes unsharded and
/// 4Ψ + 4Ψ + 8Ψ/D sharded, up to each bucket's padding to D slices; with
/// `shard = parameters` 16Ψ/D and the units gathered whole (less than the
/// whole model's weights and gradients).
#[test]
fn the_zero_table_is_what_explain_computes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/distributed.md")).unwrap();
    let gib = |b: u64| format!("{:.2}", b as f64 / (1u64 << 30) as f64);
    let mut missing = Vec::new();
    for (name, file) in [
        ("GPT-2 small", "examples/zoo/gpt2_small.dtl"),
        ("TinyLlama", "examples/zoo/tinyllama.dtl"),
        ("ViT-B/16", "examples/zoo/vit_b16.dtl"),
    ] {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        for d in [8u64, 64] {
            let mut cells = Vec::new();
            for shard in ["none", "optimizer", "gradients", "parameters"] {
                let mut options = dtl_compiler::options_for(&path, false);
                options.world = vec![d];
                options.overrides = [
                    "parallel.data=auto".to_string(),
                    format!("parallel.shard={shard}"),
                ]
                .iter()
                .map(|o| dtl_compiler::overrides::parse(o).unwrap())
                .collect();
                let plan = dtl_compiler::compile_source(file, &text, &options)
                    .unwrap_or_else(|e| panic!("{file}: {}", e.render_human(false)));
                let m = dtl_compiler::tools::explain::cost(&plan).memory;
                let psi = plan.model.parameter_count;
                let full = shard == "parameters";
                if full {
                    for (what, held) in [("weights", m.parameters), ("gradients", m.gradients)] {
                        assert!(
                            held >= 4 * psi / d && held < 4 * psi,
                            "{file} at {d}, shard = parameters: {what} {held} against 4Ψ/D and 4Ψ"
                        );
                    }
                } else {
                    assert_eq!(m.gradients, 4 * psi, "{file} at {d}: gradients");
                }
                let state = if shard == "none" {
                    8 * psi
                } else {
                    8 * psi / d
                };
                let pieces = match full {
                    true => plan.topology.units.len(),
                    false => plan.topology.buckets.len(),
                };
                let padding = 8 * 4 * pieces as u64;
                assert!(
                    m.optimizer_state >= state && m.optimizer_state <= state + padding,
                    "{file} at {d}, shard = {shard}: optimizer state {} against 8Ψ/D = {state}",
                    m.optimizer_state
                );
                let states = m.parameters + m.gradients + m.optimizer_state;
                cells.push(gib(states));
                if shard == "none" {
                    cells.insert(0, format!("{:.1} M", psi as f64 / 1e6));
                    cells.insert(1, gib(m.parameters));
                }
            }
            let row = format!("| {name} | {d} | {} |", cells.join(" | "));
            if !doc.contains(&row) {
                missing.push(row);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/distributed.md's ZeRO table lacks these rows (or has other figures):\n{}",
        missing.join("\n")
    );
}
