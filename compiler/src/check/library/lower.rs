//! Lowering of a built-in layer applied to an input shape: the plan node,
//! the parameters (named and initialised as PyTorch does) and the output
//! shape, or the shape error.

use super::shapes::*;
use super::{Builtin, Lowered};
use crate::check::args::Value;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Dim, Init, Op, ParamSpec, Shape};
use crate::span::Span;

impl Builtin {
    /// The node for this layer at module path `path` applied to `input`, with
    /// the parameters and buffers it creates, or the shape error.
    pub fn lower(
        self,
        args: &[Value],
        path: &str,
        input: &Shape,
        span: Span,
    ) -> Result<Lowered, CheckError> {
        use Builtin::*;
        let name = |n: &str| join_path(path, n);
        let a = |i: usize| args[i].as_int();
        let f = |i: usize| args[i].as_float();
        let uniform = |n: &str, shape: Vec<i64>, fan_in: i64| ParamSpec {
            name: name(n),
            shape,
            init: Init::Uniform {
                bound: 1.0 / (fan_in as f64).sqrt(),
            },
        };
        let fixed = |n: &str, shape: Vec<i64>, init: Init| ParamSpec {
            name: name(n),
            shape,
            init,
        };
        Ok(match self {
            Linear => {
                let (i, o, bias) = (a(0), a(1), args[2].as_bool());
                check_last_dim(self, input, i, span)?;
                let mut params = vec![uniform("weight", vec![o, i], i)];
                if bias {
                    params.push(uniform("bias", vec![o], i));
                }
                let op = Op::Linear {
                    in_features: i,
                    out_features: o,
                    weight: name("weight"),
                    bias: bias.then(|| name("bias")),
                };
                Lowered {
                    op,
                    params,
                    buffers: vec![],
                    output: with_last(input, o),
                }
            }
            Conv1d | Conv2d => {
                let spatial = if self == Conv1d { 1 } else { 2 };
                let (i, o, k, s, p, bias) = (a(0), a(1), a(2), a(3), a(4), args[5].as_bool());
                let sizes = check_channels(self, input, spatial, i, span)?;
                let mut output = vec![input[0].clone(), Dim::Size(o)];
                for size in sizes {
                    output.push(Dim::Size(window_out(self, size, k, s, p, span)?));
                }
                let fan_in = i * k.pow(spatial as u32);
                let mut wshape = vec![o, i];
                wshape.extend(std::iter::repeat_n(k, spatial));
                let mut params = vec![uniform("weight", wshape, fan_in)];
                if bias {
                    params.push(uniform("bias", vec![o], fan_in));
                }
                let (weight, bias) = (name("weight"), bias.then(|| name("bias")));
                let op = if self == Conv1d {
                    Op::Conv1d {
                        in_channels: i,
                        out_channels: o,
                        kernel: k,
                        stride: s,
                        padding: p,
                        weight,
                        bias,
                    }
                } else {
                    Op::Conv2d {
                        in_channels: i,
                        out_channels: o,
                        kernel: k,
                        stride: s,
                        padding: p,
                        weight,
                        bias,
                    }
                };
                Lowered {
                    op,
                    params,
                    buffers: vec![],
                    output,
                }
            }
            MaxPool1d | MaxPool2d | AvgPool1d | AvgPool2d => {
                let spatial = if matches!(self, MaxPool1d | AvgPool1d) {
                    1
                } else {
                    2
                };
                let (k, p) = (a(0), a(2));
                let s = if a(1) == 0 { k } else { a(1) };
                let sizes = spatial_sizes(self, input, spatial, span)?;
                let mut output = input[..input.len() - spatial].to_vec();
                for size in sizes {
                    output.push(Dim::Size(window_out(self, size, k, s, p, span)?));
                }
                let op = match self {
                    MaxPool1d => Op::MaxPool1d {
                        kernel: k,
                        stride: s,
                        padding: p,
                    },
                    MaxPool2d => Op::MaxPool2d {
                        kernel: k,
                        stride: s,
                        padding: p,
                    },
                    AvgPool1d => Op::AvgPool1d {
                        kernel: k,
                        stride: s,
                        padding: p,
                    },
                    _ => Op::AvgPool2d {
                        kernel: k,
                        stride: s,
                        padding: p,
                    },
                };
                Lowered::stateless(op, output)
            }
            AdaptiveAvgPool1d => {
                spatial_sizes(self, input, 1, span)?;
                let mut output = input.clone();
                *output.last_mut().expect("rank checked") = Dim::Size(a(0));
                Lowered::stateless(Op::AdaptiveAvgPool1d { size: a(0) }, output)
            }
            AdaptiveAvgPool2d => {
                spatial_sizes(self, input, 2, span)?;
                let mut output = input[..input.len() - 2].to_vec();
                output.extend([Dim::Size(a(0)), Dim::Size(a(1))]);
                Lowered::stateless(
                    Op::AdaptiveAvgPool2d {
                        height: a(0),
                        width: a(1),
                    },
                    output,
                )
            }
            BatchNorm => {
                let features = a(0);
                match input.get(1) {
                    Some(Dim::Size(c)) if *c == features && (2..=4).contains(&input.len()) => {}
                    _ => {
                        return Err(CheckError::ShapeMismatch {
                            expected: format!(
                                "[B, {features}], [B, {features}, L] or [B, {features}, H, W]"
                            ),
                            found: shape_to_string(input),
                            span,
                            what: format!("batch_norm({features}) normalizes dimension 1"),
                            help: None,
                        })
                    }
                }
                let params = vec![
                    fixed("weight", vec![features], Init::Ones),
                    fixed("bias", vec![features], Init::Zeros),
                ];
                let buffers = vec![
                    fixed("running_mean", vec![features], Init::Zeros),
                    fixed("running_var", vec![features], Init::Ones),
                    // Counted as PyTorch counts it, so that the saved
                    // weights load into nn.BatchNorm with strict=True.
                    fixed("num_batches_tracked", vec![], Init::Zeros),
                ];
                let op = Op::BatchNorm {
                    features,
                    eps: f(1),
                    momentum: f(2),
                    weight: name("weight"),
                    bias: name("bias"),
                    running_mean: name("running_mean"),
                    running_var: name("running_var"),
                    num_batches_tracked: name("num_batches_tracked"),
                };
                Lowered {
                    op,
                    params,
                    buffers,
                    output: input.clone(),
                }
            }
            LayerNorm => {
                let dim = a(0);
                check_last_dim(self, input, dim, span)?;
                let params = vec![
                    fixed("weight", vec![dim], Init::Ones),
                    fixed("bias", vec![dim], Init::Zeros),
                ];
                let op = Op::LayerNorm {
                    dim,
                    eps: f(1),
                    weight: name("weight"),
                    bias: name("bias"),
                };
                Lowered {
                    op,
                    params,
                    buffers: vec![],
                    output: input.clone(),
                }
            }
            RmsNorm => {
                let dim = a(0);
                check_last_dim(self, input, dim, span)?;
                let params = vec![fixed("weight", vec![dim], Init::Ones)];
                Lowered {
                    op: Op::RmsNorm {
                        dim,
                        eps: f(1),
                        weight: name("weight"),
                    },
                    params,
                    buffers: vec![],
                    output: input.clone(),
                }
            }
            Embedding => {
                let (n, d) = (a(0), a(1));
                let params = vec![fixed("weight", vec![n, d], Init::Normal { std: f(2) })];
                let mut output = input.clone();
                output.push(Dim::Size(d));
                Lowered {
                    op: Op::Embedding {
                        num_embeddings: n,
                        dim: d,
                        weight: name("weight"),
                    },
                    params,
                    buffers: vec![],
                    output,
                }
            }
            PosEmbedding => {
                let (max_len, d) = (a(0), a(1));
                match input.as_slice() {
                    [_, Dim::Size(t), Dim::Size(w)] if *w == d && *t <= max_len => {}
                    _ => {
                        return Err(CheckError::ShapeMismatch {
                            expected: format!("[B, T, {d}] with T ≤ {max_len}"),
                            found: shape_to_string(input),
                            span,
                            what: "pos_embedding adds one learned vector per position".into(),
                            help: None,
                        })
                    }
                }
                let params = vec![fixed(
                    "weight",
                    vec![max_len, d],
                    Init::Normal { std: 0.02 },
                )];
                Lowered {
                    op: Op::PosEmbedding {
                        max_len,
                        dim: d,
                        weight: name("weight"),
                    },
                    params,
                    buffers: vec![],
                    output: input.clone(),
                }
            }
            Attention => {
                let (dim, heads, causal) = (a(0), a(1), args[2].as_bool());
                let kv_heads = if a(3) == 0 { heads } else { a(3) };
                let (bias, rope) = (args[4].as_bool(), args[5].as_bool());
                let rows = (heads + 2 * kv_heads) * (dim / heads);
                match input.as_slice() {
                    [_, _, Dim::Size(w)] if *w == dim => {}
                    _ => {
                        return Err(CheckError::ShapeMismatch {
                            expected: format!("[B, T, {dim}]"),
                            found: shape_to_string(input),
                            span,
                            what: format!(
                                "attention({dim}, ...) takes a sequence of {dim}-wide vectors"
                            ),
                            help: None,
                        })
                    }
                }
                // nn.MultiheadAttention: xavier_uniform_ in_proj, zero biases,
                // out_proj initialised as a linear layer.
                let xavier = (6.0 / (dim + rows) as f64).sqrt();
                let mut params = vec![fixed(
                    "in_proj_weight",
                    vec![rows, dim],
                    Init::Uniform { bound: xavier },
                )];
                if bias {
                    params.push(fixed("in_proj_bias", vec![rows], Init::Zeros));
                }
                params.push(uniform("out_proj.weight", vec![dim, dim], dim));
                if bias {
                    params.push(fixed("out_proj.bias", vec![dim], Init::Zeros));
                }
                let op = Op::Attention {
                    dim,
                    heads,
                    kv_heads,
                    causal,
                    rope_theta: rope.then(|| f(6)),
                    in_proj_weight: name("in_proj_weight"),
                    in_proj_bias: bias.then(|| name("in_proj_bias")),
                    out_proj_weight: name("out_proj.weight"),
                    out_proj_bias: bias.then(|| name("out_proj.bias")),
                };
                Lowered {
                    op,
                    params,
                    buffers: vec![],
                    output: input.clone(),
                }
            }
            ClassToken => {
                let d = a(0);
                let t = match input.as_slice() {
                    [_, Dim::Size(t), Dim::Size(w)] if *w == d => *t,
                    _ => {
                        return Err(CheckError::ShapeMismatch {
                            expected: format!("[B, T, {d}]"),
                            found: shape_to_string(input),
                            span,
                            what: "class_token puts one learned vector before a sequence".into(),
                            help: None,
                        })
                    }
                };
                // torchvision's VisionTransformer: a zero-initialised
                // [1, 1, dim] parameter.
                let params = vec![fixed("weight", vec![1, 1, d], Init::Zeros)];
                Lowered {
                    op: Op::ClassToken {
                        dim: d,
                        weight: name("weight"),
                    },
                    params,
                    buffers: vec![],
                    output: vec![input[0].clone(), Dim::Size(t + 1), Dim::Size(d)],
                }
            }
            Dropout => Lowered::stateless(Op::Dropout { p: f(0) }, input.clone()),
            Flatten => Lowered::stateless(Op::Flatten, flatten(input, span)?),
            Reshape => {
                let shape: Vec<i64> = match &args[0] {
                    Value::List(items) => items.iter().map(Value::as_int).collect(),
                    _ => vec![],
                };
                let have = sample_size(input, span)?;
                let want: i64 = shape.iter().product();
                if have != want {
                    return Err(CheckError::ShapeMismatch {
                        expected: format!("{want} values per sample"),
                        found: format!("{} ({have} values)", shape_to_string(input)),
                        span,
                        what: "reshape must keep the number of values".into(),
                        help: None,
                    });
                }
                let mut output = vec![input[0].clone()];
                output.extend(shape.iter().map(|n| Dim::Size(*n)));
                Lowered::stateless(Op::Reshape { shape }, output)
            }
            Transpose => {
                let rank = input.len() as i64;
                let norm = |d: i64| if d < 0 { d + rank } else { d };
                let (d0, d1) = (norm(a(0)), norm(a(1)));
                if !(1..rank).contains(&d0) || !(1..rank).contains(&d1) {
                    return Err(CheckError::ShapeMismatch {
                        expected: format!("dimensions between 1 and {} (0 is the batch)", rank - 1),
                        found: format!(
                            "transpose({}, {}) of {}",
                            a(0),
                            a(1),
                            shape_to_string(input)
                        ),
                        span,
                        what: "no such dimension".into(),
                        help: None,
                    });
                }
                let mut output = input.clone();
                output.swap(d0 as usize, d1 as usize);
                Lowered::stateless(Op::Transpose { dim0: d0, dim1: d1 }, output)
            }
            Softmax => {
                let rank = input.len() as i64;
                let dim = a(0);
                if dim >= rank || dim < -rank {
                    return Err(CheckError::invalid(
                        format!("softmax: no dimension {dim} in {}", shape_to_string(input)),
                        span,
                        "here",
                    ));
                }
                Lowered::stateless(Op::Softmax { dim }, input.clone())
            }
            Select | Mean => {
                let rank = input.len() as i64;
                let dim = if a(0) < 0 { a(0) + rank } else { a(0) };
                if !(1..rank).contains(&dim) {
                    return Err(CheckError::ShapeMismatch {
                        expected: format!(
                            "a dimension between 1 and {} (0 is the batch)",
                            rank - 1
                        ),
                        found: format!(
                            "{}({}, …) of {}",
                            self.name(),
                            a(0),
                            shape_to_string(input)
                        ),
                        span,
                        what: "no such dimension".into(),
                        help: None,
                    });
                }
                let mut output = input.clone();
                output.remove(dim as usize);
                if self == Mean {
                    return Ok(Lowered::stateless(Op::Mean { dim }, output));
                }
                let index = a(1);
                if let Dim::Size(n) = input[dim as usize] {
                    if index >= n || index < -n {
                        return Err(CheckError::ShapeMismatch {
                            expected: format!("an index in {}..{n} (or from the end, -{n}..-1)", 0),
                            found: format!("{index} in {}", shape_to_string(input)),
                            span,
                            what: format!("dimension {dim} has {n} positions"),
                            help: None,
                        });
                    }
                    let index = if index < 0 { index + n } else { index };
                    return Ok(Lowered::stateless(Op::Select { dim, index }, output));
                }
                return Err(CheckError::ShapeMismatch {
                    expected: "a sized dimension".into(),
                    found: shape_to_string(input),
                    span,
                    what: format!(
                        "select({}, {index}) needs the size of dimension {dim}",
                        a(0)
                    ),
                    help: None,
                });
            }
            Relu => Lowered::stateless(Op::Relu, input.clone()),
            Gelu => Lowered::stateless(Op::Gelu, input.clone()),
            Silu => Lowered::stateless(Op::Silu, input.clone()),
            Tanh => Lowered::stateless(Op::Tanh, input.clone()),
            Sigmoid => Lowered::stateless(Op::Sigmoid, input.clone()),
        })
    }
}
