//! Readers for the dataset formats, shared by the checker (which reads a
//! file's shape before launch) and the runtime (which loads it). Pure Rust:
//! no libtorch here.

mod csv;
mod idx;
mod npy;
mod synthetic;

use std::io::Read;
use std::path::Path;

pub use csv::parse_csv;

use crate::plan::DataSource;

/// A labelled table: one sample per row, features row-major, one integer
/// class label per row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub features: Vec<f32>,
    pub labels: Vec<i64>,
    pub rows: usize,
    pub feature_count: usize,
    /// The natural layout of one sample (`[28, 28]` for IDX images).
    pub sample_shape: Vec<i64>,
}

impl Table {
    /// Number of classes: the largest label plus one.
    pub fn classes(&self) -> i64 {
        self.labels.iter().copied().max().map_or(0, |m| m + 1)
    }

    fn new(features: Vec<f32>, labels: Vec<i64>, sample_shape: Vec<i64>) -> Result<Table, String> {
        let rows = labels.len();
        let feature_count = sample_shape.iter().product::<i64>() as usize;
        if rows == 0 {
            return Err("no samples".into());
        }
        if features.len() != rows * feature_count {
            return Err(format!(
                "{} labels but {} feature values ({} per sample expected)",
                rows,
                features.len(),
                feature_count
            ));
        }
        if let Some(bad) = labels.iter().find(|l| **l < 0) {
            return Err(format!("label {bad} is not a class index (0, 1, 2, …)"));
        }
        Ok(Table {
            features,
            labels,
            rows,
            feature_count,
            sample_shape,
        })
    }
}

/// Loads any data source into a table. Errors say what is wrong with which
/// file.
pub fn load(source: &DataSource) -> Result<Table, String> {
    match source {
        DataSource::Csv {
            path,
            label_column,
            header,
        } => {
            let text = read_text(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
            parse_csv(&text, *label_column, *header).map_err(|e| format!("{path}: {e}"))
        }
        DataSource::Npy { features, labels } => {
            let x = npy::read(Path::new(features)).map_err(|e| format!("{features}: {e}"))?;
            let y = npy::read(Path::new(labels)).map_err(|e| format!("{labels}: {e}"))?;
            if y.shape.len() != 1 {
                return Err(format!(
                    "{labels}: labels must be one-dimensional, got shape {:?}",
                    y.shape
                ));
            }
            if x.shape.first() != y.shape.first() {
                return Err(format!(
                    "{features} has {:?} samples but {labels} has {}",
                    x.shape.first(),
                    y.shape[0]
                ));
            }
            let labels_i = integral(&y.values).map_err(|e| format!("{labels}: {e}"))?;
            Table::new(
                x.values.iter().map(|v| *v as f32).collect(),
                labels_i,
                x.shape[1..].to_vec(),
            )
            .map_err(|e| format!("{features}: {e}"))
        }
        DataSource::Idx { images, labels } => {
            let x = idx::read(Path::new(images)).map_err(|e| format!("{images}: {e}"))?;
            let y = idx::read(Path::new(labels)).map_err(|e| format!("{labels}: {e}"))?;
            if y.shape.len() != 1 || x.shape.first() != y.shape.first() {
                return Err(format!(
                    "{images} ({:?}) and {labels} ({:?}) do not pair up",
                    x.shape, y.shape
                ));
            }
            Table::new(
                x.values,
                y.values.iter().map(|v| *v as i64).collect(),
                x.shape[1..].to_vec(),
            )
            .map_err(|e| format!("{images}: {e}"))
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
    }
}

/// Label values must be whole numbers.
fn integral(values: &[f64]) -> Result<Vec<i64>, String> {
    values
        .iter()
        .map(|v| {
            if v.fract() == 0.0 && *v >= 0.0 {
                Ok(*v as i64)
            } else {
                Err(format!("label {v} is not a class index (0, 1, 2, …)"))
            }
        })
        .collect()
}

/// Reads a file's bytes, transparently gunzipping names that end in `.gz`.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("not a valid gzip file: {e}"))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Reads a text file, transparently gunzipping names that end in `.gz`.
pub fn read_text(path: &Path) -> Result<String, String> {
    String::from_utf8(read_bytes(path)?).map_err(|_| "not UTF-8 text".to_string())
}
