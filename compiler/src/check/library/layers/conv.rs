//! `conv1d` and `conv2d(in_channels, out_channels, kernel, stride = 1,
//! padding = 0, bias = true)`: learned square kernels slid over a sequence
//! or an image, as `nn.Conv1d` and `nn.Conv2d`.

use super::{bool_or, int, int_or, Args, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::shapes::{check_channels, window_out, Spatial};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{Dim, Op};

pub struct Conv {
    pub spatial: Spatial,
}

impl Layer for Conv {
    fn signature(&self) -> Vec<ParamSig> {
        vec![
            int("in_channels"),
            int("out_channels"),
            int("kernel"),
            int_or("stride", 1),
            int_or("padding", 0),
            bool_or("bias", true),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(4)?;
        if args.int(4) < 0 {
            return Err(CheckError::invalid(
                "padding must be ≥ 0",
                args.span,
                "here",
            ));
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let (i, o, k, s, p, bias) = (a.int(0), a.int(1), a.int(2), a.int(3), a.int(4), a.flag(5));
        let sizes = check_channels(a.layer, call.input, self.spatial, i, a.span)?;
        let mut output = vec![call.input[0].clone(), Dim::Size(o)];
        for size in sizes {
            output.push(Dim::Size(window_out(a.layer, size, k, s, p, a.span)?));
        }
        let dims = self.spatial.count();
        let fan_in = i * k.pow(dims as u32);
        let mut wshape = vec![o, i];
        wshape.extend(std::iter::repeat_n(k, dims));
        let mut params = vec![call.uniform("weight", wshape, fan_in)];
        if bias {
            params.push(call.uniform("bias", vec![o], fan_in));
        }
        let (weight, bias) = (call.name("weight"), bias.then(|| call.name("bias")));
        let op = match self.spatial {
            Spatial::One => Op::Conv1d {
                in_channels: i,
                out_channels: o,
                kernel: k,
                stride: s,
                padding: p,
                weight,
                bias,
            },
            Spatial::Two => Op::Conv2d {
                in_channels: i,
                out_channels: o,
                kernel: k,
                stride: s,
                padding: p,
                weight,
                bias,
            },
        };
        Ok(Applied::learned(op, params, output))
    }
}
