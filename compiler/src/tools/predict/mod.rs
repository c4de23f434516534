//! `dtl explain --cluster`: a predicted step time on a described cluster
//! ([`super::cluster`]), from the plan the runtime executes and the costs
//! `dtl explain` computes, broken into parts.
//!
//! The model, stated in the report too (docs/planning.md in full):
//! - compute: each stage's layers for the rows of one pipeline piece, each
//!   at the slower of its FLOPs at the device's dense peak for the run's
//!   precision × `efficiency.compute` and its values (each row's, and its
//!   weights once) through memory at the memory bandwidth ×
//!   `efficiency.memory` (a roofline), × 3 for forward
//!   and backward (4 in a piece `recompute` runs again); a tensor rank
//!   computes 1/T of the split layers, 1/T of the layers whose output it
//!   holds by parts (`sequence = true`) and all of the others; ranks that
//!   share a device (`node.share`) get their share of it; the slowest
//!   stage sets the pace, and the pipeline's bubble adds (stages − 1) of
//!   its pieces per round;
//! - point-to-point: each piece's activations to the next stage and their
//!   gradients back, a latency plus the bytes at the link's bandwidth ×
//!   `efficiency.network`, added to the sending stage's piece;
//! - collectives: each of the step program's on the link its group
//!   crosses (a node's own when its ranks share one, else the network),
//!   by its algorithm's formula: a ring all-reduce sends 2(n − 1)/n of
//!   the bytes in 2(n − 1) messages, an all-gather or reduce-scatter
//!   (n − 1)/n of the gathered bytes in n − 1; DiLoCo's and local SGD's
//!   meetings count per step (their bytes over their period);
//! - the exchanges' copies: the gradient buckets flattened, averaged and
//!   written back (and a sharded exchange's slices laid out and gathered
//!   parameters written back), read and written at the memory bandwidth ×
//!   `efficiency.memory`;
//! - the optimizer step: the values a rank updates, moved through memory
//!   (read and written: 3 values each for plain SGD, 5 with momentum or
//!   for Lion and Adafactor, 7 for Adam and AdamW) at the memory bandwidth
//!   × `efficiency.memory`;
//! - nothing overlaps: dtl's runtime all-reduces after the backward pass,
//!   but `async` updates, whose all-reduce runs behind the next step (only
//!   what exceeds the compute counts).

use std::collections::BTreeMap;

use serde::Serialize;

use super::cluster::{Cluster, Link};
use super::explain::Cost;
use crate::plan::{
    GroupKind, Optimizer, Pass, Plan, Precision, StepOp, SyncMode, TensorCollective,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub cluster: String,
    pub step_seconds: f64,
    pub samples_per_second: f64,
    /// Model FLOPs per step (3 × forward, recomputation not counted) over
    /// the step time and every device's peak.
    pub mfu: f64,
    pub parts: Vec<Part>,
    pub memory: MemoryFit,
}

/// A part of the step: what, how long, on what (`device`, `memory`,
/// `node`, `network`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub name: String,
    pub seconds: f64,
    pub link: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryFit {
    /// The rank that needs the most, as `dtl explain` counts it.
    pub per_rank_bytes: u64,
    pub device_bytes: u64,
}

impl MemoryFit {
    pub fn fits(&self) -> bool {
        self.per_rank_bytes <= self.device_bytes
    }
}

/// One pipeline piece (a micro-batch's share of rows) on a stage: its
/// forward pass, its backward pass (with the forward again where
/// `recompute` runs it), and the one-way transfer of its activations to
/// the next stage (their gradients come back alike), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PieceTimes {
    pub forward: f64,
    pub backward: f64,
    pub send: f64,
}

/// Each stage's [`PieceTimes`] for `plan` (whose costs are `cost`) on
/// `cluster`, one rank per device, in rank order across the nodes.
pub fn piece_times(plan: &Plan, cost: &Cost, cluster: &Cluster) -> Vec<PieceTimes> {
    let layout = &plan.topology.parallelism;
    let precision = plan.train.precision;
    let world = plan.topology.world_size();
    // Ranks that share a device (a CPU's cores) each get their share.
    let (_, share) = cluster.share(world);
    let flops_per_second = cluster.peak(precision) * share * cluster.efficiency.compute;
    let rows = plan.train.micro_batch as f64 / layout.micro_batches.max(1) as f64;
    let activation_bytes = match precision {
        Precision::Fp32 | Precision::Tf32 => 4.0,
        Precision::Bf16 | Precision::Fp16 => 2.0,
    };
    let bandwidth = cluster.device.memory_bandwidth * share * cluster.efficiency.memory;
    let rates = (flops_per_second, bandwidth, activation_bytes);
    plan.topology
        .stages
        .iter()
        .map(|stage| {
            let (forward, backward) = piece_seconds(plan, cost, stage, rates, rows);
            let from = rank_of(plan, stage.stage);
            let to = rank_of(plan, stage.stage + 1);
            let send = stage
                .sends
                .iter()
                .map(|t| {
                    let bytes = t.values_per_sample as f64 * rows * activation_bytes;
                    let (link, _) = cluster.link_of(&[from, to]);
                    send_time(&link, cluster, 1, bytes)
                })
                .sum();
            PieceTimes {
                forward,
                backward,
                send,
            }
        })
        .collect()
}

/// The predicted step of `plan` (whose costs are `cost`) on `cluster`, one
/// rank per device, in rank order across the nodes.
pub fn predict(plan: &Plan, cost: &Cost, cluster: &Cluster) -> Prediction {
    let layout = &plan.topology.parallelism;
    let peak = cluster.peak(plan.train.precision);
    let world = plan.topology.world_size();
    let (sharing, share) = cluster.share(world);
    let (m, p) = (layout.micro_batches.max(1), layout.pipeline.max(1));
    let pieces = plan.train.accumulate * m;
    let mut parts = Vec::new();
    // The slowest stage's piece: its compute and its transfers.
    let mut slowest = (0.0, 0.0);
    for stage in piece_times(plan, cost, cluster) {
        let (compute, transfers) = (stage.forward + stage.backward, 2.0 * stage.send);
        if compute + transfers > slowest.0 + slowest.1 {
            slowest = (compute, transfers);
        }
    }
    let piece = slowest.0 + slowest.1;
    let compute = pieces as f64 * slowest.0;
    parts.push(part("compute (the slowest stage)", compute, "device"));
    if slowest.1 > 0.0 {
        let link = cluster.link_of(&[rank_of(plan, 0), rank_of(plan, 1)]).1;
        parts.push(part(
            "activations between stages",
            pieces as f64 * slowest.1,
            link,
        ));
    }
    if p > 1 {
        let bubble = plan.train.accumulate as f64 * (p - 1) as f64 * piece;
        parts.push(part("pipeline bubble", bubble, "device"));
    }
    parts.extend(collectives(plan, cluster, compute));
    parts.push(part(
        "optimizer step",
        optimizer_seconds(plan, cost, cluster) / share,
        "memory",
    ));
    let step_seconds: f64 = parts.iter().map(|p| p.seconds).sum();
    // The model's FLOPs: 3 × forward, what recomputation adds not counted.
    let forward: u64 = cost.layers.iter().map(|l| l.forward_flops).sum();
    let model_flops = 3.0 * forward as f64 * cost.global_batch as f64;
    Prediction {
        cluster: cluster.name.clone(),
        step_seconds,
        samples_per_second: cost.global_batch as f64 / step_seconds,
        mfu: model_flops / (step_seconds * world as f64 * peak * share),
        parts,
        memory: MemoryFit {
            per_rank_bytes: cost.memory.total,
            device_bytes: cluster.device.memory_bytes / sharing,
        },
    }
}

/// One piece's forward and backward (`rows` samples) through `stage` on
/// one of its tensor ranks, layer by layer at the slower of its FLOPs at
/// `flops_per_second` and what it moves through memory at `bandwidth`
/// (a roofline): its output written and its input read (about as many
/// values) for each sample, and every weight it reads once for the piece
/// (4 bytes a value, and under bf16/fp16 the cast's 2 written and 2 read
/// again: the runtime keeps float32 masters). The
/// forward once, the backward twice that (three times in a piece
/// `recompute` runs again, its forward once more). Large pieces' matrix
/// products are bound by the FLOPs, norms and element-wise layers by the
/// activations, and a piece of a few rows by its weights (on this
/// machine's CPU a 32-row piece through a 1024 × 1024 layer ran at 64% of
/// a 256-row one's FLOP/s). A split layer's rank computes 1/T of it,
/// holds 1/T of its weights (and 1/T of its output when that is sharded);
/// so does a rank for a layer whose output it holds by parts (`sequence
/// = true`: 1/T of the sequence, the weights whole); the other layers run
/// whole on every tensor rank. Layers that compute nothing (views,
/// embeddings' lookups) are free.
fn piece_seconds(
    plan: &Plan,
    cost: &Cost,
    stage: &crate::plan::StagePlan,
    (flops_per_second, bandwidth, value_bytes): (f64, f64, f64),
    rows: f64,
) -> (f64, f64) {
    let t = plan.topology.parallelism.tensor.max(1) as f64;
    let pieces = plan.model.pieces(plan.train.recompute);
    let recomputed = |i: usize| {
        pieces
            .iter()
            .any(|p| p.recomputed && (p.first_node..=p.last_node).contains(&i))
    };
    let sizes: BTreeMap<&str, f64> = (plan.model.parameters.iter())
        .map(|p| (p.name.as_str(), p.shape.iter().product::<i64>() as f64))
        .collect();
    // Every weight a node reads, each time it reads it (a tied output
    // layer reads its embedding's), as float32 masters; under bf16 or fp16
    // each use casts it too (written and read again at 2 bytes).
    let weight_bytes = match value_bytes < 4.0 {
        true => 4.0 + 2.0 * value_bytes,
        false => 4.0,
    };
    let read = |i: usize| -> f64 {
        let names = plan.model.nodes[i].op.params();
        names.iter().filter_map(|n| sizes.get(n)).sum()
    };
    (stage.first_node..=stage.last_node)
        .filter_map(|i| cost.layers.get(i).map(|l| (i, l)))
        .filter(|(_, l)| l.forward_flops > 0)
        .map(|(i, l)| {
            let split = plan.topology.tensor_splits.iter().find(|s| s.node == i);
            let by_parts = plan.topology.sequence.contains(&i);
            let flops = match (split, by_parts) {
                (None, false) => l.forward_flops as f64,
                _ => l.forward_flops as f64 / t,
            };
            let values = match split {
                Some(s) if s.split.sharded_output() => l.activations as f64 / t,
                _ if by_parts => l.activations as f64 / t,
                _ => l.activations as f64,
            };
            let weights = match split {
                Some(_) => read(i) / t,
                None => read(i),
            };
            let moved = rows * 2.0 * values * value_bytes + weights * weight_bytes;
            let seconds = (rows * flops / flops_per_second).max(moved / bandwidth);
            let backward = if recomputed(i) { 3.0 } else { 2.0 };
            (seconds, backward * seconds)
        })
        .fold((0.0, 0.0), |(f, b), (lf, lb)| (f + lf, b + lb))
}

fn part(name: &str, seconds: f64, link: &'static str) -> Part {
    Part {
        name: name.into(),
        seconds,
        link,
    }
}

/// The first rank of `stage` (replica 0, tensor rank 0); past the last
/// stage, the last's.
fn rank_of(plan: &Plan, stage: u64) -> u64 {
    let last = plan.topology.stages.len().saturating_sub(1) as u64;
    plan.topology
        .rank_at(0, stage.min(last))
        .map_or(0, |r| r.rank)
}

/// `messages` latencies and `bytes` at the link's bandwidth.
fn send_time(link: &Link, cluster: &Cluster, messages: u64, bytes: f64) -> f64 {
    messages as f64 * link.latency + bytes / (link.bandwidth * cluster.efficiency.network)
}

/// The ranks of rank 0's group of `kind` (rank 0 alone without one).
fn group(plan: &Plan, kind: GroupKind) -> Vec<u64> {
    plan.topology
        .group_of(0, kind)
        .map_or_else(|| vec![0], |(_, g, _)| g.ranks.clone())
}

/// The step program's collectives, each on its group's link; `compute`:
/// the step's compute, which an `async` all-reduce runs behind.
fn collectives(plan: &Plan, cluster: &Cluster, compute: f64) -> Vec<Part> {
    let on = Links { plan, cluster };
    plan.step_program
        .iter()
        .flat_map(|op| {
            let sent = on.data_parallel(op, compute).or_else(|| on.other(op));
            sent.into_iter().chain(exchange_copies(plan, cluster, op))
        })
        .collect()
}

/// What the runtime's gradient and parameter exchanges move through
/// memory besides what they send, each value read and written at the
/// memory bandwidth × `efficiency.memory`: every step's all-reduce copies
/// each bucket into the exchange's buffer and divides it by the replicas
/// on the way back (2 passes over the bytes; `async` flattens, divides
/// in place and writes back: 3); a reduce-scatter's flattened (1), its
/// slice divided; an all-gather's own slice laid out and the gathered
/// buffers written back into the parameters (1). Measured on this
/// machine, when every step's exchange flattened into a fresh buffer (3
/// passes): the copies were 10 of the 14 ms that 13 MiB of gradients took
/// to exchange over 2 replicas, the all-reduce itself 3.3.
fn exchange_copies(plan: &Plan, cluster: &Cluster, op: &StepOp) -> Option<Part> {
    let topology = &plan.topology;
    let k = topology.parallelism.shard_degree().max(1) as f64;
    let (what, passes) = match op {
        // `async` (`staleness: 0` too) flattens each step's buckets into
        // buffers of their own.
        StepOp::AllReduceGradients { .. }
            if matches!(topology.parallelism.sync, SyncMode::Async { .. }) =>
        {
            ("flatten, average, write back", 3.0)
        }
        StepOp::AllReduceGradients { .. } => ("copy in, average on the way back", 2.0),
        StepOp::ReduceScatterGradients { .. } => ("flatten, average the slice", 1.0 + 1.0 / k),
        StepOp::AllGatherParameters { .. } => ("lay out the slice, write back", 1.0 + 1.0 / k),
        _ => return None,
    };
    // The buckets of the stage that holds the most.
    let bytes = (0..topology.stages.len().max(1) as u64)
        .map(|stage| {
            let buckets = topology.buckets.iter().filter(|b| b.stage == stage);
            buckets.map(|b| b.bytes).sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    let seconds =
        2.0 * passes * bytes as f64 / (cluster.device.memory_bandwidth * cluster.efficiency.memory);
    Some(part(
        &format!("the exchange's copies ({what})"),
        seconds,
        "memory",
    ))
}

/// Where the collectives run: the plan's groups on the cluster's links.
struct Links<'a> {
    plan: &'a Plan,
    cluster: &'a Cluster,
}

impl Links<'_> {
    /// `messages` latencies and `bytes` on the link of rank 0's group of
    /// `kind`, a `per`-th of it per step.
    fn part(&self, name: String, kind: GroupKind, (messages, bytes): (u64, u64), per: f64) -> Part {
        let (link, via) = self.cluster.link_of(&group(self.plan, kind));
        let seconds = send_time(&link, self.cluster, messages, bytes as f64) / per;
        Part {
            name,
            seconds,
            link: via,
        }
    }

    /// The tensor collectives of a rank of the stage that sends the most:
    /// the messages it sends in a step (each of `pieces` pieces runs the
    /// forward and backward ones, the update's run once a step: shared
    /// key/value heads' gradients, sequence-parallel parameters) and the
    /// bytes, a ring each.
    fn busiest_tensor_stage(&self, collectives: &[TensorCollective], pieces: u64) -> (u64, u64) {
        let plan = self.plan;
        let (t, accumulate) = (plan.topology.parallelism.tensor, plan.train.accumulate);
        let nodes = &plan.model.nodes;
        // Each collective's node, found once (not once per stage).
        let at: Vec<Option<usize>> = collectives
            .iter()
            .map(|c| nodes.iter().position(|n| n.name == c.layers[0]))
            .collect();
        plan.topology
            .stages
            .iter()
            .map(|stage| {
                let range = stage.first_node..=stage.last_node;
                let mine = collectives
                    .iter()
                    .zip(&at)
                    .filter(|(_, at)| at.is_some_and(|i| range.contains(&i)))
                    .map(|(c, _)| c);
                let (mut messages, mut bytes) = (0, 0);
                for c in mine {
                    let (sent, steps) = (c.op.ring_bytes(c.bytes, t), c.op.ring_messages(t));
                    match c.pass {
                        Pass::Update => {
                            messages += steps;
                            bytes += sent;
                        }
                        Pass::Forward | Pass::Recompute | Pass::Backward => {
                            messages += steps * pieces;
                            bytes += sent * accumulate;
                        }
                    }
                }
                (messages, bytes)
            })
            .max_by_key(|&(_, bytes)| bytes)
            .unwrap_or((0, 0))
    }

    /// The gradient slices a replica of the busiest stage holds: one a
    /// bucket, or under `shard = parameters` one a unit.
    fn slice_rings(&self) -> u64 {
        let topology = &self.plan.topology;
        (0..topology.stages.len().max(1) as u64)
            .map(|stage| match topology.units.is_empty() {
                true => topology.buckets.iter().filter(|b| b.stage == stage).count() as u64,
                false => topology.stage_units(stage).count() as u64,
            })
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The ranks of rank 0's group of `kind`.
    fn n(&self, kind: GroupKind) -> u64 {
        group(self.plan, kind).len() as u64
    }

    /// The gradients' and the shards' exchanges over the replicas.
    fn data_parallel(&self, op: &StepOp, compute: f64) -> Option<Part> {
        let layout = &self.plan.topology.parallelism;
        let pieces = self.plan.train.accumulate * layout.micro_batches.max(1);
        let shard = shard_kind(self.plan);
        Some(match op {
            StepOp::AllReduceGradients {
                buckets,
                bytes_per_rank,
                staleness,
            } => {
                let data = match layout.sync.meets_every() {
                    Some(_) if layout.groups > 0 => GroupKind::Group,
                    _ => GroupKind::Replicas,
                };
                let k = self.n(data);
                let sent = (buckets * 2 * (k - 1), *bytes_per_rank);
                let mut reduce = self.part(
                    format!("all-reduce gradients over {k} (ring)"),
                    data,
                    sent,
                    1.0,
                );
                if *staleness > 0 {
                    reduce.name = format!("all-reduce gradients over {k} behind the next step (async: what exceeds the compute)");
                    reduce.seconds = (reduce.seconds - compute).max(0.0);
                }
                reduce
            }
            StepOp::ReduceScatterGradients {
                buckets,
                bytes_per_rank,
            } => {
                let k = self.n(shard);
                self.part(
                    format!("reduce-scatter gradients over {k}"),
                    shard,
                    (buckets * (k - 1), *bytes_per_rank),
                    1.0,
                )
            }
            StepOp::AllGatherParameters {
                buckets,
                bytes_per_rank,
            } => {
                let k = self.n(shard);
                self.part(
                    format!("all-gather parameters over {k}"),
                    shard,
                    (buckets * (k - 1), *bytes_per_rank),
                    1.0,
                )
            }
            StepOp::AllReduceGradientSlices {
                copies,
                bytes_per_rank,
            } => {
                // A ring a slice, as the runtime sends them.
                let rings = self.slice_rings();
                self.part(
                    format!("all-reduce gradient slices over {copies} copies ({rings} rings)"),
                    GroupKind::Replicate,
                    (rings * 2 * (copies - 1), *bytes_per_rank),
                    1.0,
                )
            }
            StepOp::GatherUnits {
                units,
                all_gather_bytes_per_rank,
                reduce_scatter_bytes_per_rank,
                ..
            } => {
                let k = self.n(shard);
                let bytes = (all_gather_bytes_per_rank + reduce_scatter_bytes_per_rank) * pieces;
                self.part(
                    format!("gather and reduce-scatter {units} shard units over {k}"),
                    shard,
                    (3 * units * pieces * (k - 1), bytes),
                    1.0,
                )
            }
            _ => return None,
        })
    }

    /// Tensor parallelism's all-reduces, the norm over the stages, and
    /// the sync groups' meetings.
    fn other(&self, op: &StepOp) -> Option<Part> {
        let layout = &self.plan.topology.parallelism;
        let pieces = self.plan.train.accumulate * layout.micro_batches.max(1);
        let across = match layout.groups > 0 {
            true => GroupKind::Across,
            false => GroupKind::Replicas,
        };
        Some(match op {
            StepOp::TensorAllReduces { collectives, .. } => {
                let t = layout.tensor;
                let (messages, bytes) = self.busiest_tensor_stage(collectives, pieces);
                let what = match layout.sequence {
                    true => "collectives",
                    false => "all-reduces",
                };
                self.part(
                    format!("tensor {what} over {t} (the busiest stage's)"),
                    GroupKind::Tensor,
                    (messages, bytes),
                    1.0,
                )
            }
            StepOp::AllReduceGradNorm { stages } => self.part(
                format!("all-reduce the gradient norm over {stages} stages"),
                GroupKind::Pipeline,
                (2 * (stages - 1), 8),
                1.0,
            ),
            StepOp::OuterStep {
                every,
                groups,
                fragments,
                bytes_per_rank,
                ..
            } => {
                let messages = fragments.len() as u64 * 2 * (groups - 1);
                self.part(
                    format!("DiLoCo's outer step over {groups} groups (per step, every {every})"),
                    across,
                    (messages, *bytes_per_rank),
                    *every as f64,
                )
            }
            StepOp::AverageParameters {
                every,
                bytes_per_rank,
            } => {
                let k = self.n(across);
                self.part(
                    format!("average parameters over {k} (per step, every {every})"),
                    across,
                    (2 * (k - 1), *bytes_per_rank),
                    *every as f64,
                )
            }
            _ => return None,
        })
    }
}

/// The group a shard's slices are exchanged in.
fn shard_kind(plan: &Plan) -> GroupKind {
    match plan.topology.parallelism.shard_degree() < plan.topology.parallelism.data {
        true => GroupKind::Shard,
        false => GroupKind::Replicas,
    }
}

/// The optimizer step of the rank that updates the most values.
fn optimizer_seconds(plan: &Plan, cost: &Cost, cluster: &Cluster) -> f64 {
    let moved = match &plan.train.optimizer {
        Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => 3.0,
        Optimizer::Sgd { .. } | Optimizer::Lion { .. } | Optimizer::Adafactor { .. } => 5.0,
        Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 7.0,
    };
    let layout = &plan.topology.parallelism;
    let values = cost
        .stages
        .iter()
        .map(|s| s.parameters)
        .max()
        .unwrap_or(cost.parameters) as f64;
    let sharded = match layout.shard {
        crate::plan::Shard::None => 1.0,
        _ => layout.shard_degree() as f64,
    };
    // Under DiLoCo the outer step also updates the global copy (and its
    // momentum): per step, over its period.
    let outer = match layout.sync {
        SyncMode::Diloco { period, .. } => 5.0 / period as f64,
        _ => 0.0,
    };
    let bytes = values / sharded * (moved + outer) * 4.0;
    bytes / (cluster.device.memory_bandwidth * cluster.efficiency.memory)
}

/// The prediction as text, for `dtl explain`'s report.
pub fn render(prediction: &Prediction) -> String {
    let mut out = format!(
        "\npredicted step on {}: {} ({:.1} samples/s, MFU {:.1}%)\n",
        prediction.cluster,
        seconds(prediction.step_seconds),
        prediction.samples_per_second,
        prediction.mfu * 100.0
    );
    for p in &prediction.parts {
        out.push_str(&format!(
            "  {:<70} {:>10}  ({})\n",
            p.name,
            seconds(p.seconds),
            p.link
        ));
    }
    let m = &prediction.memory;
    out.push_str(&format!(
        "memory: {} per rank of {} on the device{}\n",
        super::explain::bytes(m.per_rank_bytes),
        super::explain::bytes(m.device_bytes),
        if m.fits() { "" } else { ": DOES NOT FIT" }
    ));
    out.push_str("model: each layer at the slower of its FLOPs at the dense peak × efficiency and its values at the memory bandwidth, collectives by their ring formulas on the link their group crosses, nothing overlapped but async all-reduces (docs/planning.md)\n");
    out
}

pub(crate) fn seconds(s: f64) -> String {
    match s {
        s if s >= 1.0 => format!("{s:.3} s"),
        s if s >= 1e-3 => format!("{:.3} ms", s * 1e3),
        s => format!("{:.1} µs", s * 1e6),
    }
}

#[cfg(test)]
mod hand_computed;
