//! A safetensors file written one tensor at a time: the header (every
//! name, type and shape) first, then each tensor's bytes as its turn
//! comes, so the writer never holds more than the tensor it is writing.
//! What a rank writes of a model it holds only a part of (tensor
//! parallelism, pipeline stages) goes through here: each tensor is made
//! whole, written and let go. The file is written under a temporary name,
//! flushed and renamed into place: it appears whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorInfo;
use safetensors::Dtype;
use tch::{Device, Kind, Tensor};

use crate::error::{RunError, TorchContext};
use crate::output::{io_err, rename_into_place, temp_path};

/// A tensor the file will hold, before its values are there.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub name: String,
    pub kind: Kind,
    pub shape: Vec<i64>,
}

impl Described {
    /// `t`'s name, type and shape.
    pub fn of(name: &str, t: &Tensor) -> Described {
        Described {
            name: name.to_string(),
            kind: t.kind(),
            shape: t.size(),
        }
    }
}

/// A tensor described now and made when its turn comes (made whole by a
/// collective, every rank of the group in the same order).
pub struct Lazy<'a> {
    pub described: Described,
    make: Box<dyn FnOnce() -> Result<Tensor, RunError> + 'a>,
}

impl<'a> Lazy<'a> {
    pub fn new(
        described: Described,
        make: impl FnOnce() -> Result<Tensor, RunError> + 'a,
    ) -> Lazy<'a> {
        Lazy {
            described,
            make: Box::new(make),
        }
    }

    /// A tensor already there.
    pub fn ready(name: String, t: Tensor) -> Lazy<'a> {
        let described = Described::of(&name, &t);
        Lazy::new(described, move || Ok(t))
    }

    /// The tensor, made.
    pub fn make(self) -> Result<Tensor, RunError> {
        (self.make)()
    }
}

/// Values copied out of a tensor at a time: the copy a write needs is at
/// most this many bytes, not the tensor's.
const CHUNK: i64 = 1 << 20;

/// A safetensors file being written, tensor by tensor in the order it was
/// described. Dropped before [`TensorFile::finish`], it leaves nothing.
pub struct TensorFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    described: Vec<Described>,
    /// Where each described tensor's bytes start in the file.
    starts: Vec<u64>,
    written: usize,
}

impl TensorFile {
    /// Starts `path` with the header of `described`. The tensors lie in
    /// the file by their element's size, largest first (as safetensors
    /// lays them out: each tensor aligned to its element), and come to
    /// [`TensorFile::put`] in the order described.
    pub fn create(path: &Path, described: Vec<Described>) -> Result<TensorFile, RunError> {
        let bad = |message: String| RunError::Weights {
            path: path.display().to_string(),
            message,
        };
        let mut dtypes = Vec::with_capacity(described.len());
        for d in &described {
            let dtype = dtype_of(d.kind)
                .ok_or_else(|| bad(format!("`{}` is {:?}: no safetensors type", d.name, d.kind)))?;
            dtypes.push(dtype);
        }
        let mut order: Vec<usize> = (0..described.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(dtypes[i].size()));
        let mut header = serde_json::Map::new();
        let mut offsets = vec![0usize; described.len()];
        let mut offset = 0usize;
        for i in order {
            let d = &described[i];
            let shape: Vec<usize> = d.shape.iter().map(|&s| s.max(0) as usize).collect();
            let bytes = shape.iter().product::<usize>() * dtypes[i].size();
            let info = TensorInfo {
                dtype: dtypes[i],
                shape,
                data_offsets: (offset, offset + bytes),
            };
            offsets[i] = offset;
            offset += bytes;
            let info = serde_json::to_value(info).expect("tensor infos serialize");
            if header.insert(d.name.clone(), info).is_some() {
                return Err(bad(format!("`{}` is described twice", d.name)));
            }
        }
        let mut header = serde_json::to_vec(&header).expect("the header serializes");
        // The data starts 8-byte aligned, as safetensors writes it.
        header.resize(header.len().next_multiple_of(8), b' ');
        let tmp = temp_path(path);
        let file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|()| out.write_all(&header))
            .map_err(|e| io_err(&tmp, e))?;
        let data = 8 + header.len() as u64;
        Ok(TensorFile {
            path: path.to_path_buf(),
            tmp,
            out: Some(out),
            described,
            starts: offsets.into_iter().map(|o| data + o as u64).collect(),
            written: 0,
        })
    }

    /// The next described tensor, which `t` must be (its type and shape).
    pub fn put(&mut self, t: &Tensor) -> Result<(), RunError> {
        let Some(d) = self.described.get(self.written) else {
            return Err(self.bad("more tensors than described".into()));
        };
        if t.kind() != d.kind || t.size() != d.shape {
            return Err(self.bad(format!(
                "`{}` was described as {:?} {:?} but is {:?} {:?}",
                d.name,
                d.kind,
                d.shape,
                t.kind(),
                t.size()
            )));
        }
        let ctx = || format!("write `{}`", d.name);
        let flat = t.f_detach().and_then(|t| t.f_reshape([-1])).context(ctx)?;
        let (numel, size) = (flat.numel() as i64, d.kind.elt_size_in_bytes());
        let out = self.out.as_mut().expect("open until finished");
        out.seek(SeekFrom::Start(self.starts[self.written]))
            .map_err(|e| io_err(&self.tmp, e))?;
        let mut bytes = Vec::new();
        let mut start = 0;
        while start < numel {
            let n = CHUNK.min(numel - start);
            let chunk = flat
                .f_narrow(0, start, n)
                .and_then(|c| c.f_to_device(Device::Cpu))
                .and_then(|c| c.f_contiguous())
                .context(ctx)?;
            bytes.resize(n as usize * size, 0);
            chunk.f_copy_data_u8(&mut bytes, n as usize).context(ctx)?;
            let out = self.out.as_mut().expect("open until finished");
            out.write_all(&bytes).map_err(|e| io_err(&self.tmp, e))?;
            start += n;
        }
        self.written += 1;
        Ok(())
    }

    /// Every described tensor written: the file flushed to the disk and
    /// renamed into place.
    pub fn finish(mut self) -> Result<(), RunError> {
        if self.written != self.described.len() {
            let missing = &self.described[self.written].name;
            return Err(self.bad(format!("finished before `{missing}` was written")));
        }
        let out = self.out.take().expect("open until finished");
        let done = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .map_err(|e| io_err(&self.tmp, e))
            .and_then(|()| rename_into_place(&self.tmp, &self.path));
        if done.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        done
    }

    fn bad(&self, message: String) -> RunError {
        RunError::Weights {
            path: self.path.display().to_string(),
            message,
        }
    }
}

impl Drop for TensorFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The safetensors type of a tensor kind.
fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written tensor by tensor, the file reads back as tch writes it: the
    /// same tensors, of several types, one larger than a chunk.
    #[test]
    fn a_file_written_tensor_by_tensor_reads_back() {
        let dir = std::env::temp_dir().join(format!("dtl-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let tensors = [
            (
                "big",
                Tensor::arange(CHUNK * 2 + 3, (Kind::Float, Device::Cpu)).reshape([-1, 1]),
            ),
            ("ids", Tensor::from_slice(&[3i64, -1, 7])),
            (
                "half",
                Tensor::from_slice(&[0.5f32, 2.0]).to_kind(Kind::BFloat16),
            ),
            ("scalar", Tensor::from(4.0f64)),
            (
                "t",
                Tensor::ones([2, 3], (Kind::Float, Device::Cpu)).transpose(0, 1),
            ),
        ];
        let described = tensors.iter().map(|(n, t)| Described::of(n, t)).collect();
        let mut file = TensorFile::create(&path, described).unwrap();
        for (_, t) in &tensors {
            file.put(t).unwrap();
        }
        file.finish().unwrap();
        let read = Tensor::read_safetensors(&path).unwrap();
        assert_eq!(read.len(), tensors.len());
        for (name, t) in &tensors {
            let (_, back) = read.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(back.kind(), t.kind(), "{name}");
            assert_eq!(back.size(), t.size(), "{name}");
            assert!(back.equal(t), "{name}");
        }
        // Each tensor's bytes lie aligned to its element, largest first.
        let bytes = std::fs::read(&path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        for (name, t) in &tensors {
            let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
            assert_eq!(
                (8 + len + start) % t.kind().elt_size_in_bytes(),
                0,
                "{name}"
            );
        }
        assert_eq!(header["ids"]["data_offsets"][0], 0);
        assert!(!dir.join("t.safetensors.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A tensor other than described is refused, and a file dropped
    /// unfinished leaves neither itself nor its temp file.
    #[test]
    fn a_wrong_or_unfinished_file_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("dtl-tensor-file-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        let described = vec![Described::of("a", &a), Described::of("b", &a)];
        let mut file = TensorFile::create(&path, described).unwrap();
        let err = file.put(&a.to_kind(Kind::Double)).unwrap_err().to_string();
        assert!(err.contains("`a` was described as Float"), "{err}");
        file.put(&a).unwrap();
        let err = file.finish().unwrap_err().to_string();
        assert!(err.contains("finished before `b`"), "{err}");
        assert!(!path.exists() && !dir.join("t.safetensors.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
