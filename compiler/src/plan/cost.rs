//! The cost model behind `dtl explain`: parameters, FLOPs, memory and
//! communication of a plan, computed before anything runs.
//!
//! Assumptions, stated in the report too: float32 everywhere; a backward
//! pass costs twice its forward; every node's output is kept for the
//! backward pass (an upper bound on activation memory); a multiply-add is two
//! FLOPs.

use serde::Serialize;

use super::{Dim, Node, Op, Optimizer, Plan};

const BYTES_PER_VALUE: u64 = 4;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    pub name: String,
    pub kind: String,
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
    /// Forward + backward FLOPs per sample (3 × forward).
    pub train_flops_per_sample: u64,
    /// FLOPs of one optimizer step over the global batch.
    pub flops_per_step: u64,
    pub global_batch: u64,
    pub memory: Memory,
    /// Collectives per step, with the bytes each rank sends.
    pub collectives: Vec<Collective>,
}

/// Bytes per rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    /// Activations kept for backward at the micro-batch size.
    pub activations: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Collective {
    pub name: String,
    pub bytes_per_rank: u64,
}

fn numel(shape: &[Dim]) -> u64 {
    shape
        .iter()
        .skip(1)
        .map(|d| if let Dim::Size(n) = d { *n as u64 } else { 1 })
        .product()
}

/// Forward FLOPs of one node for one sample.
fn forward_flops(node: &Node, input: &[Dim]) -> u64 {
    let out = numel(&node.output);
    let inp = numel(input);
    match &node.op {
        Op::Input
        | Op::Flatten
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Embedding { .. } => 0,
        Op::Linear { in_features, .. } => 2 * *in_features as u64 * out,
        Op::Conv1d {
            in_channels,
            kernel,
            ..
        } => 2 * (*in_channels * *kernel) as u64 * out,
        Op::Conv2d {
            in_channels,
            kernel,
            ..
        } => 2 * (*in_channels * *kernel * *kernel) as u64 * out,
        Op::MaxPool1d { kernel, .. } | Op::AvgPool1d { kernel, .. } => *kernel as u64 * out,
        Op::MaxPool2d { kernel, .. } | Op::AvgPool2d { kernel, .. } => {
            (*kernel * *kernel) as u64 * out
        }
        Op::AdaptiveAvgPool1d { .. } | Op::AdaptiveAvgPool2d { .. } => inp,
        Op::BatchNorm { .. } | Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Softmax { .. } => {
            5 * out
        }
        Op::Attention { dim, .. } => {
            let d = *dim as u64;
            let t = (out / d.max(1)).max(1);
            // q, k, v and output projections, then scores and their weighted sum.
            2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * t * d
        }
        Op::PosEmbedding { .. }
        | Op::Add
        | Op::Dropout { .. }
        | Op::Relu
        | Op::Gelu
        | Op::Silu
        | Op::Tanh
        | Op::Sigmoid => out,
        Op::Concat { .. } => 0,
    }
}

/// The cost of one optimizer step of `plan` on one rank.
pub fn cost(plan: &Plan) -> Cost {
    let model = &plan.model;
    let mut layers = Vec::new();
    let mut counted = std::collections::BTreeSet::new();
    for node in &model.nodes {
        let input = node
            .inputs
            .first()
            .map_or(&node.output, |&i| &model.nodes[i].output);
        // The parameters this node's op names; a shared layer counts once.
        let op_json = serde_json::to_value(&node.op).unwrap_or_default();
        let named: Vec<&str> = op_json
            .as_object()
            .map_or(vec![], |o| o.values().filter_map(|v| v.as_str()).collect());
        let parameters = model
            .parameters
            .iter()
            .filter(|p| named.contains(&p.name.as_str()) && counted.insert(p.name.clone()))
            .map(|p| p.shape.iter().product::<i64>() as u64)
            .sum();
        layers.push(LayerCost {
            name: node.name.clone(),
            kind: node.op.kind(),
            parameters,
            forward_flops: forward_flops(node, input),
            activations: numel(&node.output),
        });
    }
    let forward: u64 = layers.iter().map(|l| l.forward_flops).sum();
    let train_flops_per_sample = 3 * forward;
    let params = model.parameter_count;
    let optimizer_copies = match plan.train.optimizer {
        Optimizer::Sgd { momentum: 0.0, .. } => 0,
        Optimizer::Sgd { .. } => 1,
        Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 2,
    };
    let activation_values: u64 = layers.iter().map(|l| l.activations).sum();
    let buffers: u64 = model
        .buffers
        .iter()
        .map(|b| b.shape.iter().product::<i64>() as u64)
        .sum();
    let memory = Memory {
        parameters: (params + buffers) * BYTES_PER_VALUE,
        gradients: params * BYTES_PER_VALUE,
        optimizer_state: optimizer_copies * params * BYTES_PER_VALUE,
        activations: activation_values * plan.train.micro_batch * BYTES_PER_VALUE,
        total: 0,
    };
    let memory = Memory {
        total: memory.parameters + memory.gradients + memory.optimizer_state + memory.activations,
        ..memory
    };
    let world = plan.topology.world_size;
    let collectives = if plan.topology.data_parallel > 1 {
        // Ring all-reduce: each rank sends 2 (n − 1) / n of the gradients.
        let n = plan.topology.data_parallel;
        vec![Collective {
            name: "all-reduce gradients (ring)".into(),
            bytes_per_rank: 2 * (n - 1) * params * BYTES_PER_VALUE / n,
        }]
    } else {
        debug_assert_eq!(world, 1);
        vec![]
    };
    Cost {
        layers,
        parameters: params,
        train_flops_per_sample,
        flops_per_step: train_flops_per_sample * plan.train.global_batch,
        global_batch: plan.train.global_batch,
        memory,
        collectives,
    }
}

/// `n` divided by `base` while it stays at least `base` and a unit is left:
/// the scaled value and the index of its unit.
fn scaled(n: u64, base: f64, units: usize) -> (f64, usize) {
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
    match scaled(n, 1024.0, UNITS.len()) {
        (_, 0) => format!("{n} B"),
        (value, unit) => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Large counts in SI units: `1.2 M`.
pub fn count(n: u64) -> String {
    const UNITS: [&str; 6] = ["", " k", " M", " G", " T", " P"];
    match scaled(n, 1000.0, UNITS.len()) {
        (_, 0) => format!("{n}"),
        (value, unit) => format!("{value:.2}{}", UNITS[unit]),
    }
}

impl Cost {
    /// The table `dtl explain` prints.
    pub fn render(&self, plan: &Plan) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "model {} — {} parameters\n\n",
            plan.model.name, self.parameters
        ));
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
        let m = &self.memory;
        out.push_str(&format!(
            "\ntraining FLOPs: {} per sample (forward + backward = 3 × forward), {} per step (global batch {})\n",
            count(self.train_flops_per_sample),
            count(self.flops_per_step),
            self.global_batch
        ));
        out.push_str(&format!(
            "memory per rank: parameters {} + gradients {} + optimizer state {} + activations {} (micro_batch {}) = {}\n",
            bytes(m.parameters),
            bytes(m.gradients),
            bytes(m.optimizer_state),
            bytes(m.activations),
            plan.train.micro_batch,
            bytes(m.total)
        ));
        if self.collectives.is_empty() {
            out.push_str(&format!(
                "communication: none (world size {}, one process)\n",
                plan.topology.world_size
            ));
        }
        for c in &self.collectives {
            out.push_str(&format!(
                "communication: {} — {} per rank per step\n",
                c.name,
                bytes(c.bytes_per_rank)
            ));
        }
        out.push_str("pipeline bubble: 0% (one stage)\n");
        out.push_str("assumptions: float32; backward = 2 × forward; every layer output kept for backward (upper bound)\n");
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
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_000), "1.23 M");
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
}
