//! Where a resumed run goes on from: the checkpoint (or the one before,
//! when the last is damaged) and `metrics.jsonl` cut back to it.

use std::path::Path;

use dtl_compiler::plan::{Plan, SyncMode};

use crate::checkpoint::{self, Loaded, State};
use crate::error::RunError;
use crate::output::{self, JsonLines};
use crate::world::World;

/// The checkpoint to go on from, saying so when the last one was damaged,
/// and when dropout will draw other masks than the run that wrote it.
/// Every rank calls it.
pub fn resume_from(
    plan: &Plan,
    out: &Path,
    fingerprint: &str,
    world: &World,
) -> Result<Loaded, RunError> {
    let loaded = chosen(plan, out, fingerprint, world)?;
    // DiLoCo: each group goes on from its own replica and inner state.
    let layout = &plan.topology.parallelism;
    match layout.sync {
        SyncMode::Diloco { .. } => {
            let g = world.place.replica / layout.group_size();
            loaded.for_group(g, layout.sync_groups())
        }
        _ => Ok(loaded),
    }
}

/// The checkpoint every rank goes on from, as rank 0 chose it.
fn chosen(plan: &Plan, out: &Path, fingerprint: &str, world: &World) -> Result<Loaded, RunError> {
    let files = &plan.data.files;
    if world.size == 1 {
        return said(plan, checkpoint::load(out, fingerprint, files)?);
    }
    // Rank 0 chooses the checkpoint, checking every file of it (a sharded
    // one's slices once, not on every rank); the others read the one it
    // chose, so that all go on from the same.
    let mine = (world.rank == 0).then(|| checkpoint::load(out, fingerprint, files));
    let chosen = mine
        .as_ref()
        .and_then(|r| r.as_ref().ok())
        .and_then(checkpoint::folder_of);
    let chosen = world.text_from_rank_zero(chosen.as_deref())?;
    match (mine, chosen) {
        (Some(loaded), _) => said(plan, loaded?),
        (None, Some(name)) => checkpoint::load_chosen(out, &name, fingerprint, files),
        (None, None) => Err(RunError::Resume {
            path: out.display().to_string(),
            message: "rank 0 found no checkpoint to go on from (its error says why)".into(),
        }),
    }
}

/// The warnings about the checkpoint `loaded` that rank 0 gives.
fn said(plan: &Plan, loaded: Loaded) -> Result<Loaded, RunError> {
    if let Some(why) = &loaded.fell_back {
        eprintln!(
            "warning: the last checkpoint cannot be used ({why}); resuming from the one before, of step {}",
            loaded.state.step
        );
    }
    let layout = &plan.topology.parallelism;
    let [data, pipeline] = loaded.state.layout;
    let dropout = plan
        .model
        .nodes
        .iter()
        .any(|n| matches!(n.op, dtl_compiler::plan::Op::Dropout { p } if p > 0.0));
    if dropout && [data, pipeline] != [layout.data, layout.pipeline] {
        eprintln!(
            "warning: the checkpoint was written by data {data} × pipeline {pipeline}, this run is data {} × pipeline {}: dropout draws its masks per replica and per pipeline piece, so from here on the losses differ from those of an uninterrupted run (everything else is the same computation)",
            layout.data, layout.pipeline
        );
    }
    Ok(loaded)
}

/// `metrics.jsonl`: new, or for a resumed run cut back to what was written
/// up to its checkpoint and continued. A log shorter than that, or cut
/// inside a line, was damaged: refused, with the way out. A missing one is
/// started afresh at the checkpoint's step, said.
pub fn open_metrics(out: &Path, resumed: Option<&State>) -> Result<JsonLines, RunError> {
    let path = out.join("metrics.jsonl");
    let Some(state) = resumed else {
        return JsonLines::create(&path);
    };
    let bytes = state.metrics_bytes;
    let held = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "warning: {} is missing: it starts afresh after step {}, the lines of the steps before are gone",
                path.display(),
                state.step
            );
            return JsonLines::create(&path);
        }
        Err(e) => return Err(output::io_err(&path, e)),
    };
    let refuse = |why: String| RunError::Resume {
        path: path.display().to_string(),
        message: format!(
            "{why}; restore it, or delete it to start the log afresh after step {}",
            state.step
        ),
    };
    if held < bytes {
        return Err(refuse(format!(
            "it holds {held} bytes, fewer than the {bytes} written up to the checkpoint of step {}: it was cut",
            state.step
        )));
    }
    if bytes > 0 && !ends_a_line(&path, bytes)? {
        return Err(refuse(format!(
            "byte {bytes}, where the checkpoint of step {} ended it, is not the end of a line: it was edited",
            state.step
        )));
    }
    output::truncate(&path, bytes)?;
    JsonLines::append(&path)
}

/// Whether the byte before `at` is a newline.
fn ends_a_line(path: &Path, at: u64) -> Result<bool, RunError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| output::io_err(path, e))?;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at - 1))
        .and_then(|_| file.read_exact(&mut byte))
        .map_err(|e| output::io_err(path, e))?;
    Ok(byte[0] == b'\n')
}
