//! Synchronised batch norm (`batch_norm = sync` over data-parallel
//! replicas) is a segment of one node computed by hand: the batch's mean
//! and variance over every replica's rows (their sums all-reduced), and in
//! backward the two per-channel sums SyncBatchNorm all-reduces, so each
//! replica's input gradient is that of the loss over all replicas' rows.
//! The segments around it are [`super::segments`]'s.

use tch::{Kind, Tensor};

use crate::comm::{Communicator, ReduceOp};
use crate::model::Model;
use crate::ops::Weights;

/// What backward needs of one synchronised batch norm.
pub(super) struct SyncNorm {
    /// The input, a leaf of the norm's own segment.
    x: Tensor,
    /// (x − mean) / std, and 1 / std per channel (shaped to broadcast).
    normalized: Tensor,
    inv_std: Tensor,
    /// The output, a leaf whose gradient the readers and the loss fill.
    pub(super) y: Tensor,
    weight: Tensor,
    bias: Tensor,
    /// Rows × positions per channel, over every replica.
    count: f64,
}

/// The dimensions a batch norm reduces over: all but the channels (1).
fn reduced_dims(x: &Tensor) -> Vec<i64> {
    (0..x.dim() as i64).filter(|&d| d != 1).collect()
}

/// A per-channel vector shaped to broadcast against `x`.
fn per_channel(v: &Tensor, x: &Tensor) -> Result<Tensor, tch::TchError> {
    let mut shape = vec![1i64; x.dim()];
    shape[1] = -1;
    v.f_reshape(shape.as_slice())
}

/// Synchronised batch norm, forward: the statistics over every replica's
/// rows, the running statistics updated with them (the same on every
/// replica), the output as a leaf.
pub(super) fn sync_norm(
    input: &Tensor,
    model: &Model,
    [weight, bias, running_mean, running_var, tracked]: [&String; 5],
    eps: f64,
    momentum: f64,
    replicas: &dyn Communicator,
) -> Result<SyncNorm, tch::TchError> {
    let x = input.shallow_clone();
    let dims = reduced_dims(&x);
    let local_count = (x.numel() as i64 / x.size()[1]) as f64;
    let detached = x.f_detach()?.f_to_kind(Kind::Double)?;
    // [Σx, Σx², count] per channel, summed over the replicas in float64.
    let sums = detached.f_sum_dim_intlist(dims.as_slice(), false, Kind::Double)?;
    let squares = detached
        .f_square()?
        .f_sum_dim_intlist(dims.as_slice(), false, Kind::Double)?;
    let channels = sums.size()[0];
    let mut packed = Tensor::f_cat(&[sums, squares], 0)?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?;
    let mut values = Vec::<f64>::try_from(&packed)?;
    values.push(local_count);
    replicas
        .all_reduce_host(&mut values, ReduceOp::Sum)
        .map_err(|e| tch::TchError::Torch(format!("synchronise batch norm: {e}")))?;
    let count = values.pop().unwrap_or(local_count);
    packed = Tensor::from_slice(&values).f_to_device(x.device())?;
    let mean = packed.f_narrow(0, 0, channels)?.f_div_scalar(count)?;
    let mean_square = packed
        .f_narrow(0, channels, channels)?
        .f_div_scalar(count)?;
    let var = mean_square.f_sub(&mean.f_square()?)?.f_clamp_min(0.0)?;
    let inv_std = var.f_add_scalar(eps)?.f_rsqrt()?.f_to_kind(Kind::Float)?;
    let (mean32, var32) = (mean.f_to_kind(Kind::Float)?, var.f_to_kind(Kind::Float)?);
    let (w, b) = (model.weight(weight), model.weight(bias));
    let normalized = tch::no_grad(|| {
        x.f_sub(&per_channel(&mean32, &x)?)?
            .f_mul(&per_channel(&inv_std, &x)?)
    })?;
    let y = tch::no_grad(|| {
        normalized
            .f_mul(&per_channel(&w, &x)?)?
            .f_add(&per_channel(&b, &x)?)
    })?
    .set_requires_grad(true);
    // Running statistics as PyTorch updates them: the unbiased variance.
    tch::no_grad(|| -> Result<(), tch::TchError> {
        let mut rm = model.weight(running_mean);
        let mut rv = model.weight(running_var);
        let unbiased = var32.f_mul_scalar(count / (count - 1.0).max(1.0))?;
        let _ = rm
            .f_mul_scalar_(1.0 - momentum)?
            .f_add_(&mean32.f_mul_scalar(momentum)?)?;
        let _ = rv
            .f_mul_scalar_(1.0 - momentum)?
            .f_add_(&unbiased.f_mul_scalar(momentum)?)?;
        let _ = model.weight(tracked).f_add_scalar_(1.0)?;
        Ok(())
    })?;
    Ok(SyncNorm {
        x,
        normalized,
        inv_std,
        y,
        weight: w,
        bias: b,
        count,
    })
}

/// Synchronised batch norm, backward: SyncBatchNorm's two per-channel sums
/// (Σ dy, Σ dy · x̂) all-reduced over the replicas; the input's gradient
/// γ/σ · (dy − Σdy/N − x̂ · Σ(dy·x̂)/N) goes back into the previous
/// segment, the weight's and bias's local sums into their gradients (the
/// data-parallel all-reduce averages them with the other replicas').
pub(super) fn sync_norm_backward(
    norm: &SyncNorm,
    dy: &Tensor,
    replicas: &dyn Communicator,
) -> Result<(), tch::TchError> {
    let dims = reduced_dims(dy);
    let grad_bias = dy.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float)?;
    let grad_weight =
        dy.f_mul(&norm.normalized)?
            .f_sum_dim_intlist(dims.as_slice(), false, Kind::Float)?;
    let channels = grad_bias.size()[0];
    let mut both = Tensor::f_cat(&[&grad_bias, &grad_weight], 0)?.f_to_kind(Kind::Double)?;
    let mut values = Vec::<f64>::try_from(&both.f_to_device(tch::Device::Cpu)?)?;
    replicas
        .all_reduce_host(&mut values, ReduceOp::Sum)
        .map_err(|e| tch::TchError::Torch(format!("synchronise batch norm's gradients: {e}")))?;
    both = Tensor::from_slice(&values)
        .f_to_kind(Kind::Float)?
        .f_to_device(dy.device())?;
    let n = norm.count;
    let sum_dy = per_channel(&both.f_narrow(0, 0, channels)?.f_div_scalar(n)?, dy)?;
    let sum_dy_xhat = per_channel(&both.f_narrow(0, channels, channels)?.f_div_scalar(n)?, dy)?;
    let scale = per_channel(&norm.weight.f_detach()?.f_mul(&norm.inv_std)?, dy)?;
    let dx = dy
        .f_sub(&sum_dy)?
        .f_sub(&norm.normalized.f_mul(&sum_dy_xhat)?)?
        .f_mul(&scale)?;
    // One small backward carries the three gradients where they belong.
    let mut root = norm.weight.f_mul(&grad_weight)?.f_sum(Kind::Float)?;
    root = root.f_add(&norm.bias.f_mul(&grad_bias)?.f_sum(Kind::Float)?)?;
    if norm.x.requires_grad() {
        root = root.f_add(&norm.x.f_mul(&dx)?.f_sum(Kind::Float)?)?;
    }
    root.f_backward()
}
