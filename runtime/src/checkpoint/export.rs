//! `dtl export`: a checkpoint's weights as one safetensors file, named as
//! the model names them (the PyTorch twin's `state_dict` names), written
//! tensor by tensor: the unsharded ones straight from the mapped
//! `model.safetensors`, a sharded run's parameters assembled from the
//! replicas' slices one at a time. The whole model is never in memory,
//! and the file appears whole or not at all.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::View;
use safetensors::{Dtype, SafeTensors};

use super::shards::{ShardSet, WEIGHTS};
use super::{first_usable, verified};
use crate::error::RunError;
use crate::output::{io_err, replace_atomically};

/// What was exported.
#[derive(Debug)]
pub struct Exported {
    /// The checkpoint read, and its step.
    pub from: PathBuf,
    pub step: u64,
    pub tensors: usize,
    /// Of which assembled from a sharded run's slices.
    pub from_shards: usize,
    /// Why the last checkpoint of a run folder could not be used, when
    /// this is the one before it.
    pub fell_back: Option<String>,
}

/// A tensor to write: mapped bytes, or a parameter read from its slices
/// when written.
enum Source<'a> {
    Mapped {
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: &'a [u8],
    },
    Sharded {
        set: &'a ShardSet,
        name: String,
        dtype: Dtype,
        shape: Vec<usize>,
    },
}

impl View for Source<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Source::Mapped { dtype, .. } | Source::Sharded { dtype, .. } => *dtype,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Source::Mapped { shape, .. } | Source::Sharded { shape, .. } => shape,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Source::Mapped { bytes, .. } => Cow::Borrowed(*bytes),
            Source::Sharded { set, name, .. } => {
                let values = self.shape().iter().product::<usize>() as u64;
                let read = set
                    .read(name, WEIGHTS, 0..values)
                    // `ShardSet::open` checked every slice it reads.
                    .expect("the slices were checked when opened")
                    .expect("listed with its weights");
                Cow::Owned(read.bytes)
            }
        }
    }

    fn data_len(&self) -> usize {
        self.shape().iter().product::<usize>() * self.dtype().size()
    }
}

/// Writes the weights of the checkpoint `from` (a checkpoint folder, or a
/// run folder: its last usable checkpoint) into `to`.
pub fn export(from: &Path, to: &Path) -> Result<Exported, RunError> {
    let (dir, fell_back) = checkpoint_of(from)?;
    let (state, shards) = verified(&dir)?;
    let (tensors, from_shards) = merge(&dir.join("model.safetensors"), shards.as_ref(), to)?;
    Ok(Exported {
        from: dir,
        step: state.step,
        tensors,
        from_shards,
        fell_back,
    })
}

/// Writes into `to` the tensors of the file `unsharded` and the weights
/// `shards` holds, one tensor at a time: how many, and how many of them
/// from the shards.
pub fn merge(
    unsharded: &Path,
    shards: Option<&ShardSet>,
    to: &Path,
) -> Result<(usize, usize), RunError> {
    let bad = |message: String| RunError::Weights {
        path: unsharded.display().to_string(),
        message,
    };
    let file = std::fs::File::open(unsharded).map_err(|e| io_err(unsharded, e))?;
    // SAFETY: read-only, and checked (by a checksum, or just written);
    // a file changed underneath shows as other values.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(unsharded, e))?;
    let (header, metadata) =
        SafeTensors::read_metadata(&map).map_err(|e| bad(format!("not a tensor file ({e:?})")))?;
    let mut sources: Vec<(String, Source)> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (start, end) = info.data_offsets;
            let source = Source::Mapped {
                dtype: info.dtype,
                shape: info.shape.clone(),
                bytes: &map[8 + header + start..8 + header + end],
            };
            (name, source)
        })
        .collect();
    let unsharded_count = sources.len();
    if let Some(set) = shards {
        for param in set.params_with(WEIGHTS) {
            if sources.iter().any(|(n, _)| *n == param.name) {
                return Err(bad(format!(
                    "`{}` is both here and in the shards",
                    param.name
                )));
            }
            let dtype = set
                .dtype(&param.name, WEIGHTS)
                .ok_or_else(|| bad(format!("no slices of `{}`", param.name)))?;
            let shape = param.shape.iter().map(|&d| d as usize).collect();
            let source = Source::Sharded {
                set,
                name: param.name.clone(),
                dtype,
                shape,
            };
            sources.push((param.name.clone(), source));
        }
    }
    let tensors = sources.len();
    replace_atomically(to, |tmp| {
        safetensors::serialize_to_file(sources, &None, tmp).map_err(|e| RunError::Io {
            path: tmp.display().to_string(),
            message: format!("{e:?}"),
        })
    })?;
    Ok((tensors, tensors - unsharded_count))
}

/// `from` when it is a checkpoint folder; a run folder's `checkpoint/`, or
/// when that one does not read whole, `checkpoint.prev/` with the reason.
fn checkpoint_of(from: &Path) -> Result<(PathBuf, Option<String>), RunError> {
    if from.join("state.json").is_file() {
        return Ok((from.to_path_buf(), None));
    }
    first_usable(
        from,
        |dir| verified(dir).map(|_| dir.to_path_buf()),
        |_| false,
        "neither a checkpoint folder nor a run folder with a checkpoint",
    )
}
