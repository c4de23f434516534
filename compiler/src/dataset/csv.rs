//! Numeric CSV: one row per sample, one column the target (a class label,
//! or a real value for regression).

use std::io::{BufRead, Read};

use super::{Skipped, Table, Targets};
use crate::plan::TargetKind;

/// The longest line a CSV may have: 8 MiB (a million narrow columns).
pub const MAX_LINE: usize = 8 << 20;

/// Parses a numeric CSV, streamed line by line. `label_column` counts from
/// 0, or from the end when negative (-1 is the last column). Errors name
/// the line and column, and quote the cell only with `show_values`.
pub fn parse_csv(
    input: impl BufRead,
    label_column: i64,
    header: bool,
    kind: TargetKind,
    show_values: bool,
    skip: bool,
) -> Result<Table, String> {
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    let mut label_at = None;
    let mut skipped = Skipped::default();
    let rows = Rows {
        header,
        show_values,
        skip,
    };
    let columns = rows.each(input, &mut skipped, |line_no, cells, values| {
        if values.len() < 2 {
            return Err(format!(
                "line {line_no}: need at least 2 columns (features and a label)"
            ));
        }
        let at = match label_at {
            Some(at) => at,
            None => {
                *label_at.insert(resolve_column(label_column, values.len()).ok_or_else(|| {
                    format!(
                        "label column {label_column} does not exist in {} columns",
                        values.len()
                    )
                })?)
            }
        };
        let label = values[at];
        if kind == TargetKind::Class && !(label >= 0.0 && label.fract() == 0.0) {
            return Err(format!(
                "line {line_no}, column {}: the label is {}, not a class index (0, 1, 2, …)",
                at + 1,
                super::read::value_words(cells[at], show_values)
            ));
        }
        labels.push(label);
        let row = values.iter().enumerate().filter(|(col, _)| *col != at);
        features.extend(row.map(|(_, &v)| v as f32));
        Ok(())
    })?;
    if labels.is_empty() {
        return Err(match skipped.rows {
            0 => "no data rows".into(),
            _ => format!("no data rows: {}", skipped.words()),
        });
    }
    let shape = match kind {
        TargetKind::Class => vec![],
        TargetKind::Float => vec![1],
    };
    let mut table = Table::new(
        features,
        Targets::new(labels, shape, kind)?,
        vec![columns as i64 - 1],
    )?;
    table.skipped = skipped;
    Ok(table)
}

/// Rows of features only (the input of `dtl predict`): every column a
/// feature; a first line that is not all numbers is a header. The values,
/// row after row, and the number of columns.
pub fn parse_feature_rows(
    input: impl BufRead,
    show_values: bool,
) -> Result<(Vec<f32>, usize), String> {
    let mut features = Vec::new();
    let header = {
        let mut input = input;
        let mut first = Vec::new();
        (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut first)
            .map_err(|e| format!("line 1: {}", super::read::read_error(&e)))?;
        let text = String::from_utf8_lossy(&first);
        let header = text
            .trim_end_matches(['\n', '\r'])
            .split(',')
            .any(|c| !c.trim().is_empty() && c.trim().parse::<f64>().is_err());
        (header, first, input)
    };
    let (header, first, rest) = header;
    let input = std::io::BufReader::new(first.as_slice().chain(rest));
    let rows = Rows {
        header,
        show_values,
        skip: false,
    };
    let columns = rows.each(input, &mut Skipped::default(), |_, _, values| {
        features.extend(values.iter().map(|v| *v as f32));
        Ok(())
    })?;
    if features.is_empty() {
        return Err("no data rows".into());
    }
    Ok((features, columns))
}

/// How the lines of a CSV are read.
struct Rows {
    /// The first line is a header.
    header: bool,
    show_values: bool,
    /// `on_bad_row = skip`: a line that cannot be read (a cell that is not
    /// a number, a count of columns unlike the first line's, what `row`
    /// refuses) is counted in `skipped` and left out.
    skip: bool,
}

impl Rows {
    /// Calls `row` with each data line's number, cells and values: every cell
    /// a finite number, every line as many cells as the first. The number of
    /// columns.
    fn each(
        &self,
        mut input: impl BufRead,
        skipped: &mut Skipped,
        mut row: impl FnMut(usize, &[&str], &[f64]) -> Result<(), String>,
    ) -> Result<usize, String> {
        let mut columns = 0usize;
        let mut line = Vec::new();
        let mut values = Vec::new();
        for index in 0.. {
            let line_no = index + 1;
            line.clear();
            let n = (&mut input)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("line {line_no}: {}", super::read::read_error(&e)))?;
            if n == 0 {
                break;
            }
            if n > MAX_LINE {
                return Err(format!(
                    "line {line_no} is longer than {}: not a CSV of numbers",
                    super::read::size_words(MAX_LINE as u64)
                ));
            }
            if self.header && index == 0 {
                continue;
            }
            let outcome = self.line(line_no, &line, &mut columns, &mut values, &mut row);
            skipped.row(outcome, self.skip)?;
        }
        Ok(columns)
    }

    /// One line: its cells as numbers, handed to `row` (blank lines are
    /// passed over). The first line read sets the count of columns.
    fn line(
        &self,
        line_no: usize,
        line: &[u8],
        columns: &mut usize,
        values: &mut Vec<f64>,
        row: &mut impl FnMut(usize, &[&str], &[f64]) -> Result<(), String>,
    ) -> Result<(), String> {
        let text = std::str::from_utf8(line)
            .map_err(|e| format!("line {line_no}: not UTF-8 text (byte {})", e.valid_up_to()))?;
        if text.trim().is_empty() {
            return Ok(());
        }
        let cells: Vec<&str> = text
            .trim_end_matches(['\n', '\r'])
            .split(',')
            .map(str::trim)
            .collect();
        if *columns != 0 && cells.len() != *columns {
            return Err(format!(
                "line {line_no}: {} columns, but line 1 of the data has {columns}",
                cells.len()
            ));
        }
        values.clear();
        for (col, cell) in cells.iter().enumerate() {
            let what = || super::read::value_words(cell, self.show_values);
            let value: f64 = cell.parse().map_err(|_| {
                format!(
                    "line {line_no}, column {}: {} is not a number",
                    col + 1,
                    what()
                )
            })?;
            if !value.is_finite() {
                return Err(format!(
                    "line {line_no}, column {}: {} is not a finite number",
                    col + 1,
                    what()
                ));
            }
            values.push(value);
        }
        row(line_no, &cells, values)?;
        *columns = cells.len();
        Ok(())
    }
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
        let t = parse_csv(
            "1,2,0\n3,4,2\n".as_bytes(),
            -1,
            false,
            TargetKind::Class,
            true,
            false,
        )
        .unwrap();
        assert_eq!(t.features, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            t.targets,
            Targets::Classes {
                labels: vec![0, 2],
                shape: vec![],
                classes: 3
            }
        );
    }

    #[test]
    fn reads_real_targets() {
        let t = parse_csv(
            "1,2,-0.5\n3,4,2.25\n".as_bytes(),
            0,
            false,
            TargetKind::Float,
            true,
            false,
        )
        .unwrap();
        assert_eq!(t.features, vec![2.0, -0.5, 4.0, 2.25]);
        assert_eq!(
            t.targets,
            Targets::Values {
                values: vec![1.0, 3.0],
                shape: vec![1]
            }
        );
        let err = parse_csv(
            "1,2,-0.5\n".as_bytes(),
            -1,
            false,
            TargetKind::Class,
            true,
            false,
        )
        .unwrap_err();
        assert!(err.contains("not a class index"), "{err}");
    }

    #[test]
    fn quotes_no_value_unless_asked() {
        let err = parse_csv(
            "1,2,0\nTOKEN=ghp_abc,1,1\n".as_bytes(),
            -1,
            false,
            TargetKind::Class,
            false,
            false,
        )
        .unwrap_err();
        assert!(!err.contains("ghp"), "{err}");
        assert!(err.contains("a 13-character text is not a number"), "{err}");
    }

    #[test]
    fn a_line_without_end_is_refused_in_bounded_memory() {
        let endless = std::io::repeat(b'1').take(MAX_LINE as u64 * 2);
        let err = parse_csv(
            std::io::BufReader::new(endless),
            -1,
            false,
            TargetKind::Class,
            false,
            false,
        )
        .unwrap_err();
        assert!(err.contains("longer than 8 MiB"), "{err}");
    }

    #[test]
    fn bad_lines_are_left_out_and_counted_when_asked() {
        let text = "1,2,0\n3,x,1\n5,6\n7,8,-1\n9,10,1\n";
        let t = parse_csv(text.as_bytes(), -1, false, TargetKind::Class, false, true).unwrap();
        assert_eq!(t.features, vec![1.0, 2.0, 9.0, 10.0]);
        assert_eq!(t.rows, 2);
        assert_eq!(t.skipped.rows, 3);
        assert_eq!(
            t.skipped.first.as_deref(),
            Some("line 2, column 2: a 1-character text is not a number")
        );
        let none = parse_csv(
            "x,1\n".as_bytes(),
            -1,
            false,
            TargetKind::Class,
            false,
            true,
        );
        assert_eq!(none.unwrap_err(), "no data rows: 1 bad row left out (the first: line 1, column 1: a 1-character text is not a number)");
    }

    #[test]
    fn names_the_bad_line() {
        let err = parse_csv(
            "1,2,0\n3,x,1\n".as_bytes(),
            -1,
            false,
            TargetKind::Class,
            true,
            false,
        )
        .unwrap_err();
        assert!(err.starts_with("line 2, column 2"), "{err}");
        let err = parse_csv(
            "1,2,0\n3,1\n".as_bytes(),
            -1,
            false,
            TargetKind::Class,
            true,
            false,
        )
        .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn feature_rows_with_and_without_a_header() {
        let (values, columns) = parse_feature_rows("a,b\n1,2\n3,4\n".as_bytes(), true).unwrap();
        assert_eq!((values, columns), (vec![1.0, 2.0, 3.0, 4.0], 2));
        let (values, columns) = parse_feature_rows("1,2,3\n".as_bytes(), true).unwrap();
        assert_eq!((values, columns), (vec![1.0, 2.0, 3.0], 3));
        let err = parse_feature_rows("1,2\n3\n".as_bytes(), true).unwrap_err();
        assert_eq!(err, "line 2: 1 columns, but line 1 of the data has 2");
    }
}
