//! Sharded checkpoints. Under `shard = optimizer | gradients | parameters`
//! the replicas of a shard group each hold one slice of every flat buffer
//! (a gradient bucket, or a ZeRO-3 unit): its optimizer state, and under
//! `shard = parameters` its values. At a checkpoint each replica of the
//! first shard group, in every stage, writes its own slices into a file of
//! its own, with a description of the buffers beside it; rank 0 merges
//! those into `state.json` ([`Shards`]: each buffer's parameters with
//! their shapes and offsets, each file's size and checksum). Nothing is
//! gathered on one rank.
//!
//! Reading goes by parameter, whatever the layout that reads:
//! [`ShardSet`] maps the files and assembles any range of a parameter's
//! values from the slices that hold it, so that a run resumes at another
//! degree or shard mode, each replica reading only what it keeps, and
//! `dtl export` streams the weights into one file.
//!
//! The run folder must be one every rank sees, as it already must for the
//! ranks' logs and for resuming.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::Named;
use crate::comm::ReduceOp;
use crate::error::{RunError, TorchContext};
use crate::output::{io_err, sync_file};
use crate::world::World;

/// The field of a buffer that holds its values (under `shard =
/// parameters`); the optimizer's slots are named as
/// [`crate::optim::SLOTS`].
pub const WEIGHTS: &str = "weights";

/// The shards of a checkpoint, as `state.json` lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shards {
    /// Slices per buffer: the replicas of a shard group.
    pub slices: u64,
    /// Every stage's buffers.
    pub buffers: Vec<Buffer>,
    /// One per stage and place in the shard group.
    pub files: Vec<ShardFile>,
}

/// A flat buffer: parameters laid end to end, cut into `slices` equal
/// slices (the last padded with zeros).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Buffer {
    pub stage: u64,
    /// Its tensors in the stage's files are `<index>.<field>`.
    pub index: u64,
    /// Values per slice.
    pub slice: u64,
    /// What the files hold of it: `weights` (under `shard = parameters`)
    /// and the optimizer's slots in use.
    pub fields: Vec<String>,
    pub params: Vec<BufferParam>,
}

/// A parameter in a buffer: its values are `offset..offset + numel`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BufferParam {
    pub name: String,
    pub shape: Vec<i64>,
    pub offset: u64,
}

impl BufferParam {
    pub fn values(&self) -> u64 {
        self.shape.iter().product::<i64>() as u64
    }
}

/// One replica's file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardFile {
    pub file: String,
    pub stage: u64,
    /// The replica's place in its shard group: the slice it holds.
    pub place: u64,
    pub bytes: u64,
    /// FNV-1a of the file.
    pub checksum: String,
}

/// What one replica writes: the buffers of its stage and its slice of
/// each, as `<index>.<field>` tensors.
pub struct OwnSlices {
    pub buffers: Vec<Buffer>,
    pub tensors: Named,
}

/// What a replica writes beside its file, for rank 0 to merge.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Described {
    file: ShardFile,
    buffers: Vec<Buffer>,
}

fn stem(stage: u64, place: u64) -> String {
    format!("shard-s{stage}-p{place}")
}

/// Writes one replica's slices into `dir` (the checkpoint being written),
/// flushed to the disk, with its description and checksum beside.
pub fn write_own(dir: &Path, (stage, place): (u64, u64), own: &OwnSlices) -> Result<(), RunError> {
    let name = format!("{}.safetensors", stem(stage, place));
    let path = dir.join(&name);
    let tensors: Named = own
        .tensors
        .iter()
        .map(|(n, t)| {
            t.f_detach()
                .and_then(|t| t.f_to_device(Device::Cpu))
                .map(|t| (n.clone(), t))
        })
        .collect::<Result<_, _>>()
        .context(|| format!("checkpoint: the slices of stage {stage}, place {place}"))?;
    Tensor::write_safetensors(&tensors, &path).context(|| format!("write {}", path.display()))?;
    sync_file(&path)?;
    let (bytes, checksum) = file_checksum(&path)?;
    let described = Described {
        file: ShardFile {
            file: name,
            stage,
            place,
            bytes,
            checksum,
        },
        buffers: own.buffers.clone(),
    };
    let json = dir.join(format!("{}.json", stem(stage, place)));
    let text = serde_json::to_string(&described).expect("a description serializes");
    std::fs::write(&json, text).map_err(|e| io_err(&json, e))?;
    sync_file(&json)
}

/// Every rank calls it: rank 0 makes the folder `dir` empty, then each
/// replica given a `place` (stage, place in the shard group) writes its
/// `own` slices there. Every rank learns whether all did: one that failed
/// returns its own error, the others name it.
pub fn write_all(
    world: &World,
    dir: &Path,
    place: Option<(u64, u64)>,
    own: &OwnSlices,
    step: u64,
) -> Result<(), RunError> {
    let ready = match world.rank {
        0 => super::empty_dir(dir),
        _ => Ok(()),
    };
    agree(world, ready, step, "ready the folder of the slices")?;
    let wrote = match place {
        Some(_) if crate::fault::at(world.rank, step) == Some(crate::fault::Kind::Slices) => {
            Err(RunError::Io {
                path: dir.display().to_string(),
                message: "no space left on device (DTL_FAULT=slices)".into(),
            })
        }
        Some(place) => write_own(dir, place, own),
        None => Ok(()),
    };
    agree(world, wrote, step, "write its slices")
}

/// `result` on this rank, after every rank has said whether its own is an
/// error: an error naming the ranks that failed where this one did not.
pub fn agree(
    world: &World,
    result: Result<(), RunError>,
    step: u64,
    what: &str,
) -> Result<(), RunError> {
    let mut failed = vec![0.0; world.size];
    failed[world.rank] = f64::from(u8::from(result.is_err()));
    world
        .all
        .all_reduce_host(&mut failed, ReduceOp::Sum)
        .map_err(|e| RunError::Collective { step, message: e.0 })?;
    result?;
    let ranks: Vec<String> = (0..world.size)
        .filter(|&r| failed[r] > 0.0)
        .map(|r| r.to_string())
        .collect();
    if ranks.is_empty() {
        return Ok(());
    }
    Err(RunError::Collective {
        step,
        message: format!(
            "rank {} could not {what} (its log in the run folder says why)",
            ranks.join(", ")
        ),
    })
}

/// Rank 0, once every replica has written: the descriptions of `stages`
/// stages × `slices` places in `dir` merged into one list (and removed).
pub fn collect(dir: &Path, stages: u64, slices: u64) -> Result<Shards, RunError> {
    let mut shards = Shards {
        slices,
        buffers: Vec::new(),
        files: Vec::new(),
    };
    for stage in 0..stages {
        for place in 0..slices {
            let path = dir.join(format!("{}.json", stem(stage, place)));
            let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
            let described: Described = serde_json::from_str(&text).map_err(|e| RunError::Io {
                path: path.display().to_string(),
                message: format!("not a shard description: {e}"),
            })?;
            if place == 0 {
                shards.buffers.extend(described.buffers);
            } else if described
                .buffers
                .iter()
                .ne(shards.buffers.iter().filter(|b| b.stage == stage))
            {
                return Err(RunError::Io {
                    path: path.display().to_string(),
                    message: format!(
                        "place {place} of stage {stage} describes other buffers than place 0"
                    ),
                });
            }
            shards.files.push(described.file);
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        }
    }
    Ok(shards)
}

/// A file's size and FNV-1a, read in chunks.
pub fn file_checksum(path: &Path) -> Result<(u64, String), RunError> {
    let (hash, bytes) = super::hash_file(dtl_compiler::util::rng::Fnv1a::new(), path)?;
    Ok((bytes, format!("{:016x}", hash.finish())))
}

/// The shard files of a checkpoint, mapped, checked against their
/// description: any range of a parameter's saved values reads from the
/// slices that hold it.
pub struct ShardSet {
    dir: PathBuf,
    shards: Shards,
    /// By stage and place.
    maps: BTreeMap<(u64, u64), Mmap>,
    /// By stage, place and tensor name: where it lies in the mapped file.
    slices: BTreeMap<(u64, u64, String), SliceAt>,
    /// By parameter name: its buffer and its place among the buffer's
    /// parameters.
    index: BTreeMap<String, (usize, usize)>,
}

/// A tensor in a mapped shard file: its element type, shape and bytes.
struct SliceAt {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

/// Values read back: their type and bytes.
pub struct Values {
    pub dtype: Dtype,
    pub bytes: Vec<u8>,
}

impl ShardSet {
    /// Opens the files `shards` lists in `dir`: each must have its size
    /// and, when `checksums` says so, its checksum, and hold a slice of
    /// every field of its stage's buffers, of one element type per buffer
    /// and field. The error says what is wrong, for the caller to name the
    /// checkpoint. (The checksums read every file whole: a resumed run's
    /// rank 0 checks them once, and the other ranks open what it chose.)
    pub fn open(dir: &Path, shards: &Shards, checksums: bool) -> Result<ShardSet, String> {
        let (mut maps, mut slices) = (BTreeMap::new(), BTreeMap::new());
        for file in &shards.files {
            let path = dir.join(&file.file);
            let (bytes, checksum) = if checksums {
                file_checksum(&path).map_err(|e| e.to_string())?
            } else {
                let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", file.file))?;
                (meta.len(), file.checksum.clone())
            };
            if (bytes, &checksum) != (file.bytes, &file.checksum) {
                return Err(format!(
                    "damaged: `{}` has {bytes} bytes and checksum {checksum}, state.json says {} and {}",
                    file.file, file.bytes, file.checksum
                ));
            }
            let opened = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", file.file))?;
            // SAFETY: read-only; a file changed underneath after its
            // checksum shows as other values, not as memory unsafety (the
            // safetensors reader bounds every view).
            let map = unsafe { Mmap::map(&opened) }.map_err(|e| format!("{}: {e}", file.file))?;
            let (header, metadata) = SafeTensors::read_metadata(&map)
                .map_err(|e| format!("{}: not a tensor file ({e:?})", file.file))?;
            for (name, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                let bytes = 8 + header + start..8 + header + end;
                let at = SliceAt {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes,
                };
                slices.insert((file.stage, file.place, name), at);
            }
            maps.insert((file.stage, file.place), map);
        }
        let mut index = BTreeMap::new();
        for (b, buffer) in shards.buffers.iter().enumerate() {
            for (p, param) in buffer.params.iter().enumerate() {
                if index.insert(param.name.clone(), (b, p)).is_some() {
                    return Err(format!("`{}` is in two buffers", param.name));
                }
            }
        }
        let set = ShardSet {
            dir: dir.to_path_buf(),
            shards: shards.clone(),
            maps,
            slices,
            index,
        };
        set.check_slices()?;
        Ok(set)
    }

    /// Every buffer's every field has one slice per place, of the
    /// buffer's slice length and one element type.
    fn check_slices(&self) -> Result<(), String> {
        for buffer in &self.shards.buffers {
            let end = buffer.params.last().map_or(0, |p| p.offset + p.values());
            if end > buffer.slice * self.shards.slices {
                return Err(format!(
                    "buffer {} of stage {} holds {end} values, more than its {} slices of {}",
                    buffer.index, buffer.stage, self.shards.slices, buffer.slice
                ));
            }
            for field in &buffer.fields {
                let mut dtype = None;
                for place in 0..self.shards.slices {
                    let (_, got, len) = self.slice_of(buffer, field, place)?;
                    if len != buffer.slice as usize || dtype.is_some_and(|d| d != got) {
                        return Err(format!(
                            "the slice `{}.{field}` of stage {}, place {place} is not {} values of one type",
                            buffer.index, buffer.stage, buffer.slice
                        ));
                    }
                    dtype = Some(got);
                }
            }
        }
        Ok(())
    }

    /// The bytes of a place's slice of a buffer's field, its type and its
    /// length in values.
    fn slice_of(
        &self,
        buffer: &Buffer,
        field: &str,
        place: u64,
    ) -> Result<(&[u8], Dtype, usize), String> {
        let name = format!("{}.{field}", buffer.index);
        let (map, at) = self
            .maps
            .get(&(buffer.stage, place))
            .zip(self.slices.get(&(buffer.stage, place, name.clone())))
            .ok_or_else(|| format!("stage {}, place {place}: no slice `{name}`", buffer.stage))?;
        if at.shape.len() != 1 {
            return Err(format!(
                "stage {}, place {place}: slice `{name}` is not flat",
                buffer.stage
            ));
        }
        Ok((&map[at.bytes.clone()], at.dtype, at.shape[0]))
    }

    /// The parameters saved with `field` (their values, under `shard =
    /// parameters`), in buffer order.
    pub fn params_with<'a>(&'a self, field: &'a str) -> impl Iterator<Item = &'a BufferParam> {
        self.shards
            .buffers
            .iter()
            .filter(move |b| b.fields.iter().any(|f| f == field))
            .flat_map(|b| &b.params)
    }

    /// The element type of parameter `name`'s saved `field`.
    pub fn dtype(&self, name: &str, field: &str) -> Option<Dtype> {
        let &(b, _) = self.index.get(name)?;
        let buffer = &self.shards.buffers[b];
        self.slice_of(buffer, field, 0)
            .ok()
            .map(|(_, dtype, _)| dtype)
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Values `range` of parameter `name`'s `field` (flattened), read from
    /// the slices that hold them; `None` when the checkpoint has no such
    /// parameter or field.
    pub fn read(
        &self,
        name: &str,
        field: &str,
        range: Range<u64>,
    ) -> Result<Option<Values>, String> {
        let Some(&(b, p)) = self.index.get(name) else {
            return Ok(None);
        };
        let buffer = &self.shards.buffers[b];
        if !buffer.fields.iter().any(|f| f == field) {
            return Ok(None);
        }
        let param = &buffer.params[p];
        if range.end > param.values() {
            return Err(format!(
                "values {}..{} of `{name}`, which has {}",
                range.start,
                range.end,
                param.values()
            ));
        }
        let (from, to) = (param.offset + range.start, param.offset + range.end);
        let slice = buffer.slice;
        let mut bytes = Vec::new();
        let mut dtype = Dtype::F32;
        if from < to {
            for place in from / slice..=(to - 1) / slice {
                let (data, got, _) = self.slice_of(buffer, field, place)?;
                let size = got.size();
                let start = from.max(place * slice) - place * slice;
                let end = to.min((place + 1) * slice) - place * slice;
                let read = &data[start as usize * size..end as usize * size];
                bytes.extend_from_slice(read);
                self.let_go((buffer.stage, place), read);
                dtype = got;
            }
        }
        Ok(Some(Values { dtype, bytes }))
    }

    /// Lets go of the pages of `read`, a range of the mapped file of
    /// (stage, place) that has been copied out: reading every shard of a
    /// model (writing `model.safetensors` at the end of a sharded run, or
    /// a resume) would otherwise leave the whole model resident, one
    /// tensor at a time.
    fn let_go(&self, at: (u64, u64), read: &[u8]) {
        if let Some(map) = self.maps.get(&at) {
            crate::model::file::release(map, read);
        }
    }

    /// A parameter's whole saved `field` as a tensor of its shape.
    pub fn tensor(&self, name: &str, field: &str) -> Result<Option<Tensor>, String> {
        let Some(&(b, p)) = self.index.get(name) else {
            return Ok(None);
        };
        let param = &self.shards.buffers[b].params[p];
        let Some(values) = self.read(name, field, 0..param.values())? else {
            return Ok(None);
        };
        to_tensor(&values, &param.shape).map(Some)
    }
}

/// Bytes of a tensor file's element type as a tensor of `shape`.
pub fn to_tensor(values: &Values, shape: &[i64]) -> Result<Tensor, String> {
    let kind = crate::model::file::kind_of(values.dtype)?;
    Tensor::f_from_data_size(&values.bytes, shape, kind).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, shape: &[i64], offset: u64) -> BufferParam {
        BufferParam {
            name: name.into(),
            shape: shape.to_vec(),
            offset,
        }
    }

    /// Two replicas' slices of one buffer of a [2, 3] and a [4] tensor (10
    /// values, slices of 5) read back whole and in ranges that cross the
    /// slices' edge.
    #[test]
    fn values_read_back_across_slices() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let buffer = Buffer {
            stage: 0,
            index: 0,
            slice: 5,
            fields: vec![WEIGHTS.into()],
            params: vec![param("a", &[2, 3], 0), param("b", &[4], 6)],
        };
        for place in 0..2u64 {
            let slice = Tensor::from_slice(&values[place as usize * 5..][..5]);
            let own = OwnSlices {
                buffers: vec![buffer.clone()],
                tensors: vec![(format!("0.{WEIGHTS}"), slice)],
            };
            write_own(dir.path(), (0, place), &own).unwrap();
        }
        let shards = collect(dir.path(), 1, 2).unwrap();
        assert_eq!(shards.files.len(), 2);
        let set = ShardSet::open(dir.path(), &shards, true).unwrap();
        let a = set.tensor("a", WEIGHTS).unwrap().unwrap();
        assert_eq!(a.size(), [2, 3]);
        assert_eq!(Vec::<f32>::try_from(a.view([-1])).unwrap(), values[..6]);
        let b = set.read("b", WEIGHTS, 1..3).unwrap().unwrap();
        let b = to_tensor(&b, &[2]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [7.0, 8.0]);
        let crossing = set.read("a", WEIGHTS, 4..6).unwrap().unwrap();
        assert_eq!(crossing.bytes.len(), 8);
        assert!(set.read("a", "first", 0..1).unwrap().is_none());
        assert!(set.read("c", WEIGHTS, 0..1).unwrap().is_none());
        assert!(set.read("b", WEIGHTS, 0..5).is_err());
        // A damaged file is named.
        let path = dir.path().join(&shards.files[1].file);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = ShardSet::open(dir.path(), &shards, true).err().unwrap();
        assert!(err.contains("shard-s0-p1.safetensors"), "{err}");
    }
}
