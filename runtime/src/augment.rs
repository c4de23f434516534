//! The data block's per-sample transforms at run time (plan
//! `data.augment`): a random crop and a horizontal flip of each training
//! sample, then `(x - mean) / std` per channel of every sample. A sample's
//! draws come from the seed, the epoch and its place in the epoch's order
//! (`Rng::for_name(seed, "augment {epoch} {place}")`: the crop's top then
//! left offset, `below(2P + 1)` each, then `next_f64() < p` for the flip),
//! never from the rank or the thread, so any world size draws the same.

use dtl_compiler::plan::Augment;
use dtl_compiler::util::rng::Rng;
use tch::{Kind, Tensor};

use crate::error::{RunError, TorchContext};

/// The transforms of one run.
#[derive(Debug, Clone)]
pub struct Transforms {
    plan: Augment,
    seed: u64,
}

/// One training sample's draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// Where the crop starts in the padded sample (0 ..= 2P).
    pub top: i64,
    pub left: i64,
    pub flip: bool,
}

impl Transforms {
    pub fn new(plan: &Augment, seed: u64) -> Self {
        Transforms {
            plan: plan.clone(),
            seed,
        }
    }

    /// The draws of the sample at `place` of epoch `epoch`.
    pub fn draw(&self, epoch: u64, place: u64) -> Draw {
        let mut rng = Rng::for_name(self.seed, &format!("augment {epoch} {place}"));
        let span = 2 * self.plan.crop_padding + 1;
        let (mut top, mut left) = (0, 0);
        if self.plan.crop_padding > 0 {
            top = rng.below(span) as i64;
            left = rng.below(span) as i64;
        }
        let flip = self.plan.flip > 0.0 && rng.next_f64() < self.plan.flip;
        Draw { top, left, flip }
    }

    /// Training samples `x` `[n, C, H, W]` cropped and flipped at random,
    /// sample j being the one at `first + j` of epoch `epoch`. Done on the
    /// values in plain loops (one copy in, one out), not as a few small
    /// libtorch calls per sample, which cost more than the copying.
    pub fn randomize(&self, x: &Tensor, epoch: u64, first: u64) -> Result<Tensor, RunError> {
        if !self.plan.random() {
            return Ok(x.shallow_clone());
        }
        let ctx = || "crop and flip the training samples".to_string();
        let size = x.size();
        let [n, c, h, w] = <[i64; 4]>::try_from(size.as_slice()).map_err(|_| RunError::Torch {
            context: ctx(),
            message: format!(
                "samples of shape {:?}, not [channels, height, width]",
                &size[1..]
            ),
        })?;
        let values = Vec::<f32>::try_from(
            x.f_contiguous()
                .context(ctx)?
                .f_flatten(0, -1)
                .context(ctx)?,
        )
        .context(ctx)?;
        let (plane, p) = ((h * w) as usize, self.plan.crop_padding as i64);
        let mut out = vec![0f32; values.len()];
        for j in 0..n as usize {
            let draw = self.draw(epoch, first + j as u64);
            let sample = j * c as usize * plane;
            for ch in 0..c as usize {
                let (from, to) = (
                    &values[sample + ch * plane..],
                    &mut out[sample + ch * plane..],
                );
                for y in 0..h {
                    // Row y of the crop is row top + y of the padded sample.
                    let sy = draw.top + y - p;
                    if !(0..h).contains(&sy) {
                        continue; // padding: zeros
                    }
                    for x in 0..w {
                        let cx = if draw.flip { w - 1 - x } else { x };
                        let sx = draw.left + cx - p;
                        if (0..w).contains(&sx) {
                            to[(y * w + x) as usize] = from[(sy * w + sx) as usize];
                        }
                    }
                }
            }
        }
        Tensor::from_slice(&out).f_reshape(size).context(ctx)
    }

    /// `(x - mean) / std` per channel of `x` `[n, C, ...]`, in float32 as
    /// torchvision's `Normalize`; `x` itself without `mean`.
    pub fn normalize(&self, x: Tensor) -> Result<Tensor, RunError> {
        if self.plan.mean.is_empty() {
            return Ok(x);
        }
        let ctx = || "normalise the samples".to_string();
        let per_channel = |values: &[f64]| {
            let mut shape = vec![values.len() as i64];
            shape.extend(std::iter::repeat_n(1, x.dim().saturating_sub(2)));
            Tensor::from_slice(values)
                .f_to_kind(Kind::Float)
                .and_then(|t| t.f_reshape(&shape))
        };
        let mean = per_channel(&self.plan.mean).context(ctx)?;
        let std = per_channel(&self.plan.std).context(ctx)?;
        x.f_sub(&mean).and_then(|t| t.f_div(&std)).context(ctx)
    }
}
