//! Feature rows without targets: what `dtl predict` reads (`--input`), as
//! numeric CSV (a first line that is not numbers is a header), `.npy`
//! (`[N, ...]`), or JSON lines (each line an array of numbers, nested as
//! the sample's shape, or an object holding one under `x`, `features` or
//! `input`).

use std::io::BufRead;
use std::path::Path;

use super::{jsonl, npy, read, DataError};

/// Rows of features, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRows {
    pub values: Vec<f32>,
    /// The shape of one row as the file gives it (`[64]`, `[8, 8]`).
    pub row_shape: Vec<i64>,
    pub rows: usize,
}

/// The keys of a JSON line's features.
const KEYS: [&str; 3] = ["x", "features", "input"];

/// Reads `path` by its extension (`.csv`, `.csv.gz`, `.npy`, `.jsonl`).
pub fn feature_rows(path: &Path, limits: &read::Limits) -> Result<FeatureRows, DataError> {
    let at = |message: String| DataError {
        path: path.display().to_string(),
        message,
    };
    let name = path.to_string_lossy().to_ascii_lowercase();
    let mut meter = limits.meter();
    if name.ends_with(".npy") {
        let array = npy::read(path, &mut meter).map_err(at)?;
        let rows = *array
            .shape
            .first()
            .ok_or_else(|| at("a 0-d array holds no rows".into()))?;
        return Ok(FeatureRows {
            values: array.values.iter().map(|v| *v as f32).collect(),
            row_shape: array.shape[1..].to_vec(),
            rows: rows as usize,
        });
    }
    let show = meter.show_values();
    let input = read::stream(path, &mut meter).map_err(at)?;
    if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
        return json_lines(input).map_err(at);
    }
    if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        let (values, columns) = super::csv::parse_feature_rows(input, show).map_err(at)?;
        let rows = values.len() / columns.max(1);
        return Ok(FeatureRows {
            values,
            row_shape: vec![columns as i64],
            rows,
        });
    }
    Err(at(
        "rows are read from .csv, .csv.gz, .npy or .jsonl files".into()
    ))
}

fn json_lines(input: impl BufRead) -> Result<FeatureRows, String> {
    let mut values = Vec::new();
    let mut row_shape: Option<Vec<i64>> = None;
    let mut rows = 0;
    jsonl::each_line(input, |line_no, line| {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {line_no}: not JSON ({e})"))?;
        let features = match &value {
            serde_json::Value::Array(_) => &value,
            serde_json::Value::Object(object) => {
                KEYS.iter().find_map(|k| object.get(*k)).ok_or_else(|| {
                    format!("line {line_no}: an object without `x`, `features` or `input`")
                })?
            }
            other => {
                return Err(format!(
                    "line {line_no}: {}, neither an array nor an object",
                    jsonl::kind_words(other)
                ))
            }
        };
        let mut shape = Vec::new();
        jsonl::flatten(features, 0, &mut shape, &mut values)
            .map_err(|e| format!("line {line_no}: {e}"))?;
        match &row_shape {
            None => row_shape = Some(shape),
            Some(first) if *first != shape => {
                return Err(format!(
                    "line {line_no}: features of shape {shape:?}, the first row's are {first:?}"
                ))
            }
            Some(_) => {}
        }
        rows += 1;
        Ok(())
    })?;
    let row_shape = row_shape.ok_or("no data rows")?;
    Ok(FeatureRows {
        values,
        row_shape,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_of_arrays_and_objects() {
        let rows = json_lines("[1, 2]\n{\"x\": [3, 4]}\n\n".as_bytes()).unwrap();
        assert_eq!(rows.values, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!((rows.row_shape, rows.rows), (vec![2], 2));
        let nested = json_lines("[[1, 2], [3, 4]]\n".as_bytes()).unwrap();
        assert_eq!(nested.row_shape, vec![2, 2]);
        let err = json_lines("[1, 2]\n[3]\n".as_bytes()).unwrap_err();
        assert_eq!(
            err,
            "line 2: features of shape [1], the first row's are [2]"
        );
        let err = json_lines("{\"y\": 1}\n".as_bytes()).unwrap_err();
        assert_eq!(err, "line 1: an object without `x`, `features` or `input`");
        assert!(json_lines("[[1, 2], [3]]\n".as_bytes())
            .unwrap_err()
            .contains("ragged"));
    }
}
