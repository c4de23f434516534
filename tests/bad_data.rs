//! Bad data is a clear error naming the file and where in it, before any
//! training starts, never a panic: truncated and empty files, wrong
//! shapes, labels out of range or negative, text that is not UTF-8,
//! non-finite values, a safetensors header that lies about sizes, an IDX
//! header that disagrees with the file's length, token files cut short, of
//! the wrong dtype or changed under a compiled plan.

mod common;

use std::path::Path;

use common::dtl;

/// `dtl run` on an MLP over `source` (a data source expression), in `dir`:
/// it must fail with exit 1, before the first step, naming `path` and
/// saying `what`.
fn refused(dir: &Path, source: &str, path: &str, what: &str) {
    let text = format!(
        r#"
model Net {{ forward(x: [B, 4]) -> [B, 3] {{ x |> linear(4, 3) }} }}
data d {{ source = {source}; valid = 0 }}
train {{ model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 1; steps = 1 }}
"#
    );
    let file = dir.join("bad.dtl");
    std::fs::write(&file, text).unwrap();
    let out = dir.join("out");
    let run = dtl(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{source}: exit {}:\n{}", run.code, run.stderr);
    assert!(
        !run.stderr.contains("panicked"),
        "{source}: a panic:\n{}",
        run.stderr
    );
    let flat = run
        .stderr
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flat.contains(path),
        "{source}: the error does not name {path}:\n{}",
        run.stderr
    );
    assert!(
        flat.contains(what),
        "{source}: expected {what:?}:\n{}",
        run.stderr
    );
    assert!(
        !out.join("metrics.jsonl").exists(),
        "{source}: training started"
    );
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn csv_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "truncated.csv", "1,2,3,4,0\n5,6,7,8,1\n9,10");
    refused(
        d,
        "csv(\"truncated.csv\")",
        "truncated.csv",
        "line 3: 2 columns",
    );
    write(d, "empty.csv", "");
    refused(d, "csv(\"empty.csv\")", "empty.csv", "no data rows");
    write(d, "wide.csv", "1,2,3,4,5,0\n");
    refused(d, "csv(\"wide.csv\")", "wide.csv", "5 features");
    write(d, "negative.csv", "1,2,3,4,0\n5,6,7,8,-1\n");
    refused(
        d,
        "csv(\"negative.csv\")",
        "negative.csv",
        "line 2, column 5: the label is a negative number, not a class index",
    );
    write(d, "classes.csv", "1,2,3,4,0\n5,6,7,8,7\n");
    refused(d, "csv(\"classes.csv\")", "classes.csv", "8 classes");
    write(d, "nan.csv", "1,2,3,4,0\n5,nan,7,8,1\n");
    refused(
        d,
        "csv(\"nan.csv\")",
        "nan.csv",
        "line 2, column 2: NaN is not a finite number",
    );
    write(d, "inf.csv", "1,2,3,inf,0\n");
    refused(
        d,
        "csv(\"inf.csv\")",
        "inf.csv",
        "line 1, column 4: an infinite number is not a finite number",
    );
}

/// A .npy file by hand.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "x.npy", npy("<f4", "(2, 4)", &floats(&[1.0; 8])));
    write(d, "y.npy", npy("<f4", "(2,)", &floats(&[0.0, 1.0])));
    write(d, "short.npy", npy("<f4", "(2, 4)", &floats(&[1.0; 7])));
    refused(
        d,
        "npy(\"short.npy\", \"y.npy\")",
        "short.npy",
        "(truncated)",
    );
    write(d, "long.npy", npy("<f4", "(2, 4)", &floats(&[1.0; 9])));
    refused(
        d,
        "npy(\"long.npy\", \"y.npy\")",
        "long.npy",
        "needs 32 bytes of data",
    );
    write(d, "empty.npy", "");
    refused(
        d,
        "npy(\"x.npy\", \"empty.npy\")",
        "empty.npy",
        "not a .npy file",
    );
    write(
        d,
        "three.npy",
        npy("<f4", "(3,)", &floats(&[0.0, 1.0, 2.0])),
    );
    refused(
        d,
        "npy(\"x.npy\", \"three.npy\")",
        "x.npy",
        "the first dimension (samples) must agree",
    );
    write(
        d,
        "nan.npy",
        npy(
            "<f4",
            "(2, 4)",
            &floats(&[1.0, 2.0, f32::NAN, 4.0, 5.0, 6.0, 7.0, 8.0]),
        ),
    );
    refused(
        d,
        "npy(\"nan.npy\", \"y.npy\")",
        "nan.npy",
        "sample 0 (counting from 0), value 2: NaN is not a finite number",
    );
    write(d, "fraction.npy", npy("<f4", "(2,)", &floats(&[0.0, 1.5])));
    refused(
        d,
        "npy(\"x.npy\", \"fraction.npy\")",
        "fraction.npy",
        "label 1 (counting from 0) is 1.5",
    );
}

#[test]
fn idx_safetensors_and_text_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // IDX: images [2, 2, 2] and labels [2]; then headers that disagree.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    images.extend([1u8; 8]);
    write(d, "images.idx", &images);
    write(d, "labels.idx", [0, 0, 8, 1, 0, 0, 0, 2, 0, 1]);
    write(d, "short.idx", &images[..20]);
    refused(
        d,
        "idx(\"short.idx\", \"labels.idx\")",
        "short.idx",
        "needs 8 bytes of data after byte 16, the file has 4 (truncated)",
    );
    let mut long = images.clone();
    long.extend([9, 9]);
    write(d, "long.idx", &long);
    refused(
        d,
        "idx(\"long.idx\", \"labels.idx\")",
        "long.idx",
        "the file has 10",
    );

    // safetensors whose header claims more bytes than the file holds.
    let header = r#"{"features":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},"labels":{"dtype":"I64","shape":[2],"data_offsets":[32,48]}}"#;
    let mut lying = (header.len() as u64).to_le_bytes().to_vec();
    lying.extend(header.as_bytes());
    lying.extend([0u8; 40]);
    write(d, "lying.safetensors", &lying);
    refused(
        d,
        "safetensors(\"lying.safetensors\")",
        "lying.safetensors",
        "not a safetensors file",
    );
    write(d, "empty.safetensors", "");
    refused(
        d,
        "safetensors(\"empty.safetensors\")",
        "empty.safetensors",
        "not a safetensors file",
    );

    // Text that is not UTF-8, read as characters.
    write(d, "latin1.txt", b"caf\xe9 au lait, caf\xe9 noir");
    let text = r#"
model Net { forward(x: [B, 4]) -> [B, 4, 16] { x |> embedding(16, 8) |> linear(8, 16) } }
data d { source = text("latin1.txt", context: 4); valid = 0 }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 1; steps = 1 }
"#;
    let file = d.join("text.dtl");
    std::fs::write(&file, text).unwrap();
    dtl(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
        "--out",
        d.join("t").to_str().unwrap(),
    ])
    .code(1)
    .stderr_has("latin1.txt")
    .stderr_has("not UTF-8 text (byte 3)");
}

/// `dtl run` of a model with an embedding of `rows` and `classes` outputs
/// over the token file `name` in `dir`.
fn run_tokens(dir: &Path, name: &str, dtype: &str, rows: u32, classes: u32) -> common::Run {
    let text = format!(
        r#"
model Lm {{ forward(x: [B, 4]) -> [B, 4, {classes}] {{ x |> embedding({rows}, 8) |> linear(8, {classes}) }} }}
data d {{ source = tokens("{name}", context: 4, dtype: "{dtype}"); valid = 0 }}
train {{ model = Lm; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 1; steps = 1 }}
"#
    );
    let file = dir.join("tokens.dtl");
    std::fs::write(&file, text).unwrap();
    dtl(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
        "--out",
        dir.join("t").to_str().unwrap(),
    ])
}

#[test]
fn token_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ids: Vec<u8> = (0u16..20).flat_map(|t| t.to_le_bytes()).collect();
    // A uint16 file cut in the middle of a token.
    write(d, "cut.bin", &ids[..ids.len() - 1]);
    run_tokens(d, "cut.bin", "uint16", 32, 32)
        .code(1)
        .stderr_has("cut.bin")
        .stderr_has("39 bytes is not a whole number of uint16 tokens");
    // The same bytes read as uint32 ids: 40 bytes is 10 tokens, but they are
    // huge (pairs of uint16 read as one), beyond the model's 32 classes.
    write(d, "ids.bin", &ids);
    run_tokens(d, "ids.bin", "uint32", 32, 32)
        .code(1)
        .stderr_has("expected [B, 4, 1245203], found [B, 4, 32]");
    // Ids 0..19 into an embedding of 10 rows.
    run_tokens(d, "ids.bin", "uint16", 10, 32)
        .code(1)
        .stderr_has("data `d` has ids up to 19, but the embedding `Lm › embedding` has 10 rows");
    // Too few tokens for one window and its next token.
    write(d, "short.bin", &ids[..8]);
    run_tokens(d, "short.bin", "uint16", 32, 32)
        .code(1)
        .stderr_has("short.bin")
        .stderr_has("4 tokens make no window of 4 tokens");
    // A file that is not there.
    run_tokens(d, "missing.bin", "uint16", 32, 32)
        .code(1)
        .stderr_has("missing.bin")
        .stderr_has("cannot open");
    // And a good one trains.
    run_tokens(d, "ids.bin", "uint16", 32, 32).code(0);
    // A plan compiled from it, run after the file changed: refused before
    // the file is read, by name.
    let plan = d.join("plan.yaml");
    let source = d.join("tokens.dtl");
    let compile = |extra: &[&str]| {
        let mut args = vec!["compile", source.to_str().unwrap()];
        args.extend(extra);
        args.extend(["-o", plan.to_str().unwrap()]);
        dtl(&args).code(0);
    };
    let run_plan = |out: &str| {
        dtl(&[
            "run",
            plan.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--out",
            d.join(out).to_str().unwrap(),
        ])
    };
    compile(&[]);
    let changed: Vec<u8> = (0u16..20).flat_map(|t| (t * 100).to_le_bytes()).collect();
    write(d, "ids.bin", &changed);
    run_plan("p")
        .code(1)
        .stderr_has("ids.bin")
        .stderr_has("changed since the plan was made")
        .stderr_has("other contents");
    // A plan made without reading the data knows no identity: the batch
    // that reads an id past the model's classes stops the run.
    write(d, "ids.bin", &ids);
    compile(&["--no-data"]);
    write(d, "ids.bin", &changed);
    run_plan("q")
        .code(1)
        .stderr_has("ids.bin")
        .stderr_has("token 200 (at token 2) is not below")
        .stderr_has("32 classes");
}

/// `dtl ARGS...` on `bad.dtl` reading `source`, with `env`; must end
/// within 20 seconds.
fn checked(dir: &Path, source: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let text = format!(
        r#"
model Net {{ forward(x: [B, 4]) -> [B, 3] {{ x |> linear(4, 3) }} }}
data d {{ source = {source}; valid = 0 }}
train {{ model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 1; steps = 1 }}
"#
    );
    let file = dir.join("bad.dtl");
    std::fs::write(&file, text).unwrap();
    let started = std::time::Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(args)
        .arg(&file)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{source}: {args:?} took {:?}",
        started.elapsed()
    );
    let stderr = common::flat(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), stderr)
}

/// Only regular files are data, read within bounds: a device, a FIFO, a
/// folder, a line without end, a file over the budget — each a clear
/// error in seconds, for `check --data` and `compile` alike.
#[test]
fn data_is_read_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A sparse file of 2 GB: no line end in its first 8 MiB.
    let sparse = std::fs::File::create(d.join("sparse.csv")).unwrap();
    sparse.set_len(2 << 30).unwrap();
    let cases = [
        ("csv(\"/dev/zero\")", "is a device, not a data file"),
        (
            &format!("csv({:?})", fifo.display().to_string()),
            "is a FIFO (named pipe)",
        ),
        ("csv(\"/tmp\")", "is a folder"),
        ("csv(\"sparse.csv\")", "line 1 is longer than 8 MiB"),
        ("npy(\"/dev/zero\", \"/dev/zero\")", "is a device"),
        (
            "tokens(\"/dev/zero\", context: 4, dtype: \"uint16\")",
            "is a device",
        ),
    ];
    for (source, what) in cases {
        for args in [&["check", "--data"][..], &["compile"][..]] {
            let (code, stderr) = checked(d, source, args, &[]);
            assert_eq!(code, 1, "{source} {args:?}: {stderr}");
            assert!(stderr.contains(what), "{source} {args:?}: {stderr}");
        }
    }
    // Over the budget: the digits (57 KB gzipped, 160 KB read) in 100 KB.
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let source = format!("csv({:?})", digits.display().to_string());
    let (code, stderr) = checked(
        d,
        &source,
        &["check", "--data", "--data-budget", "100KB"],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("over the data budget"), "{stderr}");
    assert!(stderr.contains("--data-budget"), "{stderr}");
    let (code, stderr) = checked(
        d,
        &source,
        &["check", "--data", "--data-budget", "1MB"],
        &[],
    );
    assert_eq!(code, 1, "{stderr}"); // the width: 64 features, not 4
    assert!(!stderr.contains("budget"), "{stderr}");
}

/// JSON lines: a line that is not JSON, a ragged array, a missing field,
/// a label of the wrong kind, a line without end: each named by line and
/// field, the value never quoted.
#[test]
fn jsonl_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = "{\"x\": [1, 2, 3, 4], \"y\": 0}\n";
    let cases = [
        (
            "cut.jsonl",
            format!("{good}{{\"x\": [1, 2"),
            "line 2: not JSON",
        ),
        (
            "ragged.jsonl",
            format!("{good}{{\"x\": [1, 2, 3], \"y\": 1}}\n"),
            "line 2, field `x`: an array of 3 where the first has 4 (ragged)",
        ),
        (
            "no_label.jsonl",
            format!("{good}{{\"x\": [1, 2, 3, 4]}}\n"),
            "line 2: no field `y`",
        ),
        (
            "text_label.jsonl",
            format!("{good}{{\"x\": [1, 2, 3, 4], \"y\": \"ghp_secret\"}}\n"),
            "line 2, field `y`: a text, not a class index",
        ),
        (
            "array.jsonl",
            format!("{good}[1, 2, 3, 4]\n"),
            "line 2: an array, not an object",
        ),
        ("empty.jsonl", String::new(), "no data rows"),
    ];
    for (name, text, what) in cases {
        write(d, name, &text);
        refused(d, &format!("jsonl({name:?})"), name, what);
    }
    let (_, stderr) = checked(d, "jsonl(\"text_label.jsonl\")", &["check", "--data"], &[]);
    assert!(!stderr.contains("ghp_"), "echoed: {stderr}");
    // A line of 9 MiB without an end.
    write(d, "endless.jsonl", vec![b' '; 9 << 20]);
    refused(
        d,
        "jsonl(\"endless.jsonl\")",
        "endless.jsonl",
        "line 1 is longer than 8 MiB",
    );
}

/// Parquet files and saved Hugging Face datasets: a text column, a missing
/// label, a ragged list, a fractional class, a missing column, a cut or
/// foreign file, an empty folder, one bad shard among good ones, a
/// DatasetDict without its split, a `state.json` that points outside its
/// folder, a cut Arrow stream: each named by file, row and column, the
/// value never quoted.
#[test]
fn columnar_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::data_files(&["hostile".as_ref(), d.as_os_str()]);
    let cases = [
        (
            "parquet(\"text_feature.parquet\")",
            "text_feature.parquet",
            "row 0, column `x`: text, not numbers",
        ),
        (
            "parquet(\"null_label.parquet\")",
            "null_label.parquet",
            "row 1, column `y`: a missing value (null)",
        ),
        (
            "parquet(\"ragged.parquet\")",
            "ragged.parquet",
            "row 1, column `x`: a list of 3 where the first has 4 (ragged)",
        ),
        (
            "parquet(\"float_label.parquet\")",
            "float_label.parquet",
            "row 1, column `y`: the label is not a class index",
        ),
        (
            "parquet(\"no_label.parquet\")",
            "no_label.parquet",
            "no column `y` (the columns are `x`, `z`)",
        ),
        (
            "parquet(\"cut.parquet\")",
            "cut.parquet",
            "not a readable Parquet file",
        ),
        (
            "parquet(\"not.parquet\")",
            "not.parquet",
            "not a readable Parquet file",
        ),
        (
            "parquet(\"empty_folder\")",
            "empty_folder",
            "a folder without .parquet files",
        ),
        (
            "parquet(\"mixed\")",
            "mixed",
            "b.parquet: row 0, column `x`: text, not numbers",
        ),
        (
            "hf_dataset(\"hf_dict\", label: \"y\")",
            "hf_dict",
            "a DatasetDict of the splits `train`: name one, e.g. `split: \"train\"`",
        ),
        (
            "hf_dataset(\"hf_dict\", label: \"y\", split: \"valid\")",
            "hf_dict",
            "no split `valid` (the splits are `train`)",
        ),
        (
            "hf_dataset(\"hf_escape\", label: \"y\")",
            "hf_escape",
            "a `_data_files` entry without a plain `filename`",
        ),
        (
            "hf_dataset(\"hf_cut\", label: \"y\")",
            "hf_cut",
            "data-00000-of-00001.arrow: ",
        ),
        (
            "hf_dataset(\"good.parquet\", label: \"y\")",
            "good.parquet",
            "not a dataset saved with `save_to_disk`",
        ),
    ];
    for (source, path, what) in cases {
        refused(d, source, path, what);
    }
    // Asked to, the rows that cannot be read are left out and counted.
    std::fs::write(
        d.join("skip.dtl"),
        "model Net { forward(x: [B, 4]) -> [B, 3] { x |> linear(4, 3) } }\n\
         data d { source = parquet(\"null_label.parquet\"); valid = 0; on_bad_row = skip }\n\
         train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 1; steps = 1 }\n",
    )
    .unwrap();
    let check = dtl(&["check", "--data", d.join("skip.dtl").to_str().unwrap()]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        common::flat(&check.stderr)
            .contains("1 bad row left out (the first: row 1, column `y`: a missing value (null))"),
        "{}",
        check.stderr
    );
    let (_, stderr) = checked(
        d,
        "parquet(\"text_feature.parquet\")",
        &["check", "--data"],
        &[],
    );
    assert!(stderr.contains("text, not numbers"), "{stderr}");
    assert!(!stderr.contains("ghp_"), "echoed: {stderr}");
}

/// Image folders: no class folders, a class without images, an image of
/// another size, a cut PNG, a text file named `.png`, a held-out folder
/// with other classes: each refused before training, naming the folder or
/// the file. An image of the wrong size deep in the folder (not read at
/// start) stops the run at its batch, naming the file, with no panic.
#[test]
fn image_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::data_files(&["images".as_ref(), d.as_os_str()]);
    let run = |source: &str, extra: &str| {
        let text = format!(
            "model Net {{ forward(x: [B, 1, 4, 4]) -> [B, 2] {{ x |> flatten |> linear(16, 2) }} }}\n\
             data d {{ source = {source}; valid = 0; {extra} }}\n\
             train {{ model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 4; steps = 30 }}\n"
        );
        let file = d.join("img.dtl");
        std::fs::write(&file, text).unwrap();
        let out = d.join("out");
        let _ = std::fs::remove_dir_all(&out);
        let done = dtl(&[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ]);
        (done.code, common::flat(&done.stderr), out)
    };
    let images = |folder: &str| format!("images({folder:?}, size: [4, 4], channels: 1)");
    let (code, stderr, _) = run(&images("good"), "");
    assert_eq!(code, 0, "{stderr}");
    let cases = [
        (images("no_classes"), "", "no_classes: no class folders"),
        (
            images("empty_class"),
            "",
            "the class folder `c` holds no image",
        ),
        (
            images("wrong_size"),
            "",
            "height 3 and width 5, not the [4, 4] of `size`",
        ),
        (images("cut"), "", "0.png: a damaged or unreadable image"),
        (images("text"), "", "0.png: not an image"),
        (
            images("good"),
            &format!("test = {}", images("other_classes")),
            "its classes are not the training folder's",
        ),
        (
            images("good"),
            "mean = [0.5, 0.5]; std = [1, 1]",
            "`mean` has 2 values, for samples of 1 channels",
        ),
    ];
    for (source, extra, what) in cases {
        let (code, stderr, out) = run(&source, extra);
        assert_eq!(code, 1, "{source} {extra}: {stderr}");
        assert!(
            stderr.contains(what),
            "{source} {extra}: expected {what:?}:\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("ghp_"),
            "{stderr}"
        );
        assert!(
            !out.join("metrics.jsonl").exists(),
            "{source}: training started"
        );
    }
    let (code, stderr, _) = run(&images("later_wrong_size"), "");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("33.png`: height 4 and width 6, not the [4, 4]"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Asked to, every image is decoded at start and the bad one left out.
    let (code, stderr, out) = run(&images("later_wrong_size"), "on_bad_row = skip");
    assert_eq!(code, 0, "{stderr}");
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["skipped_rows"][0]["rows"], 1, "{summary}");
    let first = summary["skipped_rows"][0]["first"].as_str().unwrap();
    assert!(first.ends_with("33.png: height 4 and width 6, not the [4, 4] of `size` (dtl does not resize: resize the folder first)"), "{first}");
}

/// A data file's contents are never quoted in an error unless asked: a
/// secret in the environment, or in a file, stays out of the message.
#[test]
fn no_value_of_a_data_file_is_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    let env = [("FAKE_CI_TOKEN", secret)];
    let environ = "csv(\"/proc/self/environ\", label: 0)";
    for args in [&["check", "--data"][..], &["compile"][..]] {
        let (code, stderr) = checked(dir.path(), environ, args, &env);
        assert_eq!(code, 1, "{stderr}");
        assert!(!stderr.contains("ghp_"), "{args:?} echoed: {stderr}");
    }
    // A file with a secret where a number belongs.
    let file = dir.path().join("secrets.csv");
    std::fs::write(&file, format!("1,2\nFAKE_CI_TOKEN={secret},1\n")).unwrap();
    let source = format!("csv({:?})", file.display().to_string());
    for args in [&["check", "--data"][..], &["compile"][..]] {
        let (code, stderr) = checked(dir.path(), &source, args, &[]);
        assert_eq!(code, 1, "{stderr}");
        assert!(!stderr.contains("ghp_"), "{args:?} echoed: {stderr}");
        let said = "line 2, column 1: a 54-character text is not a number";
        assert!(stderr.contains(said), "{stderr}");
    }
    let show = ["check", "--data", "--show-values"];
    let (_, stderr) = checked(dir.path(), &source, &show, &[]);
    assert!(stderr.contains(secret), "--show-values quotes it: {stderr}");
}
