//! `dtl lsp`: a language server over stdio. Diagnostics are `dtl check`'s,
//! published on open and on every change; hover shows a tensor's inferred
//! shape or a layer's signature; go-to-definition finds modules, layers,
//! `let`s and data sources; completion offers layers, modules, keyword
//! arguments and settings. The queries are the compiler's
//! (`dtl_compiler::tools::analysis`); this file only speaks the protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dtl_compiler::tools::analysis::{self, Analysis, CompletionKind};
use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{Completion, Formatting, GotoDefinition, HoverRequest, Request as _};
use lsp_types::{
    CompletionItem, CompletionItemKind, CompletionOptions, CompletionParams, Diagnostic,
    DiagnosticSeverity, GotoDefinitionParams, Hover, HoverContents, HoverParams,
    HoverProviderCapability, Location, MarkupContent, MarkupKind, NumberOrString, OneOf, Position,
    PublishDiagnosticsParams, Range, ServerCapabilities, TextDocumentSyncCapability,
    TextDocumentSyncKind, Url,
};

use crate::Failure;

/// Serves one client until it says `exit`.
pub fn serve() -> Result<(), Failure> {
    let fail = |e: String| Failure::usage(format!("language server: {e}"));
    let (connection, io_threads) = Connection::stdio();
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["(".into(), ",".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let capabilities = serde_json::to_value(capabilities).expect("capabilities serialize");
    connection
        .initialize(capabilities)
        .map_err(|e| fail(e.to_string()))?;
    let mut server = Server {
        connection: &connection,
        documents: BTreeMap::new(),
    };
    server.run().map_err(fail)?;
    drop(connection);
    io_threads.join().map_err(|e| fail(e.to_string()))
}

struct Server<'a> {
    connection: &'a Connection,
    /// Open documents, analysed at their last change.
    documents: BTreeMap<Url, Analysis>,
}

impl Server<'_> {
    fn run(&mut self) -> Result<(), String> {
        for message in &self.connection.receiver {
            match message {
                Message::Request(request) => {
                    if self
                        .connection
                        .handle_shutdown(&request)
                        .map_err(|e| e.to_string())?
                    {
                        return Ok(());
                    }
                    let response = self.respond(request);
                    self.send(Message::Response(response))?;
                }
                Message::Notification(notification) => self.notified(notification)?,
                Message::Response(_) => {}
            }
        }
        Ok(())
    }

    fn send(&self, message: Message) -> Result<(), String> {
        self.connection
            .sender
            .send(message)
            .map_err(|e| e.to_string())
    }

    fn notified(&mut self, notification: Notification) -> Result<(), String> {
        match notification.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let params: lsp_types::DidOpenTextDocumentParams = parse(notification.params)?;
                self.update(params.text_document.uri, params.text_document.text)
            }
            DidChangeTextDocument::METHOD => {
                let params: lsp_types::DidChangeTextDocumentParams = parse(notification.params)?;
                // Full sync: the last change is the whole text.
                match params.content_changes.into_iter().last() {
                    Some(change) => self.update(params.text_document.uri, change.text),
                    None => Ok(()),
                }
            }
            DidCloseTextDocument::METHOD => {
                let params: lsp_types::DidCloseTextDocumentParams = parse(notification.params)?;
                self.documents.remove(&params.text_document.uri);
                self.publish(params.text_document.uri, Vec::new())
            }
            _ => Ok(()),
        }
    }

    /// Re-analyses a document and publishes its diagnostics.
    fn update(&mut self, uri: Url, text: String) -> Result<(), String> {
        let path = uri
            .to_file_path()
            .unwrap_or_else(|_| PathBuf::from(uri.path()));
        let options = dtl_compiler::options_for(&path, true);
        let analysis = analysis::analyze(&path.display().to_string(), &text, &options);
        let diagnostics = analysis
            .diagnostics
            .records()
            .into_iter()
            .map(|r| Diagnostic {
                range: range(&text, r.start, r.end),
                severity: Some(match r.severity {
                    "error" => DiagnosticSeverity::ERROR,
                    _ => DiagnosticSeverity::WARNING,
                }),
                code: Some(NumberOrString::String(r.code)),
                source: Some("dtl".into()),
                message: match r.help {
                    Some(help) => format!("{}\nhelp: {help}", r.message),
                    None => r.message,
                },
                ..Default::default()
            })
            .collect();
        self.documents.insert(uri.clone(), analysis);
        self.publish(uri, diagnostics)
    }

    fn publish(&self, uri: Url, diagnostics: Vec<Diagnostic>) -> Result<(), String> {
        let params = PublishDiagnosticsParams {
            uri,
            diagnostics,
            version: None,
        };
        self.send(Message::Notification(Notification::new(
            PublishDiagnostics::METHOD.into(),
            params,
        )))
    }

    fn respond(&self, request: Request) -> Response {
        let id = request.id.clone();
        let result = match request.method.as_str() {
            HoverRequest::METHOD => parse::<HoverParams>(request.params).map(|p| {
                let at = p.text_document_position_params;
                let hover = self
                    .at(&at.text_document.uri, at.position)
                    .and_then(|(a, offset)| {
                        a.hover(offset).map(|(span, markdown)| Hover {
                            contents: HoverContents::Markup(MarkupContent {
                                kind: MarkupKind::Markdown,
                                value: markdown,
                            }),
                            range: Some(range(&a.text, span.start, span.end)),
                        })
                    });
                serde_json::to_value(hover)
            }),
            GotoDefinition::METHOD => parse::<GotoDefinitionParams>(request.params).map(|p| {
                let at = p.text_document_position_params;
                let uri = at.text_document.uri.clone();
                let location = self.at(&uri, at.position).and_then(|(a, offset)| {
                    a.definition(offset).map(|span| Location {
                        uri: uri.clone(),
                        range: range(&a.text, span.start, span.end),
                    })
                });
                serde_json::to_value(location)
            }),
            Completion::METHOD => parse::<CompletionParams>(request.params).map(|p| {
                let at = p.text_document_position;
                let items: Vec<CompletionItem> = self
                    .at(&at.text_document.uri, at.position)
                    .map(|(a, offset)| a.completions(offset))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| CompletionItem {
                        label: c.label,
                        kind: Some(match c.kind {
                            CompletionKind::Layer => CompletionItemKind::FUNCTION,
                            CompletionKind::Module => CompletionItemKind::CLASS,
                            CompletionKind::Argument => CompletionItemKind::FIELD,
                            CompletionKind::Setting => CompletionItemKind::PROPERTY,
                            CompletionKind::Keyword => CompletionItemKind::KEYWORD,
                        }),
                        detail: Some(c.detail),
                        ..Default::default()
                    })
                    .collect();
                serde_json::to_value(items)
            }),
            // The whole document replaced by `dtl fmt`'s layout; nothing
            // when it has syntax errors (the diagnostics say why).
            Formatting::METHOD => {
                parse::<lsp_types::DocumentFormattingParams>(request.params).map(|p| {
                    let edits = self.documents.get(&p.text_document.uri).and_then(|a| {
                        let formatted = dtl_compiler::tools::format::format_source(&a.text).ok()?;
                        Some(vec![lsp_types::TextEdit {
                            range: range(&a.text, 0, a.text.len()),
                            new_text: formatted,
                        }])
                    });
                    serde_json::to_value(edits)
                })
            }
            other => {
                return Response::new_err(
                    id,
                    lsp_server::ErrorCode::MethodNotFound as i32,
                    format!("dtl lsp does not handle `{other}`"),
                )
            }
        };
        match result {
            Ok(Ok(value)) => Response::new_ok(id, value),
            Ok(Err(e)) => Response::new_err(
                id,
                lsp_server::ErrorCode::InternalError as i32,
                e.to_string(),
            ),
            Err(e) => Response::new_err(id, lsp_server::ErrorCode::InvalidParams as i32, e),
        }
    }

    /// The analysis of an open document and the byte offset of `position`.
    fn at(&self, uri: &Url, position: Position) -> Option<(&Analysis, usize)> {
        let analysis = self.documents.get(uri)?;
        Some((analysis, offset(&analysis.text, position)))
    }
}

fn parse<T: serde::de::DeserializeOwned>(params: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(params).map_err(|e| e.to_string())
}

/// LSP positions count UTF-16 code units within a line.
fn position(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..line_start].matches('\n').count() as u32;
    let character = text[line_start..offset].encode_utf16().count() as u32;
    Position { line, character }
}

fn offset(text: &str, position: Position) -> usize {
    let line_start = if position.line == 0 {
        0
    } else {
        text.match_indices('\n')
            .nth(position.line as usize - 1)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    let mut units = 0;
    for (i, c) in text[line_start..].char_indices() {
        if units >= position.character as usize || c == '\n' {
            return line_start + i;
        }
        units += c.len_utf16();
    }
    text.len()
}

fn range(text: &str, start: usize, end: usize) -> Range {
    Range {
        start: position(text, start),
        end: position(text, end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units() {
        let text = "a—b\nx𝄞y\n";
        let at = |line, character| Position { line, character };
        // `—` is one UTF-16 unit and three bytes; `𝄞` is two units, four bytes.
        assert_eq!(position(text, 4), at(0, 2));
        assert_eq!(position(text, 11), at(1, 3));
        assert_eq!(offset(text, at(1, 3)), 11);
        // Inside a character: its start; past the end of a line: its end.
        assert_eq!(position(text, 9), at(1, 1));
        assert_eq!(offset(text, at(0, 99)), 5);
    }
}
