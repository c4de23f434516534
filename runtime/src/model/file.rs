//! A safetensors weights file read one tensor at a time: mapped, each
//! tensor copied out when asked for and its pages let go at once, so that
//! reading a file larger than the process should hold (a model started
//! one shard unit at a time, a pipeline stage taking its own tensors)
//! never holds more than the tensor being read.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use tch::Tensor;

/// One tensor of the file: its element type, shape and bytes in the map.
struct Entry {
    dtype: Dtype,
    shape: Vec<i64>,
    bytes: Range<usize>,
}

/// An opened weights file: its header read, its tensors not.
pub struct WeightsFile {
    path: PathBuf,
    map: Mmap,
    entries: BTreeMap<String, Entry>,
}

impl WeightsFile {
    /// Opens and maps `path` and reads its header; the error says what is
    /// wrong, for the caller to name the file.
    pub fn open(path: &Path) -> Result<WeightsFile, String> {
        let opened = std::fs::File::open(path).map_err(|e| e.to_string())?;
        // SAFETY: read-only; a file changed underneath shows as other
        // values, not memory unsafety (every view is bounded by the header
        // checked against the map's length).
        let map = unsafe { Mmap::map(&opened) }.map_err(|e| e.to_string())?;
        let (header, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| format!("not a safetensors file ({e:?})"))?;
        let entries = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                let entry = Entry {
                    dtype: info.dtype,
                    shape: info.shape.iter().map(|&d| d as i64).collect(),
                    bytes: 8 + header + start..8 + header + end,
                };
                (name, entry)
            })
            .collect();
        Ok(WeightsFile {
            path: path.to_path_buf(),
            map,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name and shape, in name order.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[i64])> {
        self.entries
            .iter()
            .map(|(n, e)| (n.as_str(), e.shape.as_slice()))
    }

    /// Tensor `name` copied out of the file (`None` when it has no such
    /// tensor), its pages let go.
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>, String> {
        let Some(entry) = self.entries.get(name) else {
            return Ok(None);
        };
        let kind = kind_of(entry.dtype).map_err(|e| format!("`{name}`: {e}"))?;
        let bytes = &self.map[entry.bytes.clone()];
        let tensor = Tensor::f_from_data_size(bytes, &entry.shape, kind)
            .map_err(|e| format!("`{name}`: {e}"))?;
        release(&self.map, bytes);
        Ok(Some(tensor))
    }
}

/// The tensor kind of a file's element type.
pub fn kind_of(dtype: Dtype) -> Result<tch::Kind, String> {
    Ok(match dtype {
        Dtype::F32 => tch::Kind::Float,
        Dtype::F64 => tch::Kind::Double,
        Dtype::F16 => tch::Kind::Half,
        Dtype::BF16 => tch::Kind::BFloat16,
        Dtype::I64 => tch::Kind::Int64,
        Dtype::I32 => tch::Kind::Int,
        Dtype::I16 => tch::Kind::Int16,
        Dtype::I8 => tch::Kind::Int8,
        Dtype::U8 => tch::Kind::Uint8,
        Dtype::BOOL => tch::Kind::Bool,
        other => return Err(format!("element type {other:?} has no tensor kind here")),
    })
}

/// Unmaps the pages of `read`, a range of `map` that has been copied out.
/// They stay in the page cache, not in this process's resident memory:
/// reading every tensor of a large file would otherwise leave all of it
/// resident, one tensor at a time. Best effort: a failure leaves them
/// mapped.
pub fn release(map: &Mmap, read: &[u8]) {
    let offset = read.as_ptr() as usize - map.as_ptr() as usize;
    // SAFETY: a shared read-only file mapping: dropped pages read back
    // from the file, the same bytes (MADV_DONTNEED frees nothing of a
    // file's contents). No slice of these pages is used again without
    // reading the map anew.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, read.len())
    };
}
