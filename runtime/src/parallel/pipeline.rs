//! A pipeline stage: the rank's part of the model (the plan's node range),
//! run on the pieces of each micro-batch in the order the plan's stage
//! program gives, with the activations it reads from earlier stages and the
//! gradients of what it sends to later ones crossing point to point.
//!
//! Every tensor the plan lists for a cut crosses it (skip connections that
//! reach over a stage included), once per piece, and its gradient comes
//! back; sizes are checked on arrival. Transfers that follow one another in
//! the program without computation between them are posted together, so
//! two stages sending to each other at the same time (1F1B's steady state)
//! do not wait on each other. A piece's activations are kept only until its
//! backward has sent its gradients back: 1F1B holds at most `stages −
//! stage` pieces on stage `stage`, GPipe all of them.

use std::collections::BTreeMap;

use dtl_compiler::plan::{Dim, Loss, Node, PipeOp, Plan, StagePlan};
use tch::{Kind, Tensor};

use crate::comm::Communicator;
use crate::error::{RunError, TorchContext};
use crate::model::{Around, Edge, Model};

use super::segments::{with_output, Forward, Hooks, Segments};

/// This rank's stage of the plan.
pub struct Stage {
    pub stage: u64,
    pub stages: u64,
    first: usize,
    last: usize,
    /// What this stage receives: from each earlier stage, its nodes in the
    /// order that stage sends them.
    inbound: Vec<(u64, Vec<usize>)>,
    /// What it sends: to each later stage, its nodes.
    outbound: Vec<(u64, Vec<usize>)>,
    /// The model's output node (on the last stage).
    result: usize,
    nodes: Vec<Node>,
    /// The most pieces alive at once, for the trace.
    pub peak_in_flight: usize,
    /// Under `recompute`, `shard = parameters` or `tensor`: how the
    /// stage's nodes are cut.
    segments: Option<Segments>,
    /// Under `tensor = T`: the nodes whose output each rank holds 1/T of
    /// (its last dimension), and T.
    sharded: (std::collections::BTreeSet<usize>, i64),
    /// `sequence = true`: the nodes whose outputs each tensor rank holds
    /// its part of the sequence of (dimension 1, 1/T).
    in_parts: Vec<usize>,
}

/// One piece of a micro-batch on its way through this stage.
#[derive(Default)]
struct Piece {
    /// The activations received, leaves of this stage's graph.
    leaves: BTreeMap<usize, Tensor>,
    /// The outputs later stages read, in this stage's graph.
    outputs: BTreeMap<usize, Tensor>,
    /// The gradients of `outputs` that came back (summed over readers).
    grads: BTreeMap<usize, Tensor>,
    /// The last stage's scaled loss.
    loss: Option<Tensor>,
    /// Under `recompute`: the forward pass, whose backward recomputes.
    pass: Option<Forward>,
}

/// What the last stage minimises: the loss, scaled so the pieces' losses
/// add up to the step's mean.
#[derive(Clone, Copy)]
pub struct Objective<'a> {
    pub loss: &'a Loss,
    pub scale: f64,
}

/// The rows of one piece: its features (stage 0) and targets (last stage).
pub struct Rows {
    pub x: Tensor,
    pub y: Tensor,
}

impl Stage {
    pub fn new(plan: &Plan, stage: u64) -> Stage {
        let stages = &plan.topology.stages;
        let me: &StagePlan = &stages[stage as usize];
        let transfers = |from: &StagePlan, to: u64| -> Vec<usize> {
            from.sends
                .iter()
                .filter(|t| t.to_stage == to)
                .map(|t| t.index)
                .collect()
        };
        let inbound = stages
            .iter()
            .filter(|s| s.stage < stage)
            .map(|s| (s.stage, transfers(s, stage)))
            .filter(|(_, nodes)| !nodes.is_empty())
            .collect();
        let mut outbound: Vec<(u64, Vec<usize>)> = Vec::new();
        for to in stage + 1..stages.len() as u64 {
            let nodes = transfers(me, to);
            if !nodes.is_empty() {
                outbound.push((to, nodes));
            }
        }
        Stage {
            stage,
            stages: stages.len() as u64,
            first: me.first_node,
            last: me.last_node,
            inbound,
            outbound,
            result: plan.model.result,
            nodes: plan.model.nodes.clone(),
            peak_in_flight: 0,
            segments: Segments::for_plan(plan, false, !plan.topology.units.is_empty()),
            sharded: (
                plan.topology
                    .tensor_splits
                    .iter()
                    .filter(|s| s.split.sharded_output())
                    .map(|s| s.node)
                    .collect(),
                plan.topology.parallelism.tensor as i64,
            ),
            in_parts: match plan.topology.parallelism.sequence {
                true => plan.topology.sequence.clone(),
                false => Vec::new(),
            },
        }
    }

    fn is_last(&self) -> bool {
        self.stage + 1 == self.stages
    }

    /// The shape of node `i`'s output for a piece of `rows` rows (this
    /// tensor rank's part, when the output is sharded, and in training
    /// when it is held by parts of the sequence).
    fn shape(&self, i: usize, rows: i64, training: bool) -> Result<Vec<i64>, RunError> {
        let mut shape = self.whole_shape(i, rows)?;
        if self.sharded.0.contains(&i) {
            if let Some(last) = shape.last_mut() {
                *last /= self.sharded.1;
            }
        }
        // `sequence = true`: the rank's part of the sequence.
        if training && self.in_parts.contains(&i) && shape.len() > 1 {
            shape[1] /= self.sharded.1;
        }
        Ok(shape)
    }

    /// The shape of node `i`'s whole output for a piece of `rows` rows.
    fn whole_shape(&self, i: usize, rows: i64) -> Result<Vec<i64>, RunError> {
        self.nodes[i]
            .output
            .iter()
            .enumerate()
            .map(|(d, dim)| match dim {
                Dim::Size(n) => Ok(*n),
                Dim::Symbol(_) if d == 0 => Ok(rows),
                Dim::Symbol(s) => Err(RunError::Torch {
                    context: format!(
                        "stage {}: the tensor of `{}`",
                        self.stage, self.nodes[i].name
                    ),
                    message: format!("its size `{s}` is not known before it arrives"),
                }),
            })
            .collect()
    }

    /// One round of the stage's program over `pieces` (this replica's rows
    /// of one micro-batch, cut in the plan's pieces): returns the sum of
    /// the scaled losses on the last stage (0 elsewhere) and the passes run,
    /// in order, for the trace.
    pub fn round(
        &mut self,
        program: &[PipeOp],
        pieces: &[Rows],
        model: &Model,
        objective: Objective<'_>,
        (pipeline, hooks): (&dyn Communicator, &mut Hooks<'_>),
        step: u64,
    ) -> Result<(f64, Vec<String>), RunError> {
        let mut alive: BTreeMap<u64, Piece> = BTreeMap::new();
        let mut total = 0.0;
        let mut passes = Vec::new();
        let mut at = 0;
        while at < program.len() {
            match program[at] {
                PipeOp::Forward { micro_batch } => {
                    let piece = alive.entry(micro_batch).or_default();
                    let rows = &pieces[micro_batch as usize];
                    total += self.forward(piece, rows, model, objective, hooks, step)?;
                    self.peak_in_flight = self.peak_in_flight.max(alive.len());
                    passes.push(format!("F{micro_batch}"));
                    at += 1;
                }
                PipeOp::Backward { micro_batch } => {
                    let piece = alive
                        .get_mut(&micro_batch)
                        .ok_or_else(|| order_error(step, micro_batch))?;
                    self.backward(piece, model, hooks, step)?;
                    passes.push(format!("B{micro_batch}"));
                    // Stage 0 sends nothing back: the piece is done.
                    if self.inbound.is_empty() {
                        alive.remove(&micro_batch);
                    }
                    at += 1;
                }
                _ => {
                    // A run of transfers, posted together.
                    let end = program[at..]
                        .iter()
                        .position(|op| {
                            matches!(op, PipeOp::Forward { .. } | PipeOp::Backward { .. })
                        })
                        .map_or(program.len(), |n| at + n);
                    self.transfer(&program[at..end], &mut alive, pieces, pipeline, step)?;
                    at = end;
                }
            }
        }
        if !alive.is_empty() {
            return Err(RunError::Torch {
                context: format!("step {step}: stage {}", self.stage),
                message: format!(
                    "pieces {:?} were left unfinished by the program",
                    alive.keys()
                ),
            });
        }
        Ok((total, passes))
    }

    /// The stage's forward pass on one piece; the scaled loss on the last
    /// stage.
    fn forward(
        &self,
        piece: &mut Piece,
        rows: &Rows,
        model: &Model,
        objective: Objective<'_>,
        hooks: &mut Hooks<'_>,
        step: u64,
    ) -> Result<f64, RunError> {
        let mut values: BTreeMap<usize, Tensor> = BTreeMap::new();
        if let Some(segments) = &self.segments {
            let mut keep: Vec<usize> = self.outbound.iter().flat_map(|(_, n)| n.clone()).collect();
            keep.push(self.result);
            let pass = Forward::run(
                model,
                &rows.x,
                self.first..=self.last,
                &piece.leaves,
                &keep,
                segments,
                hooks,
            )?;
            for &j in &keep {
                if let Some(value) = pass.value(j) {
                    values.insert(j, value.shallow_clone());
                }
            }
            piece.pass = Some(pass);
        }
        for j in (self.first..=self.last).filter(|_| self.segments.is_none()) {
            let node = &self.nodes[j];
            let mut inputs = Vec::with_capacity(node.inputs.len().max(1));
            if node.inputs.is_empty() {
                inputs.push(rows.x.shallow_clone());
            }
            for &i in &node.inputs {
                let value = values
                    .get(&i)
                    .or_else(|| piece.leaves.get(&i))
                    .ok_or_else(|| RunError::Torch {
                        context: format!(
                            "step {step}: stage {}, layer `{}`",
                            self.stage, node.name
                        ),
                        message: format!(
                            "its input `{}` was neither computed here nor received",
                            self.nodes[i].name
                        ),
                    })?;
                inputs.push(value.shallow_clone());
            }
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let shapes: Vec<Vec<i64>> = inputs.iter().map(Tensor::size).collect();
            let ctx = || {
                format!(
                    "step {step}: layer `{}` ({}) on input {shapes:?}",
                    node.name,
                    node.op.kind()
                )
            };
            let out = model.run_node(j, &refs, true, hooks.tensor, ctx)?;
            // A value a later stage reads has its last reader there: it
            // stays to be sent.
            drop(inputs);
            for i in model.let_go(j) {
                values.remove(i);
            }
            values.insert(j, out);
        }
        for (_, nodes) in &self.outbound {
            for &i in nodes {
                let value = values
                    .get(&i)
                    .or_else(|| piece.leaves.get(&i))
                    .ok_or_else(|| RunError::Torch {
                        context: format!("step {step}: stage {}", self.stage),
                        message: format!(
                            "`{}` is to be sent on but is not here",
                            self.nodes[i].name
                        ),
                    })?;
                piece.outputs.insert(i, value.shallow_clone());
            }
        }
        if !self.is_last() {
            return Ok(0.0);
        }
        let output = &values[&self.result];
        let scaled = model
            .loss(objective.loss, (output, &rows.y), hooks.tensor, step)?
            .f_mul_scalar(objective.scale)
            .context(|| format!("step {step}: scale the loss"))?;
        let value = scaled
            .f_double_value(&[])
            .context(|| format!("step {step}: read loss"))?;
        piece.loss = Some(scaled);
        Ok(value)
    }

    /// The stage's backward pass on one piece: from the loss (last stage)
    /// and from its sent outputs with the gradients that came back.
    fn backward(
        &self,
        piece: &mut Piece,
        model: &Model,
        hooks: &mut Hooks<'_>,
        step: u64,
    ) -> Result<(), RunError> {
        let ctx = || format!("step {step}: stage backward");
        if let Some(pass) = piece.pass.take() {
            let loss = piece.loss.take();
            pass.backward(model, loss.as_ref(), &piece.grads, hooks)?;
            piece.outputs.clear();
            piece.grads.clear();
            return Ok(());
        }
        let mut root = piece.loss.take();
        for (i, output) in &piece.outputs {
            let Some(grad) = piece.grads.get(i) else {
                continue;
            };
            if !output.requires_grad() {
                continue;
            }
            root = with_output(root, output, grad).context(ctx)?;
        }
        if let Some(root) = root.filter(Tensor::requires_grad) {
            root.f_backward().context(ctx)?;
        }
        piece.outputs.clear();
        piece.grads.clear();
        Ok(())
    }

    /// A run of the program's transfers, posted together.
    fn transfer(
        &self,
        ops: &[PipeOp],
        alive: &mut BTreeMap<u64, Piece>,
        pieces: &[Rows],
        pipeline: &dyn Communicator,
        step: u64,
    ) -> Result<(), RunError> {
        let comm_err = |e: crate::comm::CommError| RunError::Collective {
            step,
            message: format!("stage {}: {}", self.stage, e.0),
        };
        let mut sends: Vec<(Tensor, usize)> = Vec::new();
        // (micro-batch, node, gradient?) of each receive, in order.
        let mut wanted: Vec<(u64, usize, bool)> = Vec::new();
        let mut recvs: Vec<(Tensor, usize)> = Vec::new();
        let mut finished: Vec<u64> = Vec::new();
        for op in ops {
            match *op {
                PipeOp::SendActivations { micro_batch, to } => {
                    let piece = alive
                        .get(&micro_batch)
                        .ok_or_else(|| order_error(step, micro_batch))?;
                    for &i in self.nodes_to(to) {
                        let t = piece.outputs[&i].detach().contiguous();
                        sends.push((t, to as usize));
                    }
                }
                PipeOp::SendGradients { micro_batch, to } => {
                    let piece = alive
                        .get(&micro_batch)
                        .ok_or_else(|| order_error(step, micro_batch))?;
                    for &i in self.nodes_from(to) {
                        let leaf = &piece.leaves[&i];
                        let grad = leaf.grad();
                        let grad = if grad.defined() {
                            grad.contiguous()
                        } else {
                            leaf.zeros_like()
                        };
                        sends.push((grad, to as usize));
                    }
                    finished.push(micro_batch);
                }
                PipeOp::RecvActivations { micro_batch, from } => {
                    let rows = pieces[micro_batch as usize].x.size()[0];
                    for &i in self.nodes_from(from) {
                        let shape = self.shape(i, rows, true)?;
                        let buffer =
                            Tensor::f_zeros(shape.as_slice(), (Kind::Float, pieces[0].x.device()))
                                .context(|| format!("step {step}: receive buffer"))?;
                        recvs.push((buffer, from as usize));
                        wanted.push((micro_batch, i, false));
                    }
                }
                PipeOp::RecvGradients { micro_batch, from } => {
                    let piece = alive
                        .get(&micro_batch)
                        .ok_or_else(|| order_error(step, micro_batch))?;
                    for &i in self.nodes_to(from) {
                        let buffer = piece.outputs[&i].zeros_like();
                        recvs.push((buffer, from as usize));
                        wanted.push((micro_batch, i, true));
                    }
                }
                PipeOp::Forward { .. } | PipeOp::Backward { .. } => {
                    unreachable!("a run of transfers holds no passes")
                }
            }
        }
        let send_refs: Vec<(&Tensor, usize)> = sends.iter().map(|(t, r)| (t, *r)).collect();
        let mut recv_refs: Vec<(&mut Tensor, usize)> =
            recvs.iter_mut().map(|(t, r)| (t, *r)).collect();
        pipeline
            .exchange(&send_refs, &mut recv_refs)
            .map_err(comm_err)?;
        for ((micro_batch, i, gradient), (tensor, _)) in wanted.into_iter().zip(recvs) {
            let piece = alive.entry(micro_batch).or_default();
            if gradient {
                let summed = match piece.grads.remove(&i) {
                    Some(g) => g
                        .f_add(&tensor)
                        .context(|| format!("step {step}: add gradients"))?,
                    None => tensor,
                };
                piece.grads.insert(i, summed);
            } else {
                piece.leaves.insert(i, tensor.set_requires_grad(true));
            }
        }
        for micro_batch in finished {
            alive.remove(&micro_batch);
        }
        Ok(())
    }

    /// The nodes this stage sends to stage `to`.
    fn nodes_to(&self, to: u64) -> &[usize] {
        self.outbound
            .iter()
            .find(|(s, _)| *s == to)
            .map_or(&[], |(_, nodes)| nodes.as_slice())
    }

    /// The nodes this stage receives from stage `from`.
    fn nodes_from(&self, from: u64) -> &[usize] {
        self.inbound
            .iter()
            .find(|(s, _)| *s == from)
            .map_or(&[], |(_, nodes)| nodes.as_slice())
    }

    /// Held-out evaluation through the pipeline: `x` on stage 0; the
    /// model's output comes out of the last stage (`None` elsewhere).
    /// `around` runs before and after each of the stage's nodes (the
    /// gathering of `shard = parameters`' units).
    pub fn evaluate(
        &self,
        x: &Tensor,
        model: &Model,
        (pipeline, tensor, around): (&dyn Communicator, &dyn Communicator, &mut Around<'_>),
        step: u64,
    ) -> Result<Option<Tensor>, RunError> {
        tch::no_grad(|| {
            let mut piece = Piece::default();
            // Receive from every earlier stage, compute, send on.
            let comm_err = |e: crate::comm::CommError| RunError::Collective {
                step,
                message: format!("stage {} (evaluation): {}", self.stage, e.0),
            };
            for (from, nodes) in &self.inbound {
                let mut buffers: Vec<Tensor> = nodes
                    .iter()
                    .map(|&i| {
                        // Evaluation holds whole sequences.
                        self.shape(i, x.size()[0], false).and_then(|shape| {
                            Tensor::f_zeros(shape.as_slice(), (Kind::Float, x.device()))
                                .context(|| format!("step {step}: receive buffer"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let mut refs: Vec<(&mut Tensor, usize)> =
                    buffers.iter_mut().map(|t| (t, *from as usize)).collect();
                pipeline.exchange(&[], &mut refs).map_err(comm_err)?;
                for (&i, t) in nodes.iter().zip(buffers) {
                    piece.leaves.insert(i, t);
                }
            }
            let mut values: BTreeMap<usize, Tensor> = BTreeMap::new();
            for j in self.first..=self.last {
                let node = &self.nodes[j];
                let mut inputs = Vec::new();
                if node.inputs.is_empty() {
                    inputs.push(x.shallow_clone());
                }
                for &i in &node.inputs {
                    let v = values
                        .get(&i)
                        .or_else(|| piece.leaves.get(&i))
                        .ok_or_else(|| order_error(step, 0))?;
                    inputs.push(v.shallow_clone());
                }
                let refs: Vec<&Tensor> = inputs.iter().collect();
                let ctx = || format!("step {step}: evaluate layer `{}`", node.name);
                around(j, Edge::Before)?;
                let tensor = Some(tensor);
                let output = model.run_node(j, &refs, false, tensor, ctx)?;
                drop(inputs);
                for i in model.let_go(j) {
                    values.remove(i);
                }
                values.insert(j, output);
                around(j, Edge::After)?;
            }
            for (to, nodes) in &self.outbound {
                let sends: Vec<Tensor> = nodes
                    .iter()
                    .map(|&i| {
                        values
                            .get(&i)
                            .or_else(|| piece.leaves.get(&i))
                            .map(|t| t.contiguous())
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| order_error(step, 0))?;
                let refs: Vec<(&Tensor, usize)> = sends.iter().map(|t| (t, *to as usize)).collect();
                pipeline.exchange(&refs, &mut []).map_err(comm_err)?;
            }
            Ok(self
                .is_last()
                .then(|| values.remove(&self.result))
                .flatten())
        })
    }
}

fn order_error(step: u64, micro_batch: u64) -> RunError {
    RunError::Torch {
        context: format!("step {step}: pipeline program"),
        message: format!("piece {micro_batch} is used before its forward pass"),
    }
}
