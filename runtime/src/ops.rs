//! The forward computation of each plan operation on libtorch.

use dtl_compiler::plan::{Op, Precision, UpsampleMode};
use tch::{Kind, Tensor};

use crate::error::{RunError, TorchContext};
use crate::torch_ops;

/// Looks up parameters and buffers by their plan name (a shallow clone:
/// the same storage, tracked by autograd).
pub trait Weights {
    fn weight(&self, name: &str) -> Tensor;
}

/// The weights of another lookup, cast to a lower precision (bfloat16 or
/// float16; autograd carries the gradient back to the float32 masters).
struct Low<'a, W>(&'a W, Kind);

impl<W: Weights> Weights for Low<'_, W> {
    fn weight(&self, name: &str) -> Tensor {
        self.0.weight(name).to_kind(self.1)
    }
}

/// The arithmetic of linear, convolution and attention layers under
/// `precision`: bfloat16, float16, or none lower than float32.
fn low_kind(precision: Precision) -> Option<Kind> {
    match precision {
        Precision::Bf16 => Some(Kind::BFloat16),
        Precision::Fp16 => Some(Kind::Half),
        Precision::Fp32 | Precision::Tf32 => None,
    }
}

/// Applies `op` to its inputs. `train` turns dropout on and makes batch_norm
/// use (and update) batch statistics. Under `Precision::Bf16` (`Fp16`) the
/// matrix-multiplying operations (linear, convolutions, attention) compute
/// in bfloat16 (float16) and hand float32 on, as autocast does; the rest
/// stays float32.
pub fn forward(
    op: &Op,
    inputs: &[&Tensor],
    w: &impl Weights,
    train: bool,
    precision: Precision,
    ctx: impl Fn() -> String,
) -> Result<Tensor, RunError> {
    let multiplies = matches!(
        op,
        Op::Linear { .. }
            | Op::Conv1d { .. }
            | Op::Conv2d { .. }
            | Op::ConvTranspose2d { .. }
            | Op::Attention { .. }
    );
    let Some(kind) = low_kind(precision).filter(|_| multiplies) else {
        return apply(op, inputs, w, train).context(ctx);
    };
    let cast = inputs
        .iter()
        .map(|t| t.f_to_kind(kind))
        .collect::<Result<Vec<_>, _>>()
        .context(&ctx)?;
    let cast: Vec<&Tensor> = cast.iter().collect();
    apply(op, &cast, &Low(w, kind), train)
        .and_then(|y| y.f_to_kind(Kind::Float))
        .context(ctx)
}

fn apply(
    op: &Op,
    inputs: &[&Tensor],
    w: &impl Weights,
    train: bool,
) -> Result<Tensor, tch::TchError> {
    let x = inputs[0];
    let bias = |b: &Option<String>| b.as_deref().map(|b| w.weight(b));
    match op {
        Op::Input => Ok(x.shallow_clone()),
        Op::Linear {
            weight, bias: b, ..
        } => x.f_linear(&w.weight(weight), bias(b)),
        Op::Conv1d { .. } | Op::Conv2d { .. } | Op::ConvTranspose2d { .. } => conv(op, x, w),
        Op::MaxPool1d {
            kernel,
            stride,
            padding,
        } => x.f_max_pool1d([*kernel], [*stride], [*padding], [1], false),
        Op::MaxPool2d {
            kernel,
            stride,
            padding,
        } => x.f_max_pool2d([*kernel; 2], [*stride; 2], [*padding; 2], [1, 1], false),
        Op::AvgPool1d {
            kernel,
            stride,
            padding,
        } => x.f_avg_pool1d([*kernel], [*stride], [*padding], false, true),
        Op::AvgPool2d {
            kernel,
            stride,
            padding,
        } => x.f_avg_pool2d([*kernel; 2], [*stride; 2], [*padding; 2], false, true, None),
        Op::AdaptiveAvgPool1d { size } => x.f_adaptive_avg_pool1d([*size]),
        Op::AdaptiveAvgPool2d { height, width } => x.f_adaptive_avg_pool2d([*height, *width]),
        Op::Upsample { .. } => upsample(op, x),
        Op::BatchNorm { .. } => batch_norm(op, x, w, train),
        Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::GroupNorm { .. }
        | Op::InstanceNorm { .. } => norm(op, x, w),
        Op::Embedding { weight, .. } => x
            .f_to_kind(Kind::Int64)
            .and_then(|idx| Tensor::f_embedding(&w.weight(weight), &idx, -1, false, false)),
        Op::PosEmbedding { weight, .. } => w
            .weight(weight)
            .f_narrow(0, 0, x.size()[1])
            .and_then(|p| x.f_add(&p)),
        Op::Attention { .. } => attention_op(op, x, w, None),
        Op::ClassToken { dim, weight } => w
            .weight(weight)
            .f_expand([x.size()[0], 1, *dim], false)
            .and_then(|token| Tensor::f_cat(&[&token, x], 1)),
        Op::Dropout { p } => x.f_dropout(*p, train),
        Op::Flatten => x.f_flatten(1, -1),
        Op::Reshape { shape } => {
            let mut full = vec![x.size()[0]];
            full.extend(shape);
            x.f_reshape(full.as_slice())
        }
        Op::Transpose { dim0, dim1 } => x.f_transpose(*dim0, *dim1),
        Op::Softmax { dim } => x.f_softmax(*dim, None::<Kind>),
        Op::LogSoftmax { dim } => x.f_log_softmax(*dim, None::<Kind>),
        Op::Select { dim, index } => x.f_select(*dim, *index),
        Op::Mean { dim } => x.f_mean_dim([*dim].as_slice(), false, None::<Kind>),
        Op::Relu => x.f_relu(),
        Op::LeakyRelu { negative_slope } => torch_ops::leaky_relu(x, *negative_slope),
        Op::Elu { alpha } => torch_ops::elu(x, *alpha),
        Op::Gelu { tanh } => x.f_gelu(if *tanh { "tanh" } else { "none" }),
        Op::Silu => x.f_silu(),
        Op::Tanh => x.f_tanh(),
        Op::Sigmoid => x.f_sigmoid(),
        Op::Add => inputs[1..]
            .iter()
            .try_fold(x.shallow_clone(), |acc, t| acc.f_add(t)),
        Op::Mul => inputs[1..]
            .iter()
            .try_fold(x.shallow_clone(), |acc, t| acc.f_mul(t)),
        Op::Concat { dim } => Tensor::f_cat(inputs, *dim),
    }
}

/// The convolutions, as `F.conv1d`, `F.conv2d` and `F.conv_transpose2d`.
fn conv(op: &Op, x: &Tensor, w: &impl Weights) -> Result<Tensor, tch::TchError> {
    let bias = |b: &Option<String>| b.as_deref().map(|b| w.weight(b));
    match op {
        Op::Conv1d {
            stride,
            padding,
            dilation,
            groups,
            weight,
            bias: b,
            ..
        } => x.f_conv1d(
            &w.weight(weight),
            bias(b),
            [*stride],
            [*padding],
            [*dilation],
            *groups,
        ),
        Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
            weight,
            bias: b,
            ..
        } => x.f_conv2d(
            &w.weight(weight),
            bias(b),
            *stride,
            *padding,
            *dilation,
            *groups,
        ),
        Op::ConvTranspose2d {
            stride,
            padding,
            output_padding,
            dilation,
            groups,
            weight,
            bias: b,
            ..
        } => x.f_conv_transpose2d(
            &w.weight(weight),
            bias(b),
            *stride,
            *padding,
            *output_padding,
            *groups,
            *dilation,
        ),
        _ => unreachable!("apply hands conv only convolutions"),
    }
}

/// `F.interpolate` to the op's size, with the scale factors handed on
/// when the size came from them.
fn upsample(op: &Op, x: &Tensor) -> Result<Tensor, tch::TchError> {
    let Op::Upsample {
        mode,
        height,
        width,
        scale,
        align_corners,
    } = op
    else {
        unreachable!("apply hands upsample only its own op")
    };
    let (sh, sw) = (scale.map(|s| s[0]), scale.map(|s| s[1]));
    match mode {
        UpsampleMode::Nearest => x.f_upsample_nearest2d([*height, *width], sh, sw),
        UpsampleMode::Bilinear => {
            x.f_upsample_bilinear2d([*height, *width], *align_corners, sh, sw)
        }
    }
}

/// The norms without running statistics: layer_norm and rms_norm over the
/// last dimension, group_norm over groups of channels, instance_norm over
/// each channel's positions.
fn norm(op: &Op, x: &Tensor, w: &impl Weights) -> Result<Tensor, tch::TchError> {
    let optional = |n: &Option<String>| n.as_deref().map(|n| w.weight(n));
    match op {
        Op::LayerNorm {
            dim,
            eps,
            weight,
            bias,
        } => {
            let (weight, bias) = (w.weight(weight), w.weight(bias));
            x.f_layer_norm([*dim].as_slice(), Some(&weight), Some(&bias), *eps, true)
        }
        Op::RmsNorm { eps, weight, .. } => rms_norm(x, &w.weight(weight), *eps),
        Op::GroupNorm {
            groups,
            eps,
            weight,
            bias,
            ..
        } => x.f_group_norm(*groups, optional(weight), optional(bias), *eps, true),
        // F.instance_norm without running statistics: the input's own.
        Op::InstanceNorm {
            eps, weight, bias, ..
        } => x.f_instance_norm(
            optional(weight),
            optional(bias),
            None::<Tensor>,
            None::<Tensor>,
            true,
            0.1,
            *eps,
            true,
        ),
        _ => unreachable!("apply hands norm only the norms without statistics"),
    }
}

/// `batch_norm`: batch statistics (and the running ones updated) in
/// training, the running ones otherwise.
fn batch_norm(op: &Op, x: &Tensor, w: &impl Weights, train: bool) -> Result<Tensor, tch::TchError> {
    let Op::BatchNorm {
        eps,
        momentum,
        weight,
        bias,
        running_mean,
        running_var,
        num_batches_tracked,
        ..
    } = op
    else {
        unreachable!("apply hands batch_norm only its own op")
    };
    if train {
        let _ = w.weight(num_batches_tracked).f_add_scalar_(1.0)?;
    }
    x.f_batch_norm(
        Some(&w.weight(weight)),
        Some(&w.weight(bias)),
        Some(&w.weight(running_mean)),
        Some(&w.weight(running_var)),
        train,
        *momentum,
        *eps,
        true,
    )
}

/// PyTorch's nn.RMSNorm: x * rsqrt(mean(x², last dim) + eps) * weight.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor, tch::TchError> {
    x.f_square()
        .and_then(|s| s.f_mean_dim([-1i64].as_slice(), true, None::<Kind>))
        .and_then(|m| m.f_add_scalar(eps))
        .and_then(|m| m.f_rsqrt())
        .and_then(|r| x.f_mul(&r))
        .and_then(|y| y.f_mul(weight))
}

/// What generation keeps of an attention layer between steps: the keys
/// and values of every position so far, `[B, kv_heads, T, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

/// Applies `op` to the positions `offset..offset + t` of a sequence during
/// generation (no dropout, batch statistics not updated): position
/// embeddings start at `offset`, and attention attends to the keys and
/// values `cache` holds of the positions before (appending this call's).
/// The other operations see only these positions, so the caller uses this
/// for operations that act on each position alone.
pub fn forward_at(
    op: &Op,
    inputs: &[&Tensor],
    w: &impl Weights,
    precision: Precision,
    offset: i64,
    cache: &mut KvCache,
    ctx: impl Fn() -> String,
) -> Result<Tensor, RunError> {
    match op {
        Op::PosEmbedding { weight, .. } => w
            .weight(weight)
            .f_narrow(0, offset, inputs[0].size()[1])
            .and_then(|p| inputs[0].f_add(&p))
            .context(ctx),
        Op::Attention { .. } => match low_kind(precision) {
            Some(kind) => {
                let x = inputs[0].f_to_kind(kind).context(&ctx)?;
                attention_op(op, &x, &Low(w, kind), Some((offset, cache)))
                    .and_then(|y| y.f_to_kind(Kind::Float))
                    .context(ctx)
            }
            None => attention_op(op, inputs[0], w, Some((offset, cache))).context(ctx),
        },
        _ => forward(op, inputs, w, false, precision, ctx),
    }
}

/// `attention`, its settings taken from the op.
fn attention_op(
    op: &Op,
    x: &Tensor,
    w: &impl Weights,
    at: Option<(i64, &mut KvCache)>,
) -> Result<Tensor, tch::TchError> {
    let Op::Attention {
        dim,
        heads,
        kv_heads,
        causal,
        rope_theta,
        in_proj_weight,
        in_proj_bias,
        out_proj_weight,
        out_proj_bias,
    } = op
    else {
        unreachable!("apply hands attention only its own op")
    };
    attention(
        x,
        Heads {
            dim: *dim,
            heads: *heads,
            kv_heads: *kv_heads,
        },
        *causal,
        *rope_theta,
        w,
        (in_proj_weight, in_proj_bias.as_deref()),
        (out_proj_weight, out_proj_bias.as_deref()),
        at,
    )
}

/// The widths of an attention layer.
struct Heads {
    dim: i64,
    heads: i64,
    kv_heads: i64,
}

/// nn.MultiheadAttention(batch_first=True) on x: [B, T, D] attending to
/// itself, with grouped key/value heads and rotary embeddings when asked.
/// During generation `at` gives the position of x's first row and the keys
/// and values of the positions before it.
#[allow(clippy::too_many_arguments)]
fn attention(
    x: &Tensor,
    Heads {
        dim,
        heads,
        kv_heads,
    }: Heads,
    causal: bool,
    rope_theta: Option<f64>,
    w: &impl Weights,
    (in_w, in_b): (&str, Option<&str>),
    (out_w, out_b): (&str, Option<&str>),
    at: Option<(i64, &mut KvCache)>,
) -> Result<Tensor, tch::TchError> {
    let (b, t) = (x.size()[0], x.size()[1]);
    let offset = at.as_ref().map_or(0, |(offset, _)| *offset);
    let head_dim = dim / heads;
    let qkv = x.f_linear(&w.weight(in_w), in_b.map(|n| w.weight(n)).as_ref())?;
    let parts = qkv.f_split_with_sizes(
        [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim].as_slice(),
        -1,
    )?;
    let split = |t_: &Tensor, n: i64| {
        t_.f_reshape([b, t, n, head_dim])
            .and_then(|y| y.f_transpose(1, 2))
    };
    let (mut q, mut k, mut v) = (
        split(&parts[0], heads)?,
        split(&parts[1], kv_heads)?,
        split(&parts[2], kv_heads)?,
    );
    if let Some(theta) = rope_theta {
        let (cos, sin) = rope_tables(offset, t, head_dim, theta, q.kind(), q.device())?;
        q = rotate(&q, &cos, &sin)?;
        k = rotate(&k, &cos, &sin)?;
    }
    if let Some((_, cache)) = at {
        if let (Some(old_k), Some(old_v)) = (&cache.k, &cache.v) {
            k = Tensor::f_cat(&[old_k, &k], 2)?;
            v = Tensor::f_cat(&[old_v, &v], 2)?;
        }
        cache.k = Some(k.shallow_clone());
        cache.v = Some(v.shallow_clone());
    }
    // Rows after the first of the sequence attend to every key before them:
    // the causal mask matters only among this call's own rows, and a call
    // with earlier positions cached brings one row.
    let y = Tensor::f_scaled_dot_product_attention(
        &q,
        &k,
        &v,
        None::<Tensor>,
        0.0,
        causal && offset == 0,
        None,
        kv_heads != heads,
    )?;
    let y = y.f_transpose(1, 2)?.f_reshape([b, t, dim])?;
    y.f_linear(&w.weight(out_w), out_b.map(|n| w.weight(n)).as_ref())
}

/// The cosines and sines of rotary embeddings for positions start..start +
/// t, [t, head_dim], each frequency written twice (the halves rotate
/// together): inv_freq[i] = theta^(-2i / head_dim), computed in float32 as
/// Hugging Face's LLaMA computes it.
fn rope_tables(
    start: i64,
    t: i64,
    head_dim: i64,
    theta: f64,
    kind: Kind,
    device: tch::Device,
) -> Result<(Tensor, Tensor), tch::TchError> {
    let exponents = Tensor::f_arange_start_step(0, head_dim, 2, (Kind::Int64, device))?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(head_dim as f64)?;
    let inv_freq = Tensor::f_pow_scalar(theta, &exponents)?.f_reciprocal()?;
    let positions = Tensor::f_arange_start(start, start + t, (Kind::Float, device))?;
    let freqs = positions.f_outer(&inv_freq)?;
    let angles = Tensor::f_cat(&[&freqs, &freqs], -1)?;
    Ok((
        angles.f_cos()?.f_to_kind(kind)?,
        angles.f_sin()?.f_to_kind(kind)?,
    ))
}

/// x * cos + rotate_half(x) * sin, where rotate_half(x) = [-x₂, x₁] for the
/// halves x₁, x₂ of the last dimension.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, tch::TchError> {
    let halves = x.f_chunk(2, -1)?;
    let rotated = Tensor::f_cat(&[&halves[1].f_neg()?, &halves[0]], -1)?;
    x.f_mul(cos)?.f_add(&rotated.f_mul(sin)?)
}
