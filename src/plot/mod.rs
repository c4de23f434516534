//! `dtl plot`: a run's `metrics.jsonl` drawn as a loss (and accuracy) chart,
//! written as SVG or PNG.
//!
//! Reads only the metrics file and writes only the chart; it knows nothing of
//! the compiler or the runtime, so it builds without libtorch.

mod axis;
mod chart;
mod compare;
pub mod metrics;
mod svg;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::Diagnostic;
use resvg::usvg::fontdb::Database;
use resvg::{tiny_skia, usvg};

pub use chart::{render_svg, ChartOptions};
pub use metrics::read_metrics;

/// PNGs are drawn at twice the SVG's size so they stay sharp on dense screens.
const PNG_SCALE: f32 = 2.0;

/// Why a chart could not be made; each names the file involved where there is one.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum PlotError {
    #[error("cannot read {}", path.display())]
    #[diagnostic(code(dtl::plot::read))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}: {reason}", path.display())]
    #[diagnostic(
        code(dtl::plot::malformed),
        help("each line of metrics.jsonl must be one JSON object with a `step`")
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("{} has no finite loss or accuracy values to plot", path.display())]
    #[diagnostic(code(dtl::plot::empty))]
    Empty { path: PathBuf },

    #[error("cannot tell the chart format from {}: name it .svg or .png", path.display())]
    #[diagnostic(code(dtl::plot::format))]
    Format { path: PathBuf },

    #[error(
        "no font found to draw the chart's text: install one, e.g. Debian's fonts-dejavu-core"
    )]
    #[diagnostic(
        code(dtl::plot::no_font),
        help("or write the chart as .svg, which a browser draws with its own fonts")
    )]
    NoFont,

    #[error("cannot render the chart: {reason}")]
    #[diagnostic(code(dtl::plot::render))]
    Render { reason: String },

    #[error("cannot write {}", path.display())]
    #[diagnostic(code(dtl::plot::write))]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The output formats, chosen by the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

impl Format {
    fn of(path: &Path) -> Result<Format, PlotError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(PlotError::Format {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// Plots a run folder (or a `metrics.jsonl` directly) into `out`, as SVG or
/// PNG by its extension. The title is the run folder's name.
pub fn plot(input: &Path, out: &Path, log_y: bool) -> Result<(), PlotError> {
    let format = Format::of(out)?;
    let file = if input.is_dir() {
        input.join("metrics.jsonl")
    } else {
        input.to_path_buf()
    };
    let metrics = read_metrics(&file)?;
    if metrics.is_empty() {
        return Err(PlotError::Empty { path: file });
    }
    let options = ChartOptions {
        title: run_name(&file),
        log_y,
    };
    let svg = render_svg(&metrics, &options);
    let bytes = match format {
        Format::Svg => svg.into_bytes(),
        Format::Png => render_png(&svg)?,
    };
    std::fs::write(out, bytes).map_err(|source| PlotError::Write {
        path: out.to_path_buf(),
        source,
    })
}

/// Overlays several runs (folders or `metrics.jsonl` files) into `out`. The
/// legend names each by its folder, with the folder above for all when
/// two would read the same (`digits_mlp/1`, `digits_mlp/2`).
pub fn plot_many(inputs: &[PathBuf], out: &Path, log_y: bool) -> Result<(), PlotError> {
    let format = Format::of(out)?;
    let files: Vec<PathBuf> = inputs
        .iter()
        .map(|i| {
            if i.is_dir() {
                i.join("metrics.jsonl")
            } else {
                i.clone()
            }
        })
        .collect();
    let short: Vec<String> = files.iter().map(|f| run_name(f)).collect();
    let clash = (1..short.len()).any(|i| short[..i].contains(&short[i]));
    let mut runs = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let metrics = read_metrics(file)?;
        if metrics.is_empty() {
            return Err(PlotError::Empty { path: file.clone() });
        }
        let name = if clash {
            long_name(file)
        } else {
            short[i].clone()
        };
        runs.push(compare::Run { name, metrics });
    }
    let options = ChartOptions {
        title: format!("{} runs", runs.len()),
        log_y,
    };
    let svg = compare::render_compare(&runs, &options);
    let bytes = match format {
        Format::Svg => svg.into_bytes(),
        Format::Png => render_png(&svg)?,
    };
    std::fs::write(out, bytes).map_err(|source| PlotError::Write {
        path: out.to_path_buf(),
        source,
    })
}

/// The run's folder and the one above it: `digits_mlp/3`.
fn long_name(metrics_file: &Path) -> String {
    let folder = metrics_file.parent().filter(|p| !p.as_os_str().is_empty());
    let folder = folder.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let folder = std::fs::canonicalize(&folder).unwrap_or(folder);
    let names: Vec<String> = folder
        .iter()
        .rev()
        .take(2)
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    names.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// The name of the folder holding the metrics file, e.g. `digits_mlp`.
fn run_name(metrics_file: &Path) -> String {
    let folder = metrics_file.parent().filter(|p| !p.as_os_str().is_empty());
    let folder = folder.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let folder = std::fs::canonicalize(&folder).unwrap_or(folder);
    match folder.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => metrics_file.display().to_string(),
    }
}

/// Rasterises chart SVG into PNG bytes using the system's fonts.
pub fn render_png(svg: &str) -> Result<Vec<u8>, PlotError> {
    let options = usvg::Options {
        fontdb: Arc::new(system_fonts()?),
        ..Default::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| PlotError::Render {
        reason: e.to_string(),
    })?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(PNG_SCALE)
        .ok_or_else(|| PlotError::Render {
            reason: "the chart has no size".to_string(),
        })?;
    let mut pixmap =
        tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| PlotError::Render {
            reason: format!("{}×{} px is too large", size.width(), size.height()),
        })?;
    let transform = tiny_skia::Transform::from_scale(PNG_SCALE, PNG_SCALE);
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| PlotError::Render {
        reason: e.to_string(),
    })
}

/// The system's fonts, with the generic `sans-serif` pointed at one that
/// exists: usvg would otherwise look for Arial and drop text it cannot place.
fn system_fonts() -> Result<Database, PlotError> {
    let mut db = Database::new();
    db.load_system_fonts();
    let family = sans_family(&db)?;
    db.set_sans_serif_family(family);
    Ok(db)
}

/// A well-known sans-serif family if there is one, else any font at all.
fn sans_family(db: &Database) -> Result<String, PlotError> {
    let preferred = [
        "DejaVu Sans",
        "Liberation Sans",
        "Noto Sans",
        "Arial",
        "Helvetica",
    ];
    let has = |name: &str| {
        db.faces()
            .any(|f| f.families.iter().any(|(n, _)| n == name))
    };
    if let Some(name) = preferred.iter().find(|name| has(name)) {
        return Ok(name.to_string());
    }
    let any = db.faces().find_map(|f| f.families.first());
    any.map(|(name, _)| name.clone()).ok_or(PlotError::NoFont)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_folder(name: &str, lines: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dtl-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
        dir
    }

    const LINES: &str = concat!(
        r#"{"step":1,"loss":2.3,"lr":0.001,"grad_norm":1.7}"#,
        "\n",
        r#"{"step":2,"loss":1.1,"lr":0.001,"grad_norm":1.2}"#,
        "\n",
        r#"{"step":2,"eval_loss":1.2,"eval_accuracy":0.6,"eval_rows":10}"#,
        "\n",
    );

    #[test]
    fn malformed_line_error_names_file_and_line() {
        let dir = run_folder("malformed", &format!("{LINES}{{\"step\":3,\"loss\":\n"));
        let err = plot(&dir, &dir.join("loss.svg"), false).unwrap_err();
        let file = dir.join("metrics.jsonl");
        assert!(err
            .to_string()
            .starts_with(&format!("{}:4: not a JSON object", file.display())));
    }

    #[test]
    fn unknown_extension_lists_both_formats() {
        let dir = run_folder("format", LINES);
        let err = plot(&dir, &dir.join("loss.jpg"), false).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("loss.jpg"), "{message}");
        assert!(
            message.contains(".svg") && message.contains(".png"),
            "{message}"
        );
    }

    #[test]
    fn missing_file_and_empty_file_name_the_path() {
        let dir = run_folder("missing", "");
        let err = plot(&dir.join("nope"), &dir.join("a.svg"), false).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = plot(&dir, &dir.join("a.svg"), false).unwrap_err();
        assert!(matches!(err, PlotError::Empty { .. }), "{err}");
    }

    #[test]
    fn svg_file_is_titled_with_the_run_folder() {
        let dir = run_folder("titled", LINES);
        plot(&dir.join("metrics.jsonl"), &dir.join("loss.SVG"), true).unwrap();
        let svg = std::fs::read_to_string(dir.join("loss.SVG")).unwrap();
        assert!(svg.contains(&format!(
            ">{}</text>",
            dir.file_name().unwrap().to_str().unwrap()
        )));
    }

    /// A machine without a font fails these tests unless
    /// `DTL_SKIP_FONT_TESTS=1` says to skip them: scripts/setup.sh installs
    /// fonts-dejavu-core.
    fn skip_without_font() -> bool {
        if system_fonts().is_ok() {
            return false;
        }
        assert!(
            std::env::var("DTL_SKIP_FONT_TESTS").is_ok_and(|v| v == "1"),
            "no system font: scripts/setup.sh installs fonts-dejavu-core (or set DTL_SKIP_FONT_TESTS=1)"
        );
        eprintln!("skipped: no system font, DTL_SKIP_FONT_TESTS=1");
        true
    }

    #[test]
    fn no_font_asks_for_one() {
        let err = sans_family(&Database::new()).unwrap_err();
        assert!(err.to_string().contains("fonts-dejavu-core"), "{err}");
    }

    #[test]
    fn png_text_is_drawn() {
        if skip_without_font() {
            return;
        }
        let svg = concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="60" height="30">"#,
            r#"<rect width="100%" height="100%" fill="white"/>"#,
            r#"<text x="4" y="24" font-family="sans-serif" font-size="24">Ab</text></svg>"#
        );
        let pixmap = tiny_skia::Pixmap::decode_png(&render_png(svg).unwrap()).unwrap();
        let inked = pixmap.pixels().iter().filter(|p| p.red() < 128).count();
        assert!(inked > 50, "only {inked} dark pixels: the text was dropped");
    }

    #[test]
    fn png_renders_when_a_font_exists() {
        if skip_without_font() {
            return;
        }
        let dir = run_folder("png", LINES);
        plot(&dir, &dir.join("loss.png"), false).unwrap();
        let png = std::fs::read(dir.join("loss.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR holds width and height, big-endian, at bytes 16..24.
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), (1600, 2 * (64 + 300 + 44 + 160 + 52)));
    }
}
