//! Writing a run's files: whole or not at all, and on the disk before they
//! count. Every file a run writes goes through here: a temp file flushed
//! and renamed into place (the folder flushed too), or a line appended to
//! a log. Nothing here knows what the files mean.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use tch::{Device, Tensor};

use crate::error::{RunError, TorchContext};

pub fn io_err(path: &Path, e: std::io::Error) -> RunError {
    RunError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Appends `record` as one JSON line.
pub fn write_line(
    out: &mut impl Write,
    path: &Path,
    record: &impl Serialize,
) -> Result<(), RunError> {
    let line = serde_json::to_string(record).expect("records serialize");
    writeln!(out, "{line}").map_err(|e| io_err(path, e))
}

/// The temp file a file is written to before it is renamed into place.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes a whole file or nothing: a temp file, flushed to the disk, then
/// renamed into place, and the folder flushed so the rename survives a
/// crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = temp_path(path);
    let mut file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    drop(file);
    rename_into_place(&tmp, path)
}

/// Writes a whole file or nothing through `write`, which fills the temp
/// file it is given: flushed to the disk, then renamed over `path`. A
/// failed write leaves no temp file behind.
pub fn replace_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let tmp = temp_path(path);
    if let Err(err) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    sync_file(&tmp)?;
    rename_into_place(&tmp, path)
}

/// Renames a finished temp file over `path` and flushes the folder.
pub fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), RunError> {
    std::fs::rename(tmp, path).map_err(|e| io_err(path, e))?;
    sync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Writes named tensors as safetensors, on the CPU, atomically.
pub fn write_weights(path: &Path, named: &[(String, Tensor)]) -> Result<(), RunError> {
    let tmp = temp_path(path);
    let named: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(n, t)| (n.as_str(), t.detach().to_device(Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&named, &tmp).context(|| format!("write {}", tmp.display()))?;
    sync_file(&tmp)?;
    rename_into_place(&tmp, path)
}

/// `keep_best`'s folder `best/`: the weights of the best evaluation and
/// `best.json` (its step, the measure watched and the evaluation), written
/// whole under `best.tmp/` and swapped in, so that `best/` is always one
/// evaluation's. Every rank calls it, `lead` (rank 0) writing: `write`
/// writes the weights into the path it is given (every rank takes part
/// when the replicas hold slices of them).
pub fn keep_best(
    out: &Path,
    lead: bool,
    (eval, metric): (&dtl_compiler::records::EvalRecord, &str),
    write: impl FnOnce(&Path) -> Result<(), RunError>,
) -> Result<(), RunError> {
    if lead {
        begin_best(out)?;
    }
    write(&out.join("best.tmp").join("model.safetensors"))?;
    if lead {
        end_best(out, eval, metric)?;
    }
    Ok(())
}

/// `best.tmp/`, empty.
fn begin_best(out: &Path) -> Result<(), RunError> {
    let (tmp, old) = (out.join("best.tmp"), out.join("best.old"));
    for stale in [&tmp, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(|e| io_err(stale, e))?;
        }
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))
}

/// `best.json` beside the weights, and `best.tmp/` swapped in for `best/`.
fn end_best(
    out: &Path,
    eval: &dtl_compiler::records::EvalRecord,
    metric: &str,
) -> Result<(), RunError> {
    let (tmp, dir, old) = (out.join("best.tmp"), out.join("best"), out.join("best.old"));
    let about = serde_json::json!({
        "step": eval.step,
        "metric": metric,
        "value": eval.get(metric),
        "eval": eval,
    });
    let text = serde_json::to_string_pretty(&about).expect("a record serializes");
    write_atomic(&tmp.join("best.json"), text.as_bytes())?;
    sync_dir(&tmp)?;
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(|e| io_err(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    sync_dir(out)
}

/// Flushes a file's contents to the disk.
pub fn sync_file(path: &Path) -> Result<(), RunError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, e))
}

/// Flushes a folder's entries (renames, new files) to the disk.
pub fn sync_dir(path: &Path) -> Result<(), RunError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, e))
}

/// Cuts a file back to its first `len` bytes.
pub fn truncate(path: &Path, len: u64) -> Result<(), RunError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err(path, e))
}

/// A file of JSON lines (`metrics.jsonl`, a rank's trace), written through
/// a buffer and flushed to the disk on request.
pub struct JsonLines {
    path: std::path::PathBuf,
    file: std::io::BufWriter<File>,
    /// When the lines were last handed to the file: at least every second,
    /// so that a run can be followed (`tail -f`).
    flushed: std::time::Instant,
}

/// How long written lines may wait in memory.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl JsonLines {
    /// A new, empty file (an old one is replaced).
    pub fn create(path: &Path) -> Result<JsonLines, RunError> {
        let file = File::create(path).map_err(|e| io_err(path, e))?;
        Ok(JsonLines {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            flushed: std::time::Instant::now(),
        })
    }

    /// The file as it is, written on at its end (created if missing).
    pub fn append(path: &Path) -> Result<JsonLines, RunError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        Ok(JsonLines {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            flushed: std::time::Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, record: &impl Serialize) -> Result<(), RunError> {
        write_line(&mut self.file, &self.path, record)?;
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flushed = std::time::Instant::now();
            self.file.flush().map_err(|e| io_err(&self.path, e))?;
        }
        Ok(())
    }

    /// Everything written so far, on the disk.
    pub fn sync(&mut self) -> Result<(), RunError> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_all())
            .map_err(|e| io_err(&self.path, e))
    }
}

/// The time now, UTC, as `2026-12-04 09:50:00`.
pub fn utc_now() -> String {
    dtl_compiler::util::time::now_utc()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}
