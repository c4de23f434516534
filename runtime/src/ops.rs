//! The forward computation of each plan operation on libtorch.

use dtl_compiler::plan::{Op, Precision};
use tch::{Kind, Tensor};

use crate::error::{RunError, TorchContext};

/// Looks up parameters and buffers by their plan name (a shallow clone:
/// the same storage, tracked by autograd).
pub trait Weights {
    fn weight(&self, name: &str) -> Tensor;
}

/// The weights of another lookup, cast to bfloat16 (autograd carries the
/// gradient back to the float32 masters).
struct Bf16<'a, W>(&'a W);

impl<W: Weights> Weights for Bf16<'_, W> {
    fn weight(&self, name: &str) -> Tensor {
        self.0.weight(name).to_kind(Kind::BFloat16)
    }
}

/// Applies `op` to its inputs. `train` turns dropout on and makes batch_norm
/// use (and update) batch statistics. Under `Precision::Bf16` the
/// matrix-multiplying operations (linear, convolutions, attention) compute
/// in bfloat16 and hand float32 on, as autocast does; the rest stays float32.
pub fn forward(
    op: &Op,
    inputs: &[&Tensor],
    w: &impl Weights,
    train: bool,
    precision: Precision,
    ctx: impl Fn() -> String,
) -> Result<Tensor, RunError> {
    let low = precision == Precision::Bf16
        && matches!(
            op,
            Op::Linear { .. } | Op::Conv1d { .. } | Op::Conv2d { .. } | Op::Attention { .. }
        );
    if !low {
        return apply(op, inputs, w, train).context(ctx);
    }
    let cast = inputs
        .iter()
        .map(|t| t.f_to_kind(Kind::BFloat16))
        .collect::<Result<Vec<_>, _>>()
        .context(&ctx)?;
    let cast: Vec<&Tensor> = cast.iter().collect();
    apply(op, &cast, &Bf16(w), train)
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
    match op {
        Op::Input => Ok(x.shallow_clone()),
        Op::Linear { weight, bias, .. } => {
            x.f_linear(&w.weight(weight), bias.as_deref().map(|b| w.weight(b)))
        }
        Op::Conv1d {
            stride,
            padding,
            weight,
            bias,
            ..
        } => x.f_conv1d(
            &w.weight(weight),
            bias.as_deref().map(|b| w.weight(b)),
            [*stride],
            [*padding],
            [1],
            1,
        ),
        Op::Conv2d {
            stride,
            padding,
            weight,
            bias,
            ..
        } => x.f_conv2d(
            &w.weight(weight),
            bias.as_deref().map(|b| w.weight(b)),
            [*stride, *stride],
            [*padding, *padding],
            [1, 1],
            1,
        ),
        Op::MaxPool1d {
            kernel,
            stride,
            padding,
        } => x.f_max_pool1d([*kernel], [*stride], [*padding], [1], false),
        Op::MaxPool2d {
            kernel,
            stride,
            padding,
        } => x.f_max_pool2d(
            [*kernel, *kernel],
            [*stride, *stride],
            [*padding, *padding],
            [1, 1],
            false,
        ),
        Op::AvgPool1d {
            kernel,
            stride,
            padding,
        } => x.f_avg_pool1d([*kernel], [*stride], [*padding], false, true),
        Op::AvgPool2d {
            kernel,
            stride,
            padding,
        } => x.f_avg_pool2d(
            [*kernel, *kernel],
            [*stride, *stride],
            [*padding, *padding],
            false,
            true,
            None,
        ),
        Op::AdaptiveAvgPool1d { size } => x.f_adaptive_avg_pool1d([*size]),
        Op::AdaptiveAvgPool2d { height, width } => x.f_adaptive_avg_pool2d([*height, *width]),
        Op::BatchNorm {
            eps,
            momentum,
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            ..
        } => {
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
        Op::LayerNorm {
            dim,
            eps,
            weight,
            bias,
        } => x.f_layer_norm(
            [*dim].as_slice(),
            Some(&w.weight(weight)),
            Some(&w.weight(bias)),
            *eps,
            true,
        ),
        // PyTorch's nn.RMSNorm: x * rsqrt(mean(x², last dim) + eps) * weight.
        Op::RmsNorm { eps, weight, .. } => x
            .f_square()
            .and_then(|s| s.f_mean_dim([-1i64].as_slice(), true, None::<Kind>))
            .and_then(|m| m.f_add_scalar(*eps))
            .and_then(|m| m.f_rsqrt())
            .and_then(|r| x.f_mul(&r))
            .and_then(|y| y.f_mul(&w.weight(weight))),
        Op::Embedding { weight, .. } => x
            .f_to_kind(Kind::Int64)
            .and_then(|idx| Tensor::f_embedding(&w.weight(weight), &idx, -1, false, false)),
        Op::PosEmbedding { weight, .. } => {
            let len = x.size()[1];
            w.weight(weight)
                .f_narrow(0, 0, len)
                .and_then(|p| x.f_add(&p))
        }
        Op::Attention {
            dim,
            heads,
            causal,
            in_proj_weight,
            in_proj_bias,
            out_proj_weight,
            out_proj_bias,
        } => attention(
            x,
            *dim,
            *heads,
            *causal,
            w,
            [in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias],
        ),
        Op::Dropout { p } => x.f_dropout(*p, train),
        Op::Flatten => x.f_flatten(1, -1),
        Op::Reshape { shape } => {
            let mut full = vec![x.size()[0]];
            full.extend(shape);
            x.f_reshape(full.as_slice())
        }
        Op::Transpose { dim0, dim1 } => x.f_transpose(*dim0, *dim1),
        Op::Softmax { dim } => x.f_softmax(*dim, None::<Kind>),
        Op::Relu => x.f_relu(),
        Op::Gelu => x.f_gelu("none"),
        Op::Silu => x.f_silu(),
        Op::Tanh => x.f_tanh(),
        Op::Sigmoid => x.f_sigmoid(),
        Op::Add => inputs[1..]
            .iter()
            .try_fold(x.shallow_clone(), |acc, t| acc.f_add(t)),
        Op::Concat { dim } => Tensor::f_cat(inputs, *dim),
    }
}

/// nn.MultiheadAttention(batch_first=True) on x: [B, T, D] attending to itself.
fn attention(
    x: &Tensor,
    dim: i64,
    heads: i64,
    causal: bool,
    w: &impl Weights,
    [in_w, in_b, out_w, out_b]: [&String; 4],
) -> Result<Tensor, tch::TchError> {
    let (b, t) = (x.size()[0], x.size()[1]);
    let head_dim = dim / heads;
    let qkv = x
        .f_linear(&w.weight(in_w), Some(&w.weight(in_b)))?
        .f_chunk(3, -1)?;
    let split = |t_: &Tensor| {
        t_.f_reshape([b, t, heads, head_dim])
            .and_then(|y| y.f_transpose(1, 2))
    };
    let (q, k, v) = (split(&qkv[0])?, split(&qkv[1])?, split(&qkv[2])?);
    let y = Tensor::f_scaled_dot_product_attention(
        &q,
        &k,
        &v,
        None::<Tensor>,
        0.0,
        causal,
        None,
        false,
    )?;
    let y = y.f_transpose(1, 2)?.f_reshape([b, t, dim])?;
    y.f_linear(&w.weight(out_w), Some(&w.weight(out_b)))
}
