//! Gradient buckets: each stage's gradients in groups of about
//! `bucket_bytes`, filled in reverse parameter order (the order backward
//! finishes them, last layer first), as PyTorch's DDP does. A replica
//! flattens a bucket into one buffer and all-reduces it in one call.

use std::collections::{BTreeMap, BTreeSet};

use super::stages::parameter_sizes;
use crate::plan::{GradBucket, ModelPlan, StagePlan};

/// Bytes of one gradient value (float32).
const BYTES_PER_VALUE: u64 = 4;

/// The buckets of every stage; a parameter that `tensor = t` shards
/// (`sharded`) counts what one tensor rank holds of it.
pub(super) fn buckets(
    model: &ModelPlan,
    stages: &[StagePlan],
    bucket_bytes: u64,
    (sharded, t): (&BTreeMap<String, usize>, u64),
) -> Vec<GradBucket> {
    let sizes = parameter_sizes(model);
    let mut out = Vec::new();
    for stage in stages {
        // The stage's parameters in the plan's (registration) order.
        let owned: BTreeSet<&str> = model.nodes[stage.first_node..=stage.last_node]
            .iter()
            .flat_map(|node| node.op.params())
            .collect();
        // Frozen parameters have no gradient to average.
        let order: Vec<&str> = model
            .parameters
            .iter()
            .filter(|p| !p.frozen)
            .map(|p| p.name.as_str())
            .filter(|name| owned.contains(name))
            .collect();
        let mut current = GradBucket {
            stage: stage.stage,
            parameters: Vec::new(),
            bytes: 0,
        };
        for name in order.into_iter().rev() {
            let values = match sharded.contains_key(name) {
                true => sizes[name] / t,
                false => sizes[name],
            };
            let bytes = values * BYTES_PER_VALUE;
            if current.bytes > 0 && current.bytes + bytes > bucket_bytes {
                let next = GradBucket {
                    stage: stage.stage,
                    parameters: Vec::new(),
                    bytes: 0,
                };
                out.push(std::mem::replace(&mut current, next));
            }
            current.parameters.push(name.to_string());
            current.bytes += bytes;
        }
        if !current.parameters.is_empty() {
            out.push(current);
        }
    }
    out
}
