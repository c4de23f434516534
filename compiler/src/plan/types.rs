//! The plan's data types. Field order is output order.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::parallel::{OuterFragment, OuterPrecision, PipelineSchedule, StageProgram, Topology};
use super::tracking::Tracking;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// The `.dtl` file the plan was compiled from.
    pub source: String,
    pub model: ModelPlan,
    pub data: DataPlan,
    pub train: TrainPlan,
    pub topology: Topology,
    /// What one optimizer step does, in order, on every rank.
    pub step_program: Vec<StepOp>,
}

/// One dimension of a tensor shape: a size, or a symbol such as the batch `B`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Size(i64),
    Symbol(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Size(n) => write!(f, "{n}"),
            Dim::Symbol(s) => write!(f, "{s}"),
        }
    }
}

pub type Shape = Vec<Dim>;

/// `[B, 64]`
pub fn shape_to_string(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPlan {
    pub name: String,
    pub input: Shape,
    pub output: Shape,
    /// Scalars in all parameters (frozen ones included).
    pub parameter_count: u64,
    /// Every trainable tensor, named as PyTorch's `state_dict` would name it
    /// for the equivalent `nn.Module`.
    pub parameters: Vec<ParamSpec>,
    /// State that is not trained but saved (batch_norm running statistics).
    pub buffers: Vec<ParamSpec>,
    /// The dataflow graph in execution order. Node 0 is the model input; each
    /// node reads the outputs of earlier nodes named by `inputs`.
    pub nodes: Vec<Node>,
    /// The node whose output is the model's output.
    pub result: usize,
    /// The module instances of the model's own forward and the copies of
    /// its `repeat`s, each a run of consecutive nodes: the units that
    /// `recompute = blocks` recomputes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
}

/// A module instance (`2`, `encoder`) or a copy of a `repeat` (`1.0`) in
/// the model's own forward, as the nodes `first_node..=last_node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// Its module path, the prefix of its nodes' names.
    pub name: String,
    pub first_node: usize,
    pub last_node: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub init: Init,
    /// `freeze`: kept as initialised (or loaded), with no gradient, no
    /// optimizer state and no all-reduce.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

/// How a parameter is initialised (PyTorch's defaults for each layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Init {
    /// U(-bound, bound); for `linear` bound = 1/sqrt(in_features).
    Uniform {
        bound: f64,
    },
    /// N(0, std²).
    Normal {
        std: f64,
    },
    Ones,
    Zeros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Module path, e.g. `0` or `1.fc`.
    pub name: String,
    pub op: Op,
    /// Indices of the nodes whose outputs this node reads.
    pub inputs: Vec<usize>,
    pub output: Shape,
}

/// One operation of the forward pass. Parameter fields hold parameter names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// The model's input batch.
    Input,
    Linear {
        in_features: i64,
        out_features: i64,
        weight: String,
        bias: Option<String>,
    },
    /// `groups` splits the channels into that many independent
    /// convolutions (`in_channels / groups` inputs each); `dilation` spaces
    /// the kernel's taps.
    Conv1d {
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        dilation: i64,
        groups: i64,
        weight: String,
        bias: Option<String>,
    },
    /// Every size is `[height, width]`.
    Conv2d {
        in_channels: i64,
        out_channels: i64,
        kernel: [i64; 2],
        stride: [i64; 2],
        padding: [i64; 2],
        dilation: [i64; 2],
        groups: i64,
        weight: String,
        bias: Option<String>,
    },
    /// The gradient of a convolution as a layer (`nn.ConvTranspose2d`):
    /// the weight is `[in_channels, out_channels / groups, kh, kw]`.
    ConvTranspose2d {
        in_channels: i64,
        out_channels: i64,
        kernel: [i64; 2],
        stride: [i64; 2],
        padding: [i64; 2],
        output_padding: [i64; 2],
        dilation: [i64; 2],
        groups: i64,
        weight: String,
        bias: Option<String>,
    },
    MaxPool1d {
        kernel: i64,
        stride: i64,
        padding: i64,
    },
    MaxPool2d {
        kernel: i64,
        stride: i64,
        padding: i64,
    },
    AvgPool1d {
        kernel: i64,
        stride: i64,
        padding: i64,
    },
    AvgPool2d {
        kernel: i64,
        stride: i64,
        padding: i64,
    },
    AdaptiveAvgPool1d {
        size: i64,
    },
    AdaptiveAvgPool2d {
        height: i64,
        width: i64,
    },
    /// Resizes `[B, C, H, W]` to `[B, C, height, width]`. `scale` (the
    /// factors written, when the size came from them) is handed to the
    /// kernel as `F.interpolate(scale_factor=…)` hands it.
    Upsample {
        mode: UpsampleMode,
        height: i64,
        width: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale: Option<[f64; 2]>,
        align_corners: bool,
    },
    BatchNorm {
        features: i64,
        eps: f64,
        momentum: f64,
        weight: String,
        bias: String,
        running_mean: String,
        running_var: String,
        /// Training batches seen (saved as PyTorch saves it; not read).
        num_batches_tracked: String,
    },
    LayerNorm {
        dim: i64,
        eps: f64,
        weight: String,
        bias: String,
    },
    RmsNorm {
        dim: i64,
        eps: f64,
        weight: String,
    },
    /// Normalises each of `groups` groups of channels of `[B, C, ...]`
    /// over its channels and positions (`nn.GroupNorm`); `weight` and
    /// `bias` are absent without `affine`.
    GroupNorm {
        groups: i64,
        channels: i64,
        eps: f64,
        weight: Option<String>,
        bias: Option<String>,
    },
    /// Normalises each channel of each sample over its positions
    /// (`nn.InstanceNorm1d`/`2d` without running statistics).
    InstanceNorm {
        features: i64,
        eps: f64,
        weight: Option<String>,
        bias: Option<String>,
    },
    Embedding {
        num_embeddings: i64,
        dim: i64,
        weight: String,
    },
    /// Adds a learned position vector to each position: x + weight[:T].
    PosEmbedding {
        max_len: i64,
        dim: i64,
        weight: String,
    },
    /// Multi-head self-attention with PyTorch `nn.MultiheadAttention`'s
    /// parameters (batch first): the query, key and value projections packed
    /// in one `in_proj_weight` (rows: `heads` query heads, then `kv_heads`
    /// key heads, then `kv_heads` value heads, `dim / heads` rows each).
    /// With fewer `kv_heads` than `heads` (grouped-query attention) each
    /// key/value head serves `heads / kv_heads` consecutive query heads.
    /// `rope_theta` turns on rotary position embeddings of queries and keys
    /// (the rotate-half form of GPT-NeoX and Hugging Face's LLaMA).
    Attention {
        dim: i64,
        heads: i64,
        kv_heads: i64,
        causal: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rope_theta: Option<f64>,
        in_proj_weight: String,
        in_proj_bias: Option<String>,
        out_proj_weight: String,
        out_proj_bias: Option<String>,
    },
    /// Puts a learned vector before the sequence: [B, T, D] → [B, T + 1, D].
    ClassToken {
        dim: i64,
        weight: String,
    },
    Dropout {
        p: f64,
    },
    Flatten,
    /// Reshapes every sample (the batch dimension stays).
    Reshape {
        shape: Vec<i64>,
    },
    Transpose {
        dim0: i64,
        dim1: i64,
    },
    Softmax {
        dim: i64,
    },
    LogSoftmax {
        dim: i64,
    },
    /// One position along `dim` (counting the batch as 0), which goes.
    Select {
        dim: i64,
        index: i64,
    },
    /// The mean along `dim` (counting the batch as 0), which goes.
    Mean {
        dim: i64,
    },
    Relu,
    /// x for x > 0, `negative_slope` · x otherwise.
    LeakyRelu {
        negative_slope: f64,
    },
    /// x for x > 0, `alpha` · (exp(x) − 1) otherwise.
    Elu {
        alpha: f64,
    },
    /// `tanh`: the tanh approximation (`approximate="tanh"`, GPT-2's
    /// `gelu_new`); the exact erf form otherwise.
    Gelu {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tanh: bool,
    },
    Silu,
    Tanh,
    Sigmoid,
    /// Element-wise sum of the inputs.
    Add,
    /// Element-wise product of the inputs.
    Mul,
    Concat {
        dim: i64,
    },
}

impl Op {
    /// The op's name in the plan (its serde tag): `linear`, `batch_norm`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Linear { .. } => "linear",
            Op::Conv1d { .. } => "conv1d",
            Op::Conv2d { .. } => "conv2d",
            Op::ConvTranspose2d { .. } => "conv_transpose2d",
            Op::MaxPool1d { .. } => "max_pool1d",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::AvgPool1d { .. } => "avg_pool1d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::AdaptiveAvgPool1d { .. } => "adaptive_avg_pool1d",
            Op::AdaptiveAvgPool2d { .. } => "adaptive_avg_pool2d",
            Op::Upsample { .. } => "upsample",
            Op::BatchNorm { .. } => "batch_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::GroupNorm { .. } => "group_norm",
            Op::InstanceNorm { .. } => "instance_norm",
            Op::Embedding { .. } => "embedding",
            Op::PosEmbedding { .. } => "pos_embedding",
            Op::Attention { .. } => "attention",
            Op::ClassToken { .. } => "class_token",
            Op::Dropout { .. } => "dropout",
            Op::Flatten => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Select { .. } => "select",
            Op::Mean { .. } => "mean",
            Op::Relu => "relu",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::Elu { .. } => "elu",
            Op::Gelu { .. } => "gelu",
            Op::Silu => "silu",
            Op::Tanh => "tanh",
            Op::Sigmoid => "sigmoid",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Concat { .. } => "concat",
        }
    }

    /// The trainable parameters the op reads, in the order PyTorch's module
    /// registers them (`weight` before `bias`).
    pub fn params(&self) -> Vec<&str> {
        self.tensors().0
    }

    /// The saved, untrained state the op reads and updates (batch_norm's
    /// running statistics), in PyTorch's registration order.
    pub fn buffers(&self) -> Vec<&str> {
        self.tensors().1
    }

    /// The names of the op's parameters and of its buffers.
    fn tensors(&self) -> (Vec<&str>, Vec<&str>) {
        match self {
            Op::Linear { weight, bias, .. }
            | Op::Conv1d { weight, bias, .. }
            | Op::Conv2d { weight, bias, .. }
            | Op::ConvTranspose2d { weight, bias, .. } => (
                std::iter::once(weight.as_str())
                    .chain(bias.as_deref())
                    .collect(),
                vec![],
            ),
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                num_batches_tracked,
                ..
            } => (
                vec![weight, bias],
                vec![running_mean, running_var, num_batches_tracked],
            ),
            Op::LayerNorm { weight, bias, .. } => (vec![weight, bias], vec![]),
            Op::GroupNorm { weight, bias, .. } | Op::InstanceNorm { weight, bias, .. } => (
                weight.iter().chain(bias).map(String::as_str).collect(),
                vec![],
            ),
            Op::RmsNorm { weight, .. }
            | Op::Embedding { weight, .. }
            | Op::PosEmbedding { weight, .. }
            | Op::ClassToken { weight, .. } => (vec![weight], vec![]),
            Op::Attention {
                in_proj_weight,
                in_proj_bias,
                out_proj_weight,
                out_proj_bias,
                ..
            } => (
                [
                    Some(in_proj_weight),
                    in_proj_bias.as_ref(),
                    Some(out_proj_weight),
                    out_proj_bias.as_ref(),
                ]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
                vec![],
            ),
            Op::Input
            | Op::MaxPool1d { .. }
            | Op::MaxPool2d { .. }
            | Op::AvgPool1d { .. }
            | Op::AvgPool2d { .. }
            | Op::AdaptiveAvgPool1d { .. }
            | Op::AdaptiveAvgPool2d { .. }
            | Op::Upsample { .. }
            | Op::Dropout { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Select { .. }
            | Op::Mean { .. }
            | Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Elu { .. }
            | Op::Gelu { .. }
            | Op::Silu
            | Op::Tanh
            | Op::Sigmoid
            | Op::Add
            | Op::Mul
            | Op::Concat { .. } => (vec![], vec![]),
        }
    }
}

/// How `upsample` fills the new positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    /// The nearest input position's value (`mode="nearest"`).
    Nearest,
    /// Interpolated between the four nearest (`mode="bilinear"`).
    Bilinear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlan {
    pub name: String,
    pub source: DataSource,
    /// Shape of one sample's features.
    pub sample_shape: Vec<i64>,
    /// Whether the features are real values or indices (what an
    /// `embedding` reads), as seen at compile time.
    pub features: Features,
    /// What the model is trained to predict.
    pub target: TargetKind,
    /// Shape of one sample's target: `[]` for one class label per row,
    /// `[T]` for one per token of a text window, `[k]` for k real values.
    pub target_shape: Vec<i64>,
    /// Number of classes the model scores (0 for real-valued targets): at
    /// least the largest label + 1; a vocabulary may have ids the data
    /// never uses.
    pub classes: i64,
    /// Rows in the file, as seen at compile time (0 if the file was not read).
    pub rows: u64,
    /// Multiplies every feature value.
    pub scale: f64,
    /// Fraction of the rows held out for evaluation: the last rows of the
    /// file, after a seeded shuffle when `shuffle` is on. 0 with
    /// `valid_source`.
    pub valid_fraction: f64,
    /// `valid = <source>`: the held-out rows are every row of this source,
    /// in its order; every row of `source` trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_source: Option<DataSource>,
    /// `test = <source>`: evaluated once, after the last step, and reported
    /// apart from the held-out evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_source: Option<DataSource>,
    /// Shuffle the rows once before the split and the training rows every
    /// epoch; off, rows are read in the file's order.
    pub shuffle: bool,
    /// The source's files as they were when the plan was made (empty when
    /// the data was not read): a run refuses a file that has changed since.
    pub files: Vec<DataFile>,
    /// Per-sample transforms of `[C, H, W]` samples: random crops and flips
    /// of the training samples, normalisation of every sample.
    #[serde(default, skip_serializing_if = "Augment::is_none")]
    pub augment: Augment,
    /// What a row that cannot be read does: stop the read (the default), or
    /// be left out and counted.
    #[serde(default, skip_serializing_if = "BadRows::is_error")]
    pub on_bad_row: BadRows,
}

/// `on_bad_row`: what a row (a line, a Parquet row, an image) that cannot
/// be read does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRows {
    /// Stops the read with an error naming the file, row and field.
    #[default]
    Error,
    /// Leaves it out; the count and the first reason are reported.
    Skip,
}

impl BadRows {
    pub fn is_error(&self) -> bool {
        *self == BadRows::Error
    }
}

/// What is done to each sample on its way to the model, after `scale`, in
/// this order: `random_crop` and `horizontal_flip` to training samples
/// only, drawn per sample from the seed, the epoch and the sample's place
/// in the epoch (so the same whatever the world size); then
/// `(x - mean) / std` per channel to every sample, training and held-out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// `random_crop = P`: the sample padded with P zeros on each side of
    /// its height and width, then cut back to its size at a random place
    /// (torchvision's `RandomCrop(size, padding=P)`). 0: off.
    #[serde(default)]
    pub crop_padding: u64,
    /// `horizontal_flip = p`: mirrored left to right with probability p
    /// (`RandomHorizontalFlip(p)`). 0: off.
    #[serde(default)]
    pub flip: f64,
    /// `mean = [...]`, `std = [...]`: one each per channel
    /// (`Normalize(mean, std)`); empty: off.
    #[serde(default)]
    pub mean: Vec<f64>,
    #[serde(default)]
    pub std: Vec<f64>,
}

impl Augment {
    pub fn is_none(&self) -> bool {
        *self == Augment::default()
    }

    /// Whether training samples are transformed at random.
    pub fn random(&self) -> bool {
        self.crop_padding > 0 || self.flip > 0.0
    }
}

/// A data file's identity: its size and a hash of samples of its bytes
/// (head, tail and 16 pieces between), cheap on any size of file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    pub path: String,
    pub bytes: u64,
    /// FNV-1a of the sampled bytes, 16 hex digits.
    pub sample_hash: String,
}

/// What the features of a data source are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Features {
    /// Real values.
    Float,
    /// Whole numbers from 0 to `max` (token ids, category codes): what an
    /// `embedding` can read.
    Indices { max: u64 },
    /// Not known: the data was not read (`dtl check` without `--data`).
    Unknown,
}

impl DataPlan {
    /// The sources read: the training source, then the held-out and test
    /// sources when they are files of their own.
    pub fn sources_mut(&mut self) -> Vec<&mut DataSource> {
        let mut sources = vec![&mut self.source];
        sources.extend(self.valid_source.as_mut());
        sources.extend(self.test_source.as_mut());
        sources
    }

    /// Rows held out for evaluation, of `rows`.
    pub fn held_out(&self, rows: u64) -> u64 {
        (rows as f64 * self.valid_fraction).round() as u64
    }

    /// Training rows (0 if the data was not read at compile time).
    pub fn train_rows(&self) -> u64 {
        self.rows - self.held_out(self.rows)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// Numeric CSV (optionally gzip-compressed); one column is the class label.
    Csv {
        path: String,
        label_column: i64,
        header: bool,
    },
    /// JSON lines, one object a sample: the features under one field (a
    /// number or a nested array of numbers) or several numeric fields, in
    /// order; the target under `label`.
    Jsonl {
        path: String,
        features: Vec<String>,
        label: String,
    },
    /// Parquet: one file, or a folder whose `.parquet` files are read in
    /// name order as one dataset; the features one column (a number or a
    /// nested list of numbers) or several numeric columns, in order; the
    /// target under `label`.
    Parquet {
        path: String,
        features: Vec<String>,
        label: String,
    },
    /// A Hugging Face dataset saved with `save_to_disk` (Arrow IPC files
    /// listed in `state.json`); `split` names one split of a `DatasetDict`,
    /// empty for a single dataset. Columns as for Parquet.
    HfDataset {
        path: String,
        split: String,
        features: Vec<String>,
        label: String,
    },
    /// A folder of images, one subfolder per class (torchvision's
    /// `ImageFolder`): classes numbered in name order, images decoded as
    /// batches ask for them, `channels` × `size` ([height, width]) each,
    /// pixels / 255.
    Images {
        path: String,
        size: [u32; 2],
        channels: u32,
    },
    /// NumPy arrays: features `[N, ...]` and integer labels `[N]`.
    Npy { features: String, labels: String },
    /// MNIST-style IDX files (optionally gzip-compressed).
    Idx { images: String, labels: String },
    /// Seeded Gaussian blobs, one per class.
    Synthetic {
        rows: u64,
        features: u64,
        classes: u64,
        seed: u64,
    },
    /// Two tensors of a safetensors file: features `[N, ...]` and targets `[N, ...]`.
    Safetensors {
        path: String,
        features: String,
        labels: String,
    },
    /// A text file cut into windows of `context` tokens; each position's
    /// target is the next token.
    Text {
        path: String,
        encoding: TextEncoding,
        context: u64,
    },
    /// A flat binary file of token ids (nanoGPT's `train.bin`), read
    /// memory-mapped: windows of `context + 1` tokens, the last fraction of
    /// the file held out, training windows at random offsets (`shuffle`)
    /// or one after another.
    Tokens {
        path: String,
        dtype: TokenDtype,
        context: u64,
    },
}

impl DataSource {
    /// The file named in messages about this source.
    pub fn path(&self) -> &str {
        match self {
            DataSource::Csv { path, .. }
            | DataSource::Jsonl { path, .. }
            | DataSource::Parquet { path, .. }
            | DataSource::HfDataset { path, .. }
            | DataSource::Images { path, .. }
            | DataSource::Safetensors { path, .. }
            | DataSource::Text { path, .. }
            | DataSource::Tokens { path, .. } => path,
            DataSource::Npy { features, .. } => features,
            DataSource::Idx { images, .. } => images,
            DataSource::Synthetic { .. } => "synthetic data",
        }
    }

    /// Every file the source reads (none for synthetic data).
    pub fn files(&self) -> Vec<&str> {
        match self {
            DataSource::Csv { path, .. }
            | DataSource::Jsonl { path, .. }
            | DataSource::Parquet { path, .. }
            | DataSource::HfDataset { path, .. }
            | DataSource::Images { path, .. }
            | DataSource::Safetensors { path, .. }
            | DataSource::Text { path, .. }
            | DataSource::Tokens { path, .. } => vec![path],
            DataSource::Npy { features, labels } => vec![features, labels],
            DataSource::Idx { images, labels } => vec![images, labels],
            DataSource::Synthetic { .. } => vec![],
        }
    }

    /// [`DataSource::files`], to rewrite (the paths of `DataPlan::files`
    /// follow them).
    pub fn files_mut(&mut self) -> Vec<&mut String> {
        match self {
            DataSource::Csv { path, .. }
            | DataSource::Jsonl { path, .. }
            | DataSource::Parquet { path, .. }
            | DataSource::HfDataset { path, .. }
            | DataSource::Images { path, .. }
            | DataSource::Safetensors { path, .. }
            | DataSource::Text { path, .. }
            | DataSource::Tokens { path, .. } => vec![path],
            DataSource::Npy { features, labels } => vec![features, labels],
            DataSource::Idx { images, labels } => vec![images, labels],
            DataSource::Synthetic { .. } => vec![],
        }
    }
}

/// How a text file becomes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    /// One token per Unicode character; the vocabulary is the file's
    /// distinct characters in code-point order.
    Chars,
    /// One token per byte; the vocabulary is all 256 byte values.
    Bytes,
}

/// How a token file stores each id: little-endian unsigned integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenDtype {
    Uint16,
    Uint32,
}

impl TokenDtype {
    pub fn bytes(self) -> usize {
        match self {
            TokenDtype::Uint16 => 2,
            TokenDtype::Uint32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenDtype::Uint16 => "uint16",
            TokenDtype::Uint32 => "uint32",
        }
    }
}

/// What a data source's targets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Class indices, for `cross_entropy`.
    #[default]
    Class,
    /// Real values, for `mse`.
    Float,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainPlan {
    pub loss: Loss,
    pub optimizer: Optimizer,
    /// How the learning rate moves from step to step.
    pub schedule: Schedule,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples per forward/backward pass.
    pub micro_batch: u64,
    /// Micro-batches per optimizer step.
    pub accumulate: u64,
    /// Samples per optimizer step, over all ranks.
    pub global_batch: u64,
    pub clip: Option<Clip>,
    pub seed: u64,
    /// Evaluate on the held-out rows every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Initial weights (safetensors) instead of the initialisers.
    pub init: Option<String>,
    /// `init = weights(path, skip: [...])`: a partial load. The tensors
    /// whose names match these patterns, and those the file lacks, keep
    /// their initialisers (the run says which). None: `init` holds every
    /// tensor of the model and nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_skip: Option<Vec<String>>,
    /// `rename: [[from, to], ...]`: applied in order to every name in the
    /// `init` file, each pair replacing every occurrence of `from` by `to`
    /// (after `transpose`), so that another tool's names match the model's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_rename: Vec<[String; 2]>,
    /// `transpose: [patterns]`: the `init` file's 2-d tensors whose names
    /// (as in the file) match are transposed before loading (Hugging
    /// Face's `Conv1D` stores `[in, out]`, `linear` `[out, in]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_transpose: Vec<String>,
    /// `fuse: [[part, part, ..., whole]]`: tensors the `init` file holds
    /// apart and the model as one (Hugging Face's `q_proj`, `k_proj`,
    /// `v_proj` and an attention's `in_proj_weight`): for each name with
    /// the first part in it, the names with each part in its place are
    /// concatenated along their first dimension, in order, under the name
    /// with `whole` in its place (after `transpose`, before `rename`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_fuse: Vec<Vec<String>>,
    /// `squeeze: [patterns]`: the `init` file's tensors whose names (as in
    /// the file) match lose their dimensions of size 1 before loading
    /// (Hugging Face ViT's `[1, tokens, width]` position embeddings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_squeeze: Vec<String>,
    /// Arithmetic of the forward and backward passes.
    pub precision: Precision,
    /// Write a checkpoint every this many steps (0: never).
    pub checkpoint_every: u64,
    /// What a non-finite loss or gradient does.
    pub on_nan: NanPolicy,
    /// Metrics, the best weights, early stopping, the weights' moving
    /// average.
    pub tracking: Tracking,
    /// `groups`: parameters trained with other settings than the
    /// optimizer's. Each trainable parameter is in at most one (the first
    /// that names it); the rest follow the optimizer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ParamGroup>,
    /// Activations dropped after forward and recomputed in backward.
    #[serde(default, skip_serializing_if = "Recompute::is_none")]
    pub recompute: Recompute,
}

/// `recompute = none | blocks | all` (activation checkpointing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// Every activation backward needs is kept from forward.
    #[default]
    None,
    /// Each of the model's blocks keeps only its inputs; its inner
    /// activations are recomputed, block by block, in backward.
    Blocks,
    /// As `blocks`, and the runs of layers between blocks too: only the
    /// values that cross from one piece to the next are kept. The piece
    /// that computes the model's output is never recomputed (backward
    /// starts there at once).
    All,
}

impl Recompute {
    pub fn is_none(&self) -> bool {
        *self == Recompute::None
    }

    /// As written in a `.dtl` file.
    pub fn name(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Blocks => "blocks",
            Recompute::All => "all",
        }
    }
}

/// `group(["norms", "biases"], weight_decay: 0, lr_scale: 1)`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// The parameters in the group, by name.
    pub parameters: Vec<String>,
    /// Replaces the optimizer's weight decay (None: the optimizer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Multiplies the step's learning rate.
    pub lr_scale: f64,
}

/// `precision = fp32 | tf32 | bf16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Fp32,
    /// float32 storage and arithmetic, but matrix products on CUDA in TF32
    /// (10-bit mantissa, float32 range), as PyTorch's
    /// `torch.backends.cuda.matmul.fp32_precision = "tf32"`. The same as
    /// `Fp32` on the CPU, which has no TF32.
    Tf32,
    /// Mixed precision as autocast does it: linear, convolution and attention
    /// compute in bfloat16 from float32 master weights; norms, softmax,
    /// losses, gradients and the optimizer stay in float32.
    Bf16,
    /// As `Bf16` with float16, whose range is narrow: the loss is scaled up
    /// before backward and the gradients down after (dynamic loss scaling,
    /// `torch.amp.GradScaler`'s rules), a step whose gradients overflow is
    /// skipped and the scale halved.
    Fp16,
}

/// `on_nan = stop | skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NanPolicy {
    /// End the run with an error naming the step; checkpoints stay intact.
    #[default]
    Stop,
    /// Drop the step's gradients, leave weights and optimizer state as they
    /// were, record the step as skipped and go on.
    Skip,
}

/// The learning-rate schedule: an optional linear warm-up, then a decay.
/// [`Schedule::lr_at`] is the formula; `docs/language.md` states it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Steps of linear warm-up: step k ≤ warmup uses lr · k / warmup.
    pub warmup: u64,
    pub decay: Decay,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    Constant,
    /// lr · gamma^⌊t / every⌋ (PyTorch's StepLR).
    Step {
        every: u64,
        gamma: f64,
    },
    /// min_lr + (lr − min_lr)(1 + cos(π t / T)) / 2 (PyTorch's CosineAnnealingLR).
    Cosine {
        min_lr: f64,
    },
    /// lr · (1 − (1 − end_factor) t / T) (PyTorch's LinearLR from 1 to end_factor).
    Linear {
        end_factor: f64,
    },
    /// PyTorch's OneCycleLR with the optimizer's lr as `max_lr`, over all
    /// the steps: up from max_lr / div_factor for `pct_start` of them, then
    /// down to that / final_div_factor. It warms up itself (the schedule's
    /// `warmup` is 0); momentum is not cycled.
    OneCycle {
        pct_start: f64,
        anneal: Anneal,
        div_factor: f64,
        final_div_factor: f64,
    },
    /// Hugging Face's `get_constant_schedule_with_warmup`: step k uses
    /// lr · min(1, (k − 1) / warmup_steps), so the first step's rate is 0.
    ConstantWithWarmup {
        warmup_steps: u64,
    },
}

/// How `one_cycle` moves between its rates (OneCycleLR's `anneal_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    /// end + (start − end)(cos(π p) + 1) / 2 at fraction p of the phase.
    Cos,
    /// start + (end − start) p.
    Linear,
}

impl Schedule {
    pub fn constant() -> Self {
        Schedule {
            warmup: 0,
            decay: Decay::Constant,
        }
    }

    /// The learning rate of optimizer step `step` (1-based) of `steps`, for a
    /// base rate `lr`. After the warm-up, t counts the steps from 0 and T is
    /// the number of steps after the warm-up.
    pub fn lr_at(&self, lr: f64, step: u64, steps: u64) -> f64 {
        if step <= self.warmup {
            return lr * step as f64 / self.warmup as f64;
        }
        let t = (step - self.warmup - 1) as f64;
        let total = steps.saturating_sub(self.warmup).max(1) as f64;
        match self.decay {
            Decay::Constant => lr,
            Decay::Step { every, gamma } => {
                lr * gamma.powi(((step - self.warmup - 1) / every.max(1)) as i32)
            }
            Decay::Cosine { min_lr } => {
                min_lr + (lr - min_lr) * (1.0 + (std::f64::consts::PI * t / total).cos()) / 2.0
            }
            Decay::Linear { end_factor } => lr * (1.0 - (1.0 - end_factor) * t / total),
            Decay::OneCycle { .. } => self.one_cycle_at(lr, step, steps),
            Decay::ConstantWithWarmup { warmup_steps } => {
                let done = (step - 1) as f64;
                if done < warmup_steps as f64 {
                    lr * (done / warmup_steps.max(1) as f64)
                } else {
                    lr
                }
            }
        }
    }

    /// OneCycleLR's rate for step `step` (its `last_epoch` is step − 1),
    /// with its arithmetic in its order, so that the rates are PyTorch's
    /// to the bit.
    fn one_cycle_at(&self, max_lr: f64, step: u64, steps: u64) -> f64 {
        let Decay::OneCycle {
            pct_start,
            anneal,
            div_factor,
            final_div_factor,
        } = self.decay
        else {
            unreachable!("one_cycle_at is called for one_cycle only")
        };
        let initial = max_lr / div_factor;
        let min_lr = initial / final_div_factor;
        let step_num = (step - 1) as f64;
        let warm_end = pct_start * steps as f64 - 1.0;
        let (start_step, end_step, from, to) = if step_num <= warm_end {
            (0.0, warm_end, initial, max_lr)
        } else {
            (warm_end, steps as f64 - 1.0, max_lr, min_lr)
        };
        let pct = (step_num - start_step) / (end_step - start_step);
        match anneal {
            Anneal::Cos => to + (from - to) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0),
            Anneal::Linear => (to - from) * pct + from,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Mean cross-entropy over every predicted class label (every token of a
    /// text window), with optional label smoothing.
    CrossEntropy { label_smoothing: f64 },
    /// Mean negative log-likelihood of the class labels, the model's output
    /// read as log-probabilities (`F.nll_loss`).
    Nll,
    /// Mean squared error over every target value.
    Mse,
    /// Mean binary cross-entropy of every target value against the sigmoid
    /// of the output (`BCEWithLogitsLoss`); `pos_weight` multiplies the
    /// positive term, one factor for all outputs or one per output.
    BinaryCrossEntropy { pos_weight: Option<Vec<f64>> },
    /// Mean smooth L1 loss: quadratic below `beta`, linear above
    /// (`F.smooth_l1_loss`).
    SmoothL1 { beta: f64 },
    /// Mean Huber loss: quadratic below `delta`, linear above
    /// (`F.huber_loss`).
    Huber { delta: f64 },
}

impl Loss {
    /// What the loss compares the output with: class labels or real values.
    pub fn target(&self) -> TargetKind {
        match self {
            Loss::CrossEntropy { .. } | Loss::Nll => TargetKind::Class,
            Loss::Mse
            | Loss::BinaryCrossEntropy { .. }
            | Loss::SmoothL1 { .. }
            | Loss::Huber { .. } => TargetKind::Float,
        }
    }

    /// The loss's name in a `.dtl` file.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::CrossEntropy { .. } => "cross_entropy",
            Loss::Nll => "nll",
            Loss::Mse => "mse",
            Loss::BinaryCrossEntropy { .. } => "binary_cross_entropy",
            Loss::SmoothL1 { .. } => "smooth_l1",
            Loss::Huber { .. } => "huber",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    Sgd {
        lr: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
    },
    #[serde(rename = "adamw")]
    AdamW {
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
    },
    /// Lion (Chen et al. 2023): the sign of an interpolation of the
    /// momentum and the gradient, decoupled weight decay.
    Lion {
        lr: f64,
        betas: [f64; 2],
        weight_decay: f64,
    },
    /// `torch.optim.Adafactor`: factored second moments for tensors of two
    /// or more dimensions, a relative step size capped by `lr`.
    Adafactor {
        lr: f64,
        beta2_decay: f64,
        eps: [f64; 2],
        d: f64,
        weight_decay: f64,
    },
}

impl Optimizer {
    /// The same optimizer with another weight decay (a parameter group's).
    pub fn with_weight_decay(&self, decay: f64) -> Optimizer {
        let mut optimizer = self.clone();
        match &mut optimizer {
            Optimizer::Sgd { weight_decay, .. }
            | Optimizer::Adam { weight_decay, .. }
            | Optimizer::AdamW { weight_decay, .. }
            | Optimizer::Lion { weight_decay, .. }
            | Optimizer::Adafactor { weight_decay, .. } => *weight_decay = decay,
        }
        optimizer
    }

    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adam { lr, .. }
            | Optimizer::AdamW { lr, .. }
            | Optimizer::Lion { lr, .. }
            | Optimizer::Adafactor { lr, .. } => *lr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Clip {
    /// Scale all gradients so that their global p-norm is at most `max_norm`.
    Norm { max_norm: f64, norm_type: NormType },
    /// Clamp every gradient element to [-clip_value, clip_value].
    Value { clip_value: f64 },
}

/// The p of a p-norm; `inf` is the largest absolute value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormType {
    P(f64),
    Inf,
}

impl Serialize for NormType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NormType::P(p) => s.serialize_f64(*p),
            NormType::Inf => s.serialize_str("inf"),
        }
    }
}

impl<'de> Deserialize<'de> for NormType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            P(f64),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::P(p) => Ok(NormType::P(p)),
            Raw::Name(n) if n == "inf" => Ok(NormType::Inf),
            Raw::Name(n) => Err(serde::de::Error::custom(format!(
                "norm type `{n}` is not a number or `inf`"
            ))),
        }
    }
}

/// One instruction of the per-step program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepOp {
    /// Forward and backward over `micro_batches` micro-batches; each loss is
    /// multiplied by `loss_scale` before backward, so gradients accumulate to
    /// the mean over the whole batch.
    ForwardBackward {
        micro_batches: u64,
        loss_scale: f64,
        precision: Precision,
    },
    /// Pipeline stages run their programs over `micro_batches` pieces of a
    /// micro-batch (each loss multiplied by `loss_scale`), `rounds` times per
    /// optimizer step; each rank runs its stage's program.
    Pipeline {
        schedule: PipelineSchedule,
        rounds: u64,
        micro_batches: u64,
        loss_scale: f64,
        precision: Precision,
        stages: Vec<StageProgram>,
    },
    /// Average the gradients over the data-parallel replicas of each stage,
    /// bucket by bucket (ring all-reduce: each rank sends `bytes_per_rank`).
    /// With `staleness` k > 0 the reduction runs in the background and a
    /// step may apply an average up to k steps old.
    AllReduceGradients {
        buckets: u64,
        bytes_per_rank: u64,
        staleness: u64,
    },
    /// Add up the stages' partial gradient norms, so clipping and the
    /// finiteness check see the norm over all parameters.
    AllReduceGradNorm {
        stages: u64,
    },
    /// `tensor = T`: the all-reduces over each tensor group that the
    /// forward and backward passes run, per micro-batch of `micro_batch`
    /// rows (a pipeline's pieces add up to the same), in the order they
    /// run: forward, each row-parallel linear's and each head-split
    /// attention's output (a partial sum on each rank); backward, the
    /// gradient of each value that column-parallel linears or head-split
    /// attention read (each rank's is a partial sum), last layer first.
    /// `bytes_per_rank`: what each rank sends in a step (a ring all-reduce
    /// of each, every micro-batch of the step).
    TensorAllReduces {
        collectives: Vec<TensorCollective>,
        bytes_per_rank: u64,
    },
    /// Local SGD: average the parameters over the replicas every `every`
    /// steps (after the optimizer step of steps k·every); under `groups`,
    /// over the sync groups (the replicas at the same place in each).
    AverageParameters {
        every: u64,
        bytes_per_rank: u64,
    },
    /// DiLoCo's outer step, fragment by fragment: after the optimizer
    /// step of each fragment's steps (every `every`), each group's change
    /// of the fragment from the global copy is all-reduced over the
    /// `groups` sync groups (the replicas at the same place in each); its
    /// mean is the outer gradient, applied `delay` steps later (and after
    /// the last step) by SGD with `outer_lr` and Nesterov momentum
    /// `outer_momentum` (plain at 0) to the global copy, which every
    /// replica then takes for the fragment. The buffers are averaged over
    /// the groups with the last fragment. One fragment meeting every
    /// `every` steps without delay is DiLoCo. `bytes_per_rank`: what a
    /// rank sends in a period (every fragment's ring all-reduce).
    OuterStep {
        every: u64,
        groups: u64,
        outer_lr: f64,
        outer_momentum: f64,
        /// Steps between the start of a fragment's all-reduce and its
        /// outer step (the inner steps it overlaps).
        delay: u64,
        outer_precision: OuterPrecision,
        /// The parameters' fragments, each meeting once a period.
        fragments: Vec<OuterFragment>,
        bytes_per_rank: u64,
    },
    /// `precision = fp16`: divide the gradients by the loss scale; when any
    /// is infinite or NaN on any rank the step is skipped and the scale
    /// multiplied by `backoff`, else after `growth_interval` steps in a row
    /// without one it is multiplied by `growth` (`GradScaler.unscale_`,
    /// `step` and `update`).
    UnscaleGradients {
        initial_scale: f64,
        growth: f64,
        backoff: f64,
        growth_interval: u64,
    },
    /// If the loss or any gradient is NaN or infinite, act on `on_nan`.
    CheckFinite {
        on_nan: NanPolicy,
    },
    /// Global-norm clipping over all parameters (PyTorch's `clip_grad_norm_`).
    ClipGradNorm {
        max_norm: f64,
        norm_type: NormType,
    },
    /// Element-wise clipping (PyTorch's `clip_grad_value_`).
    ClipGradValue {
        clip_value: f64,
    },
    OptimizerStep,
    /// `shard = gradients`: instead of `all_reduce_gradients`, each
    /// bucket's gradients are summed over the replicas of the shard group
    /// (all of the stage's without `shard_group`) and each replica receives
    /// its slice of the sum, divided by the replicas unless
    /// `all_reduce_gradient_slices` follows (ring reduce-scatter: each rank
    /// sends `bytes_per_rank`).
    ReduceScatterGradients {
        buckets: u64,
        bytes_per_rank: u64,
    },
    /// `shard = gradients` with `shard_group`: the reduce-scatter ran
    /// within each shard group; the `copies` groups' sums of each slice are
    /// all-reduced among the replicas that hold it and divided by all the
    /// replicas (ring: each rank sends `bytes_per_rank`).
    AllReduceGradientSlices {
        copies: u64,
        bytes_per_rank: u64,
    },
    /// `shard = parameters`: during the `forward_backward` that follows,
    /// each of the plan's `units` is all-gathered over the shard group
    /// before its forward and, with `reshard_after_forward`, freed after
    /// it and all-gathered again before its backward (`root` once, before
    /// the first forward); after its backward its gradients are
    /// reduce-scattered, each replica adding its slice of the sum to the
    /// micro-batches' before it, and the unit is freed. No gather overlaps
    /// compute: the next unit's all-gather starts when this one's compute
    /// ends. Per micro-batch each rank sends `all_gather_bytes_per_rank`
    /// and `reduce_scatter_bytes_per_rank` (ring). The slices are averaged
    /// over the replicas at the end unless `all_reduce_gradient_slices`
    /// follows.
    GatherUnits {
        units: u64,
        reshard_after_forward: bool,
        all_gather_bytes_per_rank: u64,
        reduce_scatter_bytes_per_rank: u64,
    },
    /// `shard = optimizer` or `gradients`: the optimizer step updated each replica's
    /// slice of every bucket; the replicas all-gather the updated
    /// parameters, bucket by bucket (ring: each rank sends
    /// `bytes_per_rank`).
    AllGatherParameters {
        buckets: u64,
        bytes_per_rank: u64,
    },
    ZeroGrad,
}

/// One all-reduce over a tensor group ([`StepOp::TensorAllReduces`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorCollective {
    /// `forward`, `backward` (every micro-batch) or `update` (once a step).
    pub pass: Pass,
    /// The node whose output is summed (forward), whose output's gradient
    /// is summed (backward), or whose shared key/value rows' gradient is
    /// summed (update).
    pub node: String,
    /// The split layers that make it partial: the node itself in forward
    /// and update; in backward, the column-parallel linears and head-split
    /// attention that read the value.
    pub layers: Vec<String>,
    /// Bytes of the tensor summed, for one micro-batch (one step for
    /// `update`: every key/value row of the layer, each rank adding its
    /// own head's); of the whole tensor for an all-gather or a
    /// reduce-scatter.
    pub bytes: u64,
    /// Which collective: an all-reduce unless `sequence = true` makes it
    /// an all-gather or a reduce-scatter over the sequence.
    #[serde(default, skip_serializing_if = "TensorOp::is_all_reduce")]
    pub op: TensorOp,
}

/// The collective of a [`TensorCollective`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorOp {
    #[default]
    AllReduce,
    /// `sequence = true`: every rank's part of the sequence, gathered whole.
    AllGather,
    /// `sequence = true`: the partial sums summed, each rank keeping its
    /// part of the sequence.
    ReduceScatter,
}

impl TensorOp {
    fn is_all_reduce(&self) -> bool {
        *self == TensorOp::AllReduce
    }

    /// Bytes one rank sends of a ring over `t` ranks on a tensor of
    /// `bytes`: 2(t − 1)/t of it for an all-reduce, half that otherwise.
    pub fn ring_bytes(self, bytes: u64, t: u64) -> u64 {
        let t = t.max(1);
        match self {
            TensorOp::AllReduce => 2 * (t - 1) * bytes / t,
            TensorOp::AllGather | TensorOp::ReduceScatter => (t - 1) * bytes / t,
        }
    }

    /// Messages one rank sends in that ring: 2(t − 1) for an all-reduce
    /// (a reduce-scatter, then an all-gather), t − 1 otherwise.
    pub fn ring_messages(self, t: u64) -> u64 {
        let steps = t.max(1) - 1;
        match self {
            TensorOp::AllReduce => 2 * steps,
            TensorOp::AllGather | TensorOp::ReduceScatter => steps,
        }
    }

    /// As explain names it.
    pub fn name(self) -> &'static str {
        match self {
            TensorOp::AllReduce => "all-reduce",
            TensorOp::AllGather => "all-gather",
            TensorOp::ReduceScatter => "reduce-scatter",
        }
    }
}

/// When a tensor-group all-reduce runs: in a direction of the training
/// pass (every micro-batch), or once a step on the accumulated gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    Forward,
    /// A forward sum run again in backward, where `recompute` runs the
    /// piece holding it again.
    Recompute,
    Backward,
    /// After the step's backward passes, before the gradients are
    /// averaged over replicas: the gradient of key/value heads that
    /// several tensor ranks share (each rank's is a partial sum).
    Update,
}

/// A module test (`test name { ... }`), ready for `dtl test`: the module as
/// a one-off model on the test's input shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPlan {
    pub name: String,
    /// The subject as a model; `input` and `output` are the test's shapes.
    pub model: ModelPlan,
    /// Every parameter must receive a non-zero gradient.
    pub grads_reach_all_params: bool,
    /// Compare autograd with finite differences in float64.
    pub gradcheck: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn schedules_follow_their_formulas() {
        let constant = Schedule::constant();
        assert!(close(constant.lr_at(0.1, 1, 10), 0.1) && close(constant.lr_at(0.1, 10, 10), 0.1));

        // Warm-up over 4 steps: 1/4, 2/4, 3/4, 4/4 of the rate, then cosine
        // over the remaining 6 steps from the full rate down towards 0.
        let cosine = Schedule {
            warmup: 4,
            decay: Decay::Cosine { min_lr: 0.0 },
        };
        let lrs: Vec<f64> = (1..=10).map(|k| cosine.lr_at(1.0, k, 10)).collect();
        assert!(close(lrs[0], 0.25) && close(lrs[3], 1.0));
        assert!(close(lrs[4], 1.0)); // t = 0
        assert!(close(
            lrs[7],
            (1.0 + (std::f64::consts::PI * 3.0 / 6.0).cos()) / 2.0
        )); // t = 3: 0.5
        assert!(close(lrs[7], 0.5));

        let step = Schedule {
            warmup: 0,
            decay: Decay::Step {
                every: 3,
                gamma: 0.5,
            },
        };
        let lrs: Vec<f64> = (1..=7).map(|k| step.lr_at(0.8, k, 7)).collect();
        assert_eq!(lrs, vec![0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2]);

        let linear = Schedule {
            warmup: 0,
            decay: Decay::Linear { end_factor: 0.0 },
        };
        assert!(close(linear.lr_at(1.0, 1, 5), 1.0) && close(linear.lr_at(1.0, 5, 5), 0.2));
    }
}
