//! Checkpoints: everything a run needs to go on as if it had never stopped
//! — weights and buffers, optimizer state, the data stream's position, the
//! step, the length of `metrics.jsonl` at that step, and under `async` the
//! averaged gradients still waiting to be applied. (Dropout draws are
//! seeded per step, so there is no generator state to keep.)
//!
//! A checkpoint names tensors by parameter, whatever the layout that wrote
//! it. Under `shard = …` the optimizer state (and under `shard =
//! parameters` the weights) stays in each replica's slices, one file per
//! replica ([`shards`]); everything else is unsharded. The data stream's
//! position is the global one
//! (every replica's is the same), so a run can resume at another
//! data-parallel degree as long as each step reads the same rows
//! (`data × micro_batch` unchanged); the fingerprint checks exactly that.
//!
//! A checkpoint is a folder written whole under a temporary name, flushed to
//! the disk, and then swapped in by renames, the previous one kept as
//! `checkpoint.prev`: a crash at any moment leaves a whole checkpoint, and
//! a checksum over its files tells a damaged one, which resuming skips for
//! the one before.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dtl_compiler::plan::{DataFile, DataPlan, ModelPlan, Plan, SyncMode, TrainPlan};
use dtl_compiler::util::rng::Fnv1a;
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub mod export;
pub mod groups;
pub mod shards;

use crate::data::Cursor;
use crate::error::{RunError, TorchContext};
use crate::model::file::WeightsFile;
use crate::output::{sync_dir, sync_file};
use crate::watch::Watch;

/// Named tensors, in the order they are written.
pub type Named = Vec<(String, Tensor)>;

/// What rank 0 lists in a checkpoint's `state.json`, once every rank has
/// written its files into the checkpoint being written ([`being_written`]):
/// `model.safetensors` (the weights and buffers) and `state.safetensors`
/// (the optimizer state, the `ema` average as `ema.<name>`, DiLoCo's
/// θ_global and outer momentum as `outer.…`, the data's order, the `async`
/// updates waiting as `pending.<i>.<bucket>`), written by rank 0 one
/// tensor at a time.
pub struct Snapshot {
    pub optimizer_steps: u64,
    pub cursor: Cursor,
    /// The steps of the `async` updates waiting.
    pub pending_steps: Vec<u64>,
    /// `precision = fp16`: the loss scale and its steps without overflow.
    pub loss_scale: Option<crate::loss_scale::LossScale>,
    /// Sharded: the replicas have written their slices, for so many stages
    /// and places; the checkpoint's own files hold the rest.
    pub shards: Option<[u64; 2]>,
    /// DiLoCo: the groups, every one but the first having written its
    /// folder ([`groups`]).
    pub groups: Option<u64>,
}

/// The driver's side of a checkpoint: where the run stands.
pub struct Standing {
    /// The data files of the plan.
    pub data_files: Vec<DataFile>,
    /// Data-parallel replicas and pipeline stages.
    pub layout: [u64; 2],
    /// The last step completed.
    pub step: u64,
    /// Bytes of `metrics.jsonl` written up to `step`.
    pub metrics_bytes: u64,
    pub first_loss: f64,
    pub skipped_steps: u64,
    pub train_seconds: f64,
    pub plan_fingerprint: String,
    pub watch: Watch,
}

const DIR: &str = "checkpoint";
/// The prefix of the average's tensors in `state.safetensors`.
pub const EMA: &str = "ema.";
const TMP: &str = "checkpoint.tmp";
/// The checkpoint before the last: what a resumed run falls back to when
/// the last one is damaged.
const PREV: &str = "checkpoint.prev";
/// The checkpoint layout this runtime writes (3: a checksum over its
/// files, the previous checkpoint kept; 4: the checksum covers state.json's
/// values too; 5: sharded state in one file per replica; 6: DiLoCo's
/// groups' folders).
pub const FORMAT: u32 = 6;
/// The layouts it reads: 4 is 5 without shards, 5 is 6 without groups.
const READS: [u32; 3] = [4, 5, 6];

/// `state.json`: the scalars of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// The last step completed.
    pub step: u64,
    pub optimizer_steps: u64,
    pub data_pos: u64,
    pub data_epoch: u64,
    pub data_rng: u64,
    /// Bytes of `metrics.jsonl` written up to `step`.
    pub metrics_bytes: u64,
    pub first_loss: f64,
    pub skipped_steps: u64,
    pub train_seconds: f64,
    /// Identifies what the checkpoint can be resumed with (see
    /// [`fingerprint`]).
    pub plan_fingerprint: String,
    /// `async`: the steps whose averaged gradients are saved, waiting to be
    /// applied (oldest first), as `pending.<i>.<bucket>` tensors.
    pub pending_steps: Vec<u64>,
    /// The data files the run was trained on (their size and sampled
    /// hash): a resume on other data is refused, naming the file.
    pub data_files: Vec<DataFile>,
    /// The layout that wrote it: data-parallel replicas and pipeline
    /// stages.
    pub layout: [u64; 2],
    /// `keep_best` and `stop_early`'s standing.
    #[serde(default)]
    pub watch: Watch,
    /// `precision = fp16`: the loss scale, and the steps in a row since it
    /// last changed or a step overflowed.
    #[serde(default)]
    pub loss_scale: Option<f64>,
    #[serde(default)]
    pub loss_scale_tracker: u64,
    /// The replicas' files of a sharded run, with what they hold (their
    /// checksums are part of this state's values).
    #[serde(default)]
    pub shards: Option<shards::Shards>,
    /// DiLoCo: the folders of the groups but the first, with what they
    /// hold (their checksums are part of this state's values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<groups::GroupFiles>,
    /// FNV-1a of `model.safetensors`, `state.safetensors` and this
    /// state's own values (written with an empty checksum), in that order:
    /// a torn, damaged or edited checkpoint does not match.
    #[serde(default)]
    pub checksum: String,
}

/// A checkpoint read back.
pub struct Loaded {
    pub state: State,
    pub cursor: Cursor,
    pub model_path: PathBuf,
    pub optimizer: BTreeMap<String, Tensor>,
    /// `async` updates waiting: the step and its buckets' averaged gradients.
    pub pending: Vec<(u64, Vec<Tensor>)>,
    /// `ema`: the average of the weights, by tensor name (empty without).
    pub ema: BTreeMap<String, Tensor>,
    /// Why the last checkpoint could not be used, when this is the one
    /// before it.
    pub fell_back: Option<String>,
    /// A sharded run's slices.
    pub shards: Option<shards::ShardSet>,
    /// DiLoCo: θ_global and the outer momentum, by their names in
    /// `state.safetensors` less the `outer.` (empty without).
    pub outer: BTreeMap<String, Tensor>,
}

impl Loaded {
    /// The saved optimizer state, wherever it is kept.
    pub fn optimizer_state(&self) -> SavedState<'_> {
        SavedState {
            whole: &self.optimizer,
            shards: self.shards.as_ref(),
            tensor: None,
        }
    }

    /// The saved weights and buffers by name: `model.safetensors`, and
    /// under `shard = parameters` the parameters from their slices, but
    /// for those named in `later` (read one at a time as their shard unit
    /// is laid out: [`Loaded::later_weight`]). `model.safetensors` is read
    /// a tensor at a time.
    pub fn model_weights(&self, later: &BTreeSet<String>) -> Result<SavedWeights, RunError> {
        let path = &self.model_path;
        let err = |message: String| RunError::Resume {
            path: path.display().to_string(),
            message,
        };
        let file = WeightsFile::open(path).map_err(err)?;
        let mut now = BTreeMap::new();
        for (name, _) in file.shapes().filter(|(n, _)| !later.contains(*n)) {
            let tensor = file.tensor(name).map_err(err)?.expect("listed");
            now.insert(name.to_string(), tensor);
        }
        if let Some(set) = &self.shards {
            let from_shards = set
                .params_with(shards::WEIGHTS)
                .filter(|p| !later.contains(&p.name));
            for param in from_shards {
                let tensor = set
                    .tensor(&param.name, shards::WEIGHTS)
                    .map_err(err)?
                    .expect("listed with its weights");
                if now.insert(param.name.clone(), tensor).is_some() {
                    return Err(err(format!(
                        "`{}` is both in model.safetensors and in the shards",
                        param.name
                    )));
                }
            }
        }
        Ok(SavedWeights { now, file })
    }

    /// The saved weights of parameter `name`, one that [`Loaded::model_weights`]
    /// left for later: from `model.safetensors` (a checkpoint whose weights
    /// are whole), else from the replicas' slices; `None` when neither
    /// holds them.
    pub fn later_weight(
        &self,
        saved: &SavedWeights,
        name: &str,
    ) -> Result<Option<Tensor>, RunError> {
        let err = |message: String| RunError::Resume {
            path: self.model_path.display().to_string(),
            message,
        };
        if let Some(tensor) = saved.file.tensor(name).map_err(err)? {
            return Ok(Some(tensor));
        }
        let Some(set) = &self.shards else {
            return Ok(None);
        };
        set.tensor(name, shards::WEIGHTS).map_err(err)
    }
}

/// A checkpoint's weights as [`Loaded::model_weights`] reads them: those
/// read now, and `model.safetensors` open for the rest.
pub struct SavedWeights {
    pub now: BTreeMap<String, Tensor>,
    file: WeightsFile,
}

/// A checkpoint's optimizer state, by parameter and slot: in
/// `state.safetensors`, or in the replicas' slices.
pub struct SavedState<'a> {
    whole: &'a BTreeMap<String, Tensor>,
    shards: Option<&'a shards::ShardSet>,
    /// Under `tensor = T`: this rank's part of each split parameter's state.
    tensor: Option<&'a crate::model::TensorPart>,
}

impl<'a> SavedState<'a> {
    /// The state this tensor rank holds (`part`: its part of the model):
    /// its part of each split parameter's.
    pub fn for_tensor(self, part: Option<&'a crate::model::TensorPart>) -> SavedState<'a> {
        SavedState {
            tensor: part,
            ..self
        }
    }

    /// Parameter `param`'s saved `slot` (`first`, `second`), whole (this
    /// tensor rank's part of it).
    pub fn get(&self, param: &str, slot: &str) -> Result<Option<Tensor>, RunError> {
        let key = format!("{param}.{slot}");
        if let Some(t) = self.whole.get(&key) {
            return match self.tensor {
                Some(part) => part.local(param, t.shallow_clone()).map(Some),
                None => Ok(Some(t.shallow_clone())),
            };
        }
        let Some(set) = self.shards else {
            return Ok(None);
        };
        let saved = set.tensor(param, slot).map_err(|e| shard_err(set, e))?;
        match (saved, self.tensor) {
            (Some(t), Some(part)) => part.local(param, t).map(Some),
            (saved, _) => Ok(saved),
        }
    }

    /// Values `offset..offset + len` of parameter `param`'s saved `slot`,
    /// flat, in memory of their own: only those are read.
    pub fn get_range(
        &self,
        param: &str,
        slot: &str,
        (offset, len): (i64, i64),
    ) -> Result<Option<Tensor>, RunError> {
        let key = format!("{param}.{slot}");
        // Under `tensor`, of this rank's part, which the file holds whole.
        let localized = match self.tensor {
            Some(_) => self.get(param, slot)?,
            None => self.whole.get(&key).map(Tensor::shallow_clone),
        };
        if let Some(t) = localized {
            let part = t
                .f_reshape([-1])
                .and_then(|t| t.f_narrow(0, offset, len))
                .and_then(|t| t.f_contiguous())
                .map(|t| t.copy())
                .context(|| format!("restore `{key}`"))?;
            return Ok(Some(part));
        }
        let Some(set) = self.shards else {
            return Ok(None);
        };
        let range = offset as u64..(offset + len) as u64;
        match set
            .read(param, slot, range)
            .map_err(|e| shard_err(set, e))?
        {
            Some(values) => shards::to_tensor(&values, &[len])
                .map(Some)
                .map_err(|e| shard_err(set, e)),
            None => Ok(None),
        }
    }
}

fn shard_err(set: &shards::ShardSet, message: String) -> RunError {
    RunError::Resume {
        path: set.dir().display().to_string(),
        message,
    }
}

/// What a checkpoint must match to be resumed: the model, the data, the
/// training settings and the synchronisation, with the layout taken out —
/// `micro_batch` counts the rows of a global micro-batch (data ×
/// micro_batch), and the degrees, stages and step program are left out. A
/// stable hash (FNV-1a, 64 bits) of that.
pub fn fingerprint(plan: &Plan) -> String {
    #[derive(Serialize)]
    struct Identity<'a> {
        model: &'a ModelPlan,
        data: DataPlan,
        train: TrainPlan,
        sync: SyncMode,
    }
    let mut train = plan.train.clone();
    train.micro_batch = plan.topology.sharding.global_micro_batch;
    // The data by its contents, not where it lies: the files' identities
    // are compared apart (by name, in `load`), and a run may be resumed
    // from another folder.
    let mut data = plan.data.clone();
    for source in data.sources_mut() {
        source.files_mut().into_iter().for_each(String::clear);
    }
    data.files.clear();
    let identity = Identity {
        model: &plan.model,
        data,
        train,
        sync: plan.topology.parallelism.sync,
    };
    let text = serde_json::to_string(&identity).expect("a plan serializes");
    format!("{:016x}", dtl_compiler::util::rng::fnv1a(text.as_bytes()))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |e| RunError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Finishes the checkpoint written into `out/checkpoint.tmp` (its files
/// are there, [`Snapshot`]) with its `state.json`, and makes it
/// `out/checkpoint`; the last one becomes `checkpoint.prev`. Every file is
/// written whole and flushed to the disk (file and folder) before a rename
/// makes it current: a crash at any moment leaves at least one whole
/// checkpoint.
pub fn save(out: &Path, standing: &Standing, snapshot: &Snapshot) -> Result<(), RunError> {
    let tmp = out.join(TMP);
    let shards = match snapshot.shards {
        Some([stages, slices]) => Some(shards::collect(&tmp, stages, slices)?),
        None => None,
    };
    let groups = match snapshot.groups {
        Some(groups) => groups::collect(&tmp, groups)?,
        None => Vec::new(),
    };
    let cursor = &snapshot.cursor;
    let state = State {
        format: FORMAT,
        step: standing.step,
        optimizer_steps: snapshot.optimizer_steps,
        data_pos: cursor.pos as u64,
        data_epoch: cursor.epoch,
        data_rng: cursor.rng,
        metrics_bytes: standing.metrics_bytes,
        first_loss: standing.first_loss,
        skipped_steps: standing.skipped_steps,
        train_seconds: standing.train_seconds,
        plan_fingerprint: standing.plan_fingerprint.clone(),
        pending_steps: snapshot.pending_steps.clone(),
        data_files: standing.data_files.clone(),
        layout: standing.layout,
        watch: standing.watch.clone(),
        loss_scale: snapshot.loss_scale.map(|s| s.scale),
        loss_scale_tracker: snapshot.loss_scale.map_or(0, |s| s.tracker),
        shards,
        groups,
        checksum: String::new(),
    };
    let state = State {
        checksum: checksum(&tmp, &state)?,
        ..state
    };
    let json = serde_json::to_string_pretty(&state).expect("the state serializes");
    let json_path = tmp.join("state.json");
    std::fs::write(&json_path, json).map_err(io(&json_path))?;
    sync_file(&json_path)?;
    sync_dir(&tmp)?;
    // checkpoint → checkpoint.prev, checkpoint.tmp → checkpoint.
    let (dir, prev) = (out.join(DIR), out.join(PREV));
    if dir.join("state.json").is_file() {
        if prev.exists() {
            std::fs::remove_dir_all(&prev).map_err(io(&prev))?;
        }
        std::fs::rename(&dir, &prev).map_err(io(&dir))?;
        crate::fault::pause_in_checkpoint(crate::fault::Kind::PauseSwap, standing.step);
    } else if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    sync_dir(out)
}

/// Makes `dir` an empty folder, whatever was there.
pub fn empty_dir(dir: &Path) -> Result<(), RunError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// Where the checkpoint being written is: the replicas write their slices
/// there before rank 0 completes it.
pub fn being_written(out: &Path) -> PathBuf {
    out.join(TMP)
}

/// The checksum of a checkpoint: its two tensor files, read in chunks,
/// then `state`'s values with the checksum left empty.
fn checksum(dir: &Path, state: &State) -> Result<String, RunError> {
    let mut hash = Fnv1a::new();
    for name in ["model.safetensors", "state.safetensors"] {
        (hash, _) = hash_file(hash, &dir.join(name))?;
    }
    let unsigned = State {
        checksum: String::new(),
        ..state.clone()
    };
    let values = serde_json::to_string(&unsigned).expect("the state serializes");
    Ok(format!("{:016x}", hash.update(values.as_bytes()).finish()))
}

/// `hash` fed with the file at `path`, read in chunks, and the file's
/// length.
fn hash_file(mut hash: Fnv1a, path: &Path) -> Result<(Fnv1a, u64), RunError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut chunk).map_err(io(path))?;
        if n == 0 {
            return Ok((hash, bytes));
        }
        bytes += n as u64;
        hash = hash.update(&chunk[..n]);
    }
}

/// The step of the checkpoint a resume would start from, if one reads
/// (for messages; `load` decides).
pub fn peek_step(out: &Path) -> Option<u64> {
    [DIR, PREV].iter().find_map(|d| {
        let text = std::fs::read_to_string(out.join(d).join("state.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
    })
}

/// Whether the run in `out` has a checkpoint to resume from (an error
/// saying there is none).
pub fn exists(out: &Path) -> Result<(), RunError> {
    let found = [DIR, PREV]
        .iter()
        .any(|d| out.join(d).join("state.json").is_file());
    if found {
        Ok(())
    } else {
        Err(RunError::Resume {
            path: out.display().to_string(),
            message: "no checkpoint here (is `checkpoint_every` set in the train block?)".into(),
        })
    }
}

/// Reads the checkpoint of the run in `out`: `checkpoint/`, or when that
/// one is missing, torn or damaged (its checksum does not match),
/// `checkpoint.prev/`, saying why.
pub fn load(out: &Path, fingerprint: &str, data: &[DataFile]) -> Result<Loaded, RunError> {
    let (mut loaded, fell_back) = first_usable(
        out,
        |dir| load_dir(dir, fingerprint, data, true),
        // Another experiment is not a damaged checkpoint: say so.
        is_mismatch,
        "no checkpoint here (is `checkpoint_every` set in the train block?)",
    )?;
    loaded.fell_back = fell_back;
    Ok(loaded)
}

/// `read` of the run's `checkpoint/`, or when that one is missing or its
/// read fails, of `checkpoint.prev/`, with why the last one could not be
/// used. An error `fatal` accepts is returned at once; with no checkpoint
/// at all, the error says `none`.
fn first_usable<T>(
    out: &Path,
    mut read: impl FnMut(&Path) -> Result<T, RunError>,
    fatal: impl Fn(&RunError) -> bool,
    none: &str,
) -> Result<(T, Option<String>), RunError> {
    let mut reasons = Vec::new();
    for name in [DIR, PREV] {
        let dir = out.join(name);
        if !dir.join("state.json").is_file() {
            continue;
        }
        match read(&dir) {
            Ok(value) => return Ok((value, (!reasons.is_empty()).then(|| reasons.join("; ")))),
            Err(err) if fatal(&err) => return Err(err),
            Err(err) => reasons.push(err.to_string()),
        }
    }
    Err(RunError::Resume {
        path: out.display().to_string(),
        message: if reasons.is_empty() {
            none.to_string()
        } else {
            format!("no usable checkpoint: {}", reasons.join("; "))
        },
    })
}

/// The checkpoint folder `name` of the run in `out` that another rank
/// chose with [`load`] (its slices' checksums checked there): read and
/// checked as `load` does, but for the slices' checksums.
pub fn load_chosen(
    out: &Path,
    name: &str,
    fingerprint: &str,
    data: &[DataFile],
) -> Result<Loaded, RunError> {
    if ![DIR, PREV].contains(&name) {
        return Err(RunError::Resume {
            path: out.display().to_string(),
            message: format!("rank 0 chose `{name}`, which is not a checkpoint folder"),
        });
    }
    load_dir(&out.join(name), fingerprint, data, false)
}

/// The name of the checkpoint folder `loaded` was read from.
pub fn folder_of(loaded: &Loaded) -> Option<String> {
    let dir = loaded.model_path.parent()?.file_name()?;
    Some(dir.to_string_lossy().into_owned())
}

fn is_mismatch(err: &RunError) -> bool {
    matches!(err, RunError::Resume { message, .. } if message.starts_with("the checkpoint belongs to another experiment"))
}

fn load_dir(
    dir: &Path,
    fingerprint: &str,
    data: &[DataFile],
    checksums: bool,
) -> Result<Loaded, RunError> {
    let dir = dir.to_path_buf();
    let bad = |message: String| RunError::Resume {
        path: dir.display().to_string(),
        message,
    };
    let (state, shards) = read_checked(&dir, checksums)?;
    let trained = state.data_files.iter().zip(data);
    if let Some((then, now)) = trained
        .clone()
        .find(|(a, b)| (a.bytes, &a.sample_hash) != (b.bytes, &b.sample_hash))
    {
        return Err(bad(format!(
            "the checkpoint belongs to another experiment: the data file `{}` is not the one it was trained on ({} bytes then, {} now{})",
            now.path,
            then.bytes,
            now.bytes,
            if then.bytes == now.bytes { ", other contents" } else { "" }
        )));
    }
    if state.plan_fingerprint != fingerprint {
        return Err(bad(
            "the checkpoint belongs to another experiment: the model, the data, the training settings, the rows per step (data × micro_batch) or the sync mode differ"
                .into(),
        ));
    }
    let tensors = Tensor::read_safetensors(dir.join("state.safetensors"))
        .map_err(|e| bad(format!("state.safetensors: {e}")))?;
    let mut optimizer: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    let order = optimizer
        .remove("data.order")
        .ok_or_else(|| bad("state.safetensors has no `data.order`".into()))?;
    let order = Vec::<i64>::try_from(&order).map_err(|e| bad(format!("data.order: {e}")))?;
    let rows = order.len() as u64;
    if (rows > 0 && state.data_pos > rows) || state.data_epoch == 0 {
        return Err(bad(format!(
            "damaged: its data position (row {} of {rows}, epoch {}) cannot be",
            state.data_pos, state.data_epoch
        )));
    }
    let ema = take_prefixed(&mut optimizer, EMA);
    let outer = take_prefixed(&mut optimizer, groups::OUTER);
    let mut pending = Vec::new();
    for (i, step) in state.pending_steps.iter().enumerate() {
        let prefix = format!("pending.{i}.");
        let mut flats: Vec<(usize, Tensor)> = Vec::new();
        let keys: Vec<String> = optimizer
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for key in keys {
            let b: usize = key[prefix.len()..]
                .parse()
                .map_err(|_| bad(format!("state.safetensors: bad tensor name `{key}`")))?;
            let tensor = optimizer.remove(&key).expect("listed");
            flats.push((b, tensor));
        }
        flats.sort_by_key(|(b, _)| *b);
        pending.push((*step, flats.into_iter().map(|(_, t)| t).collect()));
    }
    Ok(Loaded {
        pending,
        ema,
        outer,
        fell_back: None,
        cursor: Cursor {
            order: Arc::new(order),
            pos: state.data_pos as usize,
            epoch: state.data_epoch,
            rng: state.data_rng,
        },
        model_path: dir.join("model.safetensors"),
        optimizer,
        state,
        shards,
    })
}

/// A checkpoint folder's state, read and checked whole: its format, its
/// files' and values' checksum, and a sharded run's files (mapped).
pub fn verified(dir: &Path) -> Result<(State, Option<shards::ShardSet>), RunError> {
    read_checked(dir, true)
}

/// [`verified`], the slices' checksums checked when `checksums` says so.
fn read_checked(
    dir: &Path,
    checksums: bool,
) -> Result<(State, Option<shards::ShardSet>), RunError> {
    let bad = |message: String| RunError::Resume {
        path: dir.display().to_string(),
        message,
    };
    let json_path = dir.join("state.json");
    let text = std::fs::read_to_string(&json_path).map_err(io(&json_path))?;
    let state: State = serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
    if !READS.contains(&state.format) {
        return Err(bad(format!(
            "checkpoint format {} (this dtl reads {READS:?})",
            state.format
        )));
    }
    let found = checksum(dir, &state).map_err(|e| bad(e.to_string()))?;
    if state.checksum != found {
        return Err(bad(format!(
            "damaged: its files' and values' checksum is {found}, state.json says {}",
            state.checksum
        )));
    }
    let shards = match &state.shards {
        Some(listed) => Some(shards::ShardSet::open(dir, listed, checksums).map_err(bad)?),
        None => None,
    };
    if checksums {
        groups::verify(dir, &state.groups).map_err(bad)?;
    }
    Ok((state, shards))
}

/// The tensors of `map` whose names start with `prefix`, taken out of it,
/// by their names less the prefix.
fn take_prefixed(map: &mut BTreeMap<String, Tensor>, prefix: &str) -> BTreeMap<String, Tensor> {
    let names: Vec<String> = map
        .keys()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect();
    names
        .into_iter()
        .map(|k| {
            let t = map.remove(&k).expect("listed");
            (k[prefix.len()..].to_string(), t)
        })
        .collect()
}
