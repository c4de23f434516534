//! `dtl lsp`: a language server over stdio. Diagnostics are `dtl check`'s,
//! published on open and on every change; hover shows a tensor's inferred
//! shape or a layer's signature; go-to-definition finds modules, layers,
//! `let`s and data sources; completion offers layers, modules, keyword
//! arguments and settings. The queries are the compiler's
//! (`dtl_compiler::tools::analysis`); this file only speaks the protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dtl_compiler::tools::analysis::{self, Analysis, CompletionKind};
use dtl_compiler::tools::format;
use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{
    Completion, Formatting, GotoDefinition, HoverRequest, Request as _, SignatureHelpRequest,
};
use lsp_types::{
    CompletionItem, CompletionItemKind, CompletionOptions, CompletionParams, Diagnostic,
    DiagnosticRelatedInformation, DiagnosticSeverity, GotoDefinitionParams, Hover, HoverContents,
    HoverParams, HoverProviderCapability, Location, MarkupContent, MarkupKind, NumberOrString,
    OneOf, Position, PublishDiagnosticsParams, ServerCapabilities, TextDocumentSyncCapability,
    TextDocumentSyncKind, Url,
};

use crate::Failure;

mod features;
mod positions;
mod transport;

pub(crate) use positions::{offset, range, Lines};

/// Serves one client until it says `exit`.
pub fn serve() -> Result<(), Failure> {
    let fail = |e: String| Failure::usage(format!("language server: {e}"));
    let (connection, io_threads) = transport::stdio();
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["(".into(), ",".into()]),
            ..Default::default()
        }),
        document_symbol_provider: Some(OneOf::Left(true)),
        semantic_tokens_provider: Some(features::semantic_tokens_options()),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(lsp_types::CodeActionProviderCapability::Simple(true)),
        code_lens_provider: Some(lsp_types::CodeLensOptions {
            resolve_provider: Some(false),
        }),
        folding_range_provider: Some(lsp_types::FoldingRangeProviderCapability::Simple(true)),
        inlay_hint_provider: Some(OneOf::Left(true)),
        signature_help_provider: Some(lsp_types::SignatureHelpOptions {
            trigger_characters: Some(vec!["(".into(), ",".into()]),
            retrigger_characters: Some(vec![":".into()]),
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
        data_checks: BTreeMap::new(),
    };
    server.run().map_err(fail)?;
    drop(connection);
    io_threads.join();
    Ok(())
}

struct Server<'a> {
    connection: &'a Connection,
    /// Open documents, analysed at their last change.
    documents: BTreeMap<Url, Analysis>,
    /// The background data check of each document, to cancel on its next
    /// change.
    data_checks: BTreeMap<Url, Arc<AtomicBool>>,
}

/// What a background data check may read: less than `dtl check --data`,
/// since it runs on every edit.
const DATA_BUDGET_BYTES: u64 = 256 << 20;
const DATA_BUDGET_SECONDS: f64 = 20.0;

/// A document's diagnostics in the protocol's terms.
fn lsp_diagnostics(analysis: &Analysis, text: &str, uri: &Url) -> Vec<Diagnostic> {
    let main = &analysis.diagnostics.name;
    let lines = Lines::new(text);
    // The other places a diagnostic labels (inside a module, when it is
    // reported at the call), in this document or a file it imports.
    let related = |related: Vec<dtl_compiler::diagnostics::Related>| {
        let items: Vec<DiagnosticRelatedInformation> = related
            .into_iter()
            .filter_map(|r| {
                let uri = match r.file == *main {
                    true => uri.clone(),
                    false => Url::from_file_path(&r.file).ok()?,
                };
                let text = analysis.diagnostics.text_of(&r.file);
                Some(DiagnosticRelatedInformation {
                    location: Location {
                        uri,
                        range: range(text, r.start, r.end),
                    },
                    message: r.message,
                })
            })
            .collect();
        (!items.is_empty()).then_some(items)
    };
    analysis
        .diagnostics
        .records_here()
        .into_iter()
        .map(|r| Diagnostic {
            related_information: related(r.related),
            range: lines.range(r.start, r.end),
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
        .collect()
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
                Message::Notification(notification) => {
                    let method = notification.method.clone();
                    // Bad parameters are the client's mistake: said, and
                    // the server goes on.
                    if let Err(why) = self.notified(notification) {
                        self.log(&format!("`{method}` could not be read: {why}"))?;
                    }
                }
                Message::Response(_) => {}
            }
        }
        Ok(())
    }

    /// A message in the client's log (`window/logMessage`, an error).
    fn log(&self, text: &str) -> Result<(), String> {
        let params = lsp_types::LogMessageParams {
            typ: lsp_types::MessageType::ERROR,
            message: format!("dtl: {text}"),
        };
        self.send(Message::Notification(Notification::new(
            lsp_types::notification::LogMessage::METHOD.to_string(),
            params,
        )))
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
                let document = params.text_document;
                self.update(document.uri, document.text, Some(document.version))
            }
            DidChangeTextDocument::METHOD => {
                let params: lsp_types::DidChangeTextDocumentParams = parse(notification.params)?;
                // Full sync: the last change is the whole text.
                match params.content_changes.into_iter().last() {
                    Some(change) => self.update(
                        params.text_document.uri,
                        change.text,
                        Some(params.text_document.version),
                    ),
                    None => Ok(()),
                }
            }
            DidCloseTextDocument::METHOD => {
                let params: lsp_types::DidCloseTextDocumentParams = parse(notification.params)?;
                self.documents.remove(&params.text_document.uri);
                if let Some(check) = self.data_checks.remove(&params.text_document.uri) {
                    check.store(true, Ordering::Relaxed);
                }
                self.publish(params.text_document.uri, Vec::new(), None)
            }
            _ => Ok(()),
        }
    }

    /// Re-analyses a document and publishes its diagnostics: at once
    /// without reading its data, then again when a background check with
    /// the data (within a budget) is done, unless the document changed
    /// first (which cancels it). The server never waits on a data file.
    /// Diagnostics carry the document's `version`, so that a client can
    /// tell the two publications of one version from older ones.
    fn update(&mut self, uri: Url, text: String, version: Option<i32>) -> Result<(), String> {
        let path = uri
            .to_file_path()
            .unwrap_or_else(|_| PathBuf::from(uri.path()));
        let options = dtl_compiler::options_for(&path, false);
        let analysis = analysis::analyze(&path.display().to_string(), &text, &options);
        let diagnostics = lsp_diagnostics(&analysis, &text, &uri);
        self.documents.insert(uri.clone(), analysis);
        if let Some(previous) = self.data_checks.remove(&uri) {
            previous.store(true, Ordering::Relaxed);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.data_checks.insert(uri.clone(), cancel.clone());
        self.publish(uri.clone(), diagnostics, version)?;
        let sender = self.connection.sender.clone();
        let mut with_data = dtl_compiler::options_for(&path, true);
        with_data.data_limits = dtl_compiler::dataset::Limits {
            bytes: Some(DATA_BUDGET_BYTES),
            seconds: Some(DATA_BUDGET_SECONDS),
            cancel: Some(cancel.clone()),
            show_values: false,
            // The data block's own `on_bad_row` decides (check/data.rs).
            skip_bad_rows: false,
        };
        std::thread::Builder::new()
            .name("dtl-lsp-data".into())
            .spawn(move || {
                let analysis = analysis::analyze(&path.display().to_string(), &text, &with_data);
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let params = PublishDiagnosticsParams {
                    diagnostics: lsp_diagnostics(&analysis, &text, &uri),
                    uri,
                    version,
                };
                let _ = sender.send(Message::Notification(Notification::new(
                    PublishDiagnostics::METHOD.into(),
                    params,
                )));
            })
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn publish(
        &self,
        uri: Url,
        diagnostics: Vec<Diagnostic>,
        version: Option<i32>,
    ) -> Result<(), String> {
        let params = PublishDiagnosticsParams {
            uri,
            diagnostics,
            version,
        };
        self.send(Message::Notification(Notification::new(
            PublishDiagnostics::METHOD.into(),
            params,
        )))
    }

    fn respond(&self, request: Request) -> Response {
        let id = request.id.clone();
        let result =
            match request.method.as_str() {
                HoverRequest::METHOD => parse::<HoverParams>(request.params).map(|p| {
                    let at = p.text_document_position_params;
                    let hover =
                        self.at(&at.text_document.uri, at.position)
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
                        let span = a.definition(offset)?;
                        // A module of an imported file: that file, its lines.
                        match a.locate(span) {
                            Some((path, text, local)) => Some(Location {
                                uri: Url::from_file_path(path).ok()?,
                                range: range(text, local.start, local.end),
                            }),
                            None => Some(Location {
                                uri: uri.clone(),
                                range: range(&a.text, span.start, span.end),
                            }),
                        }
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
                            insert_text: c.insert,
                            documentation: c.documentation.map(|value| {
                                lsp_types::Documentation::MarkupContent(MarkupContent {
                                    kind: MarkupKind::Markdown,
                                    value,
                                })
                            }),
                            ..Default::default()
                        })
                        .collect();
                    serde_json::to_value(items)
                }),
                // `dtl fmt`'s layout as the runs of lines that change (none
                // when the document is canonical, so it is not marked
                // modified); nothing when it has syntax errors (the
                // diagnostics say why).
                Formatting::METHOD => parse::<lsp_types::DocumentFormattingParams>(request.params)
                    .map(|p| {
                        let edits = self.documents.get(&p.text_document.uri).and_then(|a| {
                            let formatted = format::format_source(&a.text).ok()?;
                            let edits = format::line_edits(&a.text, &formatted);
                            Some(
                                edits
                                    .into_iter()
                                    .map(|e| lsp_types::TextEdit {
                                        range: range(&a.text, e.start, e.end),
                                        new_text: e.text,
                                    })
                                    .collect::<Vec<_>>(),
                            )
                        });
                        serde_json::to_value(edits)
                    }),
                SignatureHelpRequest::METHOD => {
                    parse::<lsp_types::SignatureHelpParams>(request.params).map(|p| {
                        let at = p.text_document_position_params;
                        let help = self
                            .at(&at.text_document.uri, at.position)
                            .and_then(|(a, offset)| a.signature_help(offset))
                            .map(|(signature, active)| features::signature_help(signature, active));
                        serde_json::to_value(help)
                    })
                }
                "textDocument/documentSymbol" => {
                    parse::<lsp_types::DocumentSymbolParams>(request.params).map(|p| {
                        let uri = &p.text_document.uri;
                        serde_json::to_value(self.documents.get(uri).map(features::symbols))
                    })
                }
                "textDocument/foldingRange" => {
                    parse::<lsp_types::FoldingRangeParams>(request.params).map(|p| {
                        let uri = &p.text_document.uri;
                        serde_json::to_value(self.documents.get(uri).map(features::folding))
                    })
                }
                "textDocument/codeAction" => parse::<lsp_types::CodeActionParams>(request.params)
                    .map(|p| {
                        let uri = &p.text_document.uri;
                        let actions = self
                            .documents
                            .get(uri)
                            .map(|a| features::code_actions(a, uri, p.range));
                        serde_json::to_value(actions)
                    }),
                "textDocument/codeLens" => {
                    parse::<lsp_types::CodeLensParams>(request.params).map(|p| {
                        let uri = &p.text_document.uri;
                        let lenses = self
                            .documents
                            .get(uri)
                            .map(|a| features::code_lenses(a, uri));
                        serde_json::to_value(lenses)
                    })
                }
                "textDocument/references" => parse::<lsp_types::ReferenceParams>(request.params)
                    .map(|p| {
                        let at = p.text_document_position;
                        let uri = at.text_document.uri.clone();
                        let found = self
                            .at(&uri, at.position)
                            .map(|(a, offset)| features::references(a, &uri, offset));
                        serde_json::to_value(found)
                    }),
                "textDocument/rename" => {
                    parse::<lsp_types::RenameParams>(request.params).and_then(|p| {
                        let at = p.text_document_position;
                        let uri = at.text_document.uri.clone();
                        let Some((a, offset)) = self.at(&uri, at.position) else {
                            return Ok(serde_json::to_value(Option::<()>::None));
                        };
                        features::rename(a, &uri, offset, &p.new_name).map(serde_json::to_value)
                    })
                }
                "textDocument/semanticTokens/full" => {
                    parse::<lsp_types::SemanticTokensParams>(request.params).map(|p| {
                        let uri = &p.text_document.uri;
                        serde_json::to_value(self.documents.get(uri).map(features::semantic_tokens))
                    })
                }
                "textDocument/inlayHint" => parse::<lsp_types::InlayHintParams>(request.params)
                    .map(|p| {
                        let hints = self
                            .documents
                            .get(&p.text_document.uri)
                            .map(|a| features::inlay_hints(a, p.range));
                        serde_json::to_value(hints)
                    }),
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
