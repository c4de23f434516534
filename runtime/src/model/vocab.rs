//! `tensor = T` by vocabulary: an `embedding` split by rows, and the output
//! layer's sharded scores turned into the loss without gathering them
//! (Megatron-LM's `vocab_parallel_cross_entropy`).
//!
//! - An embedding rank holds rows r·V/T …: it looks up the ids in its rows
//!   and gives zeros for the others; the parts are summed over the tensor
//!   group ([`TensorPart::finish`]), the gradient passes through to each
//!   rank's rows.
//! - The cross-entropy of a row from its scores z split over the ranks:
//!   with m the row's maximum (all-reduced), S = Σ exp(z − m), z_y the
//!   target's score and Σz (summed over the group in one all-reduce of
//!   three values a row), the loss is (1 − ε)(log S + m − z_y) + ε(log S +
//!   m − Σz / V) for label smoothing ε, as `F.cross_entropy` gives it. Its
//!   gradient on a rank's scores is softmax − (1 − ε)·onehot − ε / V,
//!   which the rank's own terms give with S held fixed: the loss returned
//!   has the true value and that gradient.

use dtl_compiler::plan::Loss;
use tch::{Kind, Tensor};

use super::tensor::TensorPart;
use super::Model;
use crate::comm::{Communicator, ReduceOp};
use crate::error::{RunError, TorchContext};
use crate::ops::Weights;

/// Labels that take no part in the loss (`F.cross_entropy`'s default).
const IGNORE_INDEX: i64 = -100;

impl TensorPart {
    /// Embedding node `j`, split by vocabulary, on ids `x`: this rank's
    /// rows looked up, zeros for ids outside them (summed over the group
    /// after). `None` for other nodes.
    pub(super) fn embedding(
        &self,
        j: usize,
        x: &Tensor,
        weight: &Tensor,
    ) -> Option<Result<Tensor, tch::TchError>> {
        let rows = *self.vocab.get(&j)?;
        Some((|| {
            let local = x.f_to_kind(Kind::Int64)?.f_sub_scalar(self.rank * rows)?;
            let mine = local.f_ge(0)?.f_logical_and(&local.f_lt(rows)?)?;
            let index = local.f_where_scalarother(&mine, 0)?;
            let y = Tensor::f_embedding(weight, &index, -1, false, false)?;
            y.f_mul(&mine.f_unsqueeze(-1)?.f_to_kind(y.kind())?)
        })())
    }

    /// Whether the model's result is sharded over the group (the output
    /// layer split by vocabulary): the loss is [`TensorPart::vocab_loss`].
    pub fn sharded_result(&self) -> bool {
        self.sharded_result
    }

    /// The mean cross-entropy (`label_smoothing` ε) of this rank's part
    /// `output` ([…, V/T]) of the scores against `target` (whole labels)
    /// in step `step`, every rank of the group calling it: two
    /// all-reduces, of one value a row and of three.
    pub fn vocab_loss(
        &self,
        label_smoothing: f64,
        (output, target): (&Tensor, &Tensor),
        group: &dyn Communicator,
        step: u64,
    ) -> Result<Tensor, RunError> {
        let ctx = || format!("step {step}: the cross-entropy of the scores split by vocabulary");
        let width = *output.size().last().unwrap_or(&1);
        let vocab = (width * self.size) as f64;
        let eps = label_smoothing;
        let z = output
            .f_reshape([-1, width])
            .and_then(|z| z.f_to_kind(Kind::Float))
            .context(ctx)?;
        let labels = target
            .f_reshape([-1])
            .and_then(|l| l.f_to_kind(Kind::Int64))
            .context(ctx)?;
        let mut max = z
            .f_detach()
            .and_then(|z| z.f_amax([1].as_slice(), false))
            .context(ctx)?;
        self.reduce(&mut max, (ReduceOp::Max, group), &ctx)?;
        let (own, valid) = (|| {
            let exp = z.f_sub(&max.f_unsqueeze(1)?)?.f_exp()?.f_sum_dim_intlist(
                [1].as_slice(),
                false,
                Kind::Float,
            )?;
            let local = labels.f_sub_scalar(self.rank * width)?;
            let valid = labels.f_ne(IGNORE_INDEX)?;
            let mine = local
                .f_ge(0)?
                .f_logical_and(&local.f_lt(width)?)?
                .f_logical_and(&valid)?;
            let index = local.f_where_scalarother(&mine, 0)?.f_unsqueeze(1)?;
            let target = z
                .f_gather(1, &index, false)?
                .f_squeeze_dim(1)?
                .f_mul(&mine.f_to_kind(Kind::Float)?)?;
            let scores = z.f_sum_dim_intlist([1].as_slice(), false, Kind::Float)?;
            Ok::<_, tch::TchError>(([exp, target, scores], valid.f_to_kind(Kind::Float)?))
        })()
        .context(ctx)?;
        let mut sums = Tensor::f_stack(&own, 1)
            .and_then(|t| t.f_detach())
            .map(|t| t.copy())
            .context(ctx)?;
        self.reduce(&mut sums, (ReduceOp::Sum, group), &ctx)?;
        (|| {
            let [exp, target, scores] = &own;
            let column = |k: i64| sums.f_select(1, k);
            let (total, target_total, scores_total) = (column(0)?, column(1)?, column(2)?);
            let count = valid.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
            let mean = |rows: Tensor| rows.f_mul(&valid)?.f_sum(Kind::Float)?.f_div(&count);
            // The value: log S + m − (1 − ε) z_y − ε Σz / V.
            let lse = total.f_log()?.f_add(&max)?;
            let value = mean(
                lse.f_sub(&target_total.f_mul_scalar(1.0 - eps)?)?
                    .f_sub(&scores_total.f_mul_scalar(eps / vocab)?)?,
            )?;
            // The gradient: this rank's terms, S held fixed.
            let surrogate = mean(
                exp.f_div(&total)?
                    .f_sub(&target.f_mul_scalar(1.0 - eps)?)?
                    .f_sub(&scores.f_mul_scalar(eps / vocab)?)?,
            )?;
            surrogate
                .f_sub(&surrogate.f_detach()?)?
                .f_add(&value)?
                .f_to_kind(output.kind())
        })()
        .context(ctx)
    }

    /// The whole scores from this rank's part of the model's sharded
    /// result (evaluation and metrics read them whole), gathered over the
    /// group: every rank of the group calls it.
    pub fn whole_result(&self, y: &Tensor, group: &dyn Communicator) -> Result<Tensor, RunError> {
        let ctx = || "gather the scores split by vocabulary".to_string();
        let comm = |e: crate::comm::CommError| RunError::Torch {
            context: ctx(),
            message: e.0,
        };
        let parts = self.gather(y, group, &ctx, &comm)?;
        Tensor::f_cat(&parts, -1).context(ctx)
    }
}

impl Model {
    /// The training loss of `output` against `target` in step `step`:
    /// from sharded scores over `tensor` where the output layer is split
    /// by vocabulary, else [`crate::loss::loss`]'s mean.
    pub fn loss(
        &self,
        kind: &Loss,
        (output, target): (&Tensor, &Tensor),
        tensor: Option<&dyn Communicator>,
        step: u64,
    ) -> Result<Tensor, RunError> {
        let ctx = || {
            format!(
                "step {step}: loss of output {:?} and targets {:?}",
                output.size(),
                target.size()
            )
        };
        match (self.tensor_part(), kind, tensor) {
            (Some(part), Loss::CrossEntropy { label_smoothing }, Some(group))
                if part.sharded_result() =>
            {
                part.vocab_loss(*label_smoothing, (output, target), group, step)
            }
            _ => crate::loss::loss(kind, output, target, tch::Reduction::Mean).context(ctx),
        }
    }

    /// The model's result whole: gathered over `tensor` where the output
    /// layer is split by vocabulary, else as it is.
    pub fn whole_result(
        &self,
        y: Tensor,
        tensor: Option<&dyn Communicator>,
    ) -> Result<Tensor, RunError> {
        match (self.tensor_part(), tensor) {
            (Some(part), Some(group)) if part.sharded_result() => part.whole_result(&y, group),
            _ => Ok(y),
        }
    }

    /// Embedding node `j`'s local lookup under `tensor = T`, if it is
    /// split by vocabulary.
    pub(super) fn vocab_embedding(
        &self,
        part: &TensorPart,
        j: usize,
        x: &Tensor,
    ) -> Option<Result<Tensor, tch::TchError>> {
        let dtl_compiler::plan::Op::Embedding { weight, .. } = &self.nodes[j].op else {
            return None;
        };
        part.embedding(j, x, &self.weight(weight))
    }
}
