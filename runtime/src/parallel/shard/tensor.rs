//! `shard = optimizer` and `shard = gradients` under `tensor = T`: the
//! replicas of each tensor rank (at its stage) shard the optimizer state of
//! that rank's part of the model. The buckets are of its own parameters,
//! split ones as it holds them, and its shard group is those replicas, so
//! the slicing, the update and the all-gather are sharding's alone. Two
//! things differ:
//! - the clipping norm from ZeRO-2's slices: a value of a split parameter
//!   is one of the tensor group's parts and is summed over it, a value of
//!   a whole one is held alike by every tensor rank and counted once
//!   ([`Updater::slice_norm_shares`]);
//! - a checkpoint: the state is gathered over the shard group and written
//!   whole, as an unsharded tensor-parallel run writes it
//!   ([`Updater::gathered_state`]; only the replica whose rank writes it
//!   keeps it), so a run resumes at any degree or shard mode; each tensor
//!   rank's slice files are not written yet.

use tch::Tensor;

use super::{collective, Piece, Updater};
use dtl_compiler::plan::NormType;

use crate::clip::norm_share;
use crate::comm::{Communicator, ReduceOp};
use crate::error::{RunError, TorchContext};
use crate::optim::SLOTS;

impl Updater {
    /// `shard = gradients` under `tensor`: this replica's shares of the
    /// global norm ([`norm_share`]) from its gradient slices, as
    /// `[split, whole]`: the values of parameters cut over the tensor group
    /// and of whole ones. `counted(name, param)` says how many leading
    /// values of a cut parameter this rank counts (`None`: the parameter is
    /// whole). `None` when the gradients are not sliced.
    pub fn slice_norm_shares(
        &self,
        params: &[(String, Tensor)],
        counted: impl Fn(&str, &Tensor) -> Option<i64>,
        norm_type: NormType,
    ) -> Result<Option<[f64; 2]>, RunError> {
        let Updater::Sharded(s) = self else {
            return Ok(None);
        };
        if s.grads.is_empty() {
            return Ok(None);
        }
        let (mut split, mut whole) = (Vec::new(), Vec::new());
        for piece in &s.pieces {
            let (name, param) = &params[piece.param];
            let ctx = || format!("the gradient norm of `{name}`: its slice");
            let grads = &s.grads[piece.bucket];
            match counted(name, param) {
                None => whole.push(grads.f_narrow(0, piece.at, piece.len).context(ctx)?),
                Some(values) => {
                    // The piece's values that lie among the counted ones.
                    let end = (piece.offset + piece.len).min(values);
                    if end > piece.offset {
                        let len = end - piece.offset;
                        split.push(grads.f_narrow(0, piece.at, len).context(ctx)?);
                    }
                }
            }
        }
        Ok(Some([
            norm_share(split, norm_type)?,
            norm_share(whole, norm_type)?,
        ]))
    }

    /// For a checkpoint written whole: each parameter's optimizer state,
    /// by name as [`Updater::state`] gives it, gathered over the shard
    /// group `comm` (a collective over it: the slots in use are agreed
    /// on); `None` when the optimizer is whole. Only a rank that `keep`s it
    /// (the one whose files hold it) holds the whole state: the others let
    /// each bucket go once gathered, and get an empty list.
    pub fn gathered_state(
        &self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        keep: bool,
        step: u64,
    ) -> Result<Option<Vec<(String, Tensor)>>, RunError> {
        let Updater::Sharded(s) = self else {
            return Ok(None);
        };
        let mut used = s.inner.slots_in_use().map(|u| f64::from(u8::from(u)));
        comm.all_reduce_host(&mut used, ReduceOp::Max)
            .map_err(collective(step))?;
        let mut out = Vec::new();
        for (b, bucket) in s.buckets.iter().enumerate() {
            let Some(&first) = bucket.params.first() else {
                continue;
            };
            let like = &params[first].1;
            for (slot, name) in SLOTS.iter().enumerate().filter(|(i, _)| used[*i] > 0.0) {
                let states = |i: usize, piece: &Piece| match s.inner.slot(i, slot) {
                    Some(t) => t.f_reshape([-1]),
                    None => like.f_new_zeros([piece.len], (like.kind(), like.device())),
                };
                let whole = [s.buckets[b].slice * comm.size() as i64];
                let mut flat = like
                    .f_new_zeros(whole, (like.kind(), like.device()))
                    .context(|| format!("step {step}: shard of bucket {b}"))?;
                s.gather_bucket(b, states, like, comm, step, &mut flat)?;
                if !keep {
                    continue;
                }
                let mut at = 0;
                for &i in &bucket.params {
                    let (param, t) = &params[i];
                    let n = t.numel() as i64;
                    let value = flat
                        .f_narrow(0, at, n)
                        .and_then(|v| v.f_reshape(t.size()))
                        .context(|| format!("step {step}: the `{name}` state of `{param}`"))?;
                    out.push((format!("{param}.{name}"), value));
                    at += n;
                }
            }
        }
        Ok(Some(out))
    }
}
