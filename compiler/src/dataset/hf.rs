//! A Hugging Face dataset saved with `datasets.save_to_disk`, read without
//! Python: `state.json` lists the Arrow IPC stream files (`data-00000-of-
//! 00001.arrow`, …) that hold the rows, in order. A `DatasetDict` is a
//! folder of such folders, one per split, listed in `dataset_dict.json`.
//! Only the named columns are decoded.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow_ipc::reader::StreamReader;
use serde_json::Value;

use super::columns::Columns;
use super::read::{self, Meter};
use super::Table;
use crate::plan::TargetKind;

/// The most a metadata file (`state.json`, `dataset_dict.json`) may hold.
const MAX_METADATA: u64 = 16 << 20;

/// Reads the features and label of the saved dataset in `dir` (of its
/// `split` for a `DatasetDict`; empty for a single dataset).
pub fn read(
    dir: &Path,
    split: &str,
    features: &[String],
    label: &str,
    kind: TargetKind,
    meter: &mut Meter,
) -> Result<Table, String> {
    let dir = split_folder(dir, split, meter)?;
    let mut columns = Columns::new(features, label, kind, meter.skip_bad_rows());
    for file in data_files(&dir, meter)? {
        let name = file
            .strip_prefix(&dir)
            .unwrap_or(&file)
            .display()
            .to_string();
        columns.next_file();
        read_one(&file, &mut columns, meter).map_err(|e| format!("{name}: {e}"))?;
    }
    columns.finish()
}

fn metadata(path: &Path, meter: &mut Meter) -> Result<Value, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let file = read::open(path).map_err(|e| format!("{name} {e}"))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > MAX_METADATA {
        return Err(format!(
            "{name} is larger than {}",
            read::size_words(MAX_METADATA)
        ));
    }
    let bytes = read::bytes(path, meter)?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{name} is not JSON ({e})"))
}

/// The folder of one dataset: `dir` itself, or its `split` for a
/// `DatasetDict`.
fn split_folder(dir: &Path, split: &str, meter: &mut Meter) -> Result<PathBuf, String> {
    let dict = dir.join("dataset_dict.json");
    if !dict.exists() {
        if !split.is_empty() {
            return Err(format!(
                "`split: \"{split}\"` names a split, but this is one dataset, not a DatasetDict (no dataset_dict.json)"
            ));
        }
        if !dir.join("state.json").exists() {
            return Err(
                "not a dataset saved with `save_to_disk` (no state.json or dataset_dict.json)"
                    .into(),
            );
        }
        return Ok(dir.to_path_buf());
    }
    let splits: Vec<String> = metadata(&dict, meter)?
        .get("splits")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .ok_or("dataset_dict.json has no list of `splits`")?;
    let listed = splits
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if split.is_empty() {
        return Err(format!(
            "a DatasetDict of the splits {listed}: name one, e.g. `split: \"{}\"`",
            splits.first().map_or("train", String::as_str)
        ));
    }
    if !splits.iter().any(|s| s == split) || !plain_name(split) {
        return Err(format!("no split `{split}` (the splits are {listed})"));
    }
    Ok(dir.join(split))
}

/// A name that stays in its folder: no separators, not `.` or `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != ".."
}

/// The Arrow files `state.json` lists, in order.
fn data_files(dir: &Path, meter: &mut Meter) -> Result<Vec<PathBuf>, String> {
    let state = metadata(&dir.join("state.json"), meter)?;
    let files = state
        .get("_data_files")
        .and_then(Value::as_array)
        .ok_or("state.json has no list of `_data_files`")?;
    let names: Vec<&str> = files
        .iter()
        .map(|f| {
            f.get("filename")
                .and_then(Value::as_str)
                .filter(|n| plain_name(n))
                .ok_or("state.json: a `_data_files` entry without a plain `filename`")
        })
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        return Err("state.json lists no data files".into());
    }
    Ok(names.iter().map(|n| dir.join(n)).collect())
}

fn read_one(path: &Path, columns: &mut Columns, meter: &mut Meter) -> Result<(), String> {
    let open = || -> Result<_, String> { Ok(BufReader::with_capacity(1 << 16, read::open(path)?)) };
    let unreadable = |e: arrow_schema::ArrowError| format!("not an Arrow IPC stream ({e})");
    // The schema first (the stream's first message), then the stream again
    // decoding only the wanted columns.
    let schema = StreamReader::try_new(open()?, None)
        .map_err(unreadable)?
        .schema();
    let wanted = columns.indices(&schema)?;
    let reader = StreamReader::try_new(open()?, Some(wanted)).map_err(unreadable)?;
    for batch in reader {
        let batch = batch.map_err(|e| format!("a damaged record batch ({e})"))?;
        meter.spend(batch.get_array_memory_size() as u64)?;
        columns.push(&batch)?;
    }
    Ok(())
}
