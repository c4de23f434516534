//! Columns of Arrow record batches (what the Parquet and Arrow IPC readers
//! give) into a table: the features one column holding a number or a
//! (nested) list of numbers per row, or several numeric columns taken in
//! the order named; the target another column. Errors name the row and the
//! column and say what kind of value is there, never the value.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};

use super::{Skipped, Table, Targets};
use crate::plan::TargetKind;

/// The columns a table is read from, and what has been read so far.
pub struct Columns<'a> {
    features: &'a [String],
    label: &'a str,
    kind: TargetKind,
    xs: Vec<f32>,
    ys: Vec<f64>,
    /// The first row's feature and target shapes (list lengths per level).
    first: Option<(Vec<i64>, Vec<i64>)>,
    /// Rows read so far, over every batch and file.
    pub rows: usize,
    /// Rows read so far of the current file, for messages.
    file_rows: usize,
    /// `on_bad_row = skip`: bad rows are counted here and left out.
    skip: bool,
    skipped: Skipped,
}

impl<'a> Columns<'a> {
    pub fn new(features: &'a [String], label: &'a str, kind: TargetKind, skip: bool) -> Self {
        Columns {
            features,
            label,
            kind,
            xs: Vec::new(),
            ys: Vec::new(),
            first: None,
            rows: 0,
            file_rows: 0,
            skip,
            skipped: Skipped::default(),
        }
    }

    /// The names to read, features first: what a reader projects onto.
    pub fn wanted(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.features.iter().map(String::as_str).collect();
        names.push(self.label);
        names
    }

    /// The index of each wanted column in `schema`, or which one is missing
    /// (with the columns there are, so a typo shows).
    pub fn indices(&self, schema: &Schema) -> Result<Vec<usize>, String> {
        self.wanted()
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    let there: Vec<String> = schema
                        .fields()
                        .iter()
                        .take(12)
                        .map(|f| format!("`{}`", f.name()))
                        .collect();
                    let more = if schema.fields().len() > 12 {
                        ", …"
                    } else {
                        ""
                    };
                    format!(
                        "no column `{name}` (the columns are {}{more})",
                        there.join(", ")
                    )
                })
            })
            .collect()
    }

    /// Appends the rows of `batch`, which holds (at least) the wanted
    /// columns.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| format!("no column `{name}`"))
        };
        let features: Vec<ArrayRef> = self
            .features
            .iter()
            .map(|n| column(n))
            .collect::<Result<_, _>>()?;
        let label = column(self.label)?;
        for r in 0..batch.num_rows() {
            let row = self.file_rows + r;
            let (x0, y0) = (self.xs.len(), self.ys.len());
            let outcome = self.push_row(&features, &label, r, row);
            if !self.skipped.row(outcome, self.skip)? {
                self.xs.truncate(x0);
                self.ys.truncate(y0);
            }
        }
        self.rows += batch.num_rows();
        self.file_rows += batch.num_rows();
        Ok(())
    }

    /// Starts the next file: rows are numbered from 0 in each.
    pub fn next_file(&mut self) {
        self.file_rows = 0;
    }

    fn push_row(
        &mut self,
        features: &[ArrayRef],
        label: &ArrayRef,
        r: usize,
        row: usize,
    ) -> Result<(), String> {
        let (mut x_shape, mut y_shape) = self.first.clone().unwrap_or_default();
        let fresh = self.first.is_none();
        fn at(row: usize, name: &str) -> impl Fn(String) -> String + '_ {
            move |e| format!("row {row}, column `{name}`: {e}")
        }
        let names = self.features;
        let mut values = Vec::new();
        match (features, names) {
            ([one], [name]) => {
                flatten(one.as_ref(), r, 0, &mut x_shape, &mut values).map_err(at(row, name))?
            }
            (several, names) => {
                for (array, name) in several.iter().zip(names) {
                    let one_number = |e: String| {
                        format!("row {row}, column `{name}`: {e} (several feature columns each hold one number)")
                    };
                    if !is_number(array.data_type()) {
                        return Err(one_number(format!(
                            "{}, not a number",
                            type_words(array.data_type())
                        )));
                    }
                    flatten(array.as_ref(), r, 0, &mut Vec::new(), &mut values)
                        .map_err(one_number)?;
                }
                x_shape = vec![several.len() as i64];
            }
        }
        let x_count: i64 = x_shape.iter().product();
        if values.len() != x_count as usize {
            return Err(format!(
                "row {row}: {} feature values, the first row has {x_count}",
                values.len()
            ));
        }
        if let Some(at) = values
            .iter()
            .position(|v| !v.is_finite() || v.abs() > f32::MAX as f64)
        {
            return Err(format!(
                "row {row}: feature value {at} is not a finite float32 number"
            ));
        }
        self.xs.extend(values.iter().map(|&v| v as f32));
        let mut target = Vec::new();
        match self.kind {
            TargetKind::Class => {
                flatten(label.as_ref(), r, 0, &mut Vec::new(), &mut target)
                    .map_err(at(row, self.label))?;
                let whole = |c: f64| c.fract() == 0.0 && (0.0..2f64.powi(53)).contains(&c);
                if target.len() != 1 || !whole(target[0]) {
                    return Err(format!(
                        "row {row}, column `{}`: the label is not a class index (0, 1, 2, …)",
                        self.label
                    ));
                }
            }
            TargetKind::Float => flatten(label.as_ref(), r, 0, &mut y_shape, &mut target)
                .map_err(at(row, self.label))?,
        }
        if target.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "row {row}, column `{}`: not a finite number",
                self.label
            ));
        }
        self.ys.extend(target);
        if fresh {
            self.first = Some((x_shape, y_shape));
        }
        Ok(())
    }

    /// The table read, its samples shaped as the first row's features.
    pub fn finish(self) -> Result<Table, String> {
        let Some((mut x_shape, y_shape)) = self.first else {
            return Err(match self.skipped.rows {
                0 => "no data rows".into(),
                _ => format!("no data rows: {}", self.skipped.words()),
            });
        };
        if x_shape.is_empty() {
            // One number per row: a sample of one feature.
            x_shape = vec![1];
        }
        let y_shape = match self.kind {
            TargetKind::Class => vec![],
            TargetKind::Float if y_shape.is_empty() => vec![1],
            TargetKind::Float => y_shape,
        };
        let mut table = Table::new(self.xs, Targets::new(self.ys, y_shape, self.kind)?, x_shape)?;
        table.skipped = self.skipped;
        Ok(table)
    }
}

/// The value at row `r` of `array` (a number, or a list of numbers nested
/// `shape.len() - depth` deep) flattened into `out`. `shape` is empty for a
/// first value; later values must have the shape the first one gave.
fn flatten(
    array: &dyn Array,
    r: usize,
    depth: usize,
    shape: &mut Vec<i64>,
    out: &mut Vec<f64>,
) -> Result<(), String> {
    if array.is_null(r) {
        return Err("a missing value (null)".into());
    }
    let items = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(r),
        DataType::LargeList(_) => array.as_list::<i64>().value(r),
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().value(r),
        ty if !is_number(ty) => return Err(format!("{}, not numbers", type_words(ty))),
        _ => {
            if depth < shape.len() {
                return Err("a number where the first row has a list".into());
            }
            return numbers(&array.slice(r, 1), out);
        }
    };
    if depth == shape.len() {
        shape.push(items.len() as i64);
    } else if shape[depth] != items.len() as i64 {
        return Err(format!(
            "a list of {} where the first has {} (ragged)",
            items.len(),
            shape[depth]
        ));
    }
    if is_number(items.data_type()) {
        if depth + 1 < shape.len() {
            return Err("numbers where the first row has lists".into());
        }
        return numbers(items.as_ref(), out);
    }
    (0..items.len()).try_for_each(|i| flatten(items.as_ref(), i, depth + 1, shape, out))
}

fn is_number(ty: &DataType) -> bool {
    ty.is_numeric() || *ty == DataType::Boolean
}

/// Every value of a numeric (or boolean) array, appended to `out`.
fn numbers(array: &dyn Array, out: &mut Vec<f64>) -> Result<(), String> {
    if let Some(i) = (0..array.len()).find(|&i| array.is_null(i)) {
        return Err(if array.len() == 1 {
            "a missing value (null)".into()
        } else {
            format!("a missing value (null) at item {i} of the list")
        });
    }
    macro_rules! each {
        ($t:ty) => {
            out.extend(
                array
                    .as_primitive::<$t>()
                    .values()
                    .iter()
                    .map(|&v| v as f64),
            )
        };
    }
    match array.data_type() {
        DataType::Boolean => out.extend(array.as_boolean().values().iter().map(f64::from)),
        DataType::Int8 => each!(Int8Type),
        DataType::Int16 => each!(Int16Type),
        DataType::Int32 => each!(Int32Type),
        DataType::Int64 => each!(Int64Type),
        DataType::UInt8 => each!(UInt8Type),
        DataType::UInt16 => each!(UInt16Type),
        DataType::UInt32 => each!(UInt32Type),
        DataType::UInt64 => each!(UInt64Type),
        DataType::Float16 => out.extend(
            array
                .as_primitive::<Float16Type>()
                .values()
                .iter()
                .map(|v| v.to_f64()),
        ),
        DataType::Float32 => each!(Float32Type),
        DataType::Float64 => each!(Float64Type),
        other => return Err(format!("{}, not numbers", type_words(other))),
    }
    Ok(())
}

/// What an Arrow type holds, in words.
fn type_words(ty: &DataType) -> String {
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytes".into(),
        DataType::Struct(_) => "a struct (several named fields)".into(),
        DataType::Dictionary(_, _) => "a dictionary-encoded (categorical) column".into(),
        DataType::Null => "only missing values (nulls)".into(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            "a list".into()
        }
        other => format!("values of type {other}"),
    }
}
