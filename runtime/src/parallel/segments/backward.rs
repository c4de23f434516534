//! The backward half of [`Forward`]: segment by segment, last first, the
//! gradients of values read across segments (and across stages) summed,
//! reduce-scattered or gathered as their readers need.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::comm::Communicator;
use crate::error::{RunError, TorchContext};
use crate::model::Model;
use crate::ops::Weights;
use crate::torch_ops;

use super::super::sync_norm::sync_norm_backward;
use super::{Forward, Hooks, Reader};

impl Forward {
    /// Backward from `loss` (computed from the result, when this range
    /// computes it) and from the gradients `sent` of outputs later stages
    /// read, segment by segment, last first: gradients accumulate into the
    /// parameters (and the external values' leaves) as one backward pass
    /// would put them. `hooks.units` reduce-scatters each unit's
    /// gradients after its segment's backward; the held units' are the
    /// caller's to reduce ([`Gathering::after_all`]), after the last
    /// backward that reads them.
    pub fn backward(
        mut self,
        model: &Model,
        loss: Option<&Tensor>,
        sent: &BTreeMap<usize, Tensor>,
        hooks: &mut Hooks<'_>,
    ) -> Result<(), RunError> {
        let ctx = || "backward".to_string();
        let mut order: Vec<usize> = self.nodes.clone().map(|j| self.segments.of[j]).collect();
        order.dedup();
        let result = model.result();
        for &seg in order.iter().rev() {
            let nodes: Vec<usize> = self.segment_nodes(seg).collect();
            let mut root = match loss {
                Some(loss) if nodes.contains(&result) => Some(loss.shallow_clone()),
                _ => None,
            };
            if let [j] = nodes[..] {
                if let Some(norm) = self.norms.get(&j) {
                    if let Some(loss) = root.take() {
                        loss.f_backward().context(ctx)?;
                    }
                    let dy = self.gradient_of(model, j, Some(&norm.y), sent, hooks.tensor)?;
                    if let Some(dy) = dy {
                        let replicas = hooks.replicas.ok_or_else(|| RunError::Torch {
                            context: ctx(),
                            message: "synchronised batch norm without replicas".into(),
                        })?;
                        sync_norm_backward(norm, &dy, replicas).context(ctx)?;
                    }
                    continue;
                }
            }
            let mut grads = Vec::new();
            for &j in &nodes {
                if let Some(grad) = self.gradient_of(model, j, None, sent, hooks.tensor)? {
                    grads.push((j, grad));
                }
            }
            let first = nodes[0];
            if root.is_none() && grads.is_empty() {
                if let Some(units) = &mut hooks.units {
                    units.after_backward(first)?;
                }
                continue;
            }
            if let Some(units) = &mut hooks.units {
                units.before_backward(first)?;
            }
            let statistics = match self.segments.recomputed[seg] {
                true => self.recompute(model, seg, &nodes, hooks.tensor)?,
                false => Vec::new(),
            };
            // `sequence = true`: each reduce-scattered output's gradient,
            // gathered into the partial output it came from (whose values
            // were let go: a root of its own, not read).
            let mut partials = Vec::new();
            for (j, grad) in grads {
                if let Some(partial) = self.partials.get(&j).filter(|t| t.requires_grad()) {
                    let whole = gather_gradient(model, j, &grad, hooks.tensor)?;
                    partials.push((partial.shallow_clone(), whole));
                }
                let Some(output) = self.outputs.get(&j).filter(|t| t.requires_grad()) else {
                    continue;
                };
                root = with_output(root, output, &grad).context(ctx)?;
            }
            let root = root.filter(Tensor::requires_grad);
            if partials.is_empty() {
                if let Some(root) = root {
                    root.f_backward().context(ctx)?;
                }
            } else {
                // One pass of the engine from every root.
                if let Some(root) = root {
                    let one = root.f_ones_like().context(ctx)?;
                    partials.push((root, one));
                }
                torch_ops::backward(&partials).context(ctx)?;
            }
            // Batch norms' running statistics as forward left them (their
            // backward read the tensors, so not before it).
            tch::no_grad(|| -> Result<(), tch::TchError> {
                for (mut t, copy) in statistics {
                    t.f_copy_(&copy)?;
                }
                Ok(())
            })
            .context(ctx)?;
            // The segment's outputs, and the leaves that stood for them in
            // later segments (their gradients are in), go with the graph:
            // the backward pass holds one segment's gradients at a time.
            for j in &nodes {
                self.outputs.remove(j);
                self.partials.remove(j);
                self.gathered.remove(j);
                self.leaves.remove(j);
            }
            if let Some(units) = &mut hooks.units {
                units.after_backward(first)?;
            }
        }
        self.external_gradients(model, hooks.tensor)
    }

    /// Under `tensor = T`: the gradients that tensor-parallel layers of
    /// this range sent into values received from earlier stages, summed
    /// over the tensor group and added into those values' own gradients
    /// (what the stage sends back).
    fn external_gradients(
        &self,
        model: &Model,
        tensor: Option<&dyn Communicator>,
    ) -> Result<(), RunError> {
        let none = BTreeMap::new();
        for (&i, external) in &self.external {
            let ctx = || format!("backward: the gradient of `{}`", model.nodes()[i].name);
            if !external.requires_grad() {
                continue;
            }
            // What its leaves collected: split layers' partial sums summed
            // over the group (reduce-scattered when it is held by parts of
            // the sequence), whole readers' gathered gradient cut to this
            // rank's part.
            let Some(total) = self.gradient_of(model, i, None, &none, tensor)? else {
                continue;
            };
            // Into the received leaf's gradient, beside what other layers
            // of this stage sent it.
            if let Some(root) = with_output(None, external, &total).context(ctx)? {
                root.f_backward().context(ctx)?;
            }
        }
        Ok(())
    }

    /// Runs segment `seg` (its `nodes`) again, with its graph, from the
    /// inputs and the random state its forward had, and puts the random
    /// state back; returns the batch norms' running statistics as they
    /// were before (each tensor and a copy), for the caller to put back
    /// after the segment's backward. Under `tensor = T` its split layers
    /// sum their parts over `tensor` again, as in forward (every tensor
    /// rank recomputes the same segments in the same order).
    fn recompute(
        &mut self,
        model: &Model,
        seg: usize,
        nodes: &[usize],
        tensor: Option<&dyn Communicator>,
    ) -> Result<Vec<(Tensor, Tensor)>, RunError> {
        let ctx = || {
            format!(
                "recompute the segment of `{}`",
                model.nodes()[nodes[0]].name
            )
        };
        let device = self.input.device();
        let resume = match self.rng.get(&seg) {
            Some(saved) => {
                let now = torch_ops::rng_state(device).context(ctx)?;
                torch_ops::set_rng_state(device, saved).context(ctx)?;
                Some(now)
            }
            None => None,
        };
        let statistics: Vec<(Tensor, Tensor)> = nodes
            .iter()
            .flat_map(|&j| model.nodes()[j].op.buffers())
            .map(|name| {
                let t = model.weight(name);
                t.f_detach_copy().map(|copy| (t, copy))
            })
            .collect::<Result<_, _>>()
            .context(ctx)?;
        for &j in nodes {
            let inputs = self.inputs(model, j, seg, tensor)?;
            let node = &model.nodes()[j];
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let shapes: Vec<Vec<i64>> = inputs.iter().map(Tensor::size).collect();
            let at = || {
                format!(
                    "recompute layer `{}` ({}) on input {:?}",
                    node.name,
                    node.op.kind(),
                    shapes
                )
            };
            let (output, partial) = model.run_node_in_parts(j, &refs, true, tensor, at)?;
            self.outputs.insert(j, output);
            if let Some(partial) = partial {
                self.partials.insert(j, partial);
            }
        }
        if let Some(now) = resume {
            torch_ops::set_rng_state(device, &now).context(ctx)?;
        }
        Ok(statistics)
    }

    /// The gradient of node `j`'s output: the sum of what its leaves in
    /// later segments (and `own`, a leaf output) collected, and what later
    /// stages `sent`. The leaves of tensor-parallel readers hold partial
    /// sums: theirs is summed over `tensor`, the tensor group, first.
    fn gradient_of(
        &self,
        model: &Model,
        j: usize,
        own: Option<&Tensor>,
        sent: &BTreeMap<usize, Tensor>,
        tensor: Option<&dyn Communicator>,
    ) -> Result<Option<Tensor>, RunError> {
        let ctx = || format!("backward: the gradient of `{}`", model.nodes()[j].name);
        let add = |total: Option<Tensor>, grad: &Tensor| -> Result<Option<Tensor>, RunError> {
            Ok(Some(match total {
                Some(t) => t.f_add(grad).context(ctx)?,
                None => grad.shallow_clone(),
            }))
        };
        let mut whole = self.leaf_gradients(j, Reader::Plain).context(ctx)?;
        if let Some(own) = own {
            let grad = own.grad();
            if grad.defined() {
                whole = add(whole, &grad)?;
            }
        }
        let part = model.tensor_part().filter(|p| p.in_parts(j));
        if let Some(partial) = self.leaf_gradients(j, Reader::Split).context(ctx)? {
            let total = match (part, tensor) {
                // Held by parts: each rank keeps its part of the sum.
                (Some(part), Some(group)) => part.scatter_sum(&partial, group, &ctx)?,
                _ => summed_over_tensor(model, partial, tensor, &ctx)?,
            };
            whole = add(whole, &total)?;
        }
        if let Some(scattered) = self.leaf_gradients(j, Reader::Scattered).context(ctx)? {
            // Each rank's part of a whole value's gradient: gathered whole.
            whole = add(whole, &gather_gradient(model, j, &scattered, tensor)?)?;
        }
        if let Some(gathered) = self.leaf_gradients(j, Reader::Gathered).context(ctx)? {
            // The same on every rank: this rank's part of it.
            let part = part.ok_or_else(|| RunError::Torch {
                context: ctx(),
                message: "a gathered value that no rank holds by parts".into(),
            })?;
            whole = add(whole, &part.part_of(&gathered).context(ctx)?)?;
        }
        if let Some(grad) = sent.get(&j) {
            whole = add(whole, grad)?;
        }
        Ok(whole)
    }

    /// The sum of what node `i`'s leaves of `reader` collected.
    fn leaf_gradients(&self, i: usize, reader: Reader) -> Result<Option<Tensor>, tch::TchError> {
        let leaves = self.leaves.get(&i).into_iter().flatten();
        let mut total: Option<Tensor> = None;
        for (_, _, leaf) in leaves.filter(|(_, r, _)| *r == reader) {
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

/// `partial`, a gradient that tensor-parallel layers sent (a partial sum
/// on each rank), summed over the tensor group `tensor`.
fn summed_over_tensor(
    model: &Model,
    partial: Tensor,
    tensor: Option<&dyn Communicator>,
    ctx: &dyn Fn() -> String,
) -> Result<Tensor, RunError> {
    let (part, group) = model
        .tensor_part()
        .zip(tensor)
        .ok_or_else(|| RunError::Torch {
            context: ctx(),
            message: "a tensor-parallel gradient without its tensor group".into(),
        })?;
    part.sum_gradient(partial, group)
}

/// `sequence = true`: the gradient of node `j`'s part of the sequence,
/// gathered over `tensor` whole.
fn gather_gradient(
    model: &Model,
    j: usize,
    grad: &Tensor,
    tensor: Option<&dyn Communicator>,
) -> Result<Tensor, RunError> {
    let ctx = || {
        format!(
            "backward: gather the gradient of `{}`",
            model.nodes()[j].name
        )
    };
    let (part, group) = super::sequence_group(model, tensor, &ctx)?;
    part.gather_sequence(grad, group, &ctx)
}

/// `root` + Σ `output` · `grad`: backward from it sends `grad` into the
/// graph that computed `output` (d/d out of Σ out·g is g), beside
/// whatever `root` already holds (the loss, other outputs).
pub(in crate::parallel) fn with_output(
    root: Option<Tensor>,
    output: &Tensor,
    grad: &Tensor,
) -> Result<Option<Tensor>, tch::TchError> {
    let term = output.f_mul(grad)?.f_sum(Kind::Float)?;
    Ok(Some(match root {
        Some(r) => r.f_add(&term)?,
        None => term,
    }))
}
