//! Pooling: `max_pool1d`, `max_pool2d`, `avg_pool1d` and
//! `avg_pool2d(kernel, stride = kernel, padding = 0)`, a window slid over a
//! sequence or an image; `adaptive_avg_pool1d(size)` and
//! `adaptive_avg_pool2d(height, width)`, averages down to a fixed size.

use super::{int, int_or, Args, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::shapes::{spatial_sizes, window_out, Spatial, Window as Sliding};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{Dim, Op};

/// What a window keeps of the values it covers.
#[derive(Debug, Clone, Copy)]
pub enum Reduce {
    Max,
    Avg,
}

/// A window of `kernel` positions that moves by `stride`.
pub struct Window {
    pub reduce: Reduce,
    pub spatial: Spatial,
}

impl Layer for Window {
    fn signature(&self) -> Vec<ParamSig> {
        // stride 0 stands for "the kernel size", PyTorch's default.
        vec![int("kernel"), int_or("stride", 0), int_or("padding", 0)]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive(0)?;
        let (k, s, p) = (args.int(0), args.int(1), args.int(2));
        if s < 0 || p < 0 || p * 2 > k {
            return Err(CheckError::InvalidValue {
                message: format!(
                    "{}: need stride ≥ 1, 0 ≤ padding ≤ kernel/2",
                    args.layer.name()
                ),
                span: args.span,
                label: "here".into(),
                help: Some("leave `stride` out to use the kernel size".into()),
            });
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let (k, p) = (a.int(0), a.int(2));
        let s = if a.int(1) == 0 { k } else { a.int(1) };
        let sizes = spatial_sizes(a.layer, call.input, self.spatial, a.span)?;
        let mut output = call.input[..call.input.len() - self.spatial.count()].to_vec();
        for size in sizes {
            output.push(Dim::Size(window_out(
                a.layer,
                size,
                Sliding::dense(k, s, p),
                a.span,
            )?));
        }
        let (kernel, stride, padding) = (k, s, p);
        let op = match (self.reduce, self.spatial) {
            (Reduce::Max, Spatial::One) => Op::MaxPool1d {
                kernel,
                stride,
                padding,
            },
            (Reduce::Max, Spatial::Two) => Op::MaxPool2d {
                kernel,
                stride,
                padding,
            },
            (Reduce::Avg, Spatial::One) => Op::AvgPool1d {
                kernel,
                stride,
                padding,
            },
            (Reduce::Avg, Spatial::Two) => Op::AvgPool2d {
                kernel,
                stride,
                padding,
            },
        };
        Ok(Applied::stateless(op, output))
    }
}

/// An average over windows sized so that the output has the given size.
pub struct Adaptive {
    pub spatial: Spatial,
}

impl Layer for Adaptive {
    fn signature(&self) -> Vec<ParamSig> {
        match self.spatial {
            Spatial::One => vec![int("size")],
            Spatial::Two => vec![int("height"), int("width")],
        }
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(self.spatial.count())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        spatial_sizes(a.layer, call.input, self.spatial, a.span)?;
        let dims = self.spatial.count();
        let mut output = call.input[..call.input.len() - dims].to_vec();
        output.extend((0..dims).map(|i| Dim::Size(a.int(i))));
        let op = match self.spatial {
            Spatial::One => Op::AdaptiveAvgPool1d { size: a.int(0) },
            Spatial::Two => Op::AdaptiveAvgPool2d {
                height: a.int(0),
                width: a.int(1),
            },
        };
        Ok(Applied::stateless(op, output))
    }
}
