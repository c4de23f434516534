//! The training objective: cross-entropy and
//! the negative log-likelihood over every predicted label (one per row, or
//! one per token of a text window); the mean squared error, binary
//! cross-entropy on logits, the smooth L1 and the Huber loss over every
//! target value — each as `torch.nn.functional` computes it.

use dtl_compiler::plan::Loss;
use tch::{Reduction, Tensor};

/// The loss of `output` against `target` (`Mean` for training, `Sum` to add
/// up over evaluation chunks).
pub fn loss(
    kind: &Loss,
    output: &Tensor,
    target: &Tensor,
    reduction: Reduction,
) -> Result<Tensor, tch::TchError> {
    // [B, ..., C] scores against [B, ...] labels: every position is a
    // sample, as F.cross_entropy(out.view(-1, C), y.view(-1)).
    let classes = *output.size().last().unwrap_or(&1);
    let per_position = || -> Result<(Tensor, Tensor), tch::TchError> {
        Ok((output.f_reshape([-1, classes])?, target.f_reshape([-1])?))
    };
    match kind {
        Loss::CrossEntropy { label_smoothing } => {
            let (scores, labels) = per_position()?;
            scores.f_cross_entropy_loss::<Tensor>(&labels, None, reduction, -100, *label_smoothing)
        }
        Loss::Nll => {
            let (log_probabilities, labels) = per_position()?;
            log_probabilities.f_nll_loss::<Tensor>(&labels, None, reduction, -100)
        }
        Loss::Mse => output.f_mse_loss(target, reduction),
        Loss::BinaryCrossEntropy { pos_weight } => {
            // One factor for every output, or one per output (the last
            // dimension), broadcast as BCEWithLogitsLoss broadcasts it.
            let pos_weight = pos_weight
                .as_deref()
                .map(|w| {
                    Tensor::f_from_slice(w)?
                        .f_to_kind(output.kind())?
                        .f_to_device(output.device())
                })
                .transpose()?;
            output.f_binary_cross_entropy_with_logits(target, None, pos_weight.as_ref(), reduction)
        }
        Loss::SmoothL1 { beta } => output.f_smooth_l1_loss(target, reduction, *beta),
        Loss::Huber { delta } => output.f_huber_loss(target, reduction, *delta),
    }
}
