//! DiLoCo's checkpoints. Between two outer steps every sync group trains
//! a replica of its own, with an inner optimizer state (and an `ema`
//! average) of its own, which a resumed run needs back. The first group's
//! are the checkpoint's own files, so that `model.safetensors` is a model
//! like any other; every other group's leading rank writes its own into a
//! folder `group-<g>/` of the checkpoint being written, with
//! `model.safetensors` and `state.safetensors` laid out as the
//! checkpoint's. θ_global, the outer momentum and a change still on the
//! wire are the same on every rank: rank 0 writes them into
//! `state.safetensors` as `outer.global.<name>`, `outer.momentum.<name>`
//! and `outer.landing.<name>`. `state.json` lists
//! every group's files with their sizes and checksums, so that its own
//! checksum covers them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{shards::file_checksum, Loaded};
use crate::error::RunError;

/// The prefix of θ_global's and the outer momentum's tensors in
/// `state.safetensors`.
pub const OUTER: &str = "outer.";

/// One group's folder, as `state.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupFiles {
    pub group: u64,
    pub model: FileSum,
    pub state: FileSum,
}

/// A file's size and FNV-1a.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    pub bytes: u64,
    pub checksum: String,
}

/// Group `g`'s folder in the checkpoint folder `dir`.
pub fn folder(dir: &Path, g: u64) -> PathBuf {
    dir.join(format!("group-{g}"))
}

/// Rank 0, once every group has written: the folders of groups 1 … `groups`
/// − 1 in `dir`, described.
pub fn collect(dir: &Path, groups: u64) -> Result<Vec<GroupFiles>, RunError> {
    (1..groups)
        .map(|g| {
            let sum = |name: &str| {
                file_checksum(&folder(dir, g).join(name))
                    .map(|(bytes, checksum)| FileSum { bytes, checksum })
            };
            Ok(GroupFiles {
                group: g,
                model: sum("model.safetensors")?,
                state: sum("state.safetensors")?,
            })
        })
        .collect()
}

/// Whether the groups' files in the checkpoint folder `dir` are those
/// `listed`: the error names the first that is not.
pub fn verify(dir: &Path, listed: &[GroupFiles]) -> Result<(), String> {
    for files in listed {
        for (name, sum) in [
            ("model.safetensors", &files.model),
            ("state.safetensors", &files.state),
        ] {
            let path = folder(dir, files.group).join(name);
            let (bytes, checksum) = file_checksum(&path).map_err(|e| e.to_string())?;
            if (bytes, &checksum) != (sum.bytes, &sum.checksum) {
                return Err(format!(
                    "damaged: {} has {bytes} bytes of checksum {checksum}, state.json says {} bytes of {}",
                    path.display(),
                    sum.bytes,
                    sum.checksum
                ));
            }
        }
    }
    Ok(())
}

impl Loaded {
    /// The checkpoint as sync group `g` of `groups` resumes it: its own
    /// replica, inner optimizer state and `ema` average (the first
    /// group's are the checkpoint's own files).
    pub fn for_group(mut self, g: u64, groups: u64) -> Result<Loaded, RunError> {
        let dir = self
            .model_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let bad = |message: String| RunError::Resume {
            path: dir.display().to_string(),
            message,
        };
        let written = self.state.groups.len() as u64 + 1;
        if written != groups {
            return Err(bad(format!(
                "the checkpoint holds the state of {written} DiLoCo group(s), this run has {groups}: each group's replica and inner optimizer state are its own, so the number of groups must stay (the replicas in each may change)"
            )));
        }
        if g == 0 {
            return Ok(self);
        }
        let folder = folder(&dir, g);
        let state = folder.join("state.safetensors");
        let tensors = Tensor::read_safetensors(&state)
            .map_err(|e| bad(format!("{}: {e}", state.display())))?;
        let mut optimizer: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        self.ema = super::take_prefixed(&mut optimizer, super::EMA);
        self.optimizer = optimizer;
        // The replicas' slices are the first group's state.
        self.shards = None;
        self.model_path = folder.join("model.safetensors");
        Ok(self)
    }
}
