//! The built-in layer library: the layers' names, and the dispatch of a
//! call to the layer's definition. Each family of layers has one file in
//! [`layers`], with its signature, its argument checks and what it becomes
//! applied to an input side by side; [`shapes`] holds the shape arithmetic the families share.

mod layers;
mod shapes;

pub use shapes::join_path;

use super::args::{ParamSig, Value};
use super::CheckError;
use crate::plan::{Op, ParamSpec, Shape};
use crate::span::Span;
use layers::{
    activation, attention, conv, dropout, embedding, linear, norm, pool, shape_ops, upsample,
};
use layers::{Args, Call, Layer};
use shapes::Spatial;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Linear,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    MaxPool1d,
    MaxPool2d,
    AvgPool1d,
    AvgPool2d,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    Upsample,
    BatchNorm,
    LayerNorm,
    RmsNorm,
    GroupNorm,
    InstanceNorm,
    Embedding,
    PosEmbedding,
    Attention,
    ClassToken,
    Dropout,
    Flatten,
    Reshape,
    Transpose,
    Softmax,
    LogSoftmax,
    Select,
    Mean,
    Relu,
    LeakyRelu,
    Elu,
    Gelu,
    Silu,
    Tanh,
    Sigmoid,
}

const ALL: [(&str, Builtin); 35] = [
    ("linear", Builtin::Linear),
    ("conv1d", Builtin::Conv1d),
    ("conv2d", Builtin::Conv2d),
    ("conv_transpose2d", Builtin::ConvTranspose2d),
    ("max_pool1d", Builtin::MaxPool1d),
    ("max_pool2d", Builtin::MaxPool2d),
    ("avg_pool1d", Builtin::AvgPool1d),
    ("avg_pool2d", Builtin::AvgPool2d),
    ("adaptive_avg_pool1d", Builtin::AdaptiveAvgPool1d),
    ("adaptive_avg_pool2d", Builtin::AdaptiveAvgPool2d),
    ("upsample", Builtin::Upsample),
    ("batch_norm", Builtin::BatchNorm),
    ("layer_norm", Builtin::LayerNorm),
    ("rms_norm", Builtin::RmsNorm),
    ("group_norm", Builtin::GroupNorm),
    ("instance_norm", Builtin::InstanceNorm),
    ("embedding", Builtin::Embedding),
    ("pos_embedding", Builtin::PosEmbedding),
    ("attention", Builtin::Attention),
    ("class_token", Builtin::ClassToken),
    ("dropout", Builtin::Dropout),
    ("flatten", Builtin::Flatten),
    ("reshape", Builtin::Reshape),
    ("transpose", Builtin::Transpose),
    ("softmax", Builtin::Softmax),
    ("log_softmax", Builtin::LogSoftmax),
    ("select", Builtin::Select),
    ("mean", Builtin::Mean),
    ("relu", Builtin::Relu),
    ("leaky_relu", Builtin::LeakyRelu),
    ("elu", Builtin::Elu),
    ("gelu", Builtin::Gelu),
    ("silu", Builtin::Silu),
    ("tanh", Builtin::Tanh),
    ("sigmoid", Builtin::Sigmoid),
];

/// Every built-in layer's name, for suggestions and editors.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|(name, _)| *name)
}

/// A layer applied to an input: its plan node, the parameters and buffers
/// it creates, and the output shape.
pub struct Applied {
    pub op: Op,
    pub params: Vec<ParamSpec>,
    pub buffers: Vec<ParamSpec>,
    pub output: Shape,
}

impl Applied {
    /// A layer without parameters or buffers.
    fn stateless(op: Op, output: Shape) -> Self {
        Applied::learned(op, vec![], output)
    }

    /// A layer with parameters but no buffers.
    fn learned(op: Op, params: Vec<ParamSpec>, output: Shape) -> Self {
        Applied {
            op,
            params,
            buffers: vec![],
            output,
        }
    }
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
        self.definition().signature()
    }

    /// Checks the bound argument values on their own (before any input is
    /// seen), with `span` on the call.
    pub fn validate(self, args: &[Value], span: Span) -> Result<(), CheckError> {
        self.definition().validate(&Args {
            layer: self,
            values: args,
            span,
        })
    }

    /// The node for this layer at module path `path` applied to `input`, with
    /// the parameters and buffers it creates, or the shape error.
    pub fn apply(
        self,
        args: &[Value],
        path: &str,
        input: &Shape,
        span: Span,
    ) -> Result<Applied, CheckError> {
        let args = Args {
            layer: self,
            values: args,
            span,
        };
        self.definition().apply(&Call { args, path, input })
    }

    /// The family file's definition of this layer.
    fn definition(self) -> &'static dyn Layer {
        use Builtin::*;
        match self {
            Linear => &linear::Linear,
            Conv1d => &conv::Conv {
                spatial: Spatial::One,
            },
            Conv2d => &conv::Conv {
                spatial: Spatial::Two,
            },
            ConvTranspose2d => &conv::ConvTranspose,
            MaxPool1d => &pool::Window {
                reduce: pool::Reduce::Max,
                spatial: Spatial::One,
            },
            MaxPool2d => &pool::Window {
                reduce: pool::Reduce::Max,
                spatial: Spatial::Two,
            },
            AvgPool1d => &pool::Window {
                reduce: pool::Reduce::Avg,
                spatial: Spatial::One,
            },
            AvgPool2d => &pool::Window {
                reduce: pool::Reduce::Avg,
                spatial: Spatial::Two,
            },
            AdaptiveAvgPool1d => &pool::Adaptive {
                spatial: Spatial::One,
            },
            AdaptiveAvgPool2d => &pool::Adaptive {
                spatial: Spatial::Two,
            },
            Upsample => &upsample::Upsample,
            BatchNorm => &norm::BatchNorm,
            LayerNorm => &norm::LayerNorm,
            RmsNorm => &norm::RmsNorm,
            GroupNorm => &norm::GroupNorm,
            InstanceNorm => &norm::InstanceNorm,
            Embedding => &embedding::Embedding,
            PosEmbedding => &embedding::PosEmbedding,
            ClassToken => &embedding::ClassToken,
            Attention => &attention::Attention,
            Dropout => &dropout::Dropout,
            Flatten => &shape_ops::Flatten,
            Reshape => &shape_ops::Reshape,
            Transpose => &shape_ops::Transpose,
            Select => &shape_ops::Select,
            Mean => &shape_ops::Mean,
            Softmax => &activation::Softmax { log: false },
            LogSoftmax => &activation::Softmax { log: true },
            Relu => &activation::RELU,
            LeakyRelu => &activation::LEAKY_RELU,
            Elu => &activation::ELU,
            Gelu => &activation::GELU,
            Silu => &activation::SILU,
            Tanh => &activation::TANH,
            Sigmoid => &activation::SIGMOID,
        }
    }
}
