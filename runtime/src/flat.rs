//! Flat buffers: several tensors' values laid end to end in one
//! contiguous buffer, so one collective carries them all, and the buffer's
//! slices copied back. What every strategy that moves many tensors at once
//! shares (gradient buckets, parameter averaging, the sequence-parallel
//! once-a-step sum).

use tch::Tensor;

use crate::error::{RunError, TorchContext};

/// One contiguous float32 buffer of the tensors' values, in order.
pub fn flatten(
    tensors: impl Iterator<Item = Result<Tensor, RunError>>,
    step: u64,
) -> Result<Tensor, RunError> {
    let flat: Vec<Tensor> = tensors
        .map(|t| {
            t.and_then(|t| {
                t.f_reshape([-1])
                    .context(|| format!("step {step}: flatten"))
            })
        })
        .collect::<Result<_, _>>()?;
    Tensor::f_cat(&flat, 0).context(|| format!("step {step}: flatten a bucket"))
}

/// [`flatten`], padded with zeros to `len` values (a buffer cut into equal
/// slices for a reduce-scatter).
pub fn flatten_padded(
    tensors: impl Iterator<Item = Result<Tensor, RunError>>,
    len: i64,
    step: u64,
) -> Result<Tensor, RunError> {
    let flat = flatten(tensors, step)?;
    let padding = len - flat.numel() as i64;
    if padding <= 0 {
        return Ok(flat);
    }
    let ctx = || format!("step {step}: pad a bucket");
    let zeros = flat
        .f_new_zeros([padding], (flat.kind(), flat.device()))
        .context(ctx)?;
    Tensor::f_cat(&[flat, zeros], 0).context(ctx)
}

/// Copies the slices of `flat` back into the tensors, in order.
pub fn scatter(
    flat: &Tensor,
    tensors: impl Iterator<Item = Result<Tensor, RunError>>,
    step: u64,
) -> Result<(), RunError> {
    let ctx = || format!("step {step}: unflatten a bucket");
    let mut offset = 0i64;
    for tensor in tensors {
        let mut tensor = tensor?;
        let n = tensor.numel() as i64;
        let part = flat.f_narrow(0, offset, n).context(ctx)?;
        let part = part.f_view_as(&tensor).context(ctx)?;
        tch::no_grad(|| tensor.f_copy_(&part)).context(ctx)?;
        offset += n;
    }
    Ok(())
}
