//! JSON lines: one object per line (`{"x": [0.1, 0.2], "y": 3}`), streamed.
//! The features are one field holding a number or a nested array of
//! numbers, or several numeric fields taken in the order named; the target
//! is another field, a class index or real values. Errors name the line and
//! the field and say what kind of value is there, never the value.

use std::io::BufRead;

use serde_json::Value;

use super::{read, Skipped, Table, Targets};
use crate::plan::TargetKind;

/// The longest line read: 8 MiB, as for CSV.
pub const MAX_LINE: usize = 8 << 20;

/// Calls `line` with each non-blank line's number and text, each at most
/// [`MAX_LINE`] bytes.
pub fn each_line(
    mut input: impl BufRead,
    mut line: impl FnMut(usize, &str) -> Result<(), String>,
) -> Result<(), String> {
    let mut bytes = Vec::new();
    for line_no in 1.. {
        bytes.clear();
        let n = std::io::Read::take(&mut input, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut bytes)
            .map_err(|e| format!("line {line_no}: {}", read::read_error(&e)))?;
        if n == 0 {
            break;
        }
        if n > MAX_LINE {
            return Err(format!(
                "line {line_no} is longer than {}",
                read::size_words(MAX_LINE as u64)
            ));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| format!("line {line_no}: not UTF-8 text (byte {})", e.valid_up_to()))?;
        if !text.trim().is_empty() {
            line(line_no, text)?;
        }
    }
    Ok(())
}

/// Parses one line as a JSON object.
pub fn object(line_no: usize, text: &str) -> Result<serde_json::Map<String, Value>, String> {
    // serde_json's syntax errors give a position, never the text.
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!(
            "line {line_no}: {}, not an object",
            kind_words(&other)
        )),
        Err(e) => Err(format!("line {line_no}: not JSON ({e})")),
    }
}

/// What a JSON value is, without its content.
pub fn kind_words(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A nested array of numbers (or one number), flattened into `out`; its
/// shape from the first element of every level, every other element
/// checked against it. `shape` is empty for a first value; later values
/// must have the shape the first one gave.
pub fn flatten(
    value: &Value,
    depth: usize,
    shape: &mut Vec<i64>,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    match value {
        Value::Number(n) => {
            if depth < shape.len() {
                return Err("a number where the first row has an array".into());
            }
            let x = n
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or("a number out of range")?;
            out.push(x as f32);
            Ok(())
        }
        Value::Array(items) => {
            if depth == shape.len() {
                shape.push(items.len() as i64);
            } else if shape[depth] != items.len() as i64 {
                return Err(format!(
                    "an array of {} where the first has {} (ragged)",
                    items.len(),
                    shape[depth]
                ));
            }
            items
                .iter()
                .try_for_each(|v| flatten(v, depth + 1, shape, out))
        }
        other => Err(format!(
            "{} where numbers (or arrays of numbers) belong",
            kind_words(other)
        )),
    }
}

/// Reads a JSON-lines table: `features` names one field (a number or an
/// array of numbers, nested as the sample's shape) or several numeric
/// fields; `label` names the target's field.
pub fn parse_jsonl(
    input: impl BufRead,
    features: &[String],
    label: &str,
    kind: TargetKind,
    skip: bool,
) -> Result<Table, String> {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut first: Option<(Vec<i64>, Vec<i64>)> = None;
    let mut skipped = Skipped::default();
    each_line(input, |line_no, text| {
        let (x0, y0) = (xs.len(), ys.len());
        let mut read = || -> Result<(), String> {
            let object = object(line_no, text)?;
            let field = |name: &str| {
                object
                    .get(name)
                    .ok_or_else(|| format!("line {line_no}: no field `{name}`"))
            };
            let (mut x_shape, mut y_shape) = first.clone().unwrap_or_default();
            let fresh = first.is_none();
            let before = xs.len();
            match features {
                [one] => flatten(field(one)?, 0, &mut x_shape, &mut xs)
                    .map_err(|e| format!("line {line_no}, field `{one}`: {e}"))?,
                several => {
                    for name in several {
                        match field(name)? {
                        value @ Value::Number(_) => {
                            flatten(value, 0, &mut Vec::new(), &mut xs)
                                .map_err(|e| format!("line {line_no}, field `{name}`: {e}"))?;
                        }
                        other => {
                            return Err(format!(
                                "line {line_no}, field `{name}`: {}, not a number (several feature fields each hold one number)",
                                kind_words(other)
                            ))
                        }
                    }
                    }
                    x_shape = vec![several.len() as i64];
                }
            }
            let x_count: i64 = x_shape.iter().product();
            if xs.len() - before != x_count as usize {
                return Err(format!(
                    "line {line_no}: {} feature values, the first row has {x_count}",
                    xs.len() - before
                ));
            }
            let target = field(label)?;
            match (kind, target) {
                (TargetKind::Class, Value::Number(n)) => {
                    let class = n.as_u64().filter(|&c| c < 1 << 53).ok_or_else(|| {
                    format!(
                        "line {line_no}, field `{label}`: the label is not a class index (0, 1, 2, …)"
                    )
                })?;
                    ys.push(class as f64);
                }
                (TargetKind::Class, other) => {
                    return Err(format!(
                        "line {line_no}, field `{label}`: {}, not a class index (0, 1, 2, …)",
                        kind_words(other)
                    ))
                }
                (TargetKind::Float, value) => {
                    let mut values = Vec::new();
                    flatten(value, 0, &mut y_shape, &mut values)
                        .map_err(|e| format!("line {line_no}, field `{label}`: {e}"))?;
                    ys.extend(values.iter().map(|&v| f64::from(v)));
                }
            }
            if fresh {
                first = Some((x_shape, y_shape));
            }
            Ok(())
        };
        let outcome = read();
        if !skipped.row(outcome, skip)? {
            xs.truncate(x0);
            ys.truncate(y0);
        }
        Ok(())
    })?;
    let Some((mut x_shape, y_shape)) = first else {
        return Err(match skipped.rows {
            0 => "no data rows".into(),
            _ => format!("no data rows: {}", skipped.words()),
        });
    };
    if x_shape.is_empty() {
        // One number per row: a sample of one feature.
        x_shape = vec![1];
    }
    let y_shape = match kind {
        TargetKind::Class => vec![],
        TargetKind::Float if y_shape.is_empty() => vec![1],
        TargetKind::Float => y_shape,
    };
    let mut table = Table::new(xs, Targets::new(ys, y_shape, kind)?, x_shape)?;
    table.skipped = skipped;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_array_field_or_several_numbers() {
        let text = "{\"x\": [1, 2], \"y\": 1}\n\n{\"y\": 0, \"x\": [3, 4]}\n";
        let table = parse_jsonl(
            text.as_bytes(),
            &names(&["x"]),
            "y",
            TargetKind::Class,
            false,
        )
        .unwrap();
        assert_eq!(table.features, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!((table.rows, table.sample_shape.clone()), (2, vec![2]));
        assert_eq!(table.classes(), 2);
        let text = "{\"a\": 1, \"b\": 2.5, \"t\": 0.5}\n{\"a\": 3, \"b\": 4, \"t\": -1}\n";
        let table = parse_jsonl(
            text.as_bytes(),
            &names(&["b", "a"]),
            "t",
            TargetKind::Float,
            false,
        )
        .unwrap();
        assert_eq!(table.features, vec![2.5, 1.0, 4.0, 3.0]);
        assert_eq!(
            table.targets,
            Targets::Values {
                values: vec![0.5, -1.0],
                shape: vec![1]
            }
        );
        let single = "{\"x\": 1, \"y\": 0}\n{\"x\": 2, \"y\": 1}\n";
        let table = parse_jsonl(
            single.as_bytes(),
            &names(&["x"]),
            "y",
            TargetKind::Class,
            false,
        )
        .unwrap();
        assert_eq!(
            (table.features.clone(), table.sample_shape.clone()),
            (vec![1.0, 2.0], vec![1])
        );
        let nested = "{\"x\": [[1, 2], [3, 4]], \"y\": [1, 0]}\n";
        let table = parse_jsonl(
            nested.as_bytes(),
            &names(&["x"]),
            "y",
            TargetKind::Float,
            false,
        )
        .unwrap();
        assert_eq!(table.sample_shape, vec![2, 2]);
        assert_eq!(table.targets.shape(), &[2]);
    }

    #[test]
    fn bad_lines_are_left_out_and_counted_when_asked() {
        let text = "{\"x\": [1, 2], \"y\": 1}\n{\"x\": [1], \"y\": 0}\n{\"x\": [3, 4]}\nnot json\n{\"x\": [5, 6], \"y\": 0}\n";
        let table = parse_jsonl(
            text.as_bytes(),
            &names(&["x"]),
            "y",
            TargetKind::Class,
            true,
        )
        .unwrap();
        assert_eq!(table.features, vec![1.0, 2.0, 5.0, 6.0]);
        assert_eq!(table.skipped.rows, 3);
        assert_eq!(
            table.skipped.first.as_deref(),
            Some("line 2, field `x`: an array of 1 where the first has 2 (ragged)")
        );
    }

    #[test]
    fn bad_lines_are_named_without_their_values() {
        let err = |text: &str, kind| {
            parse_jsonl(text.as_bytes(), &names(&["x"]), "y", kind, false).unwrap_err()
        };
        let class = TargetKind::Class;
        assert_eq!(
            err("{\"x\": [1, 2], \"y\": 1}\n{\"x\": [1], \"y\": 1}\n", class),
            "line 2, field `x`: an array of 1 where the first has 2 (ragged)"
        );
        assert_eq!(
            err("{\"x\": [1], \"y\": \"secret\"}\n", class),
            "line 1, field `y`: a text, not a class index (0, 1, 2, …)"
        );
        assert_eq!(
            err("{\"x\": [1], \"y\": -1}\n", class),
            "line 1, field `y`: the label is not a class index (0, 1, 2, …)"
        );
        assert_eq!(err("{\"x\": [1]}\n", class), "line 1: no field `y`");
        assert_eq!(err("[1, 2]\n", class), "line 1: an array, not an object");
        assert!(err("{\"x\": [1], \"y\": 1\n", class).starts_with("line 1: not JSON ("));
        assert_eq!(
            err("{\"x\": [\"token\"], \"y\": 1}\n", class),
            "line 1, field `x`: a text where numbers (or arrays of numbers) belong"
        );
        assert_eq!(err("\n\n", class), "no data rows");
        let endless = std::io::Read::take(std::io::repeat(b' '), MAX_LINE as u64 * 2);
        let long = parse_jsonl(
            std::io::BufReader::new(endless),
            &names(&["x"]),
            "y",
            class,
            false,
        )
        .unwrap_err();
        assert_eq!(long, "line 1 is longer than 8 MiB");
    }
}
