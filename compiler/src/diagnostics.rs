//! The diagnostics of one file and their renderings: miette's report for
//! people, JSON records for tools, GitHub workflow annotations for CI.

use std::fmt;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, Severity,
    SourceCode,
};
use serde::Serialize;

use crate::span::line_col;

type Boxed = Box<dyn Diagnostic + Send + Sync + 'static>;

/// Everything reported about one file, in file order.
pub struct Diagnostics {
    pub name: String,
    pub text: String,
    source: Box<NamedSource<String>>,
    pub items: Vec<Boxed>,
}

impl fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Diagnostics")
            .field("name", &self.name)
            .field("items", &self.items)
            .finish()
    }
}

/// One diagnostic as a flat record: `dtl check --format json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    pub file: String,
    pub severity: &'static str,
    pub code: String,
    pub message: String,
    pub line: usize,
    pub column: usize,
    pub start: usize,
    pub end: usize,
    pub help: Option<String>,
}

impl Diagnostics {
    pub fn new(name: &str, text: &str) -> Self {
        Diagnostics {
            name: name.to_string(),
            text: text.to_string(),
            source: Box::new(NamedSource::new(name, text.to_string())),
            items: Vec::new(),
        }
    }

    pub fn push(&mut self, diagnostic: impl Diagnostic + Send + Sync + 'static) {
        self.items.push(Box::new(diagnostic));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| severity(d.as_ref()) == "error")
            .count()
    }

    /// miette's graphical report for every diagnostic, each with the file's
    /// name, line and column and the offending text labelled.
    pub fn render_human(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        let mut out = String::new();
        for item in &self.items {
            let attached = Attached {
                inner: item.as_ref(),
                source: &self.source,
            };
            handler
                .render_report(&mut out, &attached)
                .expect("writing to a String cannot fail");
        }
        out
    }

    pub fn records(&self) -> Vec<Record> {
        self.items
            .iter()
            .map(|d| {
                let (start, end) = primary_span(d.as_ref());
                let (line, column) = line_col(&self.text, start);
                Record {
                    file: self.name.clone(),
                    severity: severity(d.as_ref()),
                    code: d.code().map(|c| c.to_string()).unwrap_or_default(),
                    message: d.to_string(),
                    line,
                    column,
                    start,
                    end,
                    help: d.help().map(|h| h.to_string()),
                }
            })
            .collect()
    }

    /// GitHub Actions workflow commands, one line each.
    pub fn render_github(&self) -> String {
        self.records()
            .iter()
            .map(|r| {
                let (_, end_col) = line_col(&self.text, r.end);
                let message = match &r.help {
                    Some(help) => format!("{} ({help})", r.message),
                    None => r.message.clone(),
                };
                format!(
                    "::{} file={},line={},col={},endColumn={},title={}::{}\n",
                    if r.severity == "error" {
                        "error"
                    } else {
                        "warning"
                    },
                    r.file,
                    r.line,
                    r.column,
                    end_col,
                    r.code,
                    message.replace('%', "%25").replace('\n', "%0A")
                )
            })
            .collect()
    }
}

fn severity(d: &dyn Diagnostic) -> &'static str {
    match d.severity().unwrap_or(Severity::Error) {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Advice => "advice",
    }
}

fn primary_span(d: &dyn Diagnostic) -> (usize, usize) {
    d.labels()
        .and_then(|mut labels| labels.next())
        .map_or((0, 0), |l: LabeledSpan| (l.offset(), l.offset() + l.len()))
}

/// A diagnostic with the file's source attached, for rendering.
struct Attached<'a> {
    inner: &'a (dyn Diagnostic + Send + Sync),
    source: &'a NamedSource<String>,
}

impl fmt::Debug for Attached<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.inner, f)
    }
}

impl fmt::Display for Attached<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.inner, f)
    }
}

impl std::error::Error for Attached<'_> {}

impl Diagnostic for Attached<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.inner.help()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.inner.labels()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.source)
    }
}
