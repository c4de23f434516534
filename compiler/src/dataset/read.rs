//! How data files are opened and read: regular files only (a FIFO would
//! block in `open`, a device never end), streamed or memory-mapped rather
//! than read whole, and within a budget of bytes and seconds where the
//! caller sets one (`dtl check --data`, `dtl compile`, the language
//! server), which can also be cancelled (the language server, when the
//! document changes). A budget met is an error that says so, never a
//! silently partial check.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::Mmap;

/// What reading data may cost, and how its errors may speak.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Bytes read (after decompression) at most, over every file.
    pub bytes: Option<u64>,
    /// Time at most, from when the limits were made.
    pub seconds: Option<f64>,
    /// Set by another thread to stop reading.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Errors may quote the values they found (`--show-values`); without,
    /// they say where and what kind of value, never its bytes (a data file
    /// can be `/proc/self/environ`).
    pub show_values: bool,
    /// `on_bad_row = skip`: a row that cannot be read is left out and
    /// counted ([`super::Skipped`]) instead of stopping the read.
    pub skip_bad_rows: bool,
}

/// A budget being spent: what was read so far, since when.
#[derive(Debug)]
pub struct Meter {
    limits: Limits,
    started: Instant,
    read: u64,
}

/// What checking may read by default: 2 GiB in 120 s.
pub const CHECK_BYTES: u64 = 2 << 30;
pub const CHECK_SECONDS: f64 = 120.0;

impl Limits {
    /// No limit (the runtime, which must read the whole file anyway).
    pub fn unbounded() -> Limits {
        Limits::default()
    }

    /// The budget of a check before launch (`dtl check --data`, `dtl
    /// compile`): [`CHECK_BYTES`] in [`CHECK_SECONDS`].
    pub fn checking() -> Limits {
        Limits {
            bytes: Some(CHECK_BYTES),
            seconds: Some(CHECK_SECONDS),
            ..Limits::default()
        }
    }

    pub fn meter(&self) -> Meter {
        Meter {
            limits: self.clone(),
            started: Instant::now(),
            read: 0,
        }
    }
}

impl Meter {
    pub fn show_values(&self) -> bool {
        self.limits.show_values
    }

    pub fn skip_bad_rows(&self) -> bool {
        self.limits.skip_bad_rows
    }

    /// Counts `n` more bytes read; an error once the budget is spent.
    pub fn spend(&mut self, n: u64) -> Result<(), String> {
        self.read += n;
        if let Some(bytes) = self.limits.bytes.filter(|b| self.read > *b) {
            return Err(format!(
                "more than {} read without reaching its end: over the data budget (raise it with --data-budget)",
                size_words(bytes)
            ));
        }
        self.check_time()
    }

    /// An error once the time is up or the reading was cancelled.
    pub fn check_time(&self) -> Result<(), String> {
        if self
            .limits
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err("reading cancelled".into());
        }
        if let Some(seconds) = self.limits.seconds {
            if self.started.elapsed() > Duration::from_secs_f64(seconds) {
                return Err(format!(
                    "still reading after {seconds:.0} s: over the data budget (raise it with --data-budget)"
                ));
            }
        }
        Ok(())
    }
}

/// "2 GiB", "512 MiB", "300 bytes".
pub fn size_words(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {name}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// Opens a data file: only a regular file is data. A FIFO would block here
/// forever and a device would never end, so both are refused before open.
pub fn open(path: &Path) -> Result<File, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_dir() {
            "a folder"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!("is {what}, not a data file"));
    }
    File::open(path).map_err(|e| format!("cannot open: {e}"))
}

/// A reader that spends from a meter as it goes.
pub struct Metered<'a, R> {
    inner: R,
    meter: &'a mut Meter,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.spend(n as u64).map_err(std::io::Error::other)?;
        Ok(n)
    }
}

/// A file's contents as a buffered stream, gunzipped when its name ends in
/// `.gz`, metered.
pub fn stream<'a>(path: &Path, meter: &'a mut Meter) -> Result<Box<dyn BufRead + 'a>, String> {
    let file = open(path)?;
    let raw = BufReader::with_capacity(1 << 16, file);
    if path.extension().is_some_and(|e| e == "gz") {
        let unzipped = flate2::bufread::GzDecoder::new(raw);
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            Metered {
                inner: unzipped,
                meter,
            },
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            Metered { inner: raw, meter },
        )))
    }
}

/// A file's bytes: memory-mapped when it is stored plain (nothing is
/// copied; the pages are read as they are used), read and gunzipped
/// through the meter when it ends in `.gz`.
pub enum Bytes {
    Mapped(Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Read(bytes) => bytes,
        }
    }
}

/// [`Bytes`] of `path`, within the meter's budget.
pub fn bytes(path: &Path, meter: &mut Meter) -> Result<Bytes, String> {
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        stream(path, meter)?
            .read_to_end(&mut out)
            .map_err(|e| read_error(&e))?;
        return Ok(Bytes::Read(out));
    }
    let file = open(path)?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    meter.spend(size)?;
    if size == 0 {
        return Ok(Bytes::Read(Vec::new()));
    }
    // SAFETY: read-only; a file changed underneath shows as other values,
    // which the readers check like any others, not as memory unsafety.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("cannot map: {e}"))?;
    Ok(Bytes::Mapped(map))
}

/// What identifies a data file cheaply, even a terabyte one: its size and
/// a hash (FNV-1a) of its first and last 64 KiB and of 16 pieces of 4 KiB
/// spread evenly between them. A file edited in place, replaced or cut
/// almost surely changes it; reading it costs under 200 KiB.
///
/// A folder (Parquet shards, a saved dataset, an image folder) is
/// identified by [`fingerprint_folder`].
pub fn fingerprint(path: &Path) -> Result<(u64, String), String> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return fingerprint_folder(path);
    }
    fingerprint_file(path)
}

/// How deep a folder's files are identified: a dataset's own files, its
/// splits' or classes' subfolders, and one level more.
const FOLDER_DEPTH: usize = 3;

/// A folder's identity: the total size of its regular files (down to
/// [`FOLDER_DEPTH`] levels) and a hash of every file's name and size and of
/// the [`fingerprint_file`] of at most 16 files spread evenly over them. A
/// file added, removed, renamed or resized changes it, as does an edit to
/// the files sampled; a folder of 10⁵ images costs a listing and 16 small
/// reads. Other entries (links to folders, FIFOs, devices) are not opened.
pub fn fingerprint_folder(path: &Path) -> Result<(u64, String), String> {
    let mut files = Vec::new();
    list_files(path, Path::new(""), FOLDER_DEPTH, &mut files)?;
    files.sort();
    let mut hash = crate::util::rng::Fnv1a::new();
    let mut total = 0u64;
    for (name, size) in &files {
        hash = hash.update(name.as_bytes()).update(&size.to_le_bytes());
        total += size;
    }
    let picks = files.len().min(16);
    for i in 0..picks {
        let (name, _) = &files[i * files.len() / picks];
        let (_, sampled) = fingerprint_file(&path.join(name))?;
        hash = hash.update(sampled.as_bytes());
    }
    Ok((total, format!("{:016x}", hash.finish())))
}

/// The regular files under `dir` (names relative to the top, `/`-joined),
/// with their sizes.
fn list_files(
    dir: &Path,
    relative: &Path,
    depth: usize,
    out: &mut Vec<(String, u64)>,
) -> Result<(), String> {
    let here = dir.join(relative);
    let entries =
        std::fs::read_dir(&here).map_err(|e| format!("cannot list {}: {e}", here.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", here.display()))?;
        let name = relative.join(entry.file_name());
        // The entry itself, not what a link points to.
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        if kind.is_file() {
            let size = entry.metadata().map_err(|e| e.to_string())?.len();
            out.push((name.to_string_lossy().into_owned(), size));
        } else if kind.is_dir() && depth > 1 {
            list_files(dir, &name, depth - 1, out)?;
        }
    }
    Ok(())
}

/// [`fingerprint`] of one regular file.
fn fingerprint_file(path: &Path) -> Result<(u64, String), String> {
    use std::io::{Seek, SeekFrom};
    const EDGE: u64 = 64 << 10;
    const PIECE: u64 = 4 << 10;
    let mut file = open(path)?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut hash = crate::util::rng::Fnv1a::new();
    let mut read_at = |at: u64, len: u64, hash: &mut crate::util::rng::Fnv1a| {
        let len = len.min(size.saturating_sub(at));
        let mut buffer = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut buffer))
            .map_err(|e| e.to_string())?;
        *hash = hash.update(&buffer);
        Ok::<(), String>(())
    };
    if size <= 2 * EDGE + 16 * PIECE {
        read_at(0, size, &mut hash)?;
    } else {
        read_at(0, EDGE, &mut hash)?;
        let span = size - 2 * EDGE;
        for i in 0..16 {
            read_at(EDGE + span * i / 16, PIECE, &mut hash)?;
        }
        read_at(size - EDGE, EDGE, &mut hash)?;
    }
    Ok((size, format!("{:016x}", hash.finish())))
}

/// An I/O error of a stream in words: gzip's own, the budget's, or the
/// system's.
pub fn read_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if e.kind() == std::io::ErrorKind::InvalidInput
        || text.contains("gzip")
        || text.contains("deflate")
    {
        format!("not a valid gzip file: {text}")
    } else {
        text
    }
}

/// What a value is, for a message that may not quote it: "`abc`" with
/// `--show-values`; else its kind ("a negative number", "NaN", "a
/// 3-character text"), never its bytes.
pub fn value_words(value: &str, show: bool) -> String {
    if show {
        return format!("`{value}`");
    }
    match value.parse::<f64>() {
        Ok(v) if v.is_nan() => "NaN".into(),
        Ok(v) if v.is_infinite() => "an infinite number".into(),
        Ok(v) if v < 0.0 => "a negative number".into(),
        Ok(v) if v.fract() != 0.0 => "a fractional number".into(),
        Ok(_) => "a number".into(),
        Err(_) => match value.chars().count() {
            0 => "an empty cell".into(),
            n => format!("a {n}-character text"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_data() {
        assert!(open(Path::new("/dev/zero"))
            .unwrap_err()
            .contains("a device"));
        assert!(open(Path::new("/tmp")).unwrap_err().contains("a folder"));
    }

    #[test]
    fn a_budget_of_bytes_stops_the_reading() {
        let limits = Limits {
            bytes: Some(10),
            ..Limits::unbounded()
        };
        let mut meter = limits.meter();
        assert!(meter.spend(10).is_ok());
        let err = meter.spend(1).unwrap_err();
        assert!(
            err.contains("10 bytes") && err.contains("--data-budget"),
            "{err}"
        );
    }

    #[test]
    fn a_fingerprint_sees_an_edit_anywhere_it_samples() {
        let dir = std::env::temp_dir().join(format!("dtl-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.bin");
        let mut bytes = vec![7u8; 1 << 20];
        std::fs::write(&path, &bytes).unwrap();
        let before = fingerprint(&path).unwrap();
        assert_eq!(before, fingerprint(&path).unwrap());
        bytes[(1 << 20) - 1] = 8; // the last byte
        std::fs::write(&path, &bytes).unwrap();
        assert_ne!(before, fingerprint(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn values_are_described_not_quoted() {
        assert_eq!(value_words("SECRET=ghp_x", false), "a 12-character text");
        assert_eq!(value_words("-1", false), "a negative number");
        assert_eq!(value_words("nan", false), "NaN");
        assert_eq!(value_words("abc", true), "`abc`");
    }
}
