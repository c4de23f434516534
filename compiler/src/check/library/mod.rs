//! The built-in layer library: each layer's signature and argument checks
//! here, its shape rule and plan node in [`lower`], the shape helpers in
//! [`shapes`].

mod lower;
mod shapes;

use shapes::divisor_near;
pub use shapes::join_path;

use super::args::{ParamSig, Ty, Value};
use super::CheckError;
use crate::plan::{Op, ParamSpec, Shape};
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
    ClassToken,
    Dropout,
    Flatten,
    Reshape,
    Transpose,
    Softmax,
    Select,
    Mean,
    Relu,
    Gelu,
    Silu,
    Tanh,
    Sigmoid,
}

const ALL: [(&str, Builtin); 28] = [
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
    ("class_token", Builtin::ClassToken),
    ("dropout", Builtin::Dropout),
    ("flatten", Builtin::Flatten),
    ("reshape", Builtin::Reshape),
    ("transpose", Builtin::Transpose),
    ("softmax", Builtin::Softmax),
    ("select", Builtin::Select),
    ("mean", Builtin::Mean),
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

    /// `linear(in_features: int, out_features: int, bias: bool = true)`.
    pub fn signature_text(self) -> String {
        format!(
            "{}({})",
            self.name(),
            super::args::signature_text(&self.signature())
        )
    }

    /// The keyword names of the layer's parameters, in order.
    pub fn parameter_names(self) -> Vec<String> {
        self.signature().into_iter().map(|p| p.name).collect()
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
            // nn.Embedding's N(0, 1) by default; GPT-2 draws from N(0, 0.02²).
            Embedding => vec![int("num_embeddings"), int("dim"), float_or("std", 1.0)],
            PosEmbedding => vec![int("max_len"), int("dim")],
            // kv_heads 0 stands for "as many as heads" (plain multi-head).
            Attention => vec![
                int("dim"),
                int("heads"),
                bool_or("causal", false),
                int_or("kv_heads", 0),
                bool_or("bias", true),
                bool_or("rope", false),
                float_or("rope_theta", 10000.0),
            ],
            ClassToken => vec![int("dim")],
            Dropout => vec![float_or("p", 0.5)],
            Reshape => vec![ParamSig::required("shape", Ty::IntList)],
            Transpose => vec![int("dim0"), int("dim1")],
            Softmax => vec![int_or("dim", -1)],
            Select => vec![int("dim"), int("index")],
            Mean => vec![int("dim")],
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
            Linear | PosEmbedding | AdaptiveAvgPool2d => (0..2).try_for_each(positive)?,
            Embedding => {
                (0..2).try_for_each(positive)?;
                let std = args[2].as_float();
                if !(std.is_finite() && std > 0.0) {
                    return Err(CheckError::invalid(
                        format!("embedding: std must be a number above 0, got {std}"),
                        span,
                        "here",
                    ));
                }
            }
            AdaptiveAvgPool1d | ClassToken => positive(0)?,
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
                let kv = args[3].as_int();
                if kv < 0 || (kv > 0 && heads % kv != 0) {
                    return Err(CheckError::InvalidValue {
                        message: format!(
                            "attention: {kv} key/value heads do not divide the {heads} query heads"
                        ),
                        span,
                        label: "kv_heads must divide heads".into(),
                        help: Some(format!(
                            "each key/value head serves heads / kv_heads query heads; try kv_heads = {}",
                            divisor_near(heads, kv.max(1))
                        )),
                    });
                }
                let rope = args[5].as_bool();
                if rope && (dim / heads) % 2 != 0 {
                    return Err(CheckError::invalid(
                        format!(
                            "attention: rotary embeddings rotate pairs of features, but each head has {} (odd)",
                            dim / heads
                        ),
                        span,
                        "dim / heads must be even with rope",
                    ));
                }
                let theta = args[6].as_float();
                if !(theta.is_finite() && theta > 1.0) {
                    return Err(CheckError::invalid(
                        format!("attention: rope_theta must be a number above 1, got {theta}"),
                        span,
                        "here",
                    ));
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
            Transpose | Softmax | Select | Mean | Flatten | Relu | Gelu | Silu | Tanh | Sigmoid => {
            }
        }
        Ok(())
    }
}
