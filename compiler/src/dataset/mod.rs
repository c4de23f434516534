//! Readers for the dataset formats, shared by the checker (which reads a
//! file's shape before launch) and the runtime (which loads it). Pure Rust:
//! no libtorch here.

mod columns;
mod csv;
mod hf;
mod idx;
pub mod images;
mod jsonl;
mod npy;
mod parquet;
pub mod read;
mod rows;
mod safetensors;
mod synthetic;
mod text;
mod tokens;

use std::path::Path;

pub use csv::parse_csv;
pub use read::Limits;
pub use rows::{feature_rows, FeatureRows};
pub use text::tokens as text_tokens;
pub use tokens::{TokenFile, TokenSplit};

use crate::plan::{DataSource, TargetKind, TokenDtype};

/// A table of samples: features row-major, and one target per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub features: Vec<f32>,
    pub targets: Targets,
    pub rows: usize,
    pub feature_count: usize,
    /// The natural layout of one sample (`[28, 28]` for IDX images).
    pub sample_shape: Vec<i64>,
    /// Rows left out under `on_bad_row = skip`.
    pub skipped: Skipped,
}

/// The rows a source left out under `on_bad_row = skip`: how many, and
/// why the first one was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    pub rows: u64,
    pub first: Option<String>,
}

impl Skipped {
    /// One row's outcome: `Ok(true)` kept; a bad row is counted and
    /// `Ok(false)` under `skip`, the error otherwise.
    pub fn row(&mut self, outcome: Result<(), String>, skip: bool) -> Result<bool, String> {
        match outcome {
            Ok(()) => Ok(true),
            Err(reason) if skip => {
                self.rows += 1;
                self.first.get_or_insert(reason);
                Ok(false)
            }
            Err(reason) => Err(reason),
        }
    }

    /// In words: "3 bad rows left out (the first: line 5, …)".
    pub fn words(&self) -> String {
        let rows = if self.rows == 1 { "row" } else { "rows" };
        match &self.first {
            Some(first) => format!("{} bad {rows} left out (the first: {first})", self.rows),
            None => format!("{} bad {rows} left out", self.rows),
        }
    }
}

/// The targets of a table, `shape` per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class indices below `classes`.
    Classes {
        labels: Vec<i64>,
        shape: Vec<i64>,
        classes: i64,
    },
    /// Real values, for regression.
    Values { values: Vec<f32>, shape: Vec<i64> },
}

impl Targets {
    /// Reads raw target values as `kind`: class indices must be whole and
    /// non-negative; the class count is the largest label plus one.
    pub fn new(raw: Vec<f64>, shape: Vec<i64>, kind: TargetKind) -> Result<Targets, String> {
        match kind {
            TargetKind::Float => Ok(Targets::Values {
                values: raw.iter().map(|v| *v as f32).collect(),
                shape,
            }),
            TargetKind::Class => {
                let labels = integral(&raw)?;
                let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
                Ok(Targets::Classes {
                    labels,
                    shape,
                    classes,
                })
            }
        }
    }

    pub fn shape(&self) -> &[i64] {
        match self {
            Targets::Classes { shape, .. } | Targets::Values { shape, .. } => shape,
        }
    }

    /// Number of classes; 0 for real values.
    pub fn classes(&self) -> i64 {
        match self {
            Targets::Classes { classes, .. } => *classes,
            Targets::Values { .. } => 0,
        }
    }

    pub fn kind(&self) -> TargetKind {
        match self {
            Targets::Classes { .. } => TargetKind::Class,
            Targets::Values { .. } => TargetKind::Float,
        }
    }

    fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values { values, .. } => values.len(),
        }
    }
}

impl Table {
    /// Number of classes: the largest label plus one (0 for real values).
    pub fn classes(&self) -> i64 {
        self.targets.classes()
    }

    fn new(features: Vec<f32>, targets: Targets, sample_shape: Vec<i64>) -> Result<Table, String> {
        let per_row = targets.shape().iter().product::<i64>().max(1) as usize;
        let rows = targets.len() / per_row;
        let feature_count = sample_shape.iter().product::<i64>() as usize;
        if rows == 0 {
            return Err("no samples".into());
        }
        if features.len() != rows * feature_count {
            return Err(format!(
                "{} targets but {} feature values ({} per sample expected)",
                rows,
                features.len(),
                feature_count
            ));
        }
        // A NaN or infinite input trains to NaN far from where it came in:
        // say where it is.
        if let Some(at) = features.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "sample {} (counting from 0), value {}: {} is not a finite number",
                at / feature_count.max(1),
                at % feature_count.max(1),
                features[at]
            ));
        }
        if let Targets::Values { values, .. } = &targets {
            if let Some(at) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "sample {} (counting from 0): target {} is not a finite number",
                    at / per_row,
                    values[at]
                ));
            }
        }
        Ok(Table {
            features,
            targets,
            rows,
            feature_count,
            sample_shape,
            skipped: Skipped::default(),
        })
    }
}

/// Why a data source could not be read: the file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Loads any data source into a table, its targets read as `kind`, within
/// `limits` (regular files only; streamed or memory-mapped). Errors say
/// what is wrong with which file, where, and what kind of value, not the
/// value itself unless the limits allow it.
pub fn load(source: &DataSource, kind: TargetKind, limits: &Limits) -> Result<Table, DataError> {
    let at = |path: &str| {
        let path = path.to_string();
        move |message: String| DataError { path, message }
    };
    let mut meter = limits.meter();
    match source {
        DataSource::Csv {
            path,
            label_column,
            header,
        } => {
            let show = meter.show_values();
            let skip = meter.skip_bad_rows();
            let input = read::stream(Path::new(path), &mut meter).map_err(at(path))?;
            parse_csv(input, *label_column, *header, kind, show, skip).map_err(at(path))
        }
        DataSource::Jsonl {
            path,
            features,
            label,
        } => {
            let skip = meter.skip_bad_rows();
            let input = read::stream(Path::new(path), &mut meter).map_err(at(path))?;
            jsonl::parse_jsonl(input, features, label, kind, skip).map_err(at(path))
        }
        DataSource::Parquet {
            path,
            features,
            label,
        } => parquet::read(Path::new(path), features, label, kind, &mut meter).map_err(at(path)),
        DataSource::HfDataset {
            path,
            split,
            features,
            label,
        } => hf::read(Path::new(path), split, features, label, kind, &mut meter).map_err(at(path)),
        DataSource::Npy { features, labels } => {
            let x = npy::read(Path::new(features), &mut meter).map_err(at(features))?;
            let y = npy::read(Path::new(labels), &mut meter).map_err(at(labels))?;
            pair(features, x.shape, x.values, labels, y.shape, y.values, kind).map_err(at(features))
        }
        DataSource::Safetensors {
            path,
            features,
            labels,
        } => {
            let file = safetensors::read(Path::new(path), &[features, labels], &mut meter)
                .map_err(at(path))?;
            let [x, y] = <[_; 2]>::try_from(file).expect("two tensors asked for");
            let (xs, ys) = (format!("{path}[{features}]"), format!("{path}[{labels}]"));
            pair(&xs, x.shape, x.values, &ys, y.shape, y.values, kind).map_err(at(path))
        }
        DataSource::Idx { images, labels } => {
            let x = idx::read(Path::new(images), &mut meter).map_err(at(images))?;
            let y = idx::read(Path::new(labels), &mut meter).map_err(at(labels))?;
            let y_values = y.values.iter().map(|v| *v as f64).collect();
            let x_values = x.values.iter().map(|v| *v as f64).collect();
            pair(images, x.shape, x_values, labels, y.shape, y_values, kind).map_err(at(images))
        }
        DataSource::Synthetic {
            rows,
            features,
            classes,
            seed,
        } => Ok(synthetic::blobs(
            *rows as usize,
            *features as usize,
            *classes as usize,
            *seed,
        )),
        DataSource::Text {
            path,
            encoding,
            context,
        } => {
            let bytes = read::bytes(Path::new(path), &mut meter).map_err(at(path))?;
            text::windows(&bytes, *encoding, *context as usize).map_err(at(path))
        }
        DataSource::Tokens { path, .. } => Err(DataError {
            path: path.clone(),
            message: "a token file is read memory-mapped, window by window, not as a table".into(),
        }),
        DataSource::Images { path, .. } => Err(DataError {
            path: path.clone(),
            message: "an image folder is decoded batch by batch, not read as a table".into(),
        }),
    }
}

/// What the checker learns from a token file before launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenProbe {
    pub tokens: u64,
    /// The largest id, and the position of its first occurrence.
    pub max: u32,
    pub max_at: u64,
}

/// Opens a token file and reads it once for its largest id, within
/// `limits`.
pub fn probe_tokens(
    path: &str,
    dtype: TokenDtype,
    limits: &Limits,
) -> Result<TokenProbe, DataError> {
    let at = |message: String| DataError {
        path: path.to_string(),
        message,
    };
    let file = TokenFile::open(Path::new(path), dtype).map_err(at)?;
    let mut meter = limits.meter();
    let (max, max_at) = file.max(&mut meter).map_err(at)?;
    Ok(TokenProbe {
        tokens: file.len(),
        max,
        max_at,
    })
}

/// Features `[N, ...]` from one array and targets `[N, ...]` from another.
fn pair(
    x_name: &str,
    x_shape: Vec<i64>,
    x_values: Vec<f64>,
    y_name: &str,
    y_shape: Vec<i64>,
    y_values: Vec<f64>,
    kind: TargetKind,
) -> Result<Table, String> {
    if y_shape.is_empty() || x_shape.first() != y_shape.first() {
        return Err(format!(
            "{x_name} has shape {x_shape:?} and {y_name} has {y_shape:?}: the first dimension (samples) must agree"
        ));
    }
    // One class label per row has no shape of its own; one real value per
    // row is a vector of one.
    let target_shape = match (kind, &y_shape[1..]) {
        (TargetKind::Float, []) => vec![1],
        (_, rest) => rest.to_vec(),
    };
    let targets =
        Targets::new(y_values, target_shape, kind).map_err(|e| format!("{y_name}: {e}"))?;
    Table::new(
        x_values.iter().map(|v| *v as f32).collect(),
        targets,
        x_shape[1..].to_vec(),
    )
    .map_err(|e| format!("{x_name}: {e}"))
}

/// Label values must be whole numbers.
fn integral(values: &[f64]) -> Result<Vec<i64>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if v.fract() == 0.0 && *v >= 0.0 && *v < 2f64.powi(53) {
                Ok(*v as i64)
            } else {
                Err(format!(
                    "label {i} (counting from 0) is {v}, not a class index (0, 1, 2, …)"
                ))
            }
        })
        .collect()
}
