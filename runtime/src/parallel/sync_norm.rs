//! A forward pass cut into segments, and its backward pass run segment by
//! segment, last first. A value one segment computes and a later one reads
//! enters the later segment as a leaf of its own; backward of a segment
//! starts from its outputs with the gradients its readers' leaves collected
//! (and from the loss in the segment that computes the result), so each
//! segment's graph is walked once, and between two segments the runtime
//! can step in: all-reduce what synchronised batch norm needs, or (for a
//! pipeline) send and receive.
//!
//! Synchronised batch norm (`batch_norm = sync` over data-parallel
//! replicas) is a segment of one node computed by hand: the batch's mean
//! and variance over every replica's rows (their sums all-reduced), and in
//! backward the two per-channel sums SyncBatchNorm all-reduces, so each
//! replica's input gradient is that of the loss over all replicas' rows.

use dtl_compiler::plan::{Node, Op};
use tch::{Kind, Tensor};

use crate::comm::{Communicator, ReduceOp};
use crate::error::{RunError, TorchContext};
use crate::model::Model;
use crate::ops::{self, Weights};

/// What backward needs of one synchronised batch norm.
struct SyncNorm {
    /// The input, a leaf of the norm's own segment.
    x: Tensor,
    /// (x − mean) / std, and 1 / std per channel (shaped to broadcast).
    normalized: Tensor,
    inv_std: Tensor,
    /// The output, a leaf whose gradient the readers and the loss fill.
    y: Tensor,
    weight: Tensor,
    bias: Tensor,
    /// Rows × positions per channel, over every replica.
    count: f64,
}

/// A forward pass whose backward runs segment by segment.
pub struct Forward {
    /// Each node's output, in the graph of the segment that computed it.
    outputs: Vec<Tensor>,
    /// For each node, the leaves standing for its output in later segments.
    leaves: Vec<Vec<Tensor>>,
    norms: Vec<Option<SyncNorm>>,
    /// Each node's segment.
    segment: Vec<usize>,
    result: usize,
}

/// The segments of a model whose batch norms are synchronised: each
/// batch_norm node alone, the runs of nodes between them together.
pub fn sync_norm_segments(nodes: &[Node]) -> Vec<usize> {
    let mut segment = Vec::with_capacity(nodes.len());
    let mut current = 0;
    for (i, node) in nodes.iter().enumerate() {
        let norm = matches!(node.op, Op::BatchNorm { .. });
        if i > 0 && (norm || matches!(nodes[i - 1].op, Op::BatchNorm { .. })) {
            current += 1;
        }
        segment.push(current);
    }
    segment
}

impl Forward {
    /// Runs the model on `input` in training mode, segment by segment
    /// (`segment[i]`: node i's), batch norms synchronised over `replicas`.
    pub fn run(
        model: &Model,
        input: &Tensor,
        segment: Vec<usize>,
        replicas: &dyn Communicator,
    ) -> Result<Forward, RunError> {
        let nodes = model.nodes();
        let mut outputs: Vec<Tensor> = Vec::with_capacity(nodes.len());
        let mut leaves: Vec<Vec<(usize, Tensor)>> = (0..nodes.len()).map(|_| Vec::new()).collect();
        let mut norms: Vec<Option<SyncNorm>> = Vec::with_capacity(nodes.len());
        for (j, node) in nodes.iter().enumerate() {
            let mut inputs = Vec::with_capacity(node.inputs.len().max(1));
            if node.inputs.is_empty() {
                inputs.push(input.shallow_clone());
            }
            for &i in &node.inputs {
                if segment[i] == segment[j] {
                    inputs.push(outputs[i].shallow_clone());
                    continue;
                }
                // One leaf per reading segment.
                let existing = leaves[i].iter().find(|(s, _)| *s == segment[j]);
                let leaf = match existing {
                    Some((_, leaf)) => leaf.shallow_clone(),
                    None => {
                        let source: &Tensor = &outputs[i];
                        let leaf = source.detach().set_requires_grad(source.requires_grad());
                        leaves[i].push((segment[j], leaf.shallow_clone()));
                        leaf
                    }
                };
                inputs.push(leaf);
            }
            let shapes: Vec<Vec<i64>> = inputs.iter().map(Tensor::size).collect();
            let ctx = || {
                format!(
                    "layer `{}` ({}) on input {:?}",
                    node.name,
                    node.op.kind(),
                    shapes
                )
            };
            match &node.op {
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
                    let names = [weight, bias, running_mean, running_var, num_batches_tracked];
                    let norm = sync_norm(&inputs[0], model, names, *eps, *momentum, replicas)
                        .context(ctx)?;
                    outputs.push(norm.y.shallow_clone());
                    norms.push(Some(norm));
                }
                op => {
                    let refs: Vec<&Tensor> = inputs.iter().collect();
                    outputs.push(ops::forward(op, &refs, model, true, model.precision, ctx)?);
                    norms.push(None);
                }
            }
        }
        Ok(Forward {
            outputs,
            leaves: leaves
                .into_iter()
                .map(|l| l.into_iter().map(|(_, t)| t).collect())
                .collect(),
            norms,
            segment,
            result: model.result(),
        })
    }

    /// The model's output.
    pub fn output(&self) -> &Tensor {
        &self.outputs[self.result]
    }

    /// Backward from `loss` (computed from [`Forward::output`]), segment by
    /// segment, last first: gradients accumulate into the parameters as
    /// one backward pass would put them.
    pub fn backward(self, loss: &Tensor, replicas: &dyn Communicator) -> Result<(), RunError> {
        let ctx = || "backward".to_string();
        let segments = self.segment.iter().max().map_or(0, |s| s + 1);
        let mut loss = Some(loss.shallow_clone());
        for k in (0..segments).rev() {
            let nodes: Vec<usize> = (0..self.outputs.len())
                .filter(|&j| self.segment[j] == k)
                .collect();
            let mut root = if self.segment[self.result] == k {
                loss.take()
            } else {
                None
            };
            if let [j] = nodes[..] {
                if let Some(norm) = &self.norms[j] {
                    if let Some(loss) = root.take() {
                        loss.f_backward().context(ctx)?;
                    }
                    let dy = self.gradient_of(j, Some(&norm.y)).context(ctx)?;
                    if let Some(dy) = dy {
                        sync_norm_backward(norm, &dy, replicas).context(ctx)?;
                    }
                    continue;
                }
            }
            for &j in &nodes {
                let Some(grad) = self.gradient_of(j, None).context(ctx)? else {
                    continue;
                };
                if !self.outputs[j].requires_grad() {
                    continue;
                }
                // d/d out of Σ out·g is g: backward of the segment from its
                // outputs with the gradients later segments sent.
                let term = self.outputs[j]
                    .f_mul(&grad)
                    .and_then(|t| t.f_sum(Kind::Float))
                    .context(ctx)?;
                root = Some(match root {
                    Some(r) => r.f_add(&term).context(ctx)?,
                    None => term,
                });
            }
            if let Some(root) = root {
                if root.requires_grad() {
                    root.f_backward().context(ctx)?;
                }
            }
        }
        Ok(())
    }

    /// The gradient of node `j`'s output: the sum of what its leaves in
    /// later segments (and `own`, a leaf output) collected.
    fn gradient_of(&self, j: usize, own: Option<&Tensor>) -> Result<Option<Tensor>, tch::TchError> {
        let mut total: Option<Tensor> = None;
        for leaf in own.into_iter().chain(&self.leaves[j]) {
            let grad = leaf.grad();
            if grad.defined() {
                total = Some(match total {
                    Some(t) => t.f_add(&grad)?,
                    None => grad.shallow_clone(),
                });
            }
        }
        Ok(total)
    }
}

/// The dimensions a batch norm reduces over: all but the channels (1).
fn reduced_dims(x: &Tensor) -> Vec<i64> {
    (0..x.dim() as i64).filter(|&d| d != 1).collect()
}

/// A per-channel vector shaped to broadcast against `x`.
fn per_channel(v: &Tensor, x: &Tensor) -> Result<Tensor, tch::TchError> {
    let mut shape = vec![1i64; x.dim()];
    shape[1] = -1;
    v.f_reshape(shape.as_slice())
}

/// Synchronised batch norm, forward: the statistics over every replica's
/// rows, the running statistics updated with them (the same on every
/// replica), the output as a leaf.
fn sync_norm(
    input: &Tensor,
    model: &Model,
    [weight, bias, running_mean, running_var, tracked]: [&String; 5],
    eps: f64,
    momentum: f64,
    replicas: &dyn Communicator,
) -> Result<SyncNorm, tch::TchError> {
    let x = input.shallow_clone();
    let dims = reduced_dims(&x);
    let local_count = (x.numel() as i64 / x.size()[1]) as f64;
    let detached = x.f_detach()?.f_to_kind(Kind::Double)?;
    // [Σx, Σx², count] per channel, summed over the replicas in float64.
    let sums = detached.f_sum_dim_intlist(dims.as_slice(), false, Kind::Double)?;
    let squares = detached
        .f_square()?
        .f_sum_dim_intlist(dims.as_slice(), false, Kind::Double)?;
    let channels = sums.size()[0];
    let mut packed = Tensor::f_cat(&[sums, squares], 0)?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?;
    let mut values = Vec::<f64>::try_from(&packed)?;
    values.push(local_count);
    replicas
        .all_reduce_host(&mut values, ReduceOp::Sum)
        .map_err(|e| tch::TchError::Torch(format!("synchronise batch norm: {e}")))?;
    let count = values.pop().unwrap_or(local_count);
    packed = Tensor::from_slice(&values).f_to_device(x.device())?;
    let mean = packed.f_narrow(0, 0, channels)?.f_div_scalar(count)?;
    let mean_square = packed
        .f_narrow(0, channels, channels)?
        .f_div_scalar(count)?;
    let var = mean_square.f_sub(&mean.f_square()?)?.f_clamp_min(0.0)?;
    let inv_std = var.f_add_scalar(eps)?.f_rsqrt()?.f_to_kind(Kind::Float)?;
    let (mean32, var32) = (mean.f_to_kind(Kind::Float)?, var.f_to_kind(Kind::Float)?);
    let (w, b) = (model.weight(weight), model.weight(bias));
    let normalized = tch::no_grad(|| {
        x.f_sub(&per_channel(&mean32, &x)?)?
            .f_mul(&per_channel(&inv_std, &x)?)
    })?;
    let y = tch::no_grad(|| {
        normalized
            .f_mul(&per_channel(&w, &x)?)?
            .f_add(&per_channel(&b, &x)?)
    })?
    .set_requires_grad(true);
    // Running statistics as PyTorch updates them: the unbiased variance.
    tch::no_grad(|| -> Result<(), tch::TchError> {
        let mut rm = model.weight(running_mean);
        let mut rv = model.weight(running_var);
        let unbiased = var32.f_mul_scalar(count / (count - 1.0).max(1.0))?;
        let _ = rm
            .f_mul_scalar_(1.0 - momentum)?
            .f_add_(&mean32.f_mul_scalar(momentum)?)?;
        let _ = rv
            .f_mul_scalar_(1.0 - momentum)?
            .f_add_(&unbiased.f_mul_scalar(momentum)?)?;
        let _ = model.weight(tracked).f_add_scalar_(1.0)?;
        Ok(())
    })?;
    Ok(SyncNorm {
        x,
        normalized,
        inv_std,
        y,
        weight: w,
        bias: b,
        count,
    })
}

/// Synchronised batch norm, backward: SyncBatchNorm's two per-channel sums
/// (Σ dy, Σ dy · x̂) all-reduced over the replicas; the input's gradient
/// γ/σ · (dy − Σdy/N − x̂ · Σ(dy·x̂)/N) goes back into the previous
/// segment, the weight's and bias's local sums into their gradients (the
/// data-parallel all-reduce averages them with the other replicas').
fn sync_norm_backward(
    norm: &SyncNorm,
    dy: &Tensor,
    replicas: &dyn Communicator,
) -> Result<(), tch::TchError> {
    let dims = reduced_dims(dy);
    let grad_bias = dy.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float)?;
    let grad_weight =
        dy.f_mul(&norm.normalized)?
            .f_sum_dim_intlist(dims.as_slice(), false, Kind::Float)?;
    let channels = grad_bias.size()[0];
    let mut both = Tensor::f_cat(&[&grad_bias, &grad_weight], 0)?.f_to_kind(Kind::Double)?;
    let mut values = Vec::<f64>::try_from(&both.f_to_device(tch::Device::Cpu)?)?;
    replicas
        .all_reduce_host(&mut values, ReduceOp::Sum)
        .map_err(|e| tch::TchError::Torch(format!("synchronise batch norm's gradients: {e}")))?;
    both = Tensor::from_slice(&values)
        .f_to_kind(Kind::Float)?
        .f_to_device(dy.device())?;
    let n = norm.count;
    let sum_dy = per_channel(&both.f_narrow(0, 0, channels)?.f_div_scalar(n)?, dy)?;
    let sum_dy_xhat = per_channel(&both.f_narrow(0, channels, channels)?.f_div_scalar(n)?, dy)?;
    let scale = per_channel(&norm.weight.f_detach()?.f_mul(&norm.inv_std)?, dy)?;
    let dx = dy
        .f_sub(&sum_dy)?
        .f_sub(&norm.normalized.f_mul(&sum_dy_xhat)?)?
        .f_mul(&scale)?;
    // One small backward carries the three gradients where they belong.
    let mut root = norm.weight.f_mul(&grad_weight)?.f_sum(Kind::Float)?;
    root = root.f_add(&norm.bias.f_mul(&grad_bias)?.f_sum(Kind::Float)?)?;
    if norm.x.requires_grad() {
        root = root.f_add(&norm.x.f_mul(&dx)?.f_sum(Kind::Float)?)?;
    }
    root.f_backward()
}
