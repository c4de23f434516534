//! The built-in layer library: each layer's signature, its shape rule and the
//! plan node (with PyTorch-named parameters) it lowers to.

use super::args::{ParamSig, Ty, Value};
use super::CheckError;
use crate::plan::{shape_to_string, Dim, Init, Op, ParamSpec, Shape};
use crate::span::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Linear,
    Conv1d,
    Conv2d,
    MaxPool1d,
    MaxPool2d,
    AvgPool1d,
    AvgPool2d,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    BatchNorm,
    LayerNorm,
    RmsNorm,
    Embedding,
    PosEmbedding,
    Attention,
    Dropout,
    Flatten,
    Reshape,
    Transpose,
    Softmax,
    Relu,
    Gelu,
    Silu,
    Tanh,
    Sigmoid,
}

const ALL: [(&str, Builtin); 25] = [
    ("linear", Builtin::Linear),
    ("conv1d", Builtin::Conv1d),
    ("conv2d", Builtin::Conv2d),
    ("max_pool1d", Builtin::MaxPool1d),
    ("max_pool2d", Builtin::MaxPool2d),
    ("avg_pool1d", Builtin::AvgPool1d),
    ("avg_pool2d", Builtin::AvgPool2d),
    ("adaptive_avg_pool1d", Builtin::AdaptiveAvgPool1d),
    ("adaptive_avg_pool2d", Builtin::AdaptiveAvgPool2d),
    ("batch_norm", Builtin::BatchNorm),
    ("layer_norm", Builtin::LayerNorm),
    ("rms_norm", Builtin::RmsNorm),
    ("embedding", Builtin::Embedding),
    ("pos_embedding", Builtin::PosEmbedding),
    ("attention", Builtin::Attention),
    ("dropout", Builtin::Dropout),
    ("flatten", Builtin::Flatten),
    ("reshape", Builtin::Reshape),
    ("transpose", Builtin::Transpose),
    ("softmax", Builtin::Softmax),
    ("relu", Builtin::Relu),
    ("gelu", Builtin::Gelu),
    ("silu", Builtin::Silu),
    ("tanh", Builtin::Tanh),
    ("sigmoid", Builtin::Sigmoid),
];

/// Every built-in layer's name, for suggestions and editors.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|(name, _)| *name)
}

/// What lowering one layer produces.
pub struct Lowered {
    pub op: Op,
    pub params: Vec<ParamSpec>,
    pub buffers: Vec<ParamSpec>,
    pub output: Shape,
}

impl Lowered {
    fn stateless(op: Op, output: Shape) -> Self {
        Lowered {
            op,
            params: vec![],
            buffers: vec![],
            output,
        }
    }
}

fn int(name: &str) -> ParamSig {
    ParamSig::required(name, Ty::Int)
}

fn int_or(name: &str, default: i64) -> ParamSig {
    ParamSig::optional(name, Ty::Int, Value::Int(default))
}

fn float_or(name: &str, default: f64) -> ParamSig {
    ParamSig::optional(name, Ty::Float, Value::Float(default))
}

fn bool_or(name: &str, default: bool) -> ParamSig {
    ParamSig::optional(name, Ty::Bool, Value::Bool(default))
}

impl Builtin {
    pub fn lookup(name: &str) -> Option<Builtin> {
        ALL.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(_, b)| *b == self)
            .map(|(n, _)| *n)
            .expect("every builtin is listed")
    }

    pub fn signature(self) -> Vec<ParamSig> {
        use Builtin::*;
        match self {
            Linear => vec![
                int("in_features"),
                int("out_features"),
                bool_or("bias", true),
            ],
            Conv1d | Conv2d => vec![
                int("in_channels"),
                int("out_channels"),
                int("kernel"),
                int_or("stride", 1),
                int_or("padding", 0),
                bool_or("bias", true),
            ],
            // stride 0 stands for "the kernel size", PyTorch's default.
            MaxPool1d | MaxPool2d | AvgPool1d | AvgPool2d => {
                vec![int("kernel"), int_or("stride", 0), int_or("padding", 0)]
            }
            AdaptiveAvgPool1d => vec![int("size")],
            AdaptiveAvgPool2d => vec![int("height"), int("width")],
            BatchNorm => vec![
                int("features"),
                float_or("eps", 1e-5),
                float_or("momentum", 0.1),
            ],
            LayerNorm => vec![int("dim"), float_or("eps", 1e-5)],
            // PyTorch's nn.RMSNorm default eps is float32's machine epsilon.
            RmsNorm => vec![int("dim"), float_or("eps", f32::EPSILON as f64)],
            Embedding => vec![int("num_embeddings"), int("dim")],
            PosEmbedding => vec![int("max_len"), int("dim")],
            Attention => vec![int("dim"), int("heads"), bool_or("causal", false)],
            Dropout => vec![float_or("p", 0.5)],
            Reshape => vec![ParamSig::required("shape", Ty::IntList)],
            Transpose => vec![int("dim0"), int("dim1")],
            Softmax => vec![int_or("dim", -1)],
            Flatten | Relu | Gelu | Silu | Tanh | Sigmoid => vec![],
        }
    }

    /// Checks the bound argument values on their own (before any input is
    /// seen), with `span` on the call.
    pub fn validate(self, args: &[Value], span: Span) -> Result<(), CheckError> {
        use Builtin::*;
        let sig = self.signature();
        let positive = |i: usize| -> Result<(), CheckError> {
            let v = args[i].as_int();
            if v < 1 {
                return Err(CheckError::invalid(
                    format!(
                        "{} `{}` must be at least 1, got {v}",
                        self.name(),
                        sig[i].name
                    ),
                    span,
                    "here",
                ));
            }
            Ok(())
        };
        match self {
            Linear | Embedding | PosEmbedding | AdaptiveAvgPool2d => {
                (0..2).try_for_each(positive)?
            }
            AdaptiveAvgPool1d => positive(0)?,
            Conv1d | Conv2d => {
                (0..4).try_for_each(positive)?;
                if args[4].as_int() < 0 {
                    return Err(CheckError::invalid("padding must be ≥ 0", span, "here"));
                }
            }
            MaxPool1d | MaxPool2d | AvgPool1d | AvgPool2d => {
                positive(0)?;
                let (k, s, p) = (args[0].as_int(), args[1].as_int(), args[2].as_int());
                if s < 0 || p < 0 || p * 2 > k {
                    return Err(CheckError::InvalidValue {
                        message: format!(
                            "{}: need stride ≥ 1, 0 ≤ padding ≤ kernel/2",
                            self.name()
                        ),
                        span,
                        label: "here".into(),
                        help: Some("leave `stride` out to use the kernel size".into()),
                    });
                }
            }
            BatchNorm | LayerNorm | RmsNorm => {
                positive(0)?;
                if args[1].as_float() <= 0.0 {
                    return Err(CheckError::invalid(
                        format!("{}: eps must be > 0", self.name()),
                        span,
                        "here",
                    ));
                }
                if self == BatchNorm && !(0.0..=1.0).contains(&args[2].as_float()) {
                    return Err(CheckError::invalid(
                        "batch_norm: momentum must be in [0, 1]",
                        span,
                        "here",
                    ));
                }
            }
            Attention => {
                (0..2).try_for_each(positive)?;
                let (dim, heads) = (args[0].as_int(), args[1].as_int());
                if dim % heads != 0 {
                    return Err(CheckError::InvalidValue {
                        message: format!("attention: {heads} heads do not divide the width {dim}"),
                        span,
                        label: "heads must divide dim".into(),
                        help: Some(format!(
                            "each head gets dim / heads features; try heads = {}",
                            divisor_near(dim, heads)
                        )),
                    });
                }
            }
            Dropout => {
                let p = args[0].as_float();
                if !(0.0..1.0).contains(&p) {
                    return Err(CheckError::InvalidValue {
                        message: format!("dropout probability must be in [0, 1), got {p}"),
                        span,
                        label: "out of range".into(),
                        help: Some(
                            "p is the probability of zeroing an element, e.g. `dropout(0.1)`"
                                .into(),
                        ),
                    });
                }
            }
            Reshape => {
                if let Value::List(items) = &args[0] {
                    if items.is_empty() || items.iter().any(|v| v.as_int() < 1) {
                        return Err(CheckError::invalid(
                            "reshape needs a list of sizes ≥ 1 for each sample, e.g. `reshape([1, 8, 8])`",
                            span,
                            "here",
                        ));
                    }
                }
            }
            Transpose | Softmax | Flatten | Relu | Gelu | Silu | Tanh | Sigmoid => {}
        }
        Ok(())
    }

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
                ];
                let op = Op::BatchNorm {
                    features,
                    eps: f(1),
                    momentum: f(2),
                    weight: name("weight"),
                    bias: name("bias"),
                    running_mean: name("running_mean"),
                    running_var: name("running_var"),
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
                let params = vec![fixed("weight", vec![n, d], Init::Normal { std: 1.0 })];
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
                let xavier = (6.0 / (dim + 3 * dim) as f64).sqrt();
                let params = vec![
                    fixed(
                        "in_proj_weight",
                        vec![3 * dim, dim],
                        Init::Uniform { bound: xavier },
                    ),
                    fixed("in_proj_bias", vec![3 * dim], Init::Zeros),
                    uniform("out_proj.weight", vec![dim, dim], dim),
                    fixed("out_proj.bias", vec![dim], Init::Zeros),
                ];
                let op = Op::Attention {
                    dim,
                    heads,
                    causal,
                    in_proj_weight: name("in_proj_weight"),
                    in_proj_bias: name("in_proj_bias"),
                    out_proj_weight: name("out_proj.weight"),
                    out_proj_bias: name("out_proj.bias"),
                };
                Lowered {
                    op,
                    params,
                    buffers: vec![],
                    output: input.clone(),
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
            Relu => Lowered::stateless(Op::Relu, input.clone()),
            Gelu => Lowered::stateless(Op::Gelu, input.clone()),
            Silu => Lowered::stateless(Op::Silu, input.clone()),
            Tanh => Lowered::stateless(Op::Tanh, input.clone()),
            Sigmoid => Lowered::stateless(Op::Sigmoid, input.clone()),
        })
    }
}

fn divisor_near(dim: i64, heads: i64) -> i64 {
    (1..=dim)
        .filter(|d| dim % d == 0)
        .min_by_key(|d| (d - heads).abs())
        .unwrap_or(1)
}

pub fn join_path(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

fn check_last_dim(
    layer: Builtin,
    input: &Shape,
    expected: i64,
    span: Span,
) -> Result<(), CheckError> {
    match input.last() {
        Some(Dim::Size(found)) if *found == expected => Ok(()),
        Some(Dim::Size(found)) => Err(CheckError::WidthMismatch {
            layer: format!("`{}`", layer.name()),
            unit: "input features",
            expected,
            found: *found,
            span,
            help: Some(format!(
                "the input here has shape {}",
                shape_to_string(input)
            )),
        }),
        _ => Err(CheckError::ShapeMismatch {
            expected: format!("a last dimension of {expected}"),
            found: shape_to_string(input),
            span,
            what: format!("`{}` needs a known last dimension", layer.name()),
            help: None,
        }),
    }
}

/// The known sizes of the last `spatial` dimensions of `[B, C, spatial...]`.
fn spatial_sizes(
    layer: Builtin,
    input: &Shape,
    spatial: usize,
    span: Span,
) -> Result<Vec<i64>, CheckError> {
    let layout = if spatial == 1 {
        "[B, C, L]"
    } else {
        "[B, C, H, W]"
    };
    if input.len() != spatial + 2 {
        return Err(CheckError::ShapeMismatch {
            expected: layout.into(),
            found: shape_to_string(input),
            span,
            what: format!("`{}` takes {layout}", layer.name()),
            help: (spatial == 2 && input.len() == 2)
                .then(|| "reshape flat rows into images first, e.g. `reshape([1, 8, 8])`".into()),
        });
    }
    known_sizes(&input[2..], input, span, "known spatial sizes")
}

/// Like [`spatial_sizes`], and the channel dimension must be `channels`.
fn check_channels(
    layer: Builtin,
    input: &Shape,
    spatial: usize,
    channels: i64,
    span: Span,
) -> Result<Vec<i64>, CheckError> {
    let sizes = spatial_sizes(layer, input, spatial, span)?;
    match &input[1] {
        Dim::Size(c) if *c == channels => Ok(sizes),
        Dim::Size(c) => Err(CheckError::WidthMismatch {
            layer: format!("`{}`", layer.name()),
            unit: "input channels",
            expected: channels,
            found: *c,
            span,
            help: Some(format!(
                "the input here has shape {} (channels are dimension 1)",
                shape_to_string(input)
            )),
        }),
        Dim::Symbol(_) => Err(CheckError::ShapeMismatch {
            expected: format!("{channels} channels"),
            found: shape_to_string(input),
            span,
            what: "unknown channel count".into(),
            help: None,
        }),
    }
}

/// Output size of a sliding window (convolution, pooling).
fn window_out(
    layer: Builtin,
    size: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
    span: Span,
) -> Result<i64, CheckError> {
    let out = (size + 2 * padding - kernel).div_euclid(stride) + 1;
    if out < 1 {
        return Err(CheckError::ShapeMismatch {
            expected: format!(
                "an input of at least {} (kernel {kernel}, padding {padding})",
                kernel - 2 * padding
            ),
            found: format!("size {size}"),
            span,
            what: format!("`{}`: the window does not fit", layer.name()),
            help: None,
        });
    }
    Ok(out)
}

fn sample_size(input: &Shape, span: Span) -> Result<i64, CheckError> {
    let sizes = known_sizes(
        &input[1..],
        input,
        span,
        "known sizes after the batch dimension",
    )?;
    Ok(sizes.iter().fold(1i64, |acc, n| acc.saturating_mul(*n)))
}

/// The sizes of `dims` (part of `input`), or an error naming the symbol.
fn known_sizes(
    dims: &[Dim],
    input: &Shape,
    span: Span,
    expected: &str,
) -> Result<Vec<i64>, CheckError> {
    dims.iter()
        .map(|d| match d {
            Dim::Size(n) => Ok(*n),
            Dim::Symbol(s) => Err(CheckError::ShapeMismatch {
                expected: expected.into(),
                found: shape_to_string(input),
                span,
                what: format!("`{s}` is not a known size"),
                help: None,
            }),
        })
        .collect()
}

fn with_last(input: &Shape, size: i64) -> Shape {
    let mut out = input.clone();
    if let Some(last) = out.last_mut() {
        *last = Dim::Size(size);
    }
    out
}

fn flatten(input: &Shape, span: Span) -> Result<Shape, CheckError> {
    if input.len() < 2 {
        return Err(CheckError::ShapeMismatch {
            expected: "a batch dimension and at least one more".into(),
            found: shape_to_string(input),
            span,
            what: "nothing to flatten".into(),
            help: None,
        });
    }
    Ok(vec![input[0].clone(), Dim::Size(sample_size(input, span)?)])
}
