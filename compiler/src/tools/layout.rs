//! `dtl layout`: the layouts of a file on N devices of a described cluster,
//! ranked by their predicted step ([`super::predict`]) at the file's
//! global batch.
//!
//! Every candidate is the file itself with its `parallel` degrees and its
//! `micro_batch`, `accumulate` and `recompute` set, as `--set` would set
//! them, then checked, lowered and costed like any file: a layout the
//! checker refuses is dropped and counted under its diagnostic's code, one
//! over the device's memory is dropped and counted. Like `dtl check`, the
//! search reads no data file: a layout is not checked against the rows
//! the file's data has (its data may stand in for a larger one).
//!
//! What is searched, and how it is pruned (the model's own arithmetic, so
//! that nothing pruned could have ranked higher by it):
//! - data × tensor × pipeline = N, the data degree dividing the global
//!   batch; `shard` (none, optimizer, gradients, parameters; none alone on
//!   one replica), sharded within each node's replicas too (`shard_group`
//!   = the devices of a node over the tensor degree, when that splits the
//!   replicas: consecutive replicas are the ranks of one node, so the
//!   slices are exchanged over its link and only their sums cross the
//!   network); `sequence` (false, and true under a tensor degree: each
//!   tensor rank holds 1/T of the sequence between the split layers,
//!   less memory for the same bytes); `recompute` (none, `blocks` when the model has blocks,
//!   and the file's); `groups` (every divisor of the
//!   replicas) when the file syncs in groups (local SGD, DiLoCo). The
//!   stages are balanced by FLOPs (`split = auto`) and the file's schedule
//!   is kept.
//! - A combination of those the checker refuses at its first candidate is
//!   refused whole: the rules that depend on the micro-batches are kept by
//!   construction (micro_batches dividing micro_batch).
//! - micro_batches: 1 without a pipeline; with P stages, each divisor of a
//!   replica's rows.
//! - micro_batch: for a given number of pieces a micro-batch, the step's
//!   compute and bubble do not depend on it and each micro-batch costs
//!   latencies, so the largest micro_batch that fits wins: they are tried
//!   largest first and the first that fits is kept.

use serde::Serialize;

use super::cluster::Cluster;
use super::predict::{self, Prediction};
use crate::check::Options;
use crate::overrides::{self, Override};
use crate::plan::{Plan, Recompute, Shard};

/// The most devices a search lays out (the checker's most ranks).
const MAX_WORLD: u64 = 1 << 20;

/// The largest global batch a search lays out, samples a step: its
/// divisors are enumerated for every combination of degrees.
const MAX_BATCH: u64 = 1 << 24;

/// What to search.
pub struct Request<'a> {
    /// How diagnostics name the file, and its text.
    pub name: &'a str,
    pub text: &'a str,
    /// The file's options (its folder; the user's own `--set`s).
    pub options: Options,
    pub cluster: &'a Cluster,
    pub world: u64,
    /// The global batch; the file's (micro_batch × accumulate × data)
    /// when `None`.
    pub batch: Option<u64>,
}

/// One layout that fits, with its prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layout {
    pub parallel: Parallel,
    pub train: TrainSettings,
    pub step_seconds: f64,
    pub samples_per_second: f64,
    pub mfu: f64,
    pub memory_per_rank_bytes: u64,
}

/// The `parallel` settings of a layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parallel {
    pub data: u64,
    pub tensor: u64,
    /// `sequence = true` (left out when false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sequence: bool,
    pub pipeline: u64,
    pub shard: &'static str,
    /// Sharded within groups of this many replicas (`shard_group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_group: Option<u64>,
    pub micro_batches: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<u64>,
}

/// The `train` settings a layout sets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSettings {
    pub micro_batch: u64,
    pub accumulate: u64,
    pub recompute: &'static str,
}

/// Layouts refused by one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    /// The diagnostic's code, or `global_batch` for a data degree that
    /// does not divide the global batch.
    pub rule: String,
    pub layouts: usize,
    /// The first refusal's message.
    pub example: String,
}

/// The search's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Search {
    pub model: String,
    pub world: u64,
    pub global_batch: u64,
    /// Fitting layouts, fastest first.
    pub layouts: Vec<Layout>,
    /// Candidates compiled (each a check, lowering and prediction).
    pub compiled: usize,
    pub refused: Vec<Refusal>,
    /// Layouts (down to their micro-batches) whose every micro_batch
    /// needed more memory than the device has.
    pub over_memory: usize,
}

/// One combination of the degrees, whose micro-batching is searched.
#[derive(Debug, Clone, Copy)]
struct Root {
    data: u64,
    tensor: u64,
    sequence: bool,
    pipeline: u64,
    shard: Shard,
    shard_group: Option<u64>,
    recompute: Recompute,
    groups: Option<u64>,
}

/// What searching one root found.
#[derive(Default)]
struct Found {
    layouts: Vec<Layout>,
    compiled: usize,
    refused: Vec<(String, String)>,
    over_memory: usize,
}

/// Searches the layouts of `request`'s file on `request.world` devices.
/// An error: the file does not compile as written, or its batch cannot be
/// laid out at all.
pub fn search(request: &Request) -> Result<Search, String> {
    let base =
        crate::compile_source(request.name, request.text, &request.options).map_err(|d| match d
            .first_error()
        {
            Some((_, message)) => format!(
                "{} does not compile as written: {message} (`dtl check` shows every error)",
                request.name
            ),
            None => format!("{} does not compile as written", request.name),
        })?;
    let global_batch = request.batch.unwrap_or(base.train.global_batch);
    if !(1..=MAX_WORLD).contains(&request.world) || !(1..=MAX_BATCH).contains(&global_batch) {
        return Err(format!(
            "the world size must be 1 to {MAX_WORLD} and the global batch 1 to {MAX_BATCH} (they are {} and {global_batch})",
            request.world
        ));
    }
    let mut refused: Vec<(String, String)> = Vec::new();
    let node = request.cluster.node.devices;
    let roots = roots(&base, (request.world, node), global_batch, &mut refused);
    let found = search_roots(request, &roots, global_batch);
    let mut layouts = Vec::new();
    let (mut compiled, mut over_memory) = (0, 0);
    for f in found {
        layouts.extend(f.layouts);
        refused.extend(f.refused);
        compiled += f.compiled;
        over_memory += f.over_memory;
    }
    layouts.sort_by(|a, b| {
        a.step_seconds
            .total_cmp(&b.step_seconds)
            .then(a.memory_per_rank_bytes.cmp(&b.memory_per_rank_bytes))
    });
    Ok(Search {
        model: base.model.name.clone(),
        world: request.world,
        global_batch,
        layouts,
        compiled,
        refused: by_rule(refused),
        over_memory,
    })
}

/// Every combination of the degrees on `world` devices, `node` to a node;
/// the data degrees that do not divide the batch are refused here.
fn roots(
    base: &Plan,
    (world, node): (u64, u64),
    batch: u64,
    refused: &mut Vec<(String, String)>,
) -> Vec<Root> {
    let file = &base.topology.parallelism;
    let mut recomputes = vec![Recompute::None];
    if base.model.recomputes(Recompute::Blocks) {
        recomputes.push(Recompute::Blocks);
    }
    if !recomputes.contains(&base.train.recompute) {
        recomputes.push(base.train.recompute);
    }
    let grouped = file.sync.meets_every().is_some() && file.groups > 0;
    let mut roots = Vec::new();
    for tensor in divisors(world) {
        for pipeline in divisors(world / tensor) {
            let data = world / tensor / pipeline;
            if !batch.is_multiple_of(data) {
                refused.push((
                    "global_batch".into(),
                    format!("data = {data} does not divide the global batch of {batch}"),
                ));
                continue;
            }
            let shards: &[Shard] = match data {
                1 => &[Shard::None],
                _ => &[
                    Shard::None,
                    Shard::Optimizer,
                    Shard::Gradients,
                    Shard::Parameters,
                ],
            };
            let groups: Vec<Option<u64>> = match grouped {
                true => divisors(data).into_iter().map(Some).collect(),
                false => vec![None],
            };
            // The replicas of one node, when they split the replicas (in
            // sync groups, the group is the shard group).
            let in_node = node / tensor;
            let node_group = (!grouped
                && node.is_multiple_of(tensor)
                && in_node > 1
                && in_node < data
                && data.is_multiple_of(in_node))
            .then_some(in_node);
            let sequences: &[bool] = match tensor {
                1 => &[false],
                _ => &[false, true],
            };
            for (&shard, &sequence) in shards
                .iter()
                .flat_map(|s| sequences.iter().map(move |q| (s, q)))
            {
                let within = match (shard, node_group) {
                    (Shard::None, _) | (_, None) => vec![None],
                    (_, k) => vec![None, k],
                };
                for shard_group in within {
                    for &recompute in &recomputes {
                        // Sharded in groups of one replica: nothing to
                        // shard (the checker refuses it).
                        let sharded = shard != Shard::None;
                        for &groups in groups.iter().filter(|&&g| !(sharded && g == Some(data))) {
                            roots.push(Root {
                                data,
                                tensor,
                                sequence,
                                pipeline,
                                shard,
                                shard_group,
                                recompute,
                                groups,
                            });
                        }
                    }
                }
            }
        }
    }
    roots
}

/// The roots searched on every core, each thread a share of them.
fn search_roots(request: &Request, roots: &[Root], batch: u64) -> Vec<Found> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = roots.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = roots
            .chunks(share)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|root| search_root(request, root, batch))
                        .collect::<Vec<Found>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a layout search thread panicked"))
            .collect()
    })
}

/// The micro-batchings of one root: for each number of pieces, the
/// largest micro_batch that fits.
fn search_root(request: &Request, root: &Root, batch: u64) -> Found {
    let mut found = Found::default();
    let rows = batch / root.data;
    let pieces: Vec<u64> = match root.pipeline {
        1 => vec![1],
        _ => divisors(rows),
    };
    for m in pieces {
        let (mut fitted, mut refused) = (false, false);
        for micro_batch in divisors(rows).into_iter().rev().filter(|b| b % m == 0) {
            let candidate = Candidate {
                root: *root,
                micro_batches: m,
                micro_batch,
                accumulate: rows / micro_batch,
            };
            found.compiled += 1;
            match candidate.predict(request) {
                Err(refusal) => {
                    found.refused.push(refusal);
                    if found.compiled == 1 {
                        // Refused at its first candidate: the root's own
                        // degrees are what the checker refuses.
                        return found;
                    }
                    refused = true;
                    break;
                }
                Ok((layout, true)) => {
                    found.layouts.push(layout);
                    fitted = true;
                    break;
                }
                Ok((_, false)) => {}
            }
        }
        if !fitted && !refused {
            found.over_memory += 1;
        }
    }
    found
}

/// A root at one micro-batching.
struct Candidate {
    root: Root,
    micro_batches: u64,
    micro_batch: u64,
    accumulate: u64,
}

impl Candidate {
    /// The settings that make the file this layout.
    fn overrides(&self) -> Vec<Override> {
        let r = &self.root;
        let mut settings = vec![
            format!("parallel.data={}", r.data),
            format!("parallel.tensor={}", r.tensor),
            format!("parallel.sequence={}", r.sequence),
            format!("parallel.pipeline={}", r.pipeline),
            format!("parallel.micro_batches={}", self.micro_batches),
            format!("parallel.shard={}", r.shard.name()),
            format!("train.micro_batch={}", self.micro_batch),
            format!("train.accumulate={}", self.accumulate),
            format!("train.recompute={}", r.recompute.name()),
        ];
        // The file's own cuts hold for its own stages only.
        settings.push("parallel.split=auto".into());
        if let Some(g) = r.groups {
            settings.push(format!("parallel.groups={g}"));
        }
        if let Some(k) = r.shard_group {
            settings.push(format!("parallel.shard_group={k}"));
        }
        settings
            .iter()
            .map(|s| overrides::parse(s).expect("a layout's settings parse"))
            .collect()
    }

    /// The layout predicted, and whether it fits the device's memory; or
    /// the checker's refusal: its code and message.
    fn predict(&self, request: &Request) -> Result<(Layout, bool), (String, String)> {
        let mut options = request.options.clone();
        options.world = vec![request.world];
        options.overrides.extend(self.overrides());
        let plan = crate::compile_source(request.name, request.text, &options).map_err(|d| {
            d.first_error()
                .unwrap_or_else(|| ("error".into(), "refused".into()))
        })?;
        let cost = super::explain::cost(&plan);
        let p: Prediction = predict::predict(&plan, &cost, request.cluster);
        let r = &self.root;
        let layout = Layout {
            parallel: Parallel {
                data: r.data,
                tensor: r.tensor,
                sequence: r.sequence,
                pipeline: r.pipeline,
                shard: r.shard.name(),
                shard_group: r.shard_group,
                micro_batches: self.micro_batches,
                groups: r.groups,
            },
            train: TrainSettings {
                micro_batch: self.micro_batch,
                accumulate: self.accumulate,
                recompute: r.recompute.name(),
            },
            step_seconds: p.step_seconds,
            samples_per_second: p.samples_per_second,
            mfu: p.mfu,
            memory_per_rank_bytes: p.memory.per_rank_bytes,
        };
        Ok((layout, p.memory.fits()))
    }
}

/// The refusals counted by rule, the most common first.
fn by_rule(refused: Vec<(String, String)>) -> Vec<Refusal> {
    let mut rules: Vec<Refusal> = Vec::new();
    for (rule, message) in refused {
        match rules.iter_mut().find(|r| r.rule == rule) {
            Some(r) => r.layouts += 1,
            None => rules.push(Refusal {
                rule,
                layouts: 1,
                example: message,
            }),
        }
    }
    rules.sort_by(|a, b| b.layouts.cmp(&a.layouts).then(a.rule.cmp(&b.rule)));
    rules
}

/// The divisors of `n`, ascending.
fn divisors(n: u64) -> Vec<u64> {
    let mut low = Vec::new();
    let mut high = Vec::new();
    let mut d = 1;
    while d * d <= n {
        if n.is_multiple_of(d) {
            low.push(d);
            if d * d != n {
                high.push(n / d);
            }
        }
        d += 1;
    }
    low.extend(high.into_iter().rev());
    low
}

/// The search as a table, its refusals, and the best layout's settings.
pub fn render(search: &Search, cluster: &Cluster, top: usize) -> String {
    let mut out = format!(
        "{} on {} × {} ({}), global batch {}: {} candidates compiled, {} fit, {} over the device's memory\n",
        search.model,
        search.world,
        cluster.device.name,
        cluster.name,
        search.global_batch,
        search.compiled,
        search.layouts.len(),
        search.over_memory
    );
    if !search.refused.is_empty() {
        out.push_str("refused, by rule:\n");
        for r in &search.refused {
            out.push_str(&format!(
                "  {:<32} {:>6}  e.g. {}\n",
                r.rule,
                r.layouts,
                first_line(&r.example)
            ));
        }
    }
    if search.layouts.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "\n{:>3} {:>5} {:>10} {:>8} {:>13} {:>6} {:>6} {:>5} {:>6} {:>9} {:>11} {:>12} {:>6} {:>10}\n",
        "#",
        "data",
        "tensor",
        "pipeline",
        "shard",
        "groups",
        "pieces",
        "micro",
        "accum",
        "recompute",
        "step",
        "samples/s",
        "MFU",
        "memory"
    ));
    for (i, l) in search.layouts.iter().take(top).enumerate() {
        let p = &l.parallel;
        out.push_str(&format!(
            "{:>3} {:>5} {:>10} {:>8} {:>13} {:>6} {:>6} {:>5} {:>6} {:>9} {:>11} {:>12.1} {:>5.1}% {:>10}\n",
            i + 1,
            p.data,
            match p.sequence {
                true => format!("{} + seq", p.tensor),
                false => p.tensor.to_string(),
            },
            p.pipeline,
            match p.shard_group {
                Some(k) => format!("{}/{k}", p.shard),
                None => p.shard.to_string(),
            },
            p.groups.map_or("-".into(), |g| g.to_string()),
            p.micro_batches,
            l.train.micro_batch,
            l.train.accumulate,
            l.train.recompute,
            predict::seconds(l.step_seconds),
            l.samples_per_second,
            l.mfu * 100.0,
            super::explain::bytes(l.memory_per_rank_bytes)
        ));
    }
    let best = &search.layouts[0];
    let p = &best.parallel;
    out.push_str(&format!(
        "\nthe fastest, to write in the file:\nparallel {{\n  data = {}\n  tensor = {}\n  pipeline = {}\n  micro_batches = {}\n  shard = {}\n",
        p.data, p.tensor, p.pipeline, p.micro_batches, p.shard
    ));
    if p.sequence {
        out.push_str("  sequence = true\n");
    }
    if p.pipeline > 1 {
        out.push_str("  split = auto\n");
    }
    if let Some(k) = p.shard_group {
        out.push_str(&format!("  shard_group = {k}\n"));
    }
    if let Some(g) = p.groups {
        out.push_str(&format!("  groups = {g}\n"));
    }
    out.push_str(&format!(
        "}}\ntrain {{ micro_batch = {}; accumulate = {}; recompute = {} }}\n",
        best.train.micro_batch, best.train.accumulate, best.train.recompute
    ));
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    #[test]
    fn divisors_ascend() {
        assert_eq!(super::divisors(12), vec![1, 2, 3, 4, 6, 12]);
        assert_eq!(super::divisors(16), vec![1, 2, 4, 8, 16]);
        assert_eq!(super::divisors(1), vec![1]);
    }
}
