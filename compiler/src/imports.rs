//! `import "blocks.dtl"`: the modules and models of other files, defined
//! once and used by several experiments. A path is relative to the file
//! that imports it; an imported file may import others. What a file lends
//! is its `module`s and `model`s: its `data`, `train` and `parallel` blocks
//! and its tests stay its own (`dtl check` and `dtl test` on it run them).
//!
//! Every file is parsed into its own stretch of one offset space: the
//! importing file at 0, each imported file after the ones before it. So a
//! span says which file it is in, the checker works on one syntax tree
//! whatever file a module came from, and [`Diagnostics`] renders each
//! diagnostic with its own file's name, lines and text.

use std::path::{Path, PathBuf};

use crate::ast::{File, Import, Item};
use crate::check::{CheckError, Lint};
use crate::diagnostics::Diagnostics;
use crate::span::Span;

/// An imported file as read: where it is, its text, where its offsets
/// begin.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    /// As diagnostics name it (relative to the importing file's name).
    pub name: String,
    /// Canonical.
    pub path: PathBuf,
    pub text: String,
    pub base: usize,
}

/// What [`load`] found besides the modules: the files, and the warnings
/// about their paths.
#[derive(Debug, Default)]
pub struct Loaded {
    pub files: Vec<LoadedFile>,
    pub lints: Vec<Lint>,
}

/// The largest file an import reads: a file of modules is small, and a
/// wrong path (a dataset) must not be read whole.
pub const MAX_IMPORT_BYTES: u64 = 8 << 20;

/// How deep imports may nest.
const MAX_DEPTH: usize = 32;

/// Reads what `file` (named `name`, whose text is `main_len` bytes, in
/// `base_dir`) imports, recursively, and adds the imported modules and
/// models to its items. An imported file is named by its path as written,
/// from the importing file's name (`cases/ok/../lib/blocks.dtl` is
/// `cases/lib/blocks.dtl`). Each imported file is registered with
/// `diagnostics` (for rendering); a missing, unreadable or too large file,
/// an import cycle and an imported file's syntax errors are pushed there.
/// Returns the files read and the warnings about paths (an import leading
/// out of the project folder).
pub fn load(
    file: &mut File,
    name: &str,
    main_len: usize,
    base_dir: &Path,
    strict: bool,
    diagnostics: &mut Diagnostics,
) -> Loaded {
    let mut loader = Loader {
        next_base: main_len + 1,
        loaded: Vec::new(),
        modules: Vec::new(),
        found: Loaded::default(),
        strict,
    };
    let imports: Vec<Import> = imports_of(file);
    let name_dir = Path::new(name).parent().unwrap_or(Path::new(""));
    // The file itself, when it is one: importing it is a cycle.
    let main = base_dir
        .join(Path::new(name).file_name().unwrap_or_default())
        .canonicalize()
        .ok()
        .map(|p| (p, name.to_string()));
    for import in &imports {
        let from = Importer {
            dir: base_dir,
            name_dir,
        };
        let mut chain: Vec<(PathBuf, String)> = main.iter().cloned().collect();
        loader.import(import, from, import.span, &mut chain, diagnostics);
    }
    file.items.append(&mut loader.modules);
    loader.found
}

/// The warnings a check of the importing file gives: the checker's and the
/// imports' own (`imported`), less those about imported files, which are
/// their own `dtl check`'s to give.
pub fn own_lints(lints: Vec<Lint>, imported: Vec<Lint>, diagnostics: &Diagnostics) -> Vec<Lint> {
    lints
        .into_iter()
        .chain(imported)
        .filter(|lint| !diagnostics.is_imported(lint.span()))
        .collect()
}

fn imports_of(file: &File) -> Vec<Import> {
    file.items
        .iter()
        .filter_map(|item| match item {
            Item::Import(import) => Some(import.clone()),
            _ => None,
        })
        .collect()
}

/// Where an import is written: the folder its path starts from, and the
/// folder of the importing file's name (for naming the imported one).
#[derive(Clone, Copy)]
struct Importer<'a> {
    dir: &'a Path,
    name_dir: &'a Path,
}

struct Loader {
    /// Where the next file's offsets begin.
    next_base: usize,
    /// The files read so far (canonical paths): a file imported twice (by
    /// two files) lends its modules once.
    loaded: Vec<PathBuf>,
    modules: Vec<Item>,
    found: Loaded,
    strict: bool,
}

impl Loader {
    /// `import`, written in the file `from`; `at` is where the chain of
    /// imports that led here starts in the main file, `chain` the files
    /// being imported around it (for cycles).
    fn import(
        &mut self,
        import: &Import,
        from: Importer<'_>,
        at: Span,
        chain: &mut Vec<(PathBuf, String)>,
        diagnostics: &mut Diagnostics,
    ) {
        let mut errors = Vec::new();
        crate::check::paths::check(
            &import.path,
            from.dir,
            import.path_span,
            self.strict,
            &mut errors,
            &mut self.found.lints,
        );
        let path = from.dir.join(&import.path);
        let fail = |message: String, help: Option<String>| CheckError::Import {
            message,
            span: import.path_span,
            help,
        };
        for err in errors {
            diagnostics.push(err);
        }
        let canonical = match path.canonicalize() {
            Ok(p) => p,
            Err(e) => {
                diagnostics.push(fail(
                    format!(
                        "cannot import {}: {e}",
                        from.name_dir.join(&import.path).display()
                    ),
                    Some("the path is relative to the file that imports it".into()),
                ));
                return;
            }
        };
        let name_path = crate::check::paths::normalize(&from.name_dir.join(&import.path));
        let name = name_path.display().to_string();
        if chain.iter().any(|(p, _)| *p == canonical) || chain.len() >= MAX_DEPTH {
            let names: Vec<&str> = chain
                .iter()
                .map(|(_, n)| n.as_str())
                .chain([name.as_str()])
                .collect();
            diagnostics.push(fail(
                format!("import cycle: {}", names.join(" → ")),
                Some("a file cannot import itself, even through others".into()),
            ));
            return;
        }
        if self.loaded.contains(&canonical) {
            return;
        }
        self.loaded.push(canonical.clone());
        let text = match read(&canonical, &name) {
            Ok(text) => text,
            Err(reason) => {
                diagnostics.push(fail(format!("cannot import {reason}"), None));
                return;
            }
        };
        let base = self.next_base;
        self.next_base = base + text.len() + 1;
        diagnostics.add_file(&name, &text, base, at);
        self.found.files.push(LoadedFile {
            name: name.clone(),
            path: canonical.clone(),
            text: text.clone(),
            base,
        });
        // Spaces before the text put its offsets after the files before it.
        let padded = format!("{}{text}", " ".repeat(base));
        let (imported, syntax_errors) = crate::syntax::parse(&padded);
        if !syntax_errors.is_empty() {
            for err in syntax_errors {
                diagnostics.push(err);
            }
            return;
        }
        let here = canonical.parent().map_or(PathBuf::new(), Path::to_path_buf);
        let here_name = name_path.parent().map_or(PathBuf::new(), Path::to_path_buf);
        let inner_from = Importer {
            dir: &here,
            name_dir: &here_name,
        };
        chain.push((canonical, name));
        for item in imported.items {
            match item {
                Item::Import(inner) => self.import(&inner, inner_from, at, chain, diagnostics),
                Item::Module(_) => self.modules.push(item),
                Item::Data(_) | Item::Train(_) | Item::Parallel(_) | Item::Test(_) => {}
            }
        }
        chain.pop();
    }
}

/// A file's text, refused when it is over [`MAX_IMPORT_BYTES`] or not UTF-8.
fn read(path: &Path, name: &str) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{name}: {e}"))?
        .len();
    if size > MAX_IMPORT_BYTES {
        return Err(format!(
            "{name}: {size} bytes, more than an imported file of modules may hold ({MAX_IMPORT_BYTES})"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8 text"))
}
