//! Normalisation: `batch_norm(features, eps = 1e-5, momentum = 0.1)` over
//! the batch, with running statistics; `layer_norm(dim, eps = 1e-5)` and
//! `rms_norm(dim, eps)` over the last dimension; `group_norm(groups,
//! channels, eps = 1e-5, affine = true)` over groups of channels and
//! `instance_norm(features, eps = 1e-5, affine = false)` over each channel
//! of each sample, neither with running statistics.

use super::{bool_or, float_or, int, Args, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::shapes::{check_last_dim, divisor_near};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Dim, Init, Op};

/// The width must be at least 1 and `eps` (the second value) above 0.
fn check_width_and_eps(args: &Args<'_>) -> Result<(), CheckError> {
    args.positive(0)?;
    if args.float(1) <= 0.0 {
        return Err(CheckError::invalid(
            format!("{}: eps must be > 0", args.layer.name()),
            args.span,
            "here",
        ));
    }
    Ok(())
}

pub struct BatchNorm;

impl Layer for BatchNorm {
    fn signature(&self) -> Vec<ParamSig> {
        vec![
            int("features"),
            float_or("eps", 1e-5),
            float_or("momentum", 0.1),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        check_width_and_eps(args)?;
        if !(0.0..=1.0).contains(&args.float(2)) {
            return Err(CheckError::invalid(
                "batch_norm: momentum must be in [0, 1]",
                args.span,
                "here",
            ));
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let (a, input) = (&call.args, call.input);
        let features = a.int(0);
        match input.get(1) {
            Some(Dim::Size(c)) if *c == features && (2..=4).contains(&input.len()) => {}
            _ => {
                return Err(CheckError::ShapeMismatch {
                    expected: format!(
                        "[B, {features}], [B, {features}, L] or [B, {features}, H, W]"
                    ),
                    found: shape_to_string(input),
                    span: a.span,
                    what: format!("batch_norm({features}) normalizes dimension 1"),
                    help: None,
                })
            }
        }
        let params = vec![
            call.fixed("weight", vec![features], Init::Ones),
            call.fixed("bias", vec![features], Init::Zeros),
        ];
        let buffers = vec![
            call.fixed("running_mean", vec![features], Init::Zeros),
            call.fixed("running_var", vec![features], Init::Ones),
            // Counted as PyTorch counts it, so that the saved weights load
            // into nn.BatchNorm with strict=True.
            call.fixed("num_batches_tracked", vec![], Init::Zeros),
        ];
        let op = Op::BatchNorm {
            features,
            eps: a.float(1),
            momentum: a.float(2),
            weight: call.name("weight"),
            bias: call.name("bias"),
            running_mean: call.name("running_mean"),
            running_var: call.name("running_var"),
            num_batches_tracked: call.name("num_batches_tracked"),
        };
        Ok(Applied {
            op,
            params,
            buffers,
            output: input.clone(),
        })
    }
}

pub struct LayerNorm;

impl Layer for LayerNorm {
    fn signature(&self) -> Vec<ParamSig> {
        vec![int("dim"), float_or("eps", 1e-5)]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        check_width_and_eps(args)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let dim = a.int(0);
        check_last_dim(a.layer, call.input, dim, a.span)?;
        let params = vec![
            call.fixed("weight", vec![dim], Init::Ones),
            call.fixed("bias", vec![dim], Init::Zeros),
        ];
        let op = Op::LayerNorm {
            dim,
            eps: a.float(1),
            weight: call.name("weight"),
            bias: call.name("bias"),
        };
        Ok(Applied::learned(op, params, call.input.clone()))
    }
}

pub struct RmsNorm;

impl Layer for RmsNorm {
    fn signature(&self) -> Vec<ParamSig> {
        // PyTorch's nn.RMSNorm default eps is float32's machine epsilon.
        vec![int("dim"), float_or("eps", f32::EPSILON as f64)]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        check_width_and_eps(args)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let dim = a.int(0);
        check_last_dim(a.layer, call.input, dim, a.span)?;
        let params = vec![call.fixed("weight", vec![dim], Init::Ones)];
        let op = Op::RmsNorm {
            dim,
            eps: a.float(1),
            weight: call.name("weight"),
        };
        Ok(Applied::learned(op, params, call.input.clone()))
    }
}

/// The learned per-channel scale (ones) and shift (zeros) of a norm with
/// `affine`, and their names for the op (absent without).
fn affine(
    call: &Call<'_>,
    channels: i64,
    on: bool,
) -> (Vec<crate::plan::ParamSpec>, Option<String>, Option<String>) {
    if !on {
        return (vec![], None, None);
    }
    let params = vec![
        call.fixed("weight", vec![channels], Init::Ones),
        call.fixed("bias", vec![channels], Init::Zeros),
    ];
    (params, Some(call.name("weight")), Some(call.name("bias")))
}

/// The channel dimension (1) of a `[B, C, ...]` input of one of `ranks`
/// must be `channels`.
fn check_channel_dim(
    a: &Args<'_>,
    input: &crate::plan::Shape,
    channels: i64,
    ranks: std::ops::RangeInclusive<usize>,
    layouts: &str,
) -> Result<(), CheckError> {
    match input.get(1) {
        Some(Dim::Size(c)) if *c == channels && ranks.contains(&input.len()) => Ok(()),
        _ => Err(CheckError::ShapeMismatch {
            expected: layouts.replace('C', &channels.to_string()),
            found: shape_to_string(input),
            span: a.span,
            what: format!(
                "{}({channels}, …) normalizes the channels of dimension 1",
                a.layer.name()
            ),
            help: None,
        }),
    }
}

pub struct GroupNorm;

impl Layer for GroupNorm {
    fn signature(&self) -> Vec<ParamSig> {
        vec![
            int("groups"),
            int("channels"),
            float_or("eps", 1e-5),
            bool_or("affine", true),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(2)?;
        if args.float(2) <= 0.0 {
            return Err(CheckError::invalid(
                "group_norm: eps must be > 0",
                args.span,
                "here",
            ));
        }
        let (groups, channels) = (args.int(0), args.int(1));
        if channels % groups != 0 {
            return Err(CheckError::InvalidValue {
                message: format!("group_norm: {groups} groups do not divide {channels} channels"),
                span: args.span,
                label: "groups must divide channels".into(),
                help: Some(format!(
                    "each group normalizes channels / groups channels; e.g. `group_norm({}, {channels})`",
                    divisor_near(channels, groups)
                )),
            });
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let (groups, channels) = (a.int(0), a.int(1));
        check_channel_dim(a, call.input, channels, 2..=8, "[B, C, ...]")?;
        let (params, weight, bias) = affine(call, channels, a.flag(3));
        let op = Op::GroupNorm {
            groups,
            channels,
            eps: a.float(2),
            weight,
            bias,
        };
        Ok(Applied::learned(op, params, call.input.clone()))
    }
}

pub struct InstanceNorm;

impl Layer for InstanceNorm {
    fn signature(&self) -> Vec<ParamSig> {
        // PyTorch's defaults: no affine, no running statistics (which dtl
        // does not offer).
        vec![
            int("features"),
            float_or("eps", 1e-5),
            bool_or("affine", false),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        check_width_and_eps(args)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let features = a.int(0);
        check_channel_dim(a, call.input, features, 3..=4, "[B, C, L] or [B, C, H, W]")?;
        let (params, weight, bias) = affine(call, features, a.flag(2));
        let op = Op::InstanceNorm {
            features,
            eps: a.float(1),
            weight,
            bias,
        };
        Ok(Applied::learned(op, params, call.input.clone()))
    }
}
