//! The language server's stdio transport: JSON-RPC frames read with a
//! bounded header, a cap on the message size, and no frame able to end the
//! server. A frame whose body is not JSON-RPC is answered with a parse
//! error (`id: null`, as JSON-RPC says) and the server goes on; a body over
//! the cap is read off the stream and dropped, in bounded memory, with an
//! error; only the end of the input ends the reader.
//!
//! lsp-server's own stdio transport ends the server on the first malformed
//! frame and allocates whatever `Content-Length` says.

use std::io::{BufRead, BufReader, Read, Write};

use crossbeam_channel::{Receiver, Sender};
use lsp_server::{Connection, Message};

/// The largest message the server reads.
pub const MAX_MESSAGE: usize = 64 << 20;
/// The longest header line the server reads.
const MAX_HEADER_LINE: usize = 8 << 10;

/// The reader and writer threads.
pub struct Threads {
    reader: std::thread::JoinHandle<()>,
    writer: std::thread::JoinHandle<()>,
}

impl Threads {
    pub fn join(self) {
        // The reader may still wait on stdin when the server is told to
        // exit; the writer ends when its channel closes.
        drop(self.reader);
        let _ = self.writer.join();
    }
}

/// What the writer sends: a message of the protocol, or a raw JSON-RPC
/// error about a frame that could not be read (no message to answer); and
/// when the server has said its last.
enum Outgoing {
    Message(Message),
    Raw(String),
    /// The server is done: everything before this is written, then the
    /// writer ends (the reader may still hold a sender, waiting on stdin).
    Close,
}

/// A connection over stdin and stdout.
pub fn stdio() -> (Connection, Threads) {
    let (to_server, from_client) = crossbeam_channel::unbounded::<Message>();
    let (to_writer, for_writer) = crossbeam_channel::unbounded::<Outgoing>();
    let (to_client, from_server) = crossbeam_channel::unbounded::<Message>();
    let errors = to_writer.clone();
    let reader = std::thread::Builder::new()
        .name("dtl-lsp-reader".into())
        .spawn(move || read_frames(std::io::stdin().lock(), &to_server, &errors))
        .expect("a thread starts");
    // The server's messages join the raw errors on their way out.
    std::thread::Builder::new()
        .name("dtl-lsp-forward".into())
        .spawn(move || {
            for message in from_server {
                if to_writer.send(Outgoing::Message(message)).is_err() {
                    return;
                }
            }
            let _ = to_writer.send(Outgoing::Close);
        })
        .expect("a thread starts");
    let writer = std::thread::Builder::new()
        .name("dtl-lsp-writer".into())
        .spawn(move || write_frames(&for_writer))
        .expect("a thread starts");
    let connection = Connection {
        sender: to_client,
        receiver: from_client,
    };
    (connection, Threads { reader, writer })
}

fn write_frames(outgoing: &Receiver<Outgoing>) {
    let mut stdout = std::io::stdout().lock();
    for item in outgoing {
        let written = match item {
            Outgoing::Message(message) => message.write(&mut stdout),
            Outgoing::Raw(body) => write!(stdout, "Content-Length: {}\r\n\r\n{body}", body.len())
                .and_then(|()| stdout.flush()),
            Outgoing::Close => return,
        };
        if written.is_err() {
            return;
        }
    }
}

/// A JSON-RPC error that answers no request.
fn error_frame(code: i64, message: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message },
    })
    .to_string()
}

/// JSON-RPC's codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// Reads frames until the input ends; what cannot be read is answered and
/// skipped.
fn read_frames(input: impl Read, messages: &Sender<Message>, errors: &Sender<Outgoing>) {
    let mut input = BufReader::new(input);
    loop {
        let length = match read_header(&mut input) {
            Ok(Some(length)) => length,
            Ok(None) => return,
            Err(why) => {
                let _ = errors.send(Outgoing::Raw(error_frame(INVALID_REQUEST, &why)));
                continue;
            }
        };
        if length > MAX_MESSAGE {
            let why = format!(
                "a message of {length} bytes is over the server's limit of {MAX_MESSAGE}: skipped"
            );
            let _ = errors.send(Outgoing::Raw(error_frame(INVALID_REQUEST, &why)));
            if !skip(&mut input, length) {
                return;
            }
            continue;
        }
        let mut body = vec![0; length];
        if input.read_exact(&mut body).is_err() {
            return;
        }
        match serde_json::from_slice::<Message>(&body) {
            Ok(message) => {
                if messages.send(message).is_err() {
                    return;
                }
            }
            Err(e) => {
                let why = format!("not a JSON-RPC message: {e}");
                let _ = errors.send(Outgoing::Raw(error_frame(PARSE_ERROR, &why)));
            }
        }
    }
}

/// The next frame's `Content-Length`; `None` at the end of the input. A
/// header without one, or a line too long, is an error after which reading
/// goes on at the next blank line.
fn read_header(input: &mut impl BufRead) -> Result<Option<usize>, String> {
    let mut length = None;
    let mut problem = None;
    let mut any = false;
    loop {
        let mut line = Vec::new();
        let n = input
            .by_ref()
            .take(MAX_HEADER_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        if !line.ends_with(b"\n") {
            problem.get_or_insert_with(|| {
                format!("a header line longer than {MAX_HEADER_LINE} bytes")
            });
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            if !any {
                // Blank lines between frames.
                continue;
            }
            break;
        }
        any = true;
        if let Some((name, value)) = text.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                match value.trim().parse::<usize>() {
                    Ok(n) => length = Some(n),
                    Err(_) => {
                        problem.get_or_insert_with(|| {
                            format!("Content-Length `{}` is not a size", value.trim())
                        });
                    }
                }
            }
        }
    }
    if let Some(problem) = problem {
        return Err(problem);
    }
    length
        .map(Some)
        .ok_or_else(|| "a frame without Content-Length".to_string())
}

/// Reads `length` bytes off the stream in chunks; `false` if it ended.
fn skip(input: &mut impl Read, length: usize) -> bool {
    let mut left = length as u64;
    let mut chunk = vec![0u8; 1 << 16];
    while left > 0 {
        let want = chunk.len().min(left as usize);
        match input.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => left -= n as u64,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> (Vec<Message>, Vec<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (etx, erx) = crossbeam_channel::unbounded();
        read_frames(input, &tx, &etx);
        drop((tx, etx));
        let errors = erx
            .iter()
            .map(|o| match o {
                Outgoing::Raw(body) => body,
                Outgoing::Message(_) | Outgoing::Close => {
                    unreachable!("the reader sends raw errors only")
                }
            })
            .collect();
        (rx.iter().collect(), errors)
    }

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    #[test]
    fn bad_frames_are_answered_and_reading_goes_on() {
        let good = r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#;
        let input = format!(
            "{}{}Content-Length: nine\r\n\r\n{}Content-Length: 20000000000\r\n\r\n{}",
            frame("{not json"),
            frame(good),
            frame(good),
            "x".repeat(10)
        );
        let (messages, errors) = frames(input.as_bytes());
        assert_eq!(messages.len(), 2, "{errors:?}");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("-32700"), "{}", errors[0]);
        assert!(errors[1].contains("not a size"), "{}", errors[1]);
        assert!(
            errors[2].contains("over the server's limit"),
            "{}",
            errors[2]
        );
    }
}
