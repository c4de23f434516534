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
/// counts what one tensor rank holds of it (its shape in `local`).
pub(super) fn buckets(
    model: &ModelPlan,
    stages: &[StagePlan],
    bucket_bytes: u64,
    local: &BTreeMap<String, Vec<i64>>,
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
            let values = match local.get(name) {
                Some(shape) => shape.iter().product::<i64>() as u64,
                None => sizes[name],
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
