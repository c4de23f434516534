//! Flat buffers: several tensors' values laid end to end in one
//! contiguous buffer, so one collective carries them all, and the buffer's
//! slices copied back. What every strategy that moves many tensors at once
//! shares (gradient buckets, parameter averaging, the sequence-parallel
//! once-a-step sum).

use std::cell::RefCell;

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

/// Copies `tensors` end to end into the start of `flat` and zeroes the
/// rest of it (a bucket's padding): each tensor's place in `flat`, shaped
/// as the tensor.
pub fn lay_out(tensors: &[Tensor], flat: &Tensor, step: u64) -> Result<Vec<Tensor>, RunError> {
    let ctx = || format!("step {step}: lay out a bucket");
    let mut offset = 0;
    tch::no_grad(|| {
        let mut places = Vec::with_capacity(tensors.len());
        for tensor in tensors {
            let n = tensor.numel() as i64;
            let mut place = flat
                .f_narrow(0, offset, n)
                .and_then(|p| p.f_view_as(tensor))
                .context(ctx)?;
            place.f_copy_(tensor).context(ctx)?;
            places.push(place);
            offset += n;
        }
        let padding = flat.numel() as i64 - offset;
        if padding > 0 {
            let mut rest = flat.f_narrow(0, offset, padding).context(ctx)?;
            drop(rest.f_zero_().context(ctx)?);
        }
        Ok(places)
    })
}

/// A flat buffer kept from step to step, for the exchange of one bucket
/// at a time: made at the first exchange, as long as the longest, and used
/// by every bucket after it. A buffer made per bucket (4 MiB or more: a
/// fresh mapping, see `memory::return_freed_blocks`) had its pages touched
/// for the first time at every step.
pub struct Kept {
    buffer: RefCell<Option<Tensor>>,
    /// Values of the longest bucket it carries.
    longest: i64,
}

impl Kept {
    /// A buffer for buckets of at most `longest` values, made at its first
    /// use.
    pub fn new(longest: i64) -> Kept {
        Kept {
            buffer: RefCell::new(None),
            longest,
        }
    }

    /// Its first `len` values, made `longest` long (or `len`, if more)
    /// when it is missing, or of another kind or device than `like`.
    pub fn first(&self, len: i64, like: &Tensor, step: u64) -> Result<Tensor, RunError> {
        let ctx = || format!("step {step}: an exchange's buffer");
        let mut kept = self.buffer.borrow_mut();
        let fits = kept.as_ref().is_some_and(|b| {
            b.numel() as i64 >= len && b.kind() == like.kind() && b.device() == like.device()
        });
        if !fits {
            // The old buffer goes before the new one is made.
            *kept = None;
            let made = Tensor::f_empty([self.longest.max(len)], (like.kind(), like.device()));
            *kept = Some(made.context(ctx)?);
        }
        kept.as_ref()
            .expect("made above")
            .f_narrow(0, 0, len)
            .context(ctx)
    }
}
