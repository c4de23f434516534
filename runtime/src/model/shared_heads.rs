//! `tensor = T` with fewer key/value heads than tensor ranks (TinyLlama's
//! 4 at T = 8): each rank holds the key/value head its query heads read,
//! shared with T / kv − 1 other ranks (Megatron-LM's layout). Each rank's
//! gradient of that head is its own query heads' part: once a step the
//! parts are summed over the tensor group, and the global norm counts a
//! shared head once.

use tch::Tensor;

use super::tensor::{Cut, TensorPart};
use super::Model;
use crate::comm::{Communicator, ReduceOp};
use crate::error::{RunError, TorchContext};
use crate::ops::Weights;

/// An attention whose key/value heads are fewer than the tensor ranks:
/// each rank holds the head its query heads read, shared with the other
/// ranks that read it, whose gradient is a partial sum on each.
#[derive(Debug)]
pub(super) struct SharedHeads {
    pub node: usize,
    /// `in_proj_weight` and `in_proj_bias`: this rank's query rows, then
    /// its key head's rows, then its value head's.
    pub tensors: Vec<String>,
    pub query_rows: i64,
    pub head_dim: i64,
    pub kv_heads: i64,
}

impl TensorPart {
    /// What of parameter `name`'s gradient this rank counts in the global
    /// norm: all of it, but a shared key/value head's rows on every rank
    /// but the first that holds it (the others hold the same values).
    pub fn counted(&self, name: &str, grad: Tensor) -> Result<Tensor, tch::TchError> {
        match self
            .shared
            .iter()
            .find(|s| s.tensors.iter().any(|t| t == name))
        {
            Some(s) if !Cut::first_holder(s.kv_heads, self.rank, self.size) => {
                grad.f_narrow(0, 0, s.query_rows)
            }
            _ => Ok(grad),
        }
    }

    /// How many of the leading values of parameter `name` (of `shape`),
    /// flattened, this rank counts in the global norm: [`Self::counted`]'s
    /// rows, for a gradient held in flat slices (`shard = gradients`).
    pub fn counted_values(&self, name: &str, shape: &[i64]) -> i64 {
        let row: i64 = shape.iter().skip(1).product();
        match self
            .shared
            .iter()
            .find(|s| s.tensors.iter().any(|t| t == name))
        {
            Some(s) if !Cut::first_holder(s.kv_heads, self.rank, self.size) => s.query_rows * row,
            _ => shape.iter().product(),
        }
    }

    /// Sums over the group, once a step, the gradients of the key/value
    /// heads several ranks share (each rank's is its query heads' part):
    /// every rank puts its head's rows in its place among all the heads,
    /// the sum gives each head's total, and each keeps its own. Every rank
    /// of the group calls it, after the step's backward passes.
    pub fn sum_shared_gradients(
        &self,
        model: &Model,
        group: &dyn Communicator,
    ) -> Result<(), RunError> {
        for shared in &self.shared {
            let ctx = || {
                format!(
                    "sum the shared key/value heads' gradients of `{}` over the tensor group",
                    model.nodes[shared.node].name
                )
            };
            let head = Cut::first_kv_head(shared.kv_heads, self.rank, self.size);
            let rows = shared.head_dim;
            for name in &shared.tensors {
                // A pipeline stage holds its own layers' tensors only.
                if !model.index.contains_key(name.as_str()) {
                    continue;
                }
                let grad = model.weight(name).grad();
                if !grad.defined() {
                    continue;
                }
                let own = grad.f_narrow(0, shared.query_rows, 2 * rows).context(ctx)?;
                // [2 (key, value), kv_heads, head_dim, …]
                let mut shape = vec![2, shared.kv_heads, rows];
                shape.extend_from_slice(&own.size()[1..]);
                let mut all =
                    Tensor::f_zeros(shape.as_slice(), (own.kind(), own.device())).context(ctx)?;
                let mut own_shape = shape.clone();
                own_shape[1] = 1;
                all.f_narrow(1, head, 1)
                    .and_then(|mut slot| slot.f_copy_(&own.f_reshape(own_shape.as_slice())?))
                    .context(ctx)?;
                self.reduce(&mut all, (ReduceOp::Sum, group), &ctx)?;
                let total = all
                    .f_narrow(1, head, 1)
                    .and_then(|t| t.f_reshape(own.size().as_slice()))
                    .context(ctx)?;
                tch::no_grad(|| own.shallow_clone().f_copy_(&total)).context(ctx)?;
            }
        }
        Ok(())
    }
}
