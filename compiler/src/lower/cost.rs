//! The cost model that lowering and `dtl explain` share: the FLOPs of one
//! node's forward pass, the values of a tensor per sample, and the bytes a
//! ring all-reduce sends. Assumptions: a multiply-add is two FLOPs; a
//! backward pass costs twice its forward.

use crate::plan::{Dim, ModelPlan, Node, Op, UpsampleMode};

/// Values per sample of a shape whose first dimension is the batch.
pub fn numel(shape: &[Dim]) -> u64 {
    shape
        .iter()
        .skip(1)
        .map(|d| if let Dim::Size(n) = d { *n as u64 } else { 1 })
        .product()
}

/// Forward FLOPs of one node for one sample.
pub fn forward_flops(node: &Node, input: &[Dim]) -> u64 {
    let out = numel(&node.output);
    let inp = numel(input);
    match &node.op {
        Op::Input
        | Op::Flatten
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Embedding { .. }
        | Op::Select { .. }
        | Op::ClassToken { .. } => 0,
        Op::Linear { in_features, .. } => 2 * *in_features as u64 * out,
        // A group convolves in_channels / groups inputs into each output:
        // what FlopCounterMode counts from the weight's shape.
        Op::Conv1d {
            in_channels,
            kernel,
            groups,
            ..
        } => 2 * (*in_channels / *groups * *kernel) as u64 * out,
        Op::Conv2d {
            in_channels,
            kernel,
            groups,
            ..
        } => 2 * (*in_channels / *groups * kernel[0] * kernel[1]) as u64 * out,
        // Each input value is scattered into out_channels / groups channels
        // through the kernel.
        Op::ConvTranspose2d {
            out_channels,
            kernel,
            groups,
            ..
        } => 2 * (*out_channels / *groups * kernel[0] * kernel[1]) as u64 * inp,
        Op::MaxPool1d { kernel, .. } | Op::AvgPool1d { kernel, .. } => *kernel as u64 * out,
        Op::MaxPool2d { kernel, .. } | Op::AvgPool2d { kernel, .. } => {
            (*kernel * *kernel) as u64 * out
        }
        Op::AdaptiveAvgPool1d { .. } | Op::AdaptiveAvgPool2d { .. } | Op::Mean { .. } => inp,
        Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::GroupNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. } => 5 * out,
        // Nearest copies; bilinear weighs four inputs per output.
        Op::Upsample { mode, .. } => match mode {
            UpsampleMode::Nearest => 0,
            UpsampleMode::Bilinear => 8 * out,
        },
        Op::Attention {
            dim,
            heads,
            kv_heads,
            ..
        } => {
            let d = *dim as u64;
            let t = (out / d.max(1)).max(1);
            let kv = d / (*heads as u64).max(1) * *kv_heads as u64;
            // q, k, v and output projections, then scores and their weighted sum.
            2 * t * d * (d + 2 * kv) + 2 * t * d * d + 2 * 2 * t * t * d
        }
        Op::PosEmbedding { .. }
        | Op::Add
        | Op::Mul
        | Op::Dropout { .. }
        | Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Elu { .. }
        | Op::Gelu { .. }
        | Op::Silu
        | Op::Tanh
        | Op::Sigmoid => out,
        Op::Concat { .. } => 0,
    }
}

/// Bytes a rank sends in a ring all-reduce of `bytes` over `n` ranks.
pub fn ring_bytes(bytes: u64, n: u64) -> u64 {
    2 * (n - 1) * bytes / n
}

/// Bytes each rank sends to all-gather `buckets` over `d` replicas in a
/// ring: every bucket is padded to `d` equal slices, and each rank passes
/// on the `d − 1` slices it does not own.
pub fn all_gather_bytes<'a>(
    buckets: impl Iterator<Item = &'a crate::plan::GradBucket>,
    d: u64,
) -> u64 {
    buckets
        .map(|b| (d - 1) * (b.bytes / 4).div_ceil(d) * 4)
        .sum()
}

/// Forward FLOPs per sample of node `i` of `model`, on the shape it reads.
pub fn node_flops(model: &ModelPlan, i: usize) -> u64 {
    let node = &model.nodes[i];
    let input = node
        .inputs
        .first()
        .map_or(&node.output, |&j| &model.nodes[j].output);
    forward_flops(node, input)
}
