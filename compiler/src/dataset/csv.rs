//! Numeric CSV: one row per sample, one column the class label.

use super::Table;

/// Parses a numeric CSV. `label_column` counts from 0, or from the end when
/// negative (-1 is the last column). Errors name the line.
pub fn parse_csv(text: &str, label_column: i64, header: bool) -> Result<Table, String> {
    let mut table = Table::default();
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
    table.sample_shape = vec![table.feature_count as i64];
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
