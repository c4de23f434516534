//! `dtl lsp` driven as an editor drives it: JSON-RPC messages over stdio.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dtl"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("dtl lsp starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut client = Client {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        let init = client.request("initialize", json!({ "capabilities": {} }));
        assert!(init["capabilities"]["hoverProvider"].as_bool().unwrap());
        client.notify("initialized", json!({}));
        client
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn receive(&mut self) -> Value {
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = n.parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let message = self.receive();
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{message}");
                return message["result"].clone();
            }
        }
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// The next diagnostics published for `version` of the document (the
    /// server publishes each version twice: at once, and after checking
    /// the data in the background; older ones are skipped).
    fn diagnostics(&mut self, version: i64) -> Vec<Value> {
        loop {
            let message = self.receive();
            if message["method"] == "textDocument/publishDiagnostics"
                && message["params"]["version"] == version
            {
                return message["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }

    /// A server with `text` open at `uri`, and its first diagnostics.
    fn opened(uri: &str, text: &str) -> (Client, Vec<Value>) {
        let mut client = Client::start();
        client.open(uri, text);
        let diagnostics = client.diagnostics(1);
        (client, diagnostics)
    }

    /// Opens a document at version 1.
    fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "dtl", "version": 1, "text": text } }),
        );
    }

    fn stop(mut self) {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the server exits cleanly");
    }
}

const URI: &str = "file:///tmp/dtl-lsp-test/net.dtl";

/// The data and train blocks of the documents that import their model's
/// modules.
const DATA_AND_TRAIN: &str = "data digits { source = synthetic(rows: 100, features: 64, classes: 10) }
train { model = Net; data = digits; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
";

const TEXT: &str = "module Block(d: int) {
  fc = linear(d, d)
  forward(x: [B, d]) -> [B, d] {
    let h = x |> fc |> relu
    h + x
  }
}
model Net {
  forward(x: [B, 64]) -> [B, 10] { x |> Block(64) |> linear(64, 10) }
}
data digits { source = synthetic(rows: 100, features: 64, classes: 10) }
train { model = Net; data = digits; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
";

fn at(text: &str, needle: &str) -> Value {
    let offset = text.find(needle).unwrap();
    let line = text[..offset].matches('\n').count();
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1);
    json!({ "line": line, "character": column })
}

fn position(uri: &str, text: &str, needle: &str) -> Value {
    json!({ "textDocument": { "uri": uri }, "position": at(text, needle) })
}

#[test]
fn diagnostics_follow_every_change() {
    let (mut client, diagnostics) = Client::opened(URI, TEXT);
    assert_eq!(diagnostics, Vec::<Value>::new());
    // A width mismatch: linear(32, 10) after a 64-wide block.
    let broken = TEXT.replace("linear(64, 10)", "linear(32, 10)");
    client.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": URI, "version": 2 }, "contentChanges": [{ "text": broken }] }),
    );
    let diagnostics = client.diagnostics(2);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!(d["severity"], 1);
    assert_eq!(d["code"], "dtl::check::width_mismatch");
    assert_eq!(d["range"]["start"]["line"], 8);
    client.stop();
}

/// An error inside a module instance is reported at the call that gave
/// the values, the line inside the module as related information.
#[test]
fn an_error_inside_an_instance_is_at_its_call_with_the_inside_related() {
    let text = TEXT.replace(
        "let h = x |> fc |> relu",
        "let h = x |> fc |> relu |> linear(64, d)",
    );
    let text = text
        .replace("Block(64)", "Block(32)")
        .replace("[B, 64]", "[B, 32]");
    let text = text.replace("features: 64", "features: 32");
    let (client, diagnostics) = Client::opened(URI, &text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!(d["code"], "dtl::check::width_mismatch");
    assert_eq!(d["range"]["start"], at(&text, "Block(32)"), "{d}");
    let related = d["relatedInformation"].as_array().unwrap();
    assert_eq!(related.len(), 1, "{d}");
    assert_eq!(related[0]["location"]["uri"], URI);
    assert_eq!(
        related[0]["location"]["range"]["start"],
        at(&text, "linear(64, d)")
    );
    assert_eq!(related[0]["message"], "expects 64, gets 32");
    client.stop();
}

#[test]
fn hover_definition_and_completion() {
    let (mut client, _) = Client::opened(URI, TEXT);

    let hover = client.request("textDocument/hover", position(URI, TEXT, "h = x"));
    assert_eq!(
        hover["contents"]["value"],
        "`h`: `[B, 64]` (in `Block(64)`)"
    );
    let hover = client.request("textDocument/hover", position(URI, TEXT, "linear(64, 10)"));
    assert!(hover["contents"]["value"]
        .as_str()
        .unwrap()
        .contains("linear(in_features: int, out_features: int, bias: bool = true)"));

    let definition = client.request("textDocument/definition", position(URI, TEXT, "Block(64)"));
    assert_eq!(definition["uri"], URI);
    assert_eq!(
        definition["range"]["start"],
        json!({ "line": 0, "character": 7 })
    );

    let inside = TEXT.replace("linear(64, 10)", "linear(64, ");
    client.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": URI, "version": 2 }, "contentChanges": [{ "text": inside }] }),
    );
    client.diagnostics(2);
    let mut at_cursor = position(URI, &inside, "linear(64, ");
    at_cursor["position"]["character"] =
        json!(at_cursor["position"]["character"].as_u64().unwrap() + "linear(64, ".len() as u64);
    let items = client.request("textDocument/completion", at_cursor);
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    // `64` is given by position: the rest, as `name: ` to insert.
    assert_eq!(labels, ["out_features", "bias"]);
    assert_eq!(items[0]["insertText"], "out_features: ");
    assert_eq!(items[0]["detail"], "out_features: int");
    client.stop();
}

/// What the checker inferred, shown in place: the shape after every stage
/// and the parameters of every module instance; the outline and the
/// ranges that fold; hovers on a module parameter (its value in each
/// instance), a data source's name and an optimizer.
#[test]
fn inlay_hints_outline_folding_and_hovers_on_names() {
    let (mut client, _) = Client::opened(URI, TEXT);
    let whole =
        json!({ "start": { "line": 0, "character": 0 }, "end": { "line": 99, "character": 0 } });
    let hints = client.request(
        "textDocument/inlayHint",
        json!({ "textDocument": { "uri": URI }, "range": whole }),
    );
    let hints: Vec<(Value, &str)> = hints
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["position"].clone(), h["label"].as_str().unwrap()))
        .collect();
    let after = |needle: &str| {
        let mut p = at(TEXT, needle);
        p["character"] = json!(p["character"].as_u64().unwrap() + needle.len() as u64);
        p
    };
    assert_eq!(
        hints,
        [
            (after("x |> fc"), "‹[B, 64]›"),
            (after("x |> fc |> relu"), "‹[B, 64]›"),
            (after("Block(64)"), "‹[B, 64], 4,160 parameters›"),
            (after("linear(64, 10)"), "‹[B, 10]›"),
        ]
    );
    let symbols = client.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": URI } }),
    );
    let names: Vec<&str> = symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Block", "Net", "digits", "train"]);
    assert_eq!(symbols[0]["children"][0]["name"], "fc");
    assert_eq!(symbols[0]["children"][1]["name"], "forward");
    let folds = client.request(
        "textDocument/foldingRange",
        json!({ "textDocument": { "uri": URI } }),
    );
    assert_eq!(
        folds,
        json!([
            { "startLine": 0, "endLine": 6 },
            { "startLine": 2, "endLine": 5 },
            { "startLine": 7, "endLine": 9 }
        ])
    );
    let hover = |client: &mut Client, needle: &str| -> String {
        let h = client.request("textDocument/hover", position(URI, TEXT, needle));
        h["contents"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        hover(&mut client, "d, d)"),
        "```dtl\nd: int\n```\n\n`Block(64)`: d = 64"
    );
    let data = hover(&mut client, "digits; loss");
    assert!(
        data.starts_with("```dtl\ndata digits { source = synthetic("),
        "{data}"
    );
    let sgd = hover(&mut client, "sgd(");
    assert!(
        sgd.contains("sgd(lr: float") && sgd.ends_with("a value of `optimizer`"),
        "{sgd}"
    );
    client.stop();
}

/// Quick fixes: a misspelt layer replaced by the suggestion, a missing
/// setting added to its block; and the lens above `train` with explain's
/// figures once the file compiles.
#[test]
fn code_actions_fix_and_lenses_explain() {
    let broken = TEXT
        .replace("|> relu", "|> rleu")
        .replace("; micro_batch = 8", "");
    let (mut client, diagnostics) = Client::opened(URI, &broken);
    assert_eq!(diagnostics.len(), 2);
    let whole =
        json!({ "start": { "line": 0, "character": 0 }, "end": { "line": 99, "character": 0 } });
    let actions = client.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": URI }, "range": whole, "context": { "diagnostics": [] } }),
    );
    let titles: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Replace with `relu`", "Add `micro_batch = 32`"]);
    let edit = &actions[0]["edit"]["changes"][URI][0];
    assert_eq!(edit["newText"], "relu");
    assert_eq!(edit["range"]["start"], at(&broken, "rleu"));
    assert_eq!(
        actions[1]["edit"]["changes"][URI][0]["newText"],
        " micro_batch = 32;"
    );
    assert_eq!(
        client.request(
            "textDocument/codeLens",
            json!({ "textDocument": { "uri": URI } })
        ),
        json!([])
    );
    client.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": URI, "version": 2 }, "contentChanges": [{ "text": TEXT }] }),
    );
    client.diagnostics(2);
    let lenses = client.request(
        "textDocument/codeLens",
        json!({ "textDocument": { "uri": URI } }),
    );
    assert_eq!(lenses.as_array().unwrap().len(), 1, "{lenses}");
    assert_eq!(lenses[0]["range"]["start"], at(TEXT, "train {"));
    let title = lenses[0]["command"]["title"].as_str().unwrap();
    assert!(title.starts_with("4.81 k parameters · "), "{title}");
    client.stop();
}

/// References and rename follow scope: a module's name across the file,
/// a layer within its module; a bad new name is refused.
#[test]
fn references_and_rename_by_scope() {
    let (mut client, _) = Client::opened(URI, TEXT);
    let refs = client.request(
        "textDocument/references",
        json!({ "textDocument": { "uri": URI }, "position": at(TEXT, "Block(d"), "context": { "includeDeclaration": true } }),
    );
    let lines: Vec<u64> = refs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["range"]["start"]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [0, 8]);
    let edit = client.request(
        "textDocument/rename",
        json!({ "textDocument": { "uri": URI }, "position": at(TEXT, "fc |>"), "newName": "proj" }),
    );
    let edits = edit["changes"][URI].as_array().unwrap();
    assert_eq!(edits.len(), 2, "{edit}");
    assert_eq!(edits[0]["range"]["start"], at(TEXT, "fc = "));
    assert_eq!(edits[1]["range"]["start"], at(TEXT, "fc |>"));
    client.send(json!({ "jsonrpc": "2.0", "id": 99, "method": "textDocument/rename",
        "params": { "textDocument": { "uri": URI }, "position": at(TEXT, "fc |>"), "newName": "model" } }));
    let refused = loop {
        let m = client.receive();
        if m["id"] == 99 {
            break m;
        }
    };
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a name"),
        "{refused}"
    );
    client.stop();
}

/// Semantic tokens: each word as the checker knows it, in the protocol's
/// relative encoding, against the legend the server announced.
#[test]
fn semantic_tokens_classify_words() {
    let (mut client, _) = Client::opened(URI, TEXT);
    let tokens = client.request(
        "textDocument/semanticTokens/full",
        json!({ "textDocument": { "uri": URI } }),
    );
    let data: Vec<u64> = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(data.len() % 5, 0);
    // Decode to (line, column, length, kind).
    let (mut line, mut column) = (0, 0);
    let mut decoded = Vec::new();
    for t in data.chunks(5) {
        line += t[0];
        column = if t[0] == 0 { column + t[1] } else { t[1] };
        decoded.push((line, column, t[2], t[3]));
    }
    let kind_at = |needle: &str| {
        let p = at(TEXT, needle);
        let (l, c) = (
            p["line"].as_u64().unwrap(),
            p["character"].as_u64().unwrap(),
        );
        decoded.iter().find(|t| t.0 == l && t.1 == c).map(|t| t.3)
    };
    // The legend's order: keyword, class, function, parameter, variable, property, …
    assert_eq!(kind_at("module Block"), Some(0));
    assert_eq!(kind_at("Block(64)"), Some(1));
    assert_eq!(kind_at("linear(d, d)"), Some(2));
    assert_eq!(kind_at("d, d)"), Some(3));
    assert_eq!(kind_at("fc |>"), Some(4));
    assert_eq!(kind_at("model = Net"), Some(5));
    client.stop();
}

/// Inside `adamw(`: its arguments (not the `train` keys), less those
/// given, each with its type, default and the whole signature; signature
/// help marks the argument the cursor is on.
#[test]
fn calls_complete_their_arguments_and_show_their_signature() {
    let text = TEXT.replace("optimizer = sgd(lr: 0.1)", "optimizer = adamw(lr: 1e-3, )");
    let (mut client, _) = Client::opened(URI, &text);
    let mut cursor = position(URI, &text, "adamw(lr: 1e-3, ");
    cursor["position"]["character"] =
        json!(cursor["position"]["character"].as_u64().unwrap() + "adamw(lr: 1e-3, ".len() as u64);
    let items = client.request("textDocument/completion", cursor.clone());
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["betas", "eps", "weight_decay"]);
    assert_eq!(items[2]["insertText"], "weight_decay: ");
    assert_eq!(items[2]["detail"], "weight_decay: float = 0.01");
    let docs = items[2]["documentation"]["value"].as_str().unwrap();
    assert!(docs.contains("adamw(lr: float, betas:"), "{docs}");
    let help = client.request("textDocument/signatureHelp", cursor);
    let signature = &help["signatures"][0];
    assert!(signature["label"]
        .as_str()
        .unwrap()
        .starts_with("adamw(lr: float"));
    assert_eq!(help["activeParameter"], 1);
    let label = signature["label"].as_str().unwrap();
    let [from, to] =
        [0, 1].map(|i| signature["parameters"][1]["label"][i].as_u64().unwrap() as usize);
    assert_eq!(&label[from..to], "betas: [float, float] = [0.9, 0.999]");
    client.stop();
}

#[test]
fn formatting_sends_the_changed_lines_and_nothing_when_canonical() {
    let messy = TEXT.replace("linear(64, 10)", "linear( 64,10 )");
    let (mut client, _) = Client::opened(URI, &messy);
    let edits = client.request(
        "textDocument/formatting",
        json!({ "textDocument": { "uri": URI }, "options": { "tabSize": 2, "insertSpaces": true } }),
    );
    // Only the line that changes is replaced.
    let edits = edits.as_array().unwrap();
    assert_eq!(edits.len(), 1);
    let new_text = edits[0]["newText"].as_str().unwrap();
    assert_eq!(
        new_text,
        "  forward(x: [B, 64]) -> [B, 10] { x |> Block(64) |> linear(64, 10) }\n"
    );
    assert_eq!(
        edits[0]["range"]["start"],
        json!({ "line": 8, "character": 0 })
    );
    assert_eq!(
        edits[0]["range"]["end"],
        json!({ "line": 9, "character": 0 })
    );
    // A canonical document gets no edits, and is not marked modified.
    client.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": URI, "version": 2 }, "contentChanges": [{ "text": TEXT }] }),
    );
    client.diagnostics(2);
    let edits = client.request(
        "textDocument/formatting",
        json!({ "textDocument": { "uri": URI }, "options": { "tabSize": 2, "insertSpaces": true } }),
    );
    assert_eq!(edits, json!([]));
    client.stop();
}

/// Frames a broken client sends are answered with JSON-RPC errors, and the
/// server goes on: a body that is not JSON, a header without a length, a
/// length over the server's limit, a notification whose parameters are
/// not what the method takes.
#[test]
fn bad_frames_and_bad_parameters_do_not_end_the_server() {
    let mut client = Client::start();
    let raw = |client: &mut Client, bytes: &str| {
        client.stdin.write_all(bytes.as_bytes()).unwrap();
        client.stdin.flush().unwrap();
    };
    raw(&mut client, "Content-Length: 9\r\n\r\n{not json");
    let reply = client.receive();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert!(reply["id"].is_null());
    raw(&mut client, "X-Nothing: 1\r\n\r\n");
    let reply = client.receive();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    // Over the limit: refused without reading it into memory, and skipped.
    raw(&mut client, "Content-Length: 70000000\r\n\r\n");
    let reply = client.receive();
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the server's limit"),
        "{reply}"
    );
    client.stdin.write_all(&vec![b' '; 70_000_000]).unwrap();
    // Parameters of the wrong shape: logged, not fatal.
    client.notify("textDocument/didOpen", json!({ "textDocument": 42 }));
    let log = loop {
        let message = client.receive();
        if message["method"] == "window/logMessage" {
            break message;
        }
    };
    assert!(
        log["params"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{log}"
    );
    // And the server still answers.
    client.open(URI, TEXT);
    assert_eq!(client.diagnostics(1), Vec::<Value>::new());
    client.stop();
}

/// The server never waits on a data file: diagnostics without the data
/// come at once, and those of the data check (within its budget, in the
/// background) follow for the same version of the document.
#[test]
fn data_is_checked_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    // A 1 GB file with no line end: the data check stops at 8 MiB.
    let sparse = std::fs::File::create(dir.path().join("sparse.csv")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    let uri = format!("file://{}/net.dtl", dir.path().display());
    let text = TEXT.replace(
        "synthetic(rows: 100, features: 64, classes: 10)",
        "csv(\"sparse.csv\")",
    );
    let mut client = Client::start();
    let started = std::time::Instant::now();
    client.open(&uri, &text);
    assert_eq!(client.diagnostics(1), Vec::<Value>::new());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let with_data = client.diagnostics(1);
    assert_eq!(with_data.len(), 1, "{with_data:?}");
    assert_eq!(with_data[0]["code"], "dtl::check::data_file");
    assert!(
        with_data[0]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 8 MiB"),
        "{with_data:?}"
    );
    // Hover answers while data checks come and go.
    let hover = client.request("textDocument/hover", position(&uri, &text, "Block(64)"));
    assert!(hover["contents"]["value"].as_str().is_some(), "{hover}");
    client.stop();
}

/// A file that imports a broken module: the error inside it is caused by
/// this file's call `Widen(64)`, so the editor shows it there, with the
/// imported module's line as related information; the rest of the
/// document (hover on its own names) works as before.
#[test]
fn an_error_in_an_imported_module_shows_at_its_call() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/err");
    let uri = format!("file://{}/lsp_import.dtl", dir.display());
    let text = "import \"../lib/broken.dtl\"
model Net {
  forward(x: [B, 64]) -> [B, 10] { x |> Widen(64) |> linear(64, 10) }
}
";
    let text = format!("{text}{DATA_AND_TRAIN}");
    let text = text.as_str();
    let (mut client, diagnostics) = Client::opened(&uri, text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!(d["range"]["start"], at(text, "Widen(64)"), "{d}");
    let message = d["message"].as_str().unwrap();
    assert!(message.contains("in `Widen(64)`"), "{message}");
    let inside = &d["relatedInformation"][0];
    let file = inside["location"]["uri"].as_str().unwrap();
    assert!(file.ends_with("tests/cases/lib/broken.dtl"), "{inside}");
    assert_eq!(inside["location"]["range"]["start"]["line"], 2, "{inside}");
    assert_eq!(inside["message"], "the body produces [B, 128]");
    let hover = client.request("textDocument/hover", position(&uri, text, "Net {"));
    assert!(hover.is_object(), "{hover}");
    client.stop();
}

/// Hover, go-to-definition and completion follow imports: an imported
/// module's signature, its definition in the imported file.
#[test]
fn hover_and_definition_follow_imports() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/ok");
    let uri = format!("file://{}/lsp_uses_blocks.dtl", dir.display());
    let text = "import \"../lib/blocks.dtl\"
model Net {
  forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 32) |> Residual(32, 64) |> linear(32, 10) }
}
";
    let text = format!("{text}{DATA_AND_TRAIN}");
    let text = text.as_str();
    let (mut client, diagnostics) = Client::opened(&uri, text);
    assert_eq!(diagnostics, Vec::<Value>::new());
    let hover = client.request("textDocument/hover", position(&uri, text, "Residual(32"));
    let value = hover["contents"]["value"].as_str().unwrap_or_default();
    assert!(
        value.contains("module Residual(d: int, hidden: int)"),
        "{hover}"
    );
    let definition = client.request(
        "textDocument/definition",
        position(&uri, text, "Residual(32"),
    );
    let target = definition["uri"].as_str().unwrap_or_default();
    assert!(
        target.ends_with("tests/cases/lib/blocks.dtl"),
        "{definition}"
    );
    // `module Residual(` is on line 5 of blocks.dtl (0-based 4).
    assert_eq!(definition["range"]["start"]["line"], 4, "{definition}");
    client.stop();
}
