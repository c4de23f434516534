//! Parquet: one file, or a folder of shards (every `*.parquet` in it, in
//! name order) read as one dataset. Only the named columns are decoded,
//! a row group at a time, through the Apache Parquet crate.

use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::columns::Columns;
use super::read::{self, Meter};
use super::Table;
use crate::plan::TargetKind;

/// Reads the features and label of `path` (a file or a folder of shards).
pub fn read(
    path: &Path,
    features: &[String],
    label: &str,
    kind: TargetKind,
    meter: &mut Meter,
) -> Result<Table, String> {
    let shards = shards(path)?;
    let mut columns = Columns::new(features, label, kind, meter.skip_bad_rows());
    for shard in &shards {
        // In a folder, say which shard.
        let named = |e: String| match path.is_dir() {
            true => format!("{}: {e}", file_name(shard)),
            false => e,
        };
        columns.next_file();
        read_one(shard, &mut columns, meter).map_err(named)?;
    }
    columns.finish()
}

/// The files of a source: `path` itself, or the `.parquet` files of a
/// folder in name order.
pub fn shards(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut shards = Vec::new();
    let entries = std::fs::read_dir(path).map_err(|e| format!("cannot list the folder: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list the folder: {e}"))?;
        let name = entry.path();
        if name.extension().is_some_and(|e| e == "parquet") {
            shards.push(name);
        }
    }
    if shards.is_empty() {
        return Err("a folder without .parquet files".into());
    }
    shards.sort();
    Ok(shards)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn read_one(path: &Path, columns: &mut Columns, meter: &mut Meter) -> Result<(), String> {
    let file = read::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("not a readable Parquet file ({e})"))?;
    let roots = columns.indices(builder.schema())?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| format!("not a readable Parquet file ({e})"))?;
    for batch in reader {
        let batch = batch.map_err(|e| format!("a damaged row group ({e})"))?;
        // Decoded, not stored, bytes: a small file of long runs can
        // decode to far more than it holds.
        meter.spend(batch.get_array_memory_size() as u64)?;
        columns.push(&batch)?;
    }
    Ok(())
}
