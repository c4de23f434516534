//! `dtl explain`: parameters, FLOPs, memory and communication of a plan,
//! computed before anything runs, from the plan and the cost model that
//! lowering uses ([`crate::lower::cost`]).
//!
//! Assumptions, stated in the report too: float32 everywhere; a backward
//! pass costs twice its forward; every node's output is kept for the
//! backward pass (an upper bound on activation memory), and an attention's
//! projections and fused-attention output and statistics too, except
//! inside the pieces `recompute` drops and recomputes; a multiply-add is
//! two FLOPs.

use serde::Serialize;

use crate::lower::cost::{all_gather_bytes, node_flops, numel, ring_bytes};
use crate::plan::{
    Optimizer, Pass, PipelineSchedule, Plan, Recompute, Shard, StepOp, SyncMode, TensorCollective,
    TensorOp,
};

const BYTES_PER_VALUE: u64 = 4;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    pub name: String,
    pub kind: &'static str,
    pub parameters: u64,
    /// Forward FLOPs for one sample.
    pub forward_flops: u64,
    /// Output values for one sample.
    pub activations: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    pub layers: Vec<LayerCost>,
    pub parameters: u64,
    /// Of `parameters`, those `freeze` keeps from training.
    pub frozen: u64,
    /// Forward + backward FLOPs per sample (3 × forward).
    pub train_flops_per_sample: u64,
    /// FLOPs of one optimizer step over the global batch.
    pub flops_per_step: u128,
    pub global_batch: u64,
    /// The rank that needs the most memory (with pipeline stages: the
    /// largest of `stages`).
    pub memory: Memory,
    /// Per pipeline stage (one entry without a pipeline).
    pub stages: Vec<StageCost>,
    /// Collectives and point-to-point transfers per step, with the bytes
    /// each sending rank sends.
    pub collectives: Vec<Collective>,
    /// Fraction of a step each stage idles while the pipeline fills and
    /// drains: (stages − 1) / (micro-batches + stages − 1).
    pub bubble: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCost {
    pub stage: u64,
    pub parameters: u64,
    /// Micro-batch pieces whose activations are alive at once.
    pub in_flight: u64,
    pub memory: Memory,
}

/// Bytes per rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    /// Activations kept for backward at the micro-batch size.
    pub activations: u64,
    /// On stage 0 of a pipeline (rank 0 writes the files): the other
    /// stages' weights it receives to write one `model.safetensors` (under
    /// `shard = parameters` those in no unit), and with `checkpoint_every`
    /// their optimizer state too unless it is sharded.
    pub gathered: u64,
    /// The gradient exchange's buffers over the replicas: one bucket at a
    /// time, its flat buffer and (under Open MPI) a temporary of its size;
    /// under `async` the flat buffers of each step
    /// still in flight and Open MPI's temporaries of the step being
    /// started; under `shard = gradients` the kept slices and one
    /// bucket being reduce-scattered, with the ring's slices in flight;
    /// under `shard = parameters` one unit's flat gradients being
    /// reduce-scattered, with the ring's slices.
    pub communication: u64,
    pub total: u64,
}

impl Memory {
    /// What a step holds at its peak: every part at once. The total is
    /// more where the start-up needs more (`shard = parameters`).
    pub fn step(&self) -> u64 {
        self.parameters
            + self.gradients
            + self.optimizer_state
            + self.activations
            + self.gathered
            + self.communication
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Collective {
    pub name: String,
    pub bytes_per_rank: u64,
}

/// Per sample, the activation values the nodes `first..=last` (a stage)
/// keep from forward to backward, and the most that one recomputed piece
/// creates again in backward. A node of a recomputed piece keeps its output
/// only when a node of another piece or stage reads it (the model's output
/// included); without `recompute` every output is kept.
/// `sequence = true`: a value held by parts of the sequence is 1/T of
/// the whole, but the runtime keeps the gathered value a split or whole
/// layer reads beside it, whole, for backward (a summing layer's partial
/// output is let go once reduce-scattered).
fn sequence_activations(plan: &Plan, whole: &[LayerCost], held: &mut [LayerCost]) {
    let topology = &plan.topology;
    let t = topology.parallelism.tensor;
    let parts = &topology.sequence;
    let nodes = &plan.model.nodes;
    for &i in parts {
        let reads_whole = |j: usize| {
            !parts.contains(&j)
                || matches!(
                    topology.tensor_split(j),
                    Some(crate::plan::TensorSplit::Column | crate::plan::TensorSplit::Heads)
                )
        };
        let gathered = nodes
            .iter()
            .enumerate()
            .any(|(j, n)| n.inputs.contains(&i) && reads_whole(j));
        held[i].activations = whole[i].activations / t + whole[i].activations * u64::from(gathered);
    }
}

fn stage_activations(plan: &Plan, layers: &[LayerCost], first: usize, last: usize) -> (u64, u64) {
    let model = &plan.model;
    let pieces = model.pieces(plan.train.recompute);
    let mut piece_of = vec![0; model.nodes.len()];
    for (k, p) in pieces.iter().enumerate() {
        piece_of[p.first_node..=p.last_node].fill(k);
    }
    let mut crosses = vec![false; model.nodes.len()];
    crosses[model.result] = true;
    for (k, node) in model.nodes.iter().enumerate() {
        for &i in &node.inputs {
            let other_stage = (i >= first && i <= last) != (k >= first && k <= last);
            if piece_of[i] != piece_of[k] || other_stage {
                crosses[i] = true;
            }
        }
    }
    let mut kept = 0;
    let mut again = vec![0u64; pieces.len()];
    for j in first..=last {
        if pieces[piece_of[j]].recomputed && !crosses[j] {
            again[piece_of[j]] += layers[j].activations;
        } else {
            kept += layers[j].activations;
        }
    }
    (kept, again.into_iter().max().unwrap_or(0))
}

/// Per sample, what an attention node (`i`) keeps for backward besides its
/// output, on one tensor rank: libtorch's fused attention (the flash
/// kernel, on the CPU too) keeps the packed query/key/value projection
/// (the query, key and value are views of it), its output (the output
/// projection's input) and the log-sum-exp of each row's scores, and the
/// rotated query and key under rotary embeddings; never the S × S scores.
/// A head-split attention's rank has its own heads; the sequence is whole
/// (under `sequence = true` too: it reads it gathered). 0 for other nodes.
fn attention_inside(plan: &Plan, i: usize) -> u64 {
    let node = &plan.model.nodes[i];
    let crate::plan::Op::Attention {
        dim,
        heads,
        kv_heads,
        rope_theta,
        ..
    } = node.op
    else {
        return 0;
    };
    let head_dim = dim / heads;
    let t = plan.topology.parallelism.tensor as i64;
    let (h, kv) = match plan.topology.tensor_split(i) {
        Some(crate::plan::TensorSplit::Heads) => {
            (heads / t, crate::plan::local_kv_heads(kv_heads, t))
        }
        _ => (heads, kv_heads),
    };
    let rows = numel(&node.output) as i64 / dim;
    let projected = (h + 2 * kv) * head_dim;
    let output = h * head_dim;
    let rotated = match rope_theta {
        Some(_) => (h + kv) * head_dim,
        None => 0,
    };
    (rows * (projected + output + h + rotated)) as u64
}

/// `layers` as one tensor rank keeps them for backward: a sharded output
/// is 1/T of the whole, and so is a value held by parts of the sequence
/// ([`sequence_activations`]); an attention keeps what it holds inside
/// ([`attention_inside`]).
fn held_activations(plan: &Plan, layers: &[LayerCost]) -> Vec<LayerCost> {
    let mut held = layers.to_vec();
    let t = plan.topology.parallelism.tensor;
    for split in &plan.topology.tensor_splits {
        if split.split.sharded_output() {
            held[split.node].activations /= t;
        }
    }
    if plan.topology.parallelism.sequence {
        sequence_activations(plan, layers, &mut held);
    }
    for (i, layer) in held.iter_mut().enumerate() {
        layer.activations += attention_inside(plan, i);
    }
    held
}

/// Each node's parameters (a layer used twice counts them at its first
/// use), forward FLOPs and output values, for one sample.
fn layer_costs(model: &crate::plan::ModelPlan) -> Vec<LayerCost> {
    let mut layers = Vec::new();
    let sizes: std::collections::BTreeMap<&str, u64> = model
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p.shape.iter().product::<i64>() as u64))
        .collect();
    // A layer used twice counts its parameters at its first use.
    let mut counted = std::collections::BTreeSet::new();
    for (i, node) in model.nodes.iter().enumerate() {
        let parameters = node
            .op
            .params()
            .into_iter()
            .filter(|name| counted.insert(*name))
            .map(|name| sizes[name])
            .sum();
        layers.push(LayerCost {
            name: node.name.clone(),
            kind: node.op.kind(),
            parameters,
            forward_flops: node_flops(model, i),
            activations: numel(&node.output),
        });
    }
    layers
}

/// The cost of one optimizer step of `plan` on one rank.
pub fn cost(plan: &Plan) -> Cost {
    let model = &plan.model;
    let layers = layer_costs(model);
    let forward: u64 = layers.iter().map(|l| l.forward_flops).sum();
    // Recomputed pieces run their forward twice.
    let again: u64 = model
        .pieces(plan.train.recompute)
        .iter()
        .filter(|p| p.recomputed)
        .flat_map(|p| &layers[p.first_node..=p.last_node])
        .map(|l| l.forward_flops)
        .sum();
    let train_flops_per_sample = 3 * forward + again;
    let held_layers = held_activations(plan, &layers);
    let params = model.parameter_count;
    let stage_state = stage_optimizer_state(plan);
    let held_state = held_optimizer_state(plan, &stage_state);
    let stage_grads = stage_gradients(plan);
    let buffers: u64 = model
        .buffers
        .iter()
        .map(|b| b.shape.iter().product::<i64>() as u64)
        .sum();
    let topology = &plan.topology;
    let layout = &topology.parallelism;
    let stage_count = topology.stages.len().max(1) as u64;
    // Each pipeline micro-batch is a piece of `micro_batch` rows.
    let piece = plan.train.micro_batch / layout.micro_batches.max(1);
    let stages: Vec<StageCost> = topology
        .stages
        .iter()
        .map(|stage| {
            let (kept, recomputed) =
                stage_activations(plan, &held_layers, stage.first_node, stage.last_node);
            let in_flight = match layout.schedule {
                _ if stage_count == 1 => 1,
                PipelineSchedule::Gpipe => layout.micro_batches,
                PipelineSchedule::OneFOneB => (stage_count - stage.stage).min(layout.micro_batches),
            };
            let p = topology.local_parameters(model, stage);
            let state = held_state[stage.stage as usize];
            let others = gathered_for_files(plan, stage, stage_state[stage.stage as usize]);
            let grads = stage_grads[stage.stage as usize];
            // `shard = parameters`: the rank's slices, and what is gathered
            // whole at the peak.
            let held = units_held(plan, stage.stage);
            let (held_params, held_grads) = match held {
                Some((slices, params, grads)) => (
                    p.saturating_sub(grads_of_units(plan, stage.stage)) + slices + params,
                    slices + grads,
                ),
                None => (p, grads),
            };
            // Buffers (batch_norm statistics) are few: counted on every rank.
            let outer = outer_state(layout, p);
            let memory = Memory {
                parameters: (held_params + buffers) * BYTES_PER_VALUE,
                gradients: held_grads * BYTES_PER_VALUE,
                optimizer_state: (state + outer) * BYTES_PER_VALUE,
                // One recomputed block at a time, for one piece.
                activations: (kept * in_flight + recomputed) * piece * BYTES_PER_VALUE,
                gathered: others * BYTES_PER_VALUE,
                communication: exchange_values(
                    plan,
                    stage.stage,
                    stage_grads[stage.stage as usize],
                ) * BYTES_PER_VALUE,
                total: 0,
            };
            StageCost {
                stage: stage.stage,
                parameters: p,
                in_flight,
                memory: Memory {
                    total: memory
                        .step()
                        .max(start_up_values(plan, stage, held, buffers)),
                    ..memory
                },
            }
        })
        .collect();
    let memory = stages
        .iter()
        .map(|s| s.memory.clone())
        .max_by_key(|m| m.total)
        .unwrap_or(Memory {
            parameters: 0,
            gradients: 0,
            optimizer_state: 0,
            activations: 0,
            gathered: 0,
            communication: 0,
            total: 0,
        });
    let collectives = collectives(plan);
    Cost {
        layers,
        parameters: params,
        frozen: frozen_values(model),
        train_flops_per_sample,
        flops_per_step: u128::from(train_flops_per_sample) * u128::from(plan.train.global_batch),
        global_batch: plan.train.global_batch,
        memory,
        stages,
        collectives,
        bubble: layout.bubble(),
    }
}

/// Values a rank of replica 0 at `stage` holds beyond its own while rank 0
/// writes the files of the whole model (`model.safetensors`, a
/// checkpoint). The files are written one tensor at a time, each made
/// whole just before it is written: a split tensor of the stage is its
/// parts all-gathered (T parts, more than the whole where key/value heads
/// are shared) and put together on tensor rank 0, which writes (the
/// others hold the parts only; rank 0's figure is counted); rank 0 receives
/// another stage's tensor whole (under `shard = parameters` only those in
/// no unit: the units go through the replicas' slices); the optimizer
/// state has the shapes of the parameters. The largest of those; and with
/// checkpoints, where a sharded optimizer state is gathered from the
/// replicas' slices (under `tensor`, or for a later DiLoCo group's
/// folder), the rank's whole state (`own_state`) gathered beside its
/// slice, held until it is written.
fn gathered_for_files(plan: &Plan, stage: &crate::plan::StagePlan, own_state: u64) -> u64 {
    let topology = &plan.topology;
    let layout = &topology.parallelism;
    let model = &plan.model;
    let numel = |shape: &[i64]| shape.iter().product::<i64>() as u64;
    let values: std::collections::BTreeMap<&str, u64> = model
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), numel(&p.shape)))
        .collect();
    let value = |name: &str| values.get(name).copied().unwrap_or(0);
    let largest_split = match layout.tensor {
        1 => 0,
        t => {
            let local = topology.tensor_local_shapes(model);
            crate::plan::stage_split_params(model, &topology.tensor_splits, stage)
                .iter()
                .map(|name| local.get(*name).map_or(0, |s| numel(s)) * t + value(name))
                .max()
                .unwrap_or(0)
        }
    };
    let in_units: std::collections::BTreeSet<&str> = topology
        .units
        .iter()
        .flat_map(|u| u.parameters.iter().map(|p| p.name.as_str()))
        .collect();
    let largest_received = topology
        .stages
        .iter()
        .filter(|s| stage.stage == 0 && s.stage != 0)
        .flat_map(|s| &model.nodes[s.first_node..=s.last_node])
        .flat_map(|n| n.op.params())
        .filter(|name| !in_units.contains(name))
        .map(value)
        .max()
        .unwrap_or(0);
    let diloco = matches!(layout.sync, SyncMode::Diloco { .. }) && layout.groups > 1;
    let sharded = layout.shard != Shard::None && layout.data > 1;
    let gathered_state = match plan.train.checkpoint_every > 0 && sharded {
        true if layout.tensor > 1 || diloco => own_state,
        _ => 0,
    };
    largest_split.max(largest_received) + gathered_state
}

/// One line per parameter group (`groups`): what it changes and which
/// tensors it holds; nothing without groups.
fn groups_text(plan: &Plan) -> String {
    plan.train
        .groups
        .iter()
        .map(|g| {
            let mut changes = Vec::new();
            if let Some(decay) = g.weight_decay {
                changes.push(format!("weight_decay {decay}"));
            }
            if g.lr_scale != 1.0 {
                changes.push(format!("lr × {}", g.lr_scale));
            }
            let names = match g.parameters.len() {
                0..=6 => g.parameters.join(", "),
                n => format!("{}, … {} more", g.parameters[..4].join(", "), n - 4),
            };
            let count = g.parameters.len();
            let plural = if count == 1 { "" } else { "s" };
            format!(
                "group: {} for {count} tensor{plural} ({names})\n",
                changes.join(", ")
            )
        })
        .collect()
}

/// Values in the parameters `freeze` keeps from training.
fn frozen_values(model: &crate::plan::ModelPlan) -> u64 {
    model
        .parameters
        .iter()
        .filter(|p| p.frozen)
        .map(|p| p.shape.iter().product::<i64>() as u64)
        .sum()
}

/// Values of optimizer state per pipeline stage, each shared parameter
/// once.
fn stage_optimizer_state(plan: &Plan) -> Vec<u64> {
    stage_sums(plan, |shape| optimizer_state(&plan.train.optimizer, shape))
}

/// Values of optimizer state one rank of each stage holds: the stage's
/// whole state, or with `shard = optimizer` its slice of every bucket
/// (each bucket padded to `data` equal slices).
fn held_optimizer_state(plan: &Plan, stage_state: &[u64]) -> Vec<u64> {
    let layout = &plan.topology.parallelism;
    // The replicas that split one copy of the state.
    let d = layout.shard_degree();
    if d == 1 {
        return stage_state.to_vec();
    }
    // Sharding is refused for Adafactor: every other optimizer keeps the
    // same number of state values per parameter value.
    let per_value = optimizer_state(&plan.train.optimizer, &[1]);
    (0..stage_state.len() as u64)
        .map(|stage| {
            if let Some((slices, _, _)) = units_held(plan, stage) {
                return per_value * slices;
            }
            let slices: u64 = plan
                .topology
                .buckets
                .iter()
                .filter(|b| b.stage == stage)
                .map(|b| (b.bytes / BYTES_PER_VALUE).div_ceil(d))
                .sum();
            per_value * slices
        })
        .collect()
}

/// Values the gradient exchange of `stage` (holding `gradients` values)
/// keeps at its peak on one rank; see [`Memory::communication`].
fn exchange_values(plan: &Plan, stage: u64, gradients: u64) -> u64 {
    let layout = &plan.topology.parallelism;
    let d = layout.data;
    if d == 1 {
        return 0;
    }
    let sizes: Vec<u64> = plan
        .topology
        .buckets
        .iter()
        .filter(|b| b.stage == stage)
        .map(|b| b.bytes / BYTES_PER_VALUE)
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    match (layout.sync, layout.shard) {
        // Inside sync groups, as every step's; none without them.
        (SyncMode::LocalSgd { .. } | SyncMode::Diloco { .. }, _) => {
            match layout.groups > 0 && layout.group_size() > 1 {
                true => 2 * largest,
                false => 0,
            }
        }
        // The kept slices, and the bucket being reduce-scattered: its flat
        // gradients and the ring's two slices.
        (_, Shard::Gradients) => {
            let ranks = layout.shard_degree();
            gradients.div_ceil(ranks) + largest + ring_slices(largest, ranks)
        }
        // The flat gradients of the unit being reduce-scattered and the
        // ring's slices (the kept slices are counted among the gradients).
        (_, Shard::Parameters) => {
            let largest = largest_unit(plan, stage);
            largest + ring_slices(largest, layout.shard_degree())
        }
        // Each step's flat buffers, and Open MPI's temporaries for the
        // step being started only: measured at staleness 1, the step
        // before's sum has completed by then (the backend is polled after
        // every micro-batch) and its temporaries are gone.
        (SyncMode::Async { staleness }, _) => (staleness + 2) * gradients,
        // One bucket at a time: its flat buffer and Open MPI's temporary
        // of the same size.
        (SyncMode::EveryStep, _) => 2 * largest,
    }
}

/// Values a ring reduce-scatter of `values` over `ranks` holds besides
/// its input and output: the slice it passes on and the one it receives
/// (one of them at two ranks).
fn ring_slices(values: u64, ranks: u64) -> u64 {
    values.div_ceil(ranks.max(1)) * ranks.saturating_sub(1).min(2)
}

/// `shard = parameters`: values of one rank's slices of every unit of
/// `stage`, and of the parameters and the gradients gathered whole at the
/// peak: the root (held all step, its gradients too) and the largest other
/// unit (every unit, without `reshard_after_forward`, at the end of
/// forward), and that unit's whole gradients after its backward. `None`
/// otherwise.
fn units_held(plan: &Plan, stage: u64) -> Option<(u64, u64, u64)> {
    if plan.topology.units.is_empty() {
        return None;
    }
    let stages = &plan.topology.stages;
    let units: Vec<&crate::plan::ShardUnit> = plan.topology.stage_units(stage).collect();
    let slices = units.iter().map(|u| u.slice).sum();
    let held: u64 = units
        .iter()
        .filter(|u| u.held(stages))
        .map(|u| u.values())
        .sum();
    let others = units.iter().filter(|u| !u.held(stages)).map(|u| u.values());
    let gathered = if plan.topology.parallelism.reshard_after_forward {
        others.clone().max().unwrap_or(0)
    } else {
        others.clone().sum()
    };
    let largest = others.max().unwrap_or(0);
    Some((slices, held + gathered, held + largest))
}

/// `shard = parameters`: the bytes a rank of `stage` holds at start-up,
/// while the units take their slices (`held`, as [`units_held`] gives
/// it). A rank lays out one unit at a time, from the seeded initialisers
/// or read from the `init` file a tensor at a time: the weights in no
/// unit, the slices, the largest unit's flat buffer and the largest of its
/// parameters made twice (the initialiser's or the file's values, then the
/// tensor). The total is the larger of this and a step's. 0 without units.
fn start_up_values(
    plan: &Plan,
    stage: &crate::plan::StagePlan,
    held: Option<(u64, u64, u64)>,
    buffers: u64,
) -> u64 {
    let Some((slices, _, _)) = held else {
        return 0;
    };
    let largest_part = plan
        .topology
        .stage_units(stage.stage)
        .flat_map(|u| &u.parameters)
        .map(|p| p.values)
        .max()
        .unwrap_or(0);
    let weights = stage.parameters - grads_of_units(plan, stage.stage) + 2 * largest_part;
    (weights + buffers + largest_unit(plan, stage.stage) + slices) * BYTES_PER_VALUE
}

/// Whether a unit spans its whole stage (`root`, or a stage without
/// blocks): gathered, and its gradients whole, all step.
fn has_root(plan: &Plan) -> bool {
    let stages = &plan.topology.stages;
    plan.topology.units.iter().any(|u| u.held(stages))
}

/// Values of the largest unit of `stage`: its flat gradients are what a
/// reduce-scatter sends.
fn largest_unit(plan: &Plan, stage: u64) -> u64 {
    plan.topology
        .stage_units(stage)
        .map(|u| u.values())
        .max()
        .unwrap_or(0)
}

/// Values of the parameters the units of `stage` hold (the sharded ones).
fn grads_of_units(plan: &Plan, stage: u64) -> u64 {
    plan.topology.stage_units(stage).map(|u| u.values()).sum()
}

/// Values of gradient per pipeline stage: the trainable parameters'.
fn stage_gradients(plan: &Plan) -> Vec<u64> {
    stage_sums(plan, |shape| shape.iter().product::<i64>() as u64)
}

/// `per(shape)` summed over each stage's trainable parameters (frozen ones
/// have no gradient and no optimizer state), each shared parameter once.
fn stage_sums(plan: &Plan, per: impl Fn(&[i64]) -> u64) -> Vec<u64> {
    let model = &plan.model;
    let topology = &plan.topology;
    // What one tensor rank holds of each.
    let local = topology.tensor_local_shapes(model);
    let shapes: std::collections::BTreeMap<&str, Vec<i64>> = model
        .parameters
        .iter()
        .filter(|p| !p.frozen)
        .map(|p| {
            (
                p.name.as_str(),
                local
                    .get(&p.name)
                    .cloned()
                    .unwrap_or_else(|| p.shape.clone()),
            )
        })
        .collect();
    plan.topology
        .stages
        .iter()
        .map(|stage| {
            let names: std::collections::BTreeSet<&str> = model.nodes
                [stage.first_node..=stage.last_node]
                .iter()
                .flat_map(|n| n.op.params())
                .collect();
            names
                .iter()
                .filter_map(|name| shapes.get(name).map(|shape| per(shape.as_slice())))
                .sum()
        })
        .collect()
}

/// Values of optimizer state a parameter of `shape` carries: SGD's
/// momentum buffer, Adam's two moments, Lion's one; Adafactor's row and
/// column second moments (for two or more dimensions: the tensor's size
/// over its last dimension plus over its second-to-last) or a full one.
fn optimizer_state(optimizer: &Optimizer, shape: &[i64]) -> u64 {
    let n = shape.iter().product::<i64>() as u64;
    match optimizer {
        Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => 0,
        Optimizer::Sgd { .. } | Optimizer::Lion { .. } => n,
        Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 2 * n,
        Optimizer::Adafactor { .. } => match shape {
            [.., rows, cols] if n > 0 => n / *cols as u64 + n / *rows as u64,
            _ => n,
        },
    }
}

/// What one step sends: gradient all-reduces over the replicas of each
/// stage, activations and their gradients between stages, the gradient
/// norm over the stages, local SGD's parameter averaging (per step, i.e.
/// divided by its period).
fn collectives(plan: &Plan) -> Vec<Collective> {
    let topology = &plan.topology;
    let layout = &topology.parallelism;
    let d = layout.data;
    let gradients = stage_gradients(plan);
    let mut out = Vec::new();
    for stage in &topology.stages {
        let at = if topology.stages.len() > 1 {
            format!("stage {}: ", stage.stage)
        } else {
            String::new()
        };
        // Every parameter's value (local SGD averages the weights, frozen
        // ones too); the trainable ones' gradients.
        let local = topology.local_parameters(&plan.model, stage);
        let gradient_ring = ring_bytes(gradients[stage.stage as usize] * BYTES_PER_VALUE, d.max(1));
        if d > 1 {
            let buckets = topology
                .buckets
                .iter()
                .filter(|b| b.stage == stage.stage)
                .count();
            let own = || topology.buckets.iter().filter(|b| b.stage == stage.stage);
            let k = layout.shard_degree();
            let copies = layout.shard_copies();
            let steps = plan.train.accumulate;
            let (name, bytes) = match (layout.sync, plan.step_program.first()) {
                (SyncMode::EveryStep, Some(&StepOp::GatherUnits { reshard_after_forward, .. })) => {
                    // This stage's units, gathered for every piece of a
                    // pipeline's micro-batch.
                    let units: Vec<_> = topology.stage_units(stage.stage).collect();
                    let sends = units
                        .iter()
                        .map(|u| u.sends(&topology.stages, k, reshard_after_forward))
                        .fold((0, 0), |(g, r), (gu, ru)| (g + gu, r + ru));
                    let passes = steps * layout.micro_batches.max(1);
                    let (gather, scatter) = unit_collectives(
                        (units.len() as u64, reshard_after_forward),
                        sends,
                        &at,
                        (k, copies),
                        passes,
                    );
                    out.push(gather);
                    (scatter.name, scatter.bytes_per_rank)
                }
                (SyncMode::EveryStep, _) if layout.shard == Shard::Gradients => (
                    format!("{at}reduce-scatter gradients over {}{k} replicas (ring, {buckets} bucket{}; each keeps the sum of its 1/{k})",
                        if copies > 1 { "each group of " } else { "" },
                        if buckets == 1 { "" } else { "s" }),
                    all_gather_bytes(own(), k),
                ),
                (SyncMode::EveryStep, _) => (
                    format!(
                        "{at}all-reduce gradients over {d} replicas (ring, {buckets} bucket{})",
                        if buckets == 1 { "" } else { "s" }
                    ),
                    gradient_ring,
                ),
                (SyncMode::Async { staleness }, _) => (
                    format!("{at}all-reduce gradients over {d} replicas in the background (staleness ≤ {staleness})"),
                    gradient_ring,
                ),
                (SyncMode::LocalSgd { .. } | SyncMode::Diloco { .. }, _) => {
                    let scattered = (buckets, all_gather_bytes(own(), k));
                    let grads = gradients[stage.stage as usize];
                    out.extend(inner_group(layout, &at, grads, scattered));
                    across_groups(layout, &at, local, gradient_ring)
                }
            };
            out.push(Collective {
                name,
                bytes_per_rank: bytes,
            });
            let sliced = matches!(layout.shard, Shard::Gradients | Shard::Parameters);
            if sliced && copies > 1 && layout.sync == SyncMode::EveryStep {
                let slices: u64 = match units_held(plan, stage.stage) {
                    Some((slices, _, _)) => slices,
                    None => own().map(|b| (b.bytes / BYTES_PER_VALUE).div_ceil(k)).sum(),
                };
                out.push(Collective {
                    name: format!(
                        "{at}all-reduce each gradient slice over the {copies} groups' replicas that hold it (ring)"
                    ),
                    bytes_per_rank: ring_bytes(slices * BYTES_PER_VALUE, copies),
                });
            }
            if matches!(layout.shard, Shard::Optimizer | Shard::Gradients) {
                let within = if layout.sharded_in_groups() {
                    format!("the {k} replicas of each sync group")
                } else if copies > 1 {
                    format!("each group of {k} replicas")
                } else {
                    format!("{k} replicas")
                };
                out.push(Collective {
                    name: format!(
                        "{at}all-gather the updated parameters over {within} (ring, each updates 1/{k} of every bucket)"
                    ),
                    bytes_per_rank: all_gather_bytes(own(), k),
                });
            }
        }
        out.extend(tensor_collectives(plan, stage, &at));
        out.extend(stage_transfers(plan, stage));
    }
    let p = layout.pipeline;
    if p > 1 {
        out.push(Collective {
            name: format!("all-reduce the gradient norm over {p} stages"),
            bytes_per_rank: ring_bytes(BYTES_PER_VALUE, p),
        });
    }
    out
}

/// Local SGD's average and DiLoCo's outer step across the sync groups, per
/// step (`local` parameters a rank holds; `every_step`: what all-reducing
/// the gradients over every replica would send each step).
fn across_groups(
    layout: &crate::plan::Parallelism,
    at: &str,
    local: u64,
    every_step: u64,
) -> (String, u64) {
    let (d, groups) = (layout.data, layout.sync_groups());
    let bytes = |period: u64| ring_bytes(local * BYTES_PER_VALUE, groups) / period;
    match layout.sync {
        SyncMode::Diloco {
            period,
            fragments,
            delay,
            outer_precision,
            ..
        } => {
            let per_step = ring_bytes(local * outer_precision.bytes(), groups) / period;
            let mut how = vec!["ring".to_string()];
            if fragments > 1 {
                how.push(format!(
                    "in {fragments} fragments, one every {} steps",
                    period / fragments
                ));
            }
            if delay > 0 {
                how.push(format!("each overlapping {delay} inner step(s)"));
            }
            if outer_precision == crate::plan::OuterPrecision::Bf16 {
                how.push("in bf16".into());
            }
            (
                format!(
                    "{at}DiLoCo's outer step every {period} steps: all-reduce parameter changes over {groups} groups ({}, per step; {:.0}× less across groups than all-reducing gradients over {d} replicas every step)",
                    how.join(", "),
                    every_step as f64 / per_step.max(1) as f64
                ),
                per_step,
            )
        }
        SyncMode::LocalSgd { period } => (
            format!(
                "{at}average parameters over {groups} {} every {period} steps (ring, per step)",
                if layout.groups > 0 {
                    "groups"
                } else {
                    "replicas"
                }
            ),
            bytes(period),
        ),
        _ => (String::new(), 0),
    }
}

/// Values of DiLoCo's global copy of `p` parameters and its momentum.
fn outer_state(layout: &crate::plan::Parallelism, p: u64) -> u64 {
    match layout.sync {
        SyncMode::Diloco { outer_momentum, .. } => p * (1 + u64::from(outer_momentum > 0.0)),
        _ => 0,
    }
}

/// Under `groups` with more than one replica a group: the gradient
/// all-reduce inside each group, every step (`gradients` values); under
/// `shard = gradients` the reduce-scatter of its `buckets` instead.
fn inner_group(
    layout: &crate::plan::Parallelism,
    at: &str,
    gradients: u64,
    (buckets, scattered): (usize, u64),
) -> Option<Collective> {
    let inner = layout.group_size();
    if layout.shard == Shard::Gradients && layout.sharded_in_groups() {
        // ZeRO-2 within each group: `scattered` bytes a rank.
        return Some(Collective {
            name: format!("{at}reduce-scatter gradients over the {inner} replicas of each group (ring, {buckets} bucket{}; each keeps the sum of its 1/{inner})",
                if buckets == 1 { "" } else { "s" }),
            bytes_per_rank: scattered,
        });
    }
    (layout.groups > 0 && inner > 1).then(|| Collective {
        name: format!("{at}all-reduce gradients over the {inner} replicas of each group (ring)"),
        bytes_per_rank: ring_bytes(gradients * BYTES_PER_VALUE, inner),
    })
}

/// `tensor = T`: the all-reduces over the tensor group of `stage`'s split
/// layers (those of the step program's whose layers the stage holds):
/// activations every micro-batch, and once a step the gradients of
/// key/value heads that several ranks share.
fn tensor_collectives(plan: &Plan, stage: &crate::plan::StagePlan, at: &str) -> Vec<Collective> {
    let Some(collectives) = plan.step_program.iter().find_map(|op| match op {
        StepOp::TensorAllReduces { collectives, .. } => Some(collectives),
        _ => None,
    }) else {
        return Vec::new();
    };
    let nodes = &plan.model.nodes[stage.first_node..=stage.last_node];
    let (update, mine): (Vec<_>, Vec<_>) = collectives
        .iter()
        .filter(|c| nodes.iter().any(|n| n.name == c.layers[0]))
        .partition(|c| c.pass == Pass::Update);
    let t = plan.topology.parallelism.tensor;
    let count = |pass: Pass| mine.iter().filter(|c| c.pass == pass).count();
    let again = match count(Pass::Recompute) {
        0 => String::new(),
        n => format!(", {n} again in backward (recompute)"),
    };
    let per_micro_batch: u64 = mine.iter().map(|c| c.op.ring_bytes(c.bytes, t)).sum();
    let what = match plan.topology.parallelism.sequence {
        false => "all-reduce activations".to_string(),
        true => {
            let ops = |op: TensorOp| mine.iter().filter(|c| c.op == op).count();
            format!(
                "all-reduce ({}), all-gather ({}) and reduce-scatter ({}) activations by sequence",
                ops(TensorOp::AllReduce),
                ops(TensorOp::AllGather),
                ops(TensorOp::ReduceScatter)
            )
        }
    };
    let mut out = vec![Collective {
        name: format!(
            "{at}{what} over {t} tensor ranks (ring; per micro-batch {} in forward, {} in backward{again})",
            count(Pass::Forward),
            count(Pass::Backward),
        ),
        bytes_per_rank: per_micro_batch * plan.train.accumulate,
    }];
    let (sums, heads): (Vec<&&TensorCollective>, Vec<_>) = update
        .iter()
        .partition(|c| c.node == crate::lower::tensor::SEQUENCE_PARAMETERS);
    if !heads.is_empty() {
        out.push(Collective {
            name: format!(
                "{at}all-reduce the gradients of shared key/value heads over {t} tensor ranks ({} layers, once a step)",
                heads.len()
            ),
            bytes_per_rank: heads.iter().map(|c| ring_bytes(c.bytes, t)).sum(),
        });
    }
    for c in sums {
        out.push(Collective {
            name: format!(
                "{at}all-reduce the gradients of the sequence-parallel layers' parameters over {t} tensor ranks ({} layers, once a step)",
                c.layers.len()
            ),
            bytes_per_rank: ring_bytes(c.bytes, t),
        });
    }
    out
}

/// What `stage` sends on to later stages and receives back: a whole
/// micro-batch crosses each boundary per accumulation round, in pieces;
/// its gradient comes back the same size.
fn stage_transfers(plan: &Plan, stage: &crate::plan::StagePlan) -> Vec<Collective> {
    let rows = plan.train.micro_batch * plan.train.accumulate;
    let mut out = Vec::new();
    let topology = &plan.topology;
    for transfer in &stage.sends {
        // A sharded value crosses as each tensor rank's part, and so
        // does one held by parts of the sequence.
        let in_parts = topology.parallelism.sequence && topology.sequence.contains(&transfer.index);
        let part = match topology.tensor_split(transfer.index) {
            Some(split) if split.sharded_output() => topology.parallelism.tensor,
            _ if in_parts => topology.parallelism.tensor,
            _ => 1,
        };
        let bytes = transfer.values_per_sample / part * rows * BYTES_PER_VALUE;
        out.push(Collective {
            name: format!(
                "stage {} → {}: activations of `{}` {}",
                stage.stage,
                transfer.to_stage,
                transfer.node,
                crate::plan::shape_to_string(&transfer.shape)
            ),
            bytes_per_rank: bytes,
        });
        out.push(Collective {
            name: format!(
                "stage {} → {}: their gradients",
                transfer.to_stage, stage.stage
            ),
            bytes_per_rank: bytes,
        });
    }
    out
}

/// `shard = parameters`: the all-gathers and reduce-scatters of `units`
/// units over `k` replicas (in groups when `copies` > 1), each sending
/// `gathered` and `scattered` bytes per micro-batch, for `steps` of them.
fn unit_collectives(
    (units, reshard_after_forward): (u64, bool),
    (gathered, scattered): (u64, u64),
    at: &str,
    (k, copies): (u64, u64),
    steps: u64,
) -> (Collective, Collective) {
    let gather = Collective {
        name: format!(
            "{at}all-gather each of {units} units' parameters over {}{k} replicas before its forward{} (ring, every micro-batch)",
            if copies > 1 { "each group of " } else { "" },
            if reshard_after_forward { " and again before its backward" } else { "" },
        ),
        bytes_per_rank: gathered * steps,
    };
    let scatter = Collective {
        name: format!("{at}reduce-scatter each unit's gradients after its backward (ring, every micro-batch; each keeps the sum of its 1/{k})"),
        bytes_per_rank: scattered * steps,
    };
    (gather, scatter)
}

/// `n` divided by `base` while it stays at least `base` and a unit is left:
/// the scaled value and the index of its unit.
fn scaled(n: u128, base: f64, units: usize) -> (f64, usize) {
    let (mut value, mut unit) = (n as f64, 0);
    while value >= base && unit + 1 < units {
        value /= base;
        unit += 1;
    }
    (value, unit)
}

/// Bytes in binary units: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    match scaled(n.into(), 1024.0, UNITS.len()) {
        (_, 0) => format!("{n} B"),
        (value, unit) => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Large counts in SI units: `1.2 M`.
pub fn count(n: impl Into<u128>) -> String {
    const UNITS: [&str; 7] = ["", " k", " M", " G", " T", " P", " E"];
    let n: u128 = n.into();
    match scaled(n, 1000.0, UNITS.len()) {
        (_, 0) => format!("{n}"),
        (value, unit) => format!("{value:.2}{}", UNITS[unit]),
    }
}

impl Cost {
    /// The `memory per rank` line: each part of the rank that needs the
    /// most, and what it adds up to.
    fn memory_line(&self, plan: &Plan) -> String {
        let m = &self.memory;
        format!(
            "memory per rank: parameters {}{} + gradients {}{} + optimizer state {}{} + activations {} ({} rows × {} in flight){}{} = {}{}\n",
            bytes(m.parameters),
            match plan.topology.parallelism {
                ref l if l.shard == Shard::Parameters && l.data > 1 => format!(
                    " (its 1/{} slices + the units gathered whole at once)",
                    l.shard_degree()
                ),
                _ => String::new(),
            },
            bytes(m.gradients),
            match plan.topology.parallelism {
                ref l if l.shard == Shard::Parameters && l.data > 1 => format!(
                    " (its 1/{} slices + one unit's whole{})",
                    l.shard_degree(),
                    if has_root(plan) { ", and the root's" } else { "" }
                ),
                // No gradient hooks: backward computes every gradient
                // before the reduce-scatter runs.
                ref l if l.shard == Shard::Gradients && l.data > 1 =>
                    format!(" (whole during backward; 1/{} kept for the update)", l.shard_degree()),
                _ => String::new(),
            },
            bytes(m.optimizer_state),
            match plan.topology.parallelism {
                ref l if l.shard != Shard::None && l.data > 1 =>
                    format!(" (its 1/{} shard)", l.shard_degree()),
                _ => String::new(),
            },
            bytes(m.activations),
            plan.train.micro_batch / plan.topology.parallelism.micro_batches.max(1),
            self.stages
                .iter()
                .find(|s| s.memory == *m)
                .map_or(1, |s| s.in_flight),
            if m.communication > 0 {
                format!(" + gradient exchange buffers {}", bytes(m.communication))
            } else {
                String::new()
            },
            if m.gathered > 0 {
                format!(
                    " + {} for the files of the whole model, written a tensor at a time",
                    bytes(m.gathered)
                )
            } else {
                String::new()
            },
            bytes(m.total),
            match m.step() {
                step if step < m.total => format!(
                    ", at start-up (while the units are laid out; a step needs {})",
                    bytes(step)
                ),
                _ => String::new(),
            }
        )
    }

    /// The table `dtl explain` prints.
    pub fn render(&self, plan: &Plan) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "model {} — {} parameters",
            plan.model.name, self.parameters
        ));
        if self.frozen > 0 {
            out.push_str(&format!(
                " ({} trainable, {} frozen: no gradient, no optimizer state, not all-reduced)",
                self.parameters - self.frozen,
                self.frozen
            ));
        }
        out.push('\n');
        out.push_str(&groups_text(plan));
        out.push('\n');
        out.push_str(&format!(
            "{:<16} {:<20} {:>12} {:>14} {:>12}\n",
            "layer", "kind", "parameters", "fwd FLOPs/sample", "output/sample"
        ));
        for layer in self.layers.iter().filter(|l| l.kind != "input") {
            out.push_str(&format!(
                "{:<16} {:<20} {:>12} {:>14} {:>12}\n",
                layer.name,
                layer.kind,
                layer.parameters,
                count(layer.forward_flops),
                count(layer.activations)
            ));
        }
        out.push_str(&format!(
            "\ntraining FLOPs: {} per sample (forward + backward = 3 × forward), {} per step (global batch {})\n",
            count(self.train_flops_per_sample),
            count(self.flops_per_step),
            self.global_batch
        ));
        out.push_str(&self.memory_line(plan));
        let topology = &plan.topology;
        let layout = &topology.parallelism;
        out.push_str(&format!(
            "ranks: {} (data {}{} × pipeline {})\n",
            layout.world_size(),
            layout.data,
            match layout.tensor {
                1 => String::new(),
                t => format!(" × tensor {t}"),
            },
            layout.pipeline
        ));
        if self.stages.len() > 1 {
            for stage in &self.stages {
                let s = &topology.stages[stage.stage as usize];
                out.push_str(&format!(
                    "  stage {}: nodes {}..={} ({} … {}), {} parameters, {} micro-batch(es) in flight, {} per rank\n",
                    stage.stage,
                    s.first_node,
                    s.last_node,
                    plan.model.nodes[s.first_node].name,
                    plan.model.nodes[s.last_node].name,
                    stage.parameters,
                    stage.in_flight,
                    bytes(stage.memory.total)
                ));
            }
        }
        if self.collectives.is_empty() {
            out.push_str("communication: none (one process)\n");
        }
        for c in &self.collectives {
            out.push_str(&format!(
                "communication: {} — {} per sending rank per step\n",
                c.name,
                bytes(c.bytes_per_rank)
            ));
        }
        out.push_str(&format!(
            "pipeline bubble: {:.0}% ({} stage(s), {} micro-batch(es))\n",
            self.bubble * 100.0,
            layout.pipeline,
            layout.micro_batches
        ));
        out.push_str(match plan.train.recompute {
            Recompute::None => "assumptions: float32; backward = 2 × forward; every layer output kept for backward (upper bound), and attention's projections, output and row statistics\n",
            Recompute::Blocks => "assumptions: float32; backward = 2 × forward, and the blocks' forward again (recompute = blocks); outside the blocks every layer output kept for backward, inside them only what crosses a block's edge, and one block's activations re-created at a time\n",
            Recompute::All => "assumptions: float32; backward = 2 × forward, and the forward again up to the output's piece (recompute = all); only outputs that cross a piece's edge kept for backward (all in the last piece), one piece recomputed at a time\n",
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(count(999u64), "999");
        assert_eq!(count(1_234_000u64), "1.23 M");
    }
}

#[cfg(test)]
mod hand_computed {
    use crate::check::Options;

    #[test]
    fn a_linear_layer_costs_what_the_arithmetic_says() {
        let source = r#"
            model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) } }
            data d { source = synthetic(rows: 100, features: 64, classes: 10) }
            train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8; accumulate = 2 }
        "#;
        let options = Options {
            base_dir: ".".into(),
            probe_data: true,
            world: vec![],
            overrides: vec![],
            strict: false,
            data_limits: Default::default(),
            memory_limit: None,
        };
        let plan = crate::compile_source("t.dtl", source, &options).unwrap();
        let cost = super::cost(&plan);
        assert_eq!(cost.parameters, 64 * 10 + 10);
        assert_eq!(cost.layers[1].parameters, 650);
        // 64·10 multiply-adds = 1,280 FLOPs forward; training is 3×; 16 samples a step.
        assert_eq!(cost.train_flops_per_sample, 3 * 2 * 64 * 10);
        assert_eq!(cost.flops_per_step, 3 * 2 * 64 * 10 * 16);
        let m = &cost.memory;
        assert_eq!(
            (m.parameters, m.gradients, m.optimizer_state),
            (2600, 2600, 0)
        );
        // Input (64) and output (10) values per sample, micro-batch of 8, 4 bytes each.
        assert_eq!(m.activations, (64 + 10) * 8 * 4);
        assert_eq!(m.total, 2600 + 2600 + 2368);
        assert!(cost.collectives.is_empty());
    }

    fn plan(source: &str, world: Vec<u64>) -> crate::plan::Plan {
        let options = Options {
            base_dir: ".".into(),
            probe_data: true,
            world,
            overrides: vec![],
            strict: false,
            data_limits: Default::default(),
            memory_limit: None,
        };
        crate::compile_source("t.dtl", source, &options)
            .unwrap_or_else(|d| panic!("{}", d.render_human(false)))
    }

    /// An attention over 16 rows of 32 (8 heads of 4, 2 key/value heads,
    /// rotary embeddings) keeps its output (16 · 32) and, per sample:
    /// the packed projection 16 · (8 + 2 · 2) · 4, the fused attention's
    /// output 16 · 32 and its log-sum-exp 16 · 8, the rotated query and
    /// key 16 · (8 + 2) · 4. At 2 tensor ranks a rank has 4 heads and 1
    /// key/value head: half of each but the output, which is whole.
    #[test]
    fn an_attention_keeps_its_projections_and_statistics() {
        let source = |tensor: u64| {
            format!(
                r#"
            model Net {{
              forward(x: [B, 512]) -> [B, 10] {{
                x |> reshape([16, 32]) |> attention(32, 8, kv_heads: 2, rope: true)
                  |> flatten |> linear(512, 10)
              }}
            }}
            data d {{ source = synthetic(rows: 100, features: 512, classes: 10) }}
            train {{ model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }}
            parallel {{ tensor = {tensor} }}
            "#
            )
        };
        let inside = 16 * (12 * 4) + 16 * 32 + 16 * 8 + 16 * 10 * 4;
        assert_eq!(inside, 2048);
        // input 512, reshape 512, attention 512 + inside, flatten 512,
        // linear 10.
        let whole = super::cost(&plan(&source(1), vec![]));
        assert_eq!(whole.memory.activations, (4 * 512 + inside + 10) * 8 * 4);
        let split = plan(&source(2), vec![]);
        assert_eq!(
            super::attention_inside(&split, 2),
            16 * (6 * 4) + 16 * 16 + 16 * 4 + 16 * 5 * 4
        );
        assert_eq!(super::attention_inside(&split, 3), 0);
    }

    const MLP: &str = r#"
        model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> linear(100, 10) } }
        data d { source = synthetic(rows: 1000, features: 64, classes: 10) }
        train { model = Net; data = d; loss = cross_entropy; optimizer = adam(lr: 0.01); steps = 1; micro_batch = 8; accumulate = 2 }
    "#;

    /// Two blocks of three layers between a first and a last layer, at 8
    /// rows a piece. Values per sample: input 64, `0` 32, each block 32
    /// (linear) + 32 (relu) + 32 (linear), the output 10.
    #[test]
    fn recompute_keeps_what_crosses_and_one_block_and_pays_a_forward() {
        let source = |recompute: &str, parallel: &str| {
            format!(
                r#"
        module Block(d: int) {{ forward(x: [B, d]) -> [B, d] {{ x |> linear(d, d) |> relu |> linear(d, d) }} }}
        model Net {{ forward(x: [B, 64]) -> [B, 10] {{ x |> linear(64, 32) |> repeat 2 {{ Block(32) }} |> linear(32, 10) }} }}
        data d {{ source = synthetic(rows: 1000, features: 64, classes: 10) }}
        train {{ model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8; recompute = {recompute} }}
        {parallel}
        "#
            )
        };
        let kept = super::cost(&plan(&source("none", ""), vec![]));
        let blocks = super::cost(&plan(&source("blocks", ""), vec![]));
        let all = super::cost(&plan(&source("all", ""), vec![]));
        assert_eq!(kept.memory.activations, (64 + 32 + 2 * 96 + 10) * 8 * 4);
        // A block keeps its last linear's output (the next part reads it)
        // and re-creates 64 values in backward.
        assert_eq!(
            blocks.memory.activations,
            (64 + 32 + 2 * 32 + 10 + 64) * 8 * 4
        );
        // `all`: the first part (input, `0`) keeps only `0`, what block 1
        // reads; the last part computes the output and is not recomputed.
        assert_eq!(all.memory.activations, (32 + 2 * 32 + 10 + 64) * 8 * 4);
        // One more forward of each block (2 × 32 · 32 multiply-adds and
        // 32 relu values, a FLOP each); under `all` of the first part's
        // linear too.
        let block_forward = 2 * (2 * 2 * 32 * 32 + 32);
        assert_eq!(
            blocks.train_flops_per_sample,
            kept.train_flops_per_sample + block_forward
        );
        assert_eq!(
            all.train_flops_per_sample,
            kept.train_flops_per_sample + block_forward + 2 * 64 * 32
        );
        // A pipeline cut inside block 1 (`1.0.1` starts stage 1) splits it:
        // each stage keeps what crosses the cut, 4 pieces in flight on
        // stage 0 under GPipe.
        let piped = super::cost(&plan(
            &source("blocks", "parallel { pipeline = 2; micro_batches = 4; schedule = gpipe; split = [\"1.0.1\"] }"),
            vec![],
        ));
        let stage0 = &piped.stages[0].memory;
        // Stage 0: input 64, `0` 32, `1.0.0` 32 (sent on); nothing else to
        // recompute but `1.0.0`, which is kept. Rows of a piece: 2.
        assert_eq!(stage0.activations, (64 + 32 + 32) * 4 * 2 * 4);
    }

    #[test]
    fn pipeline_settings_without_stages_warn_and_the_rows_stay_whole() {
        let source =
            format!("{MLP} parallel {{ pipeline = 1; micro_batches = 4; schedule = gpipe }}");
        let options = Options {
            base_dir: ".".into(),
            probe_data: true,
            world: vec![],
            overrides: vec![],
            strict: false,
            data_limits: Default::default(),
            memory_limit: None,
        };
        let (plan, warnings) =
            crate::compile_source_with_warnings("t.dtl", &source, &options).unwrap();
        let text = warnings.render_human(false);
        assert!(
            text.contains("`micro_batches` applies to pipeline stages"),
            "{text}"
        );
        assert!(
            text.contains("`schedule` applies to pipeline stages"),
            "{text}"
        );
        assert_eq!(plan.topology.parallelism.micro_batches, 1);
        // Activations at the whole micro-batch of 8 rows: input 64, linear
        // and relu 100 each, linear 10.
        assert_eq!(
            super::cost(&plan).memory.activations,
            (64 + 100 + 100 + 10) * 8 * 4
        );
    }

    #[test]
    fn full_sharding_lays_out_one_unit_at_a_time_at_start_up() {
        // 6,500 + 8 × 10,100 + 1,010 = 88,310 values in ten units, the
        // largest 10,100; slices at D = 16: 407 + 8 × 632 + 64 = 5,527.
        // From the initialisers or an `init` file alike a rank lays out one
        // unit at a time: the slices, the largest unit and its largest
        // weight (100 × 100) twice, 35,627 values, less than a step.
        let source = r#"
            module Ffn(d: int) { forward(x: [B, d]) -> [B, d] { x + (x |> linear(d, d) |> relu) } }
            model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> repeat 8 { Ffn(100) } |> linear(100, 10) } }
            data d { source = synthetic(rows: 1000, features: 64, classes: 10) }
            train { model = Net; data = d; loss = cross_entropy; optimizer = adam(lr: 0.01); steps = 1; micro_batch = 8; clip = norm(1.0) }
            parallel { data = 16; shard = parameters }
        "#;
        let mut plan = plan(source, vec![16]);
        for init in [None, Some("w.safetensors".to_string())] {
            plan.train.init = init;
            let cost = super::cost(&plan);
            assert_eq!(cost.memory.total, cost.memory.step());
            assert!(cost.memory.total > 4 * 35_627);
            let start = &plan.topology.stages[0];
            let held = super::units_held(&plan, 0);
            assert_eq!(super::start_up_values(&plan, start, held, 0), 4 * 35_627);
            assert!(!cost.render(&plan).contains("at start-up"));
        }
    }

    #[test]
    fn a_tensor_rank_holds_its_shards_and_sends_the_activations_sums() {
        // linear(64, 100) column-parallel, linear(100, 10) row-parallel
        // over 2 ranks: rank 0 holds half of each split weight and of the
        // first bias, and the whole last bias: 3200 + 50 + 500 + 10.
        let source = r#"
            model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> linear(100, 10) } }
            data d { source = synthetic(rows: 1000, features: 64, classes: 10) }
            train { model = Net; data = d; loss = cross_entropy; optimizer = adam(lr: 0.01); steps = 1; micro_batch = 8; accumulate = 2 }
            parallel { tensor = 2 }
        "#;
        let plan = plan(source, vec![]);
        let cost = super::cost(&plan);
        let held = 3200 + 50 + 500 + 10;
        assert_eq!(cost.stages[0].parameters, held);
        assert_eq!(cost.memory.parameters, 4 * held);
        assert_eq!(cost.memory.gradients, 4 * held);
        assert_eq!(cost.memory.optimizer_state, 2 * 4 * held);
        // The relu's output is sharded too: 50 of its 100 values per row.
        assert_eq!(cost.memory.activations, (64 + 50 + 50 + 10) * 8 * 4);
        // One all-reduce of the [8, 10] output per micro-batch, 2 a step,
        // half of its 320 bytes sent twice by a ring of 2.
        let sums = &cost.collectives[0];
        assert!(sums.name.contains("over 2 tensor ranks"), "{}", sums.name);
        assert_eq!(sums.bytes_per_rank, 2 * 320);
        assert!(cost
            .render(&plan)
            .contains("ranks: 2 (data 1 × tensor 2 × pipeline 1)"));
    }

    #[test]
    fn data_parallel_sends_the_ring_all_reduce_volume() {
        // 64·100 + 100 + 100·10 + 10 = 7,510 parameters, 30,040 bytes of
        // gradients; a ring over 4 ranks sends 2·3/4 of them from each rank.
        let plan = plan(&format!("{MLP} parallel {{ data = auto }}"), vec![4]);
        assert_eq!(plan.topology.world_size(), 4);
        assert_eq!(plan.train.global_batch, 8 * 2 * 4);
        let cost = super::cost(&plan);
        assert_eq!(cost.collectives.len(), 1);
        assert_eq!(cost.collectives[0].bytes_per_rank, 30_040 * 3 / 2);
        // Adam keeps two copies: parameters, gradients, 2 moments.
        assert_eq!(cost.memory.optimizer_state, 2 * 30_040);
    }

    #[test]
    fn frozen_parameters_have_no_gradient_state_or_all_reduce() {
        // `freeze = ["0.*"]`: the first layer's 6,500 values keep their
        // memory but have no gradient, no Adam moments and no share of the
        // all-reduce; the second's 1,010 have all three.
        let source = MLP.replace("accumulate = 2", "accumulate = 2; freeze = [\"0.*\"]");
        let plan = plan(&format!("{source} parallel {{ data = 2 }}"), vec![2]);
        let cost = super::cost(&plan);
        assert_eq!((cost.parameters, cost.frozen), (7_510, 6_500));
        let m = &cost.memory;
        assert_eq!(
            (m.parameters, m.gradients, m.optimizer_state),
            (30_040, 4_040, 2 * 4_040)
        );
        let bucketed: Vec<&str> = plan
            .topology
            .buckets
            .iter()
            .flat_map(|b| b.parameters.iter().map(String::as_str))
            .collect();
        assert_eq!(bucketed, ["2.bias", "2.weight"]);
        // A ring of 2 sends 2·1/2 of the trainable gradients from each rank.
        assert_eq!(cost.collectives[0].bytes_per_rank, 4_040);
        assert!(cost
            .render(&plan)
            .contains("7510 parameters (1010 trainable, 6500 frozen"));
    }

    #[test]
    fn parameter_groups_are_listed_with_what_they_change() {
        let source = MLP.replace(
            "accumulate = 2",
            "accumulate = 2; groups = [group(\"biases\", weight_decay: 0), group(\"2.weight\", lr_scale: 0.5)]",
        );
        let plan = plan(&source, vec![]);
        let text = super::cost(&plan).render(&plan);
        assert!(
            text.contains("group: weight_decay 0 for 2 tensors (0.bias, 2.bias)\ngroup: lr × 0.5 for 1 tensor (2.weight)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_pipeline_sends_the_activations_at_its_cut_and_their_gradients_back() {
        // Cut after the ReLU: [B, 100] crosses, for all 8 × 2 rows of a step,
        // 4 bytes a value: 6,400 bytes each way.
        let plan = plan(
            &format!(
                "{MLP} parallel {{ pipeline = 2; split = [\"2\"]; micro_batches = 4; schedule = gpipe }}"
            ),
            vec![],
        );
        let stages = &plan.topology.stages;
        assert_eq!((stages[0].first_node, stages[0].last_node), (0, 2));
        assert_eq!(stages[0].sends.len(), 1);
        assert_eq!(stages[0].sends[0].values_per_sample, 100);
        let cost = super::cost(&plan);
        let bytes: Vec<u64> = cost.collectives.iter().map(|c| c.bytes_per_rank).collect();
        // Activations, their gradients, and the norm (4 bytes, ring of 2: 4).
        assert_eq!(bytes, vec![6_400, 6_400, 4]);
        assert_eq!(cost.bubble, 1.0 / 5.0);
        // GPipe keeps all 4 pieces of 2 rows alive on stage 0: input 64 +
        // linear 100 + relu 100 values per row.
        assert_eq!(cost.stages[0].in_flight, 4);
        assert_eq!(
            cost.stages[0].memory.activations,
            (64 + 100 + 100) * 2 * 4 * 4
        );
        // Rank 0 receives stage 1's tensors one at a time to write the
        // model file, the largest its weight (100 · 10); with checkpoints
        // Adam's moments of it, of the same shape, come one at a time too.
        assert_eq!(cost.stages[0].memory.gathered, 1_000 * 4);
        assert_eq!(cost.stages[1].memory.gathered, 0);
        let checkpointed = self::plan(
            &format!(
                "{} parallel {{ pipeline = 2; split = [\"2\"]; micro_batches = 4; schedule = gpipe }}",
                MLP.replace("accumulate = 2", "accumulate = 2; checkpoint_every = 5")
            ),
            vec![],
        );
        assert_eq!(
            super::cost(&checkpointed).stages[0].memory.gathered,
            1_000 * 4
        );
    }
}
