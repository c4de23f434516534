//! The training objective and the evaluation measures: cross-entropy over
//! every predicted label (one per row, or one per token of a text window)
//! and mean squared error over every target value.

use dtl_compiler::plan::Loss;
use tch::{Kind, Reduction, Tensor};

/// The loss of `output` against `target` (`Mean` for training, `Sum` to add
/// up over evaluation chunks).
pub fn loss(
    kind: &Loss,
    output: &Tensor,
    target: &Tensor,
    reduction: Reduction,
) -> Result<Tensor, tch::TchError> {
    match kind {
        Loss::CrossEntropy { label_smoothing } => {
            // [B, ..., C] scores against [B, ...] labels: every position is a
            // sample, as F.cross_entropy(out.view(-1, C), y.view(-1)).
            let classes = *output.size().last().unwrap_or(&1);
            output
                .f_reshape([-1, classes])?
                .f_cross_entropy_loss::<Tensor>(
                    &target.f_reshape([-1])?,
                    None,
                    reduction,
                    -100,
                    *label_smoothing,
                )
        }
        Loss::Mse => output.f_mse_loss(target, reduction),
    }
}

/// How many labels the scores get right (cross-entropy only).
pub fn correct(
    kind: &Loss,
    output: &Tensor,
    target: &Tensor,
) -> Result<Option<i64>, tch::TchError> {
    match kind {
        Loss::CrossEntropy { .. } => output
            .f_argmax(-1, false)?
            .f_eq_tensor(target)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])
            .map(Some),
        Loss::Mse => Ok(None),
    }
}
