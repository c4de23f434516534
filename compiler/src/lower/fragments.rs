//! Streaming DiLoCo's fragments: the model's trained parameters, in their
//! order, cut into `fragments` runs of about equal values. Fragment f
//! meets across the groups after steps (f + 1)·H/F, (f + 1)·H/F + H, …, so
//! that one fragment's all-reduce is on the wire at a time and the last
//! meets where plain DiLoCo would.

use std::collections::BTreeMap;

use super::cost::ring_bytes;
use crate::plan::{ModelPlan, OuterFragment, Parallelism, StagePlan, SyncMode};

/// The fragments of `layout`'s DiLoCo (one for plain DiLoCo), with what
/// one rank sends in each one's all-reduce: `local` gives the shape one
/// rank holds of a parameter split by `tensor`. Empty without DiLoCo, or
/// with fewer trained parameters than fragments (which the checker
/// refuses).
pub(super) fn fragments(
    model: &ModelPlan,
    stages: &[StagePlan],
    local: &BTreeMap<String, Vec<i64>>,
    layout: &Parallelism,
) -> Vec<OuterFragment> {
    let SyncMode::Diloco {
        period,
        fragments,
        outer_precision,
        ..
    } = layout.sync
    else {
        return Vec::new();
    };
    let trained: Vec<&crate::plan::ParamSpec> =
        model.parameters.iter().filter(|p| !p.frozen).collect();
    let count = fragments.max(1) as usize;
    if trained.len() < count {
        return Vec::new();
    }
    let values: Vec<u64> = trained.iter().map(|p| numel(&p.shape)).collect();
    let stage_of = stage_of_parameters(model, stages);
    let runs = balanced_runs(&values, count);
    runs.iter()
        .enumerate()
        .map(|(f, run)| {
            // What each stage holds of the fragment, for the one that holds
            // the most.
            let mut per_stage: BTreeMap<u64, u64> = BTreeMap::new();
            for p in &trained[run.clone()] {
                let held = local.get(&p.name).map_or(numel(&p.shape), |s| numel(s));
                let stage = stage_of.get(p.name.as_str()).copied().unwrap_or(0);
                *per_stage.entry(stage).or_default() += held;
            }
            let most = per_stage.values().copied().max().unwrap_or(0);
            OuterFragment {
                first_parameter: trained[run.start].name.clone(),
                parameters: run.len() as u64,
                values: values[run.clone()].iter().sum(),
                after_step: (f as u64 + 1) * period / count as u64,
                bytes_per_rank: ring_bytes(most * outer_precision.bytes(), layout.sync_groups()),
            }
        })
        .collect()
}

fn numel(shape: &[i64]) -> u64 {
    shape.iter().product::<i64>().max(0) as u64
}

/// `values` cut into `count` non-empty runs in order, each closed once the
/// values so far reach its share of the whole.
fn balanced_runs(values: &[u64], count: usize) -> Vec<std::ops::Range<usize>> {
    let total: u64 = values.iter().sum();
    let mut runs = Vec::with_capacity(count);
    let (mut start, mut sum) = (0, 0u64);
    for (i, v) in values.iter().enumerate() {
        sum += v;
        let closing = runs.len() + 1;
        if closing == count {
            break;
        }
        let left = values.len() - i - 1;
        let reached = sum * count as u64 >= total * closing as u64;
        if (reached && left >= count - closing) || left == count - closing {
            runs.push(start..i + 1);
            start = i + 1;
        }
    }
    runs.push(start..values.len());
    runs
}

/// The stage whose nodes read each parameter.
fn stage_of_parameters<'m>(model: &'m ModelPlan, stages: &[StagePlan]) -> BTreeMap<&'m str, u64> {
    let mut out = BTreeMap::new();
    for stage in stages {
        for node in &model.nodes[stage.first_node..=stage.last_node] {
            for name in node.op.params() {
                out.entry(name).or_insert(stage.stage);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::balanced_runs;

    #[test]
    fn runs_are_balanced_in_order_and_never_empty() {
        assert_eq!(balanced_runs(&[10, 10, 10, 10], 2), [0..2, 2..4]);
        assert_eq!(balanced_runs(&[100, 1, 1, 1], 2), [0..1, 1..4]);
        // A large last parameter: the runs before it take what is left.
        assert_eq!(balanced_runs(&[1, 1, 1, 100], 3), [0..2, 2..3, 3..4]);
        assert_eq!(balanced_runs(&[5, 5], 2), [0..1, 1..2]);
        assert_eq!(
            balanced_runs(&[3, 4, 5], 1),
            vec![std::ops::Range { start: 0, end: 3 }]
        );
    }
}
