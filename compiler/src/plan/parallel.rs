//! The parallel layout of a plan: how many data-parallel replicas and
//! pipeline stages, which layers each stage owns, which tensors cross
//! between stages, the gradient buckets, and each stage's part of the step
//! (forward, backward, sends and receives, in schedule order).

use serde::{Deserialize, Serialize};

use super::cost::forward_flops;
use super::{ModelPlan, Shape};

/// The `parallel` block, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallelism {
    /// Data-parallel replicas of every stage.
    pub data: u64,
    /// Pipeline stages.
    pub pipeline: u64,
    /// Pipeline micro-batches each `micro_batch` is cut into.
    pub micro_batches: u64,
    pub schedule: PipelineSchedule,
    pub sync: SyncMode,
    pub backend: Backend,
    /// Gradients are all-reduced in buckets of about this many bytes.
    pub bucket_bytes: u64,
    pub batch_norm: BatchNormSync,
}

impl Parallelism {
    /// One process: no replicas, no stages.
    pub fn single() -> Self {
        Parallelism {
            data: 1,
            pipeline: 1,
            micro_batches: 1,
            schedule: PipelineSchedule::OneFOneB,
            sync: SyncMode::EveryStep,
            backend: Backend::Auto,
            bucket_bytes: 25 << 20,
            batch_norm: BatchNormSync::Local,
        }
    }

    pub fn world_size(&self) -> u64 {
        self.data * self.pipeline
    }

    /// The fraction of a step a stage waits, fill and drain of the pipeline:
    /// (stages − 1) / (micro-batches + stages − 1).
    pub fn bubble(&self) -> f64 {
        (self.pipeline - 1) as f64 / (self.micro_batches + self.pipeline - 1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineSchedule {
    /// All forwards, then all backwards: every micro-batch's activations are
    /// alive at once.
    Gpipe,
    /// One forward, one backward after a warm-up: stage s keeps at most
    /// stages − s micro-batches in flight.
    OneFOneB,
}

impl PipelineSchedule {
    /// The name people write it with.
    pub fn name(self) -> &'static str {
        match self {
            PipelineSchedule::Gpipe => "GPipe",
            PipelineSchedule::OneFOneB => "1F1B",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncMode {
    /// Gradients all-reduced every optimizer step.
    EveryStep,
    /// Each replica steps on its own gradients; parameters are averaged
    /// every `period` steps.
    LocalSgd { period: u64 },
    /// Gradients all-reduced in the background; a step may apply an average
    /// up to `staleness` steps old.
    Async { staleness: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// NCCL on GPUs, MPI on CPUs.
    Auto,
    Nccl,
    Mpi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormSync {
    /// Each replica normalises with its own batch statistics.
    Local,
    /// Statistics all-reduced over the replicas (SyncBatchNorm).
    Sync,
}

/// The layers one pipeline stage owns and what it sends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagePlan {
    pub stage: u64,
    /// Its nodes: `first_node..=last_node` of the model's node list.
    pub first_node: usize,
    pub last_node: usize,
    /// Trainable scalars of the stage's layers.
    pub parameters: u64,
    /// Forward FLOPs per sample of the stage's layers.
    pub forward_flops: u64,
    /// Tensors this stage computes that later stages read.
    pub sends: Vec<Transfer>,
}

/// One tensor crossing from a stage to a later one (and its gradient back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The producing node.
    pub node: String,
    pub to_stage: u64,
    pub shape: Shape,
    /// Values per sample (the product of the non-batch dimensions).
    pub values_per_sample: u64,
}

/// Gradients all-reduced together, in the order backward produces them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradBucket {
    pub stage: u64,
    pub parameters: Vec<String>,
    pub bytes: u64,
}

/// One stage's part of a pipelined micro-batch round, in execution order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageProgram {
    pub stage: u64,
    pub ops: Vec<PipeOp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PipeOp {
    RecvActivations { micro_batch: u64, from: u64 },
    Forward { micro_batch: u64 },
    SendActivations { micro_batch: u64, to: u64 },
    RecvGradients { micro_batch: u64, from: u64 },
    Backward { micro_batch: u64 },
    SendGradients { micro_batch: u64, to: u64 },
}

/// Forward (`true`) and backward (`false`) of each micro-batch, in the order
/// a stage runs them.
pub fn stage_order(
    schedule: PipelineSchedule,
    stage: u64,
    stages: u64,
    micro_batches: u64,
) -> Vec<(bool, u64)> {
    let m = micro_batches;
    match schedule {
        PipelineSchedule::Gpipe => (0..m)
            .map(|i| (true, i))
            .chain((0..m).map(|i| (false, i)))
            .collect(),
        PipelineSchedule::OneFOneB => {
            let warm = (stages - stage - 1).min(m);
            let mut order: Vec<(bool, u64)> = (0..warm).map(|i| (true, i)).collect();
            for i in 0..m - warm {
                order.push((true, warm + i));
                order.push((false, i));
            }
            order.extend((m - warm..m).map(|i| (false, i)));
            order
        }
    }
}

/// Stage boundaries by forward FLOPs: stage k starts near the node where
/// the running total passes k/stages of the whole, preferring a point where
/// only one tensor crosses (not inside a residual block), every stage
/// keeping at least one layer. Returns each stage's first node.
pub fn balanced_split(model: &ModelPlan, stages: u64) -> Vec<usize> {
    let n = model.nodes.len();
    let costs: Vec<u64> = model
        .nodes
        .iter()
        .map(|node| {
            let input = node
                .inputs
                .first()
                .map_or(&node.output, |&i| &model.nodes[i].output);
            // Weightless layers still take a slot: a small floor.
            forward_flops(node, input).max(1)
        })
        .collect();
    // prefix[i]: the cost of the nodes before i.
    let mut prefix = vec![0u64; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + costs[i];
    }
    // A cut before node i is clean when the later nodes read nothing older
    // than node i − 1.
    let mut oldest_read = vec![usize::MAX; n + 1];
    for i in (0..n).rev() {
        let own = model.nodes[i].inputs.iter().copied().min().unwrap_or(i);
        oldest_read[i] = oldest_read[i + 1].min(own);
    }
    let clean = |i: usize| oldest_read[i] + 1 >= i;
    let total = prefix[n];
    let mut starts = vec![0usize];
    for k in 1..stages as usize {
        let remaining = stages as usize - k;
        let (low, high) = (starts[k - 1] + 1, n - remaining);
        let target = total * k as u64 / stages;
        let distance = |i: usize| prefix[i].abs_diff(target);
        let best = (low..=high)
            .filter(|&i| clean(i))
            .min_by_key(|&i| distance(i))
            .filter(|&i| distance(i) <= total / (2 * stages))
            .or_else(|| (low..=high).min_by_key(|&i| distance(i)))
            .unwrap_or(low);
        starts.push(best);
    }
    starts
}

/// The stages' node ranges, transfers and parameter counts, for stage starts
/// `starts` (stage 0 starts at node 0).
pub fn stages(model: &ModelPlan, starts: &[usize]) -> Vec<StagePlan> {
    let n = model.nodes.len();
    let stage_of = |node: usize| starts.iter().rposition(|&s| s <= node).unwrap_or(0) as u64;
    let mut out: Vec<StagePlan> = starts
        .iter()
        .enumerate()
        .map(|(k, &first)| {
            let last = starts.get(k + 1).map_or(n - 1, |next| next - 1);
            StagePlan {
                stage: k as u64,
                first_node: first,
                last_node: last,
                parameters: 0,
                forward_flops: 0,
                sends: Vec::new(),
            }
        })
        .collect();
    // The stages that read each node's output, in one pass over the edges.
    let mut readers: Vec<std::collections::BTreeSet<u64>> = vec![Default::default(); n];
    for (j, reader) in model.nodes.iter().enumerate() {
        for &i in &reader.inputs {
            readers[i].insert(stage_of(j));
        }
    }
    let sizes = ParamSizes::of(model);
    let mut counted = std::collections::BTreeSet::new();
    for (i, node) in model.nodes.iter().enumerate() {
        let stage = &mut out[stage_of(i) as usize];
        let input = node
            .inputs
            .first()
            .map_or(&node.output, |&j| &model.nodes[j].output);
        stage.forward_flops += forward_flops(node, input);
        stage.parameters += sizes.of_node(node, &mut counted);
        // Every later stage that reads this node's output gets it once.
        for &to_stage in readers[i].iter().filter(|s| **s > stage_of(i)) {
            out[stage_of(i) as usize].sends.push(Transfer {
                node: node.name.clone(),
                to_stage,
                shape: node.output.clone(),
                values_per_sample: super::cost::numel(&node.output),
            });
        }
    }
    out
}

/// The size of every trainable parameter, by name: built once per model,
/// so per-node lookups do not scan the parameter list.
pub(crate) struct ParamSizes<'a>(std::collections::BTreeMap<&'a str, u64>);

impl<'a> ParamSizes<'a> {
    pub(crate) fn of(model: &'a ModelPlan) -> Self {
        ParamSizes(
            model
                .parameters
                .iter()
                .map(|p| (p.name.as_str(), p.shape.iter().product::<i64>() as u64))
                .collect(),
        )
    }

    /// The trainable parameters a node's op names, sorted by the op's field
    /// names (`bias` before `weight`), with their number of values.
    fn named_by(&self, node: &super::Node) -> Vec<(String, u64)> {
        let op_json = serde_json::to_value(&node.op).unwrap_or_default();
        let Some(fields) = op_json.as_object() else {
            return Vec::new();
        };
        fields
            .values()
            .filter_map(|v| v.as_str())
            .filter_map(|name| self.0.get(name).map(|n| (name.to_string(), *n)))
            .collect()
    }

    /// Trainable scalars a node's op names; a shared layer counts once (names
    /// in `counted` are skipped, and added).
    pub(crate) fn of_node(
        &self,
        node: &super::Node,
        counted: &mut std::collections::BTreeSet<String>,
    ) -> u64 {
        self.named_by(node)
            .into_iter()
            .filter(|(name, _)| counted.insert(name.clone()))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Each stage's gradients in buckets of about `bucket_bytes`, filled in the
/// order backward produces them (last layer first), as DDP does.
pub fn buckets(model: &ModelPlan, stages: &[StagePlan], bucket_bytes: u64) -> Vec<GradBucket> {
    let sizes = ParamSizes::of(model);
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for stage in stages {
        let mut current = GradBucket {
            stage: stage.stage,
            parameters: Vec::new(),
            bytes: 0,
        };
        for node in model.nodes[stage.first_node..=stage.last_node].iter().rev() {
            for (name, values) in sizes.named_by(node) {
                if !seen.insert(name.clone()) {
                    continue;
                }
                let bytes = values * 4;
                if current.bytes > 0 && current.bytes + bytes > bucket_bytes {
                    out.push(std::mem::replace(
                        &mut current,
                        GradBucket {
                            stage: stage.stage,
                            parameters: Vec::new(),
                            bytes: 0,
                        },
                    ));
                }
                current.parameters.push(name);
                current.bytes += bytes;
            }
        }
        if !current.parameters.is_empty() {
            out.push(current);
        }
    }
    out
}

/// Each stage's program for one round of `micro_batches` micro-batches: the
/// schedule's forwards and backwards with the receives before and the sends
/// after them.
pub fn stage_programs(
    stages: &[StagePlan],
    schedule: PipelineSchedule,
    micro_batches: u64,
) -> Vec<StageProgram> {
    let count = stages.len() as u64;
    stages
        .iter()
        .map(|stage| {
            let s = stage.stage;
            // Stages this one reads from, and the stages that read it.
            let from: Vec<u64> = stages
                .iter()
                .filter(|other| other.sends.iter().any(|t| t.to_stage == s))
                .map(|other| other.stage)
                .collect();
            // Sends are listed per tensor; a stage is sent to once per piece.
            let to: Vec<u64> = stage
                .sends
                .iter()
                .map(|t| t.to_stage)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut ops = Vec::new();
            for (forward, mb) in stage_order(schedule, s, count, micro_batches) {
                if forward {
                    ops.extend(from.iter().map(|&f| PipeOp::RecvActivations {
                        micro_batch: mb,
                        from: f,
                    }));
                    ops.push(PipeOp::Forward { micro_batch: mb });
                    ops.extend(to.iter().map(|&t| PipeOp::SendActivations {
                        micro_batch: mb,
                        to: t,
                    }));
                } else {
                    ops.extend(to.iter().map(|&t| PipeOp::RecvGradients {
                        micro_batch: mb,
                        from: t,
                    }));
                    ops.push(PipeOp::Backward { micro_batch: mb });
                    ops.extend(from.iter().map(|&f| PipeOp::SendGradients {
                        micro_batch: mb,
                        to: f,
                    }));
                }
            }
            StageProgram { stage: s, ops }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(node: &str, to_stage: u64) -> Transfer {
        Transfer {
            node: node.into(),
            to_stage,
            shape: vec![],
            values_per_sample: 1,
        }
    }

    fn stage(stage: u64, sends: Vec<Transfer>) -> StagePlan {
        StagePlan {
            stage,
            first_node: 0,
            last_node: 0,
            parameters: 0,
            forward_flops: 0,
            sends,
        }
    }

    /// Stage 0's tensors go to stages 1, 2 and 1 again (a skip connection
    /// between two that go to the next stage): one send to each stage per
    /// piece, and one receive of gradients from each.
    #[test]
    fn a_stage_sends_to_each_later_stage_once_per_micro_batch() {
        let stages = vec![
            stage(
                0,
                vec![transfer("a", 1), transfer("b", 2), transfer("c", 1)],
            ),
            stage(1, vec![transfer("d", 2)]),
            stage(2, vec![]),
        ];
        let programs = stage_programs(&stages, PipelineSchedule::Gpipe, 1);
        assert_eq!(
            programs[0].ops,
            vec![
                PipeOp::Forward { micro_batch: 0 },
                PipeOp::SendActivations {
                    micro_batch: 0,
                    to: 1
                },
                PipeOp::SendActivations {
                    micro_batch: 0,
                    to: 2
                },
                PipeOp::RecvGradients {
                    micro_batch: 0,
                    from: 1
                },
                PipeOp::RecvGradients {
                    micro_batch: 0,
                    from: 2
                },
                PipeOp::Backward { micro_batch: 0 },
            ]
        );
        // Stage 2 hears from both earlier stages.
        assert_eq!(
            programs[2].ops[..2],
            [
                PipeOp::RecvActivations {
                    micro_batch: 0,
                    from: 0
                },
                PipeOp::RecvActivations {
                    micro_batch: 0,
                    from: 1
                },
            ]
        );
    }
}
