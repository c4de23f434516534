//! What an editor asks of a file: its diagnostics, the shape of the tensor
//! under the cursor, where a name is defined, what may be typed next. Pure
//! queries over byte offsets; `dtl lsp` turns them into the protocol.

use crate::ast::{File, Item, ModuleDef};
use crate::check::{self, Builtin, ShapeNote};
use crate::span::Span;
use crate::Diagnostics;

use super::calls::{self, CallSite, Signature};

/// A file parsed and checked, with what the queries need. Built even when
/// the file has errors: whatever could be checked is there.
pub struct Analysis {
    pub text: String,
    pub file: File,
    pub diagnostics: Diagnostics,
    pub shapes: Vec<ShapeNote>,
    /// The files it imports, and the modules they lend (their spans in
    /// those files' stretches of offsets, [`crate::imports`]).
    imported: Vec<crate::imports::LoadedFile>,
    imported_modules: Vec<ModuleDef>,
}

/// A completion candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub label: String,
    pub kind: CompletionKind,
    /// A signature or a short description.
    pub detail: String,
    /// What to insert, when not the label (`lr: ` for the argument `lr`).
    pub insert: Option<String>,
    /// Markdown shown beside the item.
    pub documentation: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionKind {
    Layer,
    Module,
    Argument,
    Setting,
    Keyword,
}

/// The forms that are not layers: they combine tensors or reuse a layer.
const FORMS: [(&str, &str); 2] = [
    (
        "concat",
        "concat(a, b, ..., dim: int = -1)  // joins tensors along dim",
    ),
    (
        "tied",
        "tied(embed)  // an output layer with the embedding `embed`'s weight",
    ),
];

const KEYWORDS: [&str; 10] = [
    "import", "module", "model", "data", "train", "parallel", "forward", "let", "repeat", "test",
];

pub fn analyze(name: &str, text: &str, options: &check::Options) -> Analysis {
    let (file, syntax_errors) = crate::syntax::parse(text);
    let mut diagnostics = Diagnostics::new(name, text);
    let mut shapes = Vec::new();
    let mut imported = Vec::new();
    let mut imported_modules = Vec::new();
    if syntax_errors.is_empty() {
        // The queries read this file's own syntax tree; the checker sees
        // the imported modules too.
        let mut merged = file.clone();
        let loaded = crate::imports::load(
            &mut merged,
            name,
            text.len(),
            &options.base_dir,
            options.strict,
            &mut diagnostics,
        );
        let checked = check::check(&merged, options);
        for err in checked.errors {
            diagnostics.push(err);
        }
        for lint in crate::imports::own_lints(checked.lints, loaded.lints, &diagnostics) {
            diagnostics.push(lint);
        }
        // Shapes noted in imported modules are not in this file's text.
        shapes = checked
            .shapes
            .into_iter()
            .filter(|note| note.span.end <= text.len())
            .collect();
        imported = loaded.files;
        imported_modules = merged
            .items
            .into_iter()
            .filter_map(|item| match item {
                Item::Module(def) if def.span.start > text.len() => Some(def),
                _ => None,
            })
            .collect();
    } else {
        for err in syntax_errors {
            diagnostics.push(err);
        }
    }
    Analysis {
        text: text.to_string(),
        file,
        diagnostics,
        shapes,
        imported,
        imported_modules,
    }
}

impl Analysis {
    /// Markdown about the name under `offset`: a tensor's shape in every
    /// module instance, a layer's or module's signature, a named layer's
    /// definition.
    pub fn hover(&self, offset: usize) -> Option<(Span, String)> {
        let (span, word) = self.word_at(offset)?;
        let mut shapes: Vec<String> = Vec::new();
        let names = self
            .shapes
            .iter()
            .filter(|n| n.kind == check::NoteKind::Name);
        for note in names.filter(|n| n.span == span) {
            let line = if note.scope.is_empty() {
                format!("`{}`: `{}`", note.name, note.shape)
            } else {
                format!("`{}`: `{}` (in `{}`)", note.name, note.shape, note.scope)
            };
            if !shapes.contains(&line) {
                shapes.push(line);
            }
        }
        if !shapes.is_empty() {
            return Some((span, shapes.join("  \n")));
        }
        if let Some(text) = self.hover_name(span.start, word) {
            return Some((span, text));
        }
        if let Some(def) = self.module(word) {
            return Some((span, format!("```dtl\n{}\n```", self.module_signature(def))));
        }
        if let Some(layer) = Builtin::lookup(word) {
            return Some((span, format!("```dtl\n{}\n```", layer.signature_text())));
        }
        if let Some((_, text)) = FORMS.iter().find(|(name, _)| *name == word) {
            return Some((span, format!("```dtl\n{text}\n```")));
        }
        let layer = self
            .enclosing_module(offset)
            .and_then(|m| m.layers.iter().find(|l| l.name.name == word))?;
        Some((
            span,
            format!(
                "```dtl\n{}\n```",
                &self.text[layer.span.start..layer.span.end]
            ),
        ))
    }

    /// Where the name under `offset` is defined: a module (of this file or
    /// an imported one: then [`Analysis::locate`] says where), a module
    /// parameter, a named layer, a `let`, a forward's input, a data source.
    pub fn definition(&self, offset: usize) -> Option<Span> {
        let (_, word) = self.word_at(offset)?;
        if let Some(def) = self.module(word) {
            return Some(def.name.span);
        }
        if let Some(def) = self.enclosing_module(offset) {
            if let Some(param) = def.params.iter().find(|p| p.name.name == word) {
                return Some(param.name.span);
            }
            if let Some(layer) = def.layers.iter().find(|l| l.name.name == word) {
                return Some(layer.name.span);
            }
            for forward in &def.forwards {
                if forward.input.name == word {
                    return Some(forward.input.span);
                }
                if let Some(binding) = forward.lets.iter().find(|l| l.name.name == word) {
                    return Some(binding.name.span);
                }
            }
        }
        self.file.items.iter().find_map(|item| match item {
            Item::Data(data) if data.name.name == word => Some(data.name.span),
            _ => None,
        })
    }

    /// What may be typed at `offset`: the keyword arguments of the call the
    /// cursor is in, the settings of the block it is in, or layers, modules
    /// and keywords.
    pub fn completions(&self, offset: usize) -> Vec<Completion> {
        let before = &self.text[..offset.min(self.text.len())];
        if let Some((site, signature)) = self.call_at(offset) {
            // The arguments still to give, each with its type and default.
            return signature
                .remaining(&site)
                .map(|(name, text)| Completion {
                    label: name.clone(),
                    kind: CompletionKind::Argument,
                    detail: text.clone(),
                    insert: Some(format!("{name}: ")),
                    documentation: Some(format!(
                        "```dtl\n{}\n```\n{}",
                        signature.label, signature.what
                    )),
                })
                .collect();
        }
        if let Some(block) = enclosing_block(before) {
            let keys: &[&str] = match block {
                "train" => &check::TRAIN_KEYS,
                "data" => &check::DATA_KEYS,
                "parallel" => &check::PARALLEL_KEYS,
                _ => &[],
            };
            if !keys.is_empty() {
                return keys
                    .iter()
                    .map(|key| Completion {
                        label: key.to_string(),
                        kind: CompletionKind::Setting,
                        detail: format!("a `{block}` setting"),
                        insert: None,
                        documentation: None,
                    })
                    .collect();
            }
        }
        let mut out: Vec<Completion> = check::builtin_names()
            .filter_map(Builtin::lookup)
            .map(|layer| Completion {
                label: layer.name().to_string(),
                kind: CompletionKind::Layer,
                detail: layer.signature_text(),
                insert: None,
                documentation: None,
            })
            .collect();
        out.extend(FORMS.iter().map(|(name, text)| Completion {
            label: name.to_string(),
            kind: CompletionKind::Layer,
            detail: text.to_string(),
            insert: None,
            documentation: None,
        }));
        out.extend(
            self.modules()
                .chain(&self.imported_modules)
                .map(|def| Completion {
                    label: def.name.name.clone(),
                    kind: CompletionKind::Module,
                    detail: self.module_signature(def),
                    insert: None,
                    documentation: None,
                }),
        );
        out.extend(KEYWORDS.iter().map(|k| Completion {
            label: k.to_string(),
            kind: CompletionKind::Keyword,
            detail: "keyword".into(),
            insert: None,
            documentation: None,
        }));
        out
    }

    /// Hover for a module parameter (its declaration and its value in
    /// each instance), a data source's name (its block) and a setting's
    /// value (`adamw`: its signature).
    /// `start` is where the word begins.
    fn hover_name(&self, start: usize, word: &str) -> Option<String> {
        if let Some(def) = self.enclosing_module(start) {
            if let Some(param) = def.params.iter().find(|p| p.name.name == word) {
                let mut text = format!("```dtl\n{}\n```", self.text_at(param.span));
                let values = self
                    .shapes
                    .iter()
                    .filter(|n| n.kind == check::NoteKind::Value && n.span == param.name.span);
                let mut seen: Vec<String> = Vec::new();
                for note in values {
                    let line = format!("`{}`: {word} = {}", note.scope, note.shape);
                    if !seen.contains(&line) {
                        seen.push(line);
                    }
                }
                if !seen.is_empty() {
                    text.push_str("\n\n");
                    text.push_str(&seen.join("  \n"));
                }
                return Some(text);
            }
        }
        let data = self.file.items.iter().find_map(|item| match item {
            Item::Data(data) if data.name.name == word => Some(data),
            _ => None,
        });
        if let Some(data) = data {
            return Some(format!("```dtl\n{}\n```", self.text_at(data.span)));
        }
        let setting = calls::setting_before(&self.text[..start]);
        let call = check::setting_call(word, setting)?;
        setting?;
        Some(format!(
            "```dtl\n{}\n```\na value of `{}`",
            call.text(),
            call.setting
        ))
    }

    /// Every classified token of the file ([`super::semantic`]).
    pub fn semantic_tokens(&self) -> Vec<super::semantic::SemanticToken> {
        let modules = self
            .modules()
            .chain(&self.imported_modules)
            .map(|def| def.name.name.clone())
            .collect();
        super::semantic::semantic_tokens(&self.file, &self.text, &modules)
    }

    /// Inlay hints for the text between `start` and `end`.
    pub fn inlay_hints(&self, start: usize, end: usize) -> Vec<super::hints::Hint> {
        super::hints::inlay_hints(&self.shapes, start, end)
    }

    /// The call the cursor is in and what it takes.
    pub fn call_at(&self, offset: usize) -> Option<(CallSite, Signature)> {
        let site = calls::call_site(&self.text, offset)?;
        let texts = |def: &ModuleDef| -> Vec<String> {
            def.params
                .iter()
                .map(|p| self.text_at(p.span).to_string())
                .collect()
        };
        let signature = calls::signature(&site, |name| self.module(name), texts)?;
        Some((site, signature))
    }

    /// Signature help: the call's signature and the parameter the cursor
    /// is on.
    pub fn signature_help(&self, offset: usize) -> Option<(Signature, Option<usize>)> {
        let (site, signature) = self.call_at(offset)?;
        let active = signature.active(&site);
        Some((signature, active))
    }

    /// This file's own modules.
    fn modules(&self) -> impl Iterator<Item = &ModuleDef> {
        self.file.modules()
    }

    /// A module of this file or of one it imports.
    fn module(&self, name: &str) -> Option<&ModuleDef> {
        self.modules()
            .chain(&self.imported_modules)
            .find(|def| def.name.name == name)
    }

    fn enclosing_module(&self, offset: usize) -> Option<&ModuleDef> {
        self.modules()
            .find(|def| def.span.start <= offset && offset <= def.span.end)
    }

    /// The text of a span, in this file or an imported one.
    fn text_at(&self, span: Span) -> &str {
        if span.end <= self.text.len() {
            return &self.text[span.start..span.end];
        }
        self.locate(span)
            .map_or("", |(_, text, local)| &text[local.start..local.end])
    }

    /// For a span in an imported file: the file's path, its text and the
    /// span in it (`None`: the span is this file's).
    pub fn locate(&self, span: Span) -> Option<(&std::path::Path, &str, Span)> {
        if span.start <= self.text.len() {
            return None;
        }
        let file = self
            .imported
            .iter()
            .find(|f| f.base <= span.start && span.end <= f.base + f.text.len())?;
        let local = Span::new(span.start - file.base, span.end - file.base);
        Some((&file.path, &file.text, local))
    }

    /// `module Block(d: int, p: float = 0.1)` and its forward's shapes.
    fn module_signature(&self, def: &ModuleDef) -> String {
        let params: Vec<&str> = def.params.iter().map(|p| self.text_at(p.span)).collect();
        let keyword = self.text_at(def.keyword);
        let mut text = if params.is_empty() {
            format!("{keyword} {}", def.name.name)
        } else {
            format!("{keyword} {}({})", def.name.name, params.join(", "))
        };
        for forward in &def.forwards {
            let shape = |s: Span| self.text_at(s);
            text.push_str(&format!(
                "\nforward({}: {}) -> {}",
                forward.input.name,
                shape(forward.input_shape.span),
                shape(forward.output_shape.span)
            ));
        }
        text
    }

    /// The identifier around `offset`, if any.
    fn word_at(&self, offset: usize) -> Option<(Span, &str)> {
        let bytes = self.text.as_bytes();
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let offset = offset.min(bytes.len());
        let mut start = offset;
        while start > 0 && is_word(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = offset;
        while end < bytes.len() && is_word(bytes[end]) {
            end += 1;
        }
        (start < end && !bytes[start].is_ascii_digit())
            .then(|| (Span::new(start, end), &self.text[start..end]))
    }
}

/// The keyword of the top-level block the end of `before` is in (`train`,
/// `data`, `parallel`, …), when it is directly inside it.
fn enclosing_block(before: &str) -> Option<&str> {
    let mut depth = 0i32;
    for (i, c) in before.char_indices().rev() {
        match c {
            '}' => depth += 1,
            '{' if depth == 0 => {
                let head = before[..i].trim_end();
                // `train {`, or `data digits {`: the first word of the line.
                let line = head.rsplit('\n').next().unwrap_or(head).trim_start();
                return line.split_whitespace().next();
            }
            '{' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
