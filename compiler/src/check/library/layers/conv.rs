//! Convolutions, as `nn.Conv1d`, `nn.Conv2d` and `nn.ConvTranspose2d`:
//! `conv1d` and `conv2d(in_channels, out_channels, kernel, stride = 1,
//! padding = 0, dilation = 1, groups = 1, bias = true)`, learned kernels
//! slid over a sequence or an image; `conv_transpose2d(in_channels,
//! out_channels, kernel, stride = 1, padding = 0, output_padding = 0,
//! groups = 1, bias = true, dilation = 1)`, the gradient of a convolution
//! as a layer (upsampling by `stride`). Arguments in PyTorch's order; the
//! 2-d layers take each size as an integer or `[height, width]`.

use super::{bool_or, int, int_or, pair, pair_or, Args, Call, Layer};
use crate::check::args::{ParamSig, Ty, Value};
use crate::check::library::shapes::{check_channels, transposed_out, window_out, Spatial, Window};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{Dim, Op};

/// Where each argument sits in a convolution's signature.
const KERNEL: usize = 2;
const STRIDE: usize = 3;
const PADDING: usize = 4;

pub struct Conv {
    pub spatial: Spatial,
}

impl Conv {
    /// Signature positions of `dilation`, `groups` and `bias`.
    const DILATION: usize = 5;
    const GROUPS: usize = 6;
    const BIAS: usize = 7;
}

impl Layer for Conv {
    fn signature(&self) -> Vec<ParamSig> {
        // A 2-d size is an integer or [height, width].
        let ty = match self.spatial {
            Spatial::One => Ty::Int,
            Spatial::Two => Ty::IntOrPair,
        };
        let size_or = |name: &str, default: i64| ParamSig::optional(name, ty, Value::Int(default));
        vec![
            int("in_channels"),
            int("out_channels"),
            ParamSig::required("kernel", ty),
            size_or("stride", 1),
            size_or("padding", 0),
            size_or("dilation", 1),
            int_or("groups", 1),
            bool_or("bias", true),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(2)?;
        args.pair_at_least(KERNEL, 1)?;
        args.pair_at_least(STRIDE, 1)?;
        args.pair_at_least(PADDING, 0)?;
        args.pair_at_least(Self::DILATION, 1)?;
        check_groups(args, Self::GROUPS)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let (i, o, groups, bias) = (a.int(0), a.int(1), a.int(Self::GROUPS), a.flag(Self::BIAS));
        let (kernel, stride, padding, dilation) = (
            a.pair(KERNEL),
            a.pair(STRIDE),
            a.pair(PADDING),
            a.pair(Self::DILATION),
        );
        let sizes = check_channels(a.layer, call.input, self.spatial, i, a.span)?;
        let mut output = vec![call.input[0].clone(), Dim::Size(o)];
        for (d, size) in sizes.into_iter().enumerate() {
            let window = Window {
                kernel: kernel[d],
                stride: stride[d],
                padding: padding[d],
                dilation: dilation[d],
            };
            output.push(Dim::Size(window_out(a.layer, size, window, a.span)?));
        }
        let dims = self.spatial.count();
        let taps: i64 = kernel[..dims].iter().product();
        let mut wshape = vec![o, i / groups];
        wshape.extend(&kernel[..dims]);
        let params = weight_and_bias(call, wshape, o, (i / groups) * taps, bias);
        let (weight, bias) = (call.name("weight"), bias.then(|| call.name("bias")));
        let op = match self.spatial {
            Spatial::One => Op::Conv1d {
                in_channels: i,
                out_channels: o,
                kernel: kernel[0],
                stride: stride[0],
                padding: padding[0],
                dilation: dilation[0],
                groups,
                weight,
                bias,
            },
            Spatial::Two => Op::Conv2d {
                in_channels: i,
                out_channels: o,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                weight,
                bias,
            },
        };
        Ok(Applied::learned(op, params, output))
    }
}

pub struct ConvTranspose;

impl ConvTranspose {
    /// Signature positions after `padding`, in PyTorch's order.
    const OUTPUT_PADDING: usize = 5;
    const GROUPS: usize = 6;
    const BIAS: usize = 7;
    const DILATION: usize = 8;
}

impl Layer for ConvTranspose {
    fn signature(&self) -> Vec<ParamSig> {
        vec![
            int("in_channels"),
            int("out_channels"),
            pair("kernel"),
            pair_or("stride", 1),
            pair_or("padding", 0),
            pair_or("output_padding", 0),
            int_or("groups", 1),
            bool_or("bias", true),
            pair_or("dilation", 1),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(2)?;
        args.pair_at_least(KERNEL, 1)?;
        args.pair_at_least(STRIDE, 1)?;
        args.pair_at_least(PADDING, 0)?;
        args.pair_at_least(Self::OUTPUT_PADDING, 0)?;
        args.pair_at_least(Self::DILATION, 1)?;
        let (extra, stride, dilation) = (
            args.pair(Self::OUTPUT_PADDING),
            args.pair(STRIDE),
            args.pair(Self::DILATION),
        );
        if (0..2).any(|d| extra[d] >= stride[d] && extra[d] >= dilation[d]) {
            return Err(CheckError::InvalidValue {
                message: format!(
                    "conv_transpose2d: output_padding {extra:?} must be smaller than the stride {stride:?} or the dilation {dilation:?}"
                ),
                span: args.span,
                label: "too much output padding".into(),
                help: Some(
                    "output_padding adds the positions a strided convolution's rounding lost, at most stride − 1: e.g. `stride: 2, padding: 1, output_padding: 1` doubles the size".into(),
                ),
            });
        }
        check_groups(args, Self::GROUPS)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let (i, o, groups, bias) = (a.int(0), a.int(1), a.int(Self::GROUPS), a.flag(Self::BIAS));
        let (kernel, stride, padding, output_padding, dilation) = (
            a.pair(KERNEL),
            a.pair(STRIDE),
            a.pair(PADDING),
            a.pair(Self::OUTPUT_PADDING),
            a.pair(Self::DILATION),
        );
        let sizes = check_channels(a.layer, call.input, Spatial::Two, i, a.span)?;
        let mut output = vec![call.input[0].clone(), Dim::Size(o)];
        for (d, size) in sizes.into_iter().enumerate() {
            let window = Window {
                kernel: kernel[d],
                stride: stride[d],
                padding: padding[d],
                dilation: dilation[d],
            };
            let out = transposed_out(a.layer, size, window, output_padding[d], a.span)?;
            output.push(Dim::Size(out));
        }
        // PyTorch's fan-in of a transposed weight [in, out / groups, kh, kw]
        // is its dimension 1 times the kernel.
        let fan_in = (o / groups) * kernel[0] * kernel[1];
        let wshape = vec![i, o / groups, kernel[0], kernel[1]];
        let params = weight_and_bias(call, wshape, o, fan_in, bias);
        let op = Op::ConvTranspose2d {
            in_channels: i,
            out_channels: o,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            groups,
            weight: call.name("weight"),
            bias: bias.then(|| call.name("bias")),
        };
        Ok(Applied::learned(op, params, output))
    }
}

/// A convolution's weight and (with `bias`) its bias of `out` values, both
/// U(±1/√fan_in) as PyTorch initialises them.
fn weight_and_bias(
    call: &Call<'_>,
    wshape: Vec<i64>,
    out: i64,
    fan_in: i64,
    bias: bool,
) -> Vec<crate::plan::ParamSpec> {
    let mut params = vec![call.uniform("weight", wshape, fan_in)];
    if bias {
        params.push(call.uniform("bias", vec![out], fan_in));
    }
    params
}

/// `groups` (at position `at`) must be at least 1 and divide both channel
/// counts (values 0 and 1).
fn check_groups(args: &Args<'_>, at: usize) -> Result<(), CheckError> {
    args.positive(at)?;
    let (i, o, groups) = (args.int(0), args.int(1), args.int(at));
    if i % groups == 0 && o % groups == 0 {
        return Ok(());
    }
    let common: Vec<String> = (1..=i.min(o))
        .filter(|g| i % g == 0 && o % g == 0)
        .map(|g| g.to_string())
        .collect();
    Err(CheckError::InvalidValue {
        message: format!(
            "{}: {groups} groups do not divide {i} input and {o} output channels",
            args.layer.name()
        ),
        span: args.span,
        label: "groups must divide both".into(),
        help: Some(format!(
            "each group convolves in_channels / groups channels into out_channels / groups; {i} and {o} have the common divisors {}",
            common.join(", ")
        )),
    })
}
