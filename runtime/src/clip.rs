//! Gradient clipping with the semantics of PyTorch's `clip_grad_norm_` and
//! `clip_grad_value_`, over gradient tensors (each parameter's `.grad()`,
//! or a replica's slices under `shard = gradients`; undefined ones are
//! left out).

use dtl_compiler::plan::NormType;
use tch::Tensor;

use crate::error::{InPlace, RunError, TorchContext};

/// The global p-norm of all gradients: the p-norm of the per-tensor p-norms
/// (for `inf`, the largest absolute value).
pub fn grad_norm(
    grads: impl IntoIterator<Item = Tensor>,
    norm_type: NormType,
) -> Result<f64, RunError> {
    tch::no_grad(|| {
        let ctx = || "gradient norm".to_string();
        let mut norms = Vec::new();
        for grad in grads {
            if !grad.defined() {
                continue;
            }
            let flat = grad.f_flatten(0, -1).context(ctx)?;
            norms.push(match norm_type {
                NormType::Inf => flat.f_abs().and_then(|a| a.f_max()).context(ctx)?,
                NormType::P(p) => flat
                    .f_linalg_norm(p, None::<&[i64]>, false, None)
                    .context(ctx)?,
            });
        }
        if norms.is_empty() {
            return Ok(0.0);
        }
        let stacked = Tensor::f_stack(&norms, 0).context(ctx)?;
        let total = match norm_type {
            NormType::Inf => stacked.f_max().context(ctx)?,
            NormType::P(p) => stacked
                .f_linalg_norm(p, None::<&[i64]>, false, None)
                .context(ctx)?,
        };
        total.f_double_value(&[]).context(ctx)
    })
}

/// This rank's share of a global norm held by several ranks (pipeline
/// stages): Σ ‖g‖ₚᵖ over its gradients (for `inf`, the largest |g|). The
/// ranks' shares add up (or take the largest), and [`norm_of_shares`]
/// turns the total into the norm.
pub fn norm_share(
    grads: impl IntoIterator<Item = Tensor>,
    norm_type: NormType,
) -> Result<f64, RunError> {
    let norm = grad_norm(grads, norm_type)?;
    Ok(match norm_type {
        NormType::Inf => norm,
        NormType::P(p) => norm.powf(p),
    })
}

/// The global norm from the ranks' [`norm_share`]s, combined.
pub fn norm_of_shares(combined: f64, norm_type: NormType) -> f64 {
    match norm_type {
        NormType::Inf => combined,
        NormType::P(p) => combined.powf(1.0 / p),
    }
}

/// Scales all gradients by min(1, max_norm / (norm + 1e-6)) and returns the
/// norm before clipping.
pub fn clip_grad_norm(
    grads: &[Tensor],
    max_norm: f64,
    norm_type: NormType,
) -> Result<f64, RunError> {
    let total = grad_norm(grads.iter().map(Tensor::shallow_clone), norm_type)?;
    clip_to_norm(grads.iter().map(Tensor::shallow_clone), max_norm, total)?;
    Ok(total)
}

/// Scales all gradients by min(1, max_norm / (total + 1e-6)), `total`
/// being their global norm (computed here, or over several ranks).
pub fn clip_to_norm(
    grads: impl IntoIterator<Item = Tensor>,
    max_norm: f64,
    total: f64,
) -> Result<(), RunError> {
    // PyTorch computes the coefficient on a float32 tensor:
    // max_norm / (total + 1e-6), clamped at 1; so does this, bit for bit.
    let coef = ((max_norm as f32) / (total as f32 + 1e-6f32)).min(1.0) as f64;
    tch::no_grad(|| {
        for mut grad in grads {
            if grad.defined() {
                grad.f_mul_scalar_(coef)
                    .in_place(|| "clip gradients".into())?;
            }
        }
        Ok(())
    })
}

/// Clamps every gradient element to [-value, value].
pub fn clip_grad_value(
    grads: impl IntoIterator<Item = Tensor>,
    value: f64,
) -> Result<(), RunError> {
    tch::no_grad(|| {
        for mut grad in grads {
            if grad.defined() {
                grad.f_clamp_(-value, value)
                    .in_place(|| "clip gradient values".into())?;
            }
        }
        Ok(())
    })
}
