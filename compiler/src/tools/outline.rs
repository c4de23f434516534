//! A file's outline for an editor: its items as symbols (a module with its
//! layers and forward, a data source with its settings, the train and
//! parallel blocks with theirs), and the ranges that fold.

use crate::ast::{File, Item, Setting};
use crate::span::Span;

/// What a symbol is, for the editor's icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    Module,
    Model,
    Layer,
    Forward,
    Data,
    Block,
    Setting,
    Test,
    Import,
}

/// One entry of the outline, with what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    pub name: String,
    pub kind: SymbolKind,
    /// Everything it spans.
    pub span: Span,
    /// Its name.
    pub name_span: Span,
    pub children: Vec<Symbol>,
}

/// The outline of `file`, in file order.
pub fn symbols(file: &File) -> Vec<Symbol> {
    let leaf = |name: &str, kind, span: Span, name_span| Symbol {
        name: name.to_string(),
        kind,
        span,
        name_span,
        children: Vec::new(),
    };
    let settings = |settings: &[Setting]| -> Vec<Symbol> {
        settings
            .iter()
            .map(|s| leaf(&s.key.name, SymbolKind::Setting, s.span, s.key.span))
            .collect()
    };
    file.items
        .iter()
        .map(|item| match item {
            Item::Import(import) => leaf(
                &import.path,
                SymbolKind::Import,
                import.span,
                import.path_span,
            ),
            Item::Module(def) => {
                let mut children: Vec<Symbol> = def
                    .layers
                    .iter()
                    .map(|l| leaf(&l.name.name, SymbolKind::Layer, l.span, l.name.span))
                    .collect();
                children.extend(def.forwards.iter().map(|f| {
                    let keyword = Span::new(f.span.start, f.span.start + "forward".len());
                    leaf("forward", SymbolKind::Forward, f.span, keyword)
                }));
                children.sort_by_key(|c| c.span.start);
                let kind = match def.kind {
                    crate::ast::ModuleKind::Model => SymbolKind::Model,
                    crate::ast::ModuleKind::Module => SymbolKind::Module,
                };
                Symbol {
                    children,
                    ..leaf(&def.name.name, kind, def.span, def.name.span)
                }
            }
            Item::Data(data) => Symbol {
                children: settings(&data.settings),
                ..leaf(&data.name.name, SymbolKind::Data, data.span, data.name.span)
            },
            Item::Train(block) | Item::Parallel(block) => {
                let name = if matches!(item, Item::Train(_)) {
                    "train"
                } else {
                    "parallel"
                };
                Symbol {
                    children: settings(&block.settings),
                    ..leaf(name, SymbolKind::Block, block.span, block.keyword)
                }
            }
            Item::Test(test) => leaf(&test.name.name, SymbolKind::Test, test.span, test.name.span),
        })
        .collect()
}

/// The lines that fold (first and last, from 0): every item and every
/// `forward` over more than one line, and every run of two or more
/// comment lines.
pub fn folding_ranges(file: &File, text: &str) -> Vec<(usize, usize)> {
    let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count();
    let mut out = Vec::new();
    let mut add = |span: Span| {
        let (first, last) = (line(span.start), line(span.end));
        if last > first {
            out.push((first, last));
        }
    };
    for item in &file.items {
        match item {
            Item::Module(def) => {
                add(def.span);
                def.forwards.iter().for_each(|f| add(f.span));
            }
            Item::Data(data) => add(data.span),
            Item::Train(block) | Item::Parallel(block) => add(block.span),
            Item::Test(test) => add(test.span),
            Item::Import(_) => {}
        }
    }
    let mut run: Option<(usize, usize)> = None;
    for (i, l) in text.lines().enumerate() {
        let comment = l.trim_start().starts_with("//") || l.trim_start().starts_with('#');
        match (&mut run, comment) {
            (Some((_, last)), true) => *last = i,
            (None, true) => run = Some((i, i)),
            (Some((first, last)), false) => {
                if last > first {
                    out.push((*first, *last));
                }
                run = None;
            }
            (None, false) => {}
        }
    }
    if let Some((first, last)) = run.filter(|(f, l)| l > f) {
        out.push((first, last));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "// Two lines
// of comment.
module Block(d: int) {
  fc = linear(d, d)
  forward(x: [B, d]) -> [B, d] {
    x |> fc
  }
}
data digits { source = csv(\"d.csv\") }
train {
  model = Block
  steps = 1
}
";

    #[test]
    fn items_with_their_layers_and_settings() {
        let (file, errors) = crate::syntax::parse(SOURCE);
        assert!(errors.is_empty());
        let outline = symbols(&file);
        let names: Vec<(&str, SymbolKind, usize)> = outline
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.children.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("Block", SymbolKind::Module, 2),
                ("digits", SymbolKind::Data, 1),
                ("train", SymbolKind::Block, 2)
            ]
        );
        let fc = &outline[0].children[0];
        assert_eq!((fc.name.as_str(), fc.kind), ("fc", SymbolKind::Layer));
        assert_eq!(&SOURCE[fc.name_span.start..fc.name_span.end], "fc");
        assert_eq!(outline[0].children[1].kind, SymbolKind::Forward);
    }

    #[test]
    fn items_forwards_and_comment_runs_fold() {
        let (file, _) = crate::syntax::parse(SOURCE);
        assert_eq!(
            folding_ranges(&file, SOURCE),
            [(0, 1), (2, 7), (4, 6), (9, 12)]
        );
    }
}
