//! Readers for the dataset formats, shared by the checker (which probes a
//! file's shape before launch) and the runtime (which loads it). Pure Rust:
//! no libtorch here.

use std::io::Read;
use std::path::Path;

/// A numeric table: one row per sample, features row-major, one integer
/// class label per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub features: Vec<f32>,
    pub labels: Vec<i64>,
    pub rows: usize,
    pub feature_count: usize,
}

impl Table {
    /// Number of classes: the largest label plus one.
    pub fn classes(&self) -> i64 {
        self.labels.iter().copied().max().map_or(0, |m| m + 1)
    }
}

/// Reads a file, transparently gunzipping names that end in `.gz`.
pub fn read_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .map_err(|e| format!("not a valid gzip text file: {e}"))?;
        Ok(text)
    } else {
        String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
    }
}

/// Parses a numeric CSV. `label_column` counts from 0, or from the end when
/// negative (-1 is the last column). Errors name the line.
pub fn parse_csv(text: &str, label_column: i64, header: bool) -> Result<Table, String> {
    let mut table = Table {
        features: Vec::new(),
        labels: Vec::new(),
        rows: 0,
        feature_count: 0,
    };
    let mut columns = 0usize;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if (header && index == 0) || line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if columns == 0 {
            columns = cells.len();
            if columns < 2 {
                return Err(format!(
                    "line {line_no}: need at least 2 columns (features and a label)"
                ));
            }
            table.feature_count = columns - 1;
        } else if cells.len() != columns {
            return Err(format!(
                "line {line_no}: {} columns, but line 1 of the data has {columns}",
                cells.len()
            ));
        }
        let label_at = resolve_column(label_column, columns).ok_or_else(|| {
            format!("label column {label_column} does not exist in {columns} columns")
        })?;
        for (col, cell) in cells.iter().enumerate() {
            let value: f64 = cell.parse().map_err(|_| {
                format!(
                    "line {line_no}, column {}: `{cell}` is not a number",
                    col + 1
                )
            })?;
            if col == label_at {
                if value < 0.0 || value.fract() != 0.0 {
                    return Err(format!(
                        "line {line_no}, column {}: label `{cell}` is not a class index (0, 1, 2, …)",
                        col + 1
                    ));
                }
                table.labels.push(value as i64);
            } else {
                table.features.push(value as f32);
            }
        }
        table.rows += 1;
    }
    if table.rows == 0 {
        return Err("no data rows".into());
    }
    Ok(table)
}

fn resolve_column(column: i64, columns: usize) -> Option<usize> {
    let index = if column < 0 {
        columns as i64 + column
    } else {
        column
    };
    (0..columns as i64)
        .contains(&index)
        .then_some(index as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_label_from_the_end() {
        let t = parse_csv("1,2,0\n3,4,2\n", -1, false).unwrap();
        assert_eq!(t.features, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(t.labels, vec![0, 2]);
        assert_eq!(t.classes(), 3);
    }

    #[test]
    fn names_the_bad_line() {
        let err = parse_csv("1,2,0\n3,x,1\n", -1, false).unwrap_err();
        assert!(err.starts_with("line 2, column 2"), "{err}");
        let err = parse_csv("1,2,0\n3,1\n", -1, false).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
