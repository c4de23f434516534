//! The diagnostics of one file and their renderings: miette's report for
//! people, JSON records for tools, GitHub workflow annotations for CI. A
//! diagnostic about a file the file imports is rendered with that file's
//! name, lines and text (its spans lie in the imported file's stretch of
//! offsets, [`crate::imports`]).

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
    /// The files it imports, each at its own offsets.
    imported: Vec<Imported>,
}

/// An imported file: its text at offsets `base..base + text.len()`, and the
/// import in the main file that led to it.
struct Imported {
    name: String,
    text: String,
    base: usize,
    source: NamedSource<String>,
    at: crate::span::Span,
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
    /// The other places the diagnostic labels: inside a module, the error
    /// itself when the record is at the call that caused it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

/// A secondary location of a [`Record`], with its label.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Related {
    pub file: String,
    pub message: String,
    pub line: usize,
    pub column: usize,
    pub start: usize,
    pub end: usize,
}

impl Diagnostics {
    pub fn new(name: &str, text: &str) -> Self {
        Diagnostics {
            name: name.to_string(),
            text: text.to_string(),
            source: Box::new(NamedSource::new(name, text.to_string())),
            items: Vec::new(),
            imported: Vec::new(),
        }
    }

    /// Registers a file the main file imports (through `at`), whose spans
    /// start at `base`.
    pub fn add_file(&mut self, name: &str, text: &str, base: usize, at: crate::span::Span) {
        self.imported.push(Imported {
            name: name.to_string(),
            text: text.to_string(),
            base,
            source: NamedSource::new(name, text.to_string()),
            at,
        });
    }

    /// The imported file an offset lies in (`None`: the main file).
    fn imported_at(&self, offset: usize) -> Option<&Imported> {
        if offset <= self.text.len() {
            return None;
        }
        self.imported
            .iter()
            .find(|f| f.base <= offset && offset <= f.base + f.text.len())
    }

    /// The text of the file a record names (the main file's or an
    /// imported one's).
    pub fn text_of(&self, name: &str) -> &str {
        self.imported
            .iter()
            .find(|f| f.name == name)
            .map_or(&self.text, |f| &f.text)
    }

    /// Whether a span lies in a file the main file imports.
    pub fn is_imported(&self, span: crate::span::Span) -> bool {
        self.imported_at(span.start).is_some()
    }

    pub fn push(&mut self, diagnostic: impl Diagnostic + Send + Sync + 'static) {
        self.items.push(Box::new(diagnostic));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first error's code (`dtl::check::…`) and message.
    pub fn first_error(&self) -> Option<(String, String)> {
        let first = self
            .items
            .iter()
            .find(|d| severity(d.as_ref()) == "error")?;
        let code = first
            .code()
            .map_or_else(|| "error".into(), |c| c.to_string());
        Some((code, first.to_string()))
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
            let (start, _) = primary_span(item.as_ref());
            let (source, base, len) = self.file_at(start);
            // Labels in another file (an error inside an imported module,
            // reported at the call) follow as notes of their own.
            let elsewhere = secondary_labels(item.as_ref())
                .filter_map(|l| {
                    let (source, there, _) = self.file_at(l.offset());
                    let label = l.label().unwrap_or_default().to_string();
                    (there != base).then(|| Elsewhere {
                        message: format!("in {}", source.name()),
                        label: LabeledSpan::new(Some(label), l.offset() - there, l.len()),
                        source,
                    })
                })
                .collect();
            let attached = Attached {
                inner: item.as_ref(),
                source,
                base,
                len,
                elsewhere,
            };
            handler
                .render_report(&mut out, &attached)
                .expect("writing to a String cannot fail");
        }
        out
    }

    /// One record per diagnostic, each in the file it is about (lines,
    /// columns and offsets in that file).
    pub fn records(&self) -> Vec<Record> {
        self.items
            .iter()
            .map(|d| {
                let (start, end) = primary_span(d.as_ref());
                let (file, start, end, line, column) = self.place(start, end);
                let related = secondary_labels(d.as_ref())
                    .map(|l| self.related(&l))
                    .collect();
                Record {
                    file,
                    severity: severity(d.as_ref()),
                    code: d.code().map(|c| c.to_string()).unwrap_or_default(),
                    message: d.to_string(),
                    line,
                    column,
                    start,
                    end,
                    help: d.help().map(|h| h.to_string()),
                    related,
                }
            })
            .collect()
    }

    /// Where the offsets `start..end` lie: the file's name, the offsets in
    /// it, and the line and column of `start`.
    fn place(&self, start: usize, end: usize) -> (String, usize, usize, usize, usize) {
        let (name, text, base) = match self.imported_at(start) {
            Some(file) => (&file.name, &file.text, file.base),
            None => (&self.name, &self.text, 0),
        };
        let (start, end) = (start - base, end.saturating_sub(base).min(text.len()));
        let (line, column) = line_col(text, start);
        (name.clone(), start, end, line, column)
    }

    /// A secondary label as a location in its file.
    fn related(&self, label: &LabeledSpan) -> Related {
        let (file, start, end, line, column) =
            self.place(label.offset(), label.offset() + label.len());
        Related {
            file,
            message: label.label().unwrap_or_default().to_string(),
            line,
            column,
            start,
            end,
        }
    }

    /// The source an offset lies in, its base offset and its length.
    fn file_at(&self, offset: usize) -> (&NamedSource<String>, usize, usize) {
        match self.imported_at(offset) {
            Some(file) => (&file.source, file.base, file.text.len()),
            None => (&self.source, 0, self.text.len()),
        }
    }

    /// [`Diagnostics::records`] for an editor showing the main file only:
    /// a diagnostic about an imported file is put on the import that led
    /// to it, its message saying where it is.
    pub fn records_here(&self) -> Vec<Record> {
        self.records()
            .into_iter()
            .zip(&self.items)
            .map(|(mut record, d)| {
                let (start, _) = primary_span(d.as_ref());
                if let Some(file) = self.imported_at(start) {
                    record.message = format!(
                        "{}:{}:{}: {}",
                        record.file, record.line, record.column, record.message
                    );
                    record.file = self.name.clone();
                    (record.start, record.end) = (file.at.start, file.at.end);
                    (record.line, record.column) = line_col(&self.text, file.at.start);
                }
                record
            })
            .collect()
    }

    /// GitHub Actions workflow commands, one line each.
    pub fn render_github(&self) -> String {
        self.records()
            .iter()
            .map(|r| {
                let (_, end_col) = line_col(self.text_of(&r.file), r.end);
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

/// The label marked primary, or else the first.
fn primary_label(d: &dyn Diagnostic) -> Option<LabeledSpan> {
    let labels: Vec<LabeledSpan> = d.labels()?.collect();
    let at = labels.iter().position(LabeledSpan::primary).unwrap_or(0);
    labels.into_iter().nth(at)
}

fn primary_span(d: &dyn Diagnostic) -> (usize, usize) {
    primary_label(d).map_or((0, 0), |l| (l.offset(), l.offset() + l.len()))
}

/// Every label but the primary one, in order.
fn secondary_labels(d: &dyn Diagnostic) -> impl Iterator<Item = LabeledSpan> {
    let labels: Vec<LabeledSpan> = d.labels().map(Iterator::collect).unwrap_or_default();
    let primary = labels.iter().position(LabeledSpan::primary).unwrap_or(0);
    labels
        .into_iter()
        .enumerate()
        .filter(move |(i, _)| *i != primary)
        .map(|(_, l)| l)
}

/// A diagnostic with its file's source attached, for rendering: its labels
/// moved back by `base` to the file's own offsets (labels in another file,
/// as a duplicate's first definition may be, are left out).
struct Attached<'a> {
    inner: &'a (dyn Diagnostic + Send + Sync),
    source: &'a NamedSource<String>,
    base: usize,
    len: usize,
    /// Its labels in other files, each shown with its own file.
    elsewhere: Vec<Elsewhere<'a>>,
}

/// A label of a diagnostic that lies in another file than its primary one.
#[derive(Debug)]
struct Elsewhere<'a> {
    message: String,
    label: LabeledSpan,
    source: &'a NamedSource<String>,
}

impl fmt::Display for Elsewhere<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Elsewhere<'_> {}

impl Diagnostic for Elsewhere<'_> {
    fn severity(&self) -> Option<Severity> {
        Some(Severity::Advice)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(self.label.clone())))
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.source)
    }
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
        let (base, len) = (self.base, self.len);
        let labels = self.inner.labels()?;
        Some(Box::new(labels.filter_map(move |l| {
            let start = l.offset().checked_sub(base)?;
            let label = l.label().map(str::to_string);
            (start + l.len() <= len).then(|| match l.primary() {
                true => LabeledSpan::new_primary_with_span(label, (start, l.len())),
                false => LabeledSpan::new(label, start, l.len()),
            })
        })))
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.source)
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn Diagnostic> + 'b>> {
        (!self.elsewhere.is_empty()).then(|| {
            Box::new(self.elsewhere.iter().map(|e| e as &dyn Diagnostic))
                as Box<dyn Iterator<Item = &'b dyn Diagnostic>>
        })
    }
}
