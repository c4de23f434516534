//! `tensor = T`: which nodes are split over the T ranks of a tensor group,
//! by the placement of every tensor (whole on every rank, or sharded on its
//! last dimension), and the rules that make the split compute the same
//! function as the whole model.
//!
//! The default split is the one a user would pick by hand (Megatron-LM's):
//! - a `linear` whose output reaches other `linear`s only through
//!   element-wise nodes (activations, dropout, `+` and `*` of such values)
//!   is column-parallel, and those `linear`s row-parallel: no
//!   communication between them, one all-reduce after. SwiGLU's gate and
//!   up projections, joined by `*`, are both column-parallel;
//! - `attention` is split by heads;
//! - everything else is whole on every rank (norms, embeddings, the
//!   output layer, a `linear` whose output goes anywhere else, a `linear`
//!   whose weight another node also reads).
//!
//! A sharded tensor thus never reaches a node that needs it whole (a norm,
//! a reshape, the loss): the region between column- and row-parallel
//! layers is closed by construction. What can fail is the arithmetic:
//! every split width must divide into T equal parts, an error at the
//! layer's call.

use std::collections::{BTreeMap, BTreeSet};

use super::CheckError;
use crate::plan::{ModelPlan, Node, NodeSplit, Op, TensorSplit};
use crate::span::Span;

/// The nodes `tensor = t` splits, in node order; `None` when a width does
/// not divide (reported at the layer), or nothing at all would be split
/// (reported at `at`, the setting).
pub fn splits(
    model: &ModelPlan,
    spans: &[Span],
    t: u64,
    at: Span,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<NodeSplit>> {
    let nodes = &model.nodes;
    let split = default_split(model);
    let before = errors.len();
    let mut reported = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let Some(how) = split[i] else { continue };
        let span = spans.get(i).copied().unwrap_or(at);
        if let Some(message) = indivisible(node, how, t as i64) {
            // A layer inside a `repeat` is one call: one error.
            if reported.insert(span) {
                errors.push(CheckError::InvalidValue {
                    message,
                    span,
                    label: format!("split over tensor = {t}"),
                    help: Some(format!(
                        "choose a `tensor` degree that divides it, or keep T = 1; this layer cannot be split {t} ways"
                    )),
                });
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    let list: Vec<NodeSplit> = split
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.map(|split| NodeSplit {
                node: i,
                name: nodes[i].name.clone(),
                split,
            })
        })
        .collect();
    if list.is_empty() {
        errors.push(CheckError::Unsupported {
            message: format!(
                "`tensor = {t}` splits no layer of `{}`: every rank would compute the whole model",
                model.name
            ),
            span: at,
            help: Some(
                "tensor parallelism splits attention by heads, and a linear layer whose output reaches other linear layers through element-wise layers only (an MLP); use `data` or `pipeline` for this model".into(),
            ),
        });
        return None;
    }
    Some(list)
}

/// Why `node`, split as `how`, cannot be cut into `t` equal parts.
fn indivisible(node: &Node, how: TensorSplit, t: i64) -> Option<String> {
    let name = &node.name;
    match (&node.op, how) {
        (
            Op::Linear {
                in_features,
                out_features,
                ..
            },
            TensorSplit::Column | TensorSplit::Row,
        ) => {
            let (what, n) = match how {
                TensorSplit::Column => ("column-parallel: its output features", out_features),
                _ => ("row-parallel: its input features", in_features),
            };
            (n % t != 0).then(|| {
                format!(
                    "`{name}` (linear({in_features}, {out_features})) is {what}, {n}, do not split into {t} equal parts"
                )
            })
        }
        (
            Op::Attention {
                heads, kv_heads, ..
            },
            TensorSplit::Heads,
        ) => {
            let what = if heads % t != 0 {
                Some(format!("its {heads} heads"))
            } else if kv_heads % t != 0 {
                Some(format!("its {kv_heads} key/value heads"))
            } else {
                None
            };
            what.map(|what| {
                format!(
                    "`{name}` (attention) is split by heads: {what} do not split into {t} equal parts"
                )
            })
        }
        _ => None,
    }
}

/// Each node's split under the default rules (`None`: whole on every
/// rank); see the module's documentation.
pub fn default_split(model: &ModelPlan) -> Vec<Option<TensorSplit>> {
    let nodes = &model.nodes;
    let mut readers = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for &input in &node.inputs {
            readers[input].push(i);
        }
    }
    // A weight read by two nodes (a tied output layer, a layer applied
    // twice) stays whole: one of them would want it split.
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for node in nodes {
        for p in node.op.params() {
            *uses.entry(p).or_default() += 1;
        }
    }
    let own_weights = |n: usize| nodes[n].op.params().iter().all(|p| uses[p] == 1);
    let mut split = vec![None; nodes.len()];
    for i in 0..nodes.len() {
        if split[i].is_some() || !own_weights(i) {
            continue;
        }
        match nodes[i].op {
            Op::Linear { .. } => {
                let graph = Graph {
                    nodes,
                    readers: &readers,
                    result: model.result,
                };
                if let Some(region) = graph.region(i, &split, &own_weights) {
                    for n in region.columns {
                        split[n] = Some(TensorSplit::Column);
                    }
                    for n in region.sharded {
                        split[n] = Some(TensorSplit::Sharded);
                    }
                    for n in region.rows {
                        split[n] = Some(TensorSplit::Row);
                    }
                }
            }
            Op::Attention { .. } => split[i] = Some(TensorSplit::Heads),
            _ => {}
        }
    }
    split
}

/// Element-wise: a sharded input gives the output sharded alike.
fn elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Elu { .. }
            | Op::Gelu { .. }
            | Op::Silu
            | Op::Tanh
            | Op::Sigmoid
            | Op::Dropout { .. }
            | Op::Add
            | Op::Mul
    )
}

struct Graph<'a> {
    nodes: &'a [Node],
    readers: &'a [Vec<usize>],
    result: usize,
}

/// A sharded region: the column-parallel linears that open it, the
/// element-wise nodes inside, the row-parallel linears that close it.
#[derive(Default)]
struct Region {
    columns: Vec<usize>,
    sharded: Vec<usize>,
    rows: Vec<usize>,
}

impl Region {
    fn inside(&self, n: usize) -> bool {
        self.columns.contains(&n) || self.sharded.contains(&n)
    }
}

impl Graph<'_> {
    /// The region that linear `first` opens, if it closes: every reader
    /// of a sharded value is element-wise (with its other inputs sharded
    /// too, or column-parallel linears that join) or a linear that closes
    /// it; the model's result is not sharded.
    fn region(
        &self,
        first: usize,
        split: &[Option<TensorSplit>],
        own_weights: &dyn Fn(usize) -> bool,
    ) -> Option<Region> {
        let nodes = self.nodes;
        let is_free_linear = |n: usize| {
            matches!(nodes[n].op, Op::Linear { .. }) && split[n].is_none() && own_weights(n)
        };
        let mut region = Region {
            columns: vec![first],
            ..Region::default()
        };
        let mut queue = vec![first];
        while let Some(n) = queue.pop() {
            if n == self.result {
                return None;
            }
            for &reader in &self.readers[n] {
                if region.inside(reader) || region.rows.contains(&reader) {
                    continue;
                }
                if is_free_linear(reader) {
                    region.rows.push(reader);
                } else if split[reader].is_none() && elementwise(&nodes[reader].op) {
                    for &other in &nodes[reader].inputs {
                        if region.inside(other) {
                            continue;
                        }
                        if !is_free_linear(other) || region.rows.contains(&other) {
                            return None;
                        }
                        region.columns.push(other);
                        queue.push(other);
                    }
                    region.sharded.push(reader);
                    queue.push(reader);
                } else {
                    return None;
                }
            }
        }
        // Column-parallel linears read whole values, row-parallel ones a
        // sharded value, element-wise nodes only sharded values.
        let whole_input = |n: &usize| nodes[*n].inputs.iter().all(|i| !region.inside(*i));
        let sharded_input = |n: &usize| nodes[*n].inputs.iter().all(|i| region.inside(*i));
        let closed = region.columns.iter().all(whole_input)
            && region.rows.iter().all(sharded_input)
            && region.sharded.iter().all(sharded_input)
            && !region.rows.is_empty();
        closed.then_some(region)
    }
}

#[cfg(test)]
mod tests {
    use crate::check::Options;
    use crate::plan::{Pass, Plan, StepOp, TensorSplit};

    fn compile(source: &str, world: Vec<u64>) -> Result<Plan, String> {
        let options = Options {
            world,
            ..crate::options_for(std::path::Path::new("./t.dtl"), true)
        };
        crate::compile_source("t.dtl", source, &options).map_err(|d| d.render_human(false))
    }

    fn experiment(model: &str, parallel: &str) -> String {
        format!(
            r#"
            {model}
            data d {{ source = synthetic(rows: 256, features: 64, classes: 10) }}
            train {{ model = Net; data = d; loss = cross_entropy; optimizer = adam(lr: 0.01); steps = 2; micro_batch = 8; accumulate = 2 }}
            parallel {{ {parallel} }}
            "#
        )
    }

    fn splits(plan: &Plan) -> Vec<(&str, TensorSplit)> {
        plan.topology
            .tensor_splits
            .iter()
            .map(|s| (s.name.as_str(), s.split))
            .collect()
    }

    #[test]
    fn an_mlp_is_split_column_then_row_with_one_all_reduce() {
        let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> dropout(0.1) |> linear(100, 10) } }";
        let plan = compile(&experiment(model, "tensor = 2"), vec![]).unwrap();
        assert_eq!(plan.topology.world_size(), 2);
        assert_eq!(
            splits(&plan),
            [
                ("0", TensorSplit::Column),
                ("1", TensorSplit::Sharded),
                ("2", TensorSplit::Sharded),
                ("3", TensorSplit::Row)
            ]
        );
        // The row-parallel output, [8, 10] floats, in forward; the input
        // of the column-parallel linear is the model's: no gradient.
        let collectives = plan
            .step_program
            .iter()
            .find_map(|op| match op {
                StepOp::TensorAllReduces {
                    collectives,
                    bytes_per_rank,
                } => Some((collectives.clone(), *bytes_per_rank)),
                _ => None,
            })
            .unwrap();
        assert_eq!(collectives.0.len(), 1);
        assert_eq!(
            (collectives.0[0].pass, collectives.0[0].bytes),
            (Pass::Forward, 8 * 10 * 4)
        );
        // A ring over 2 ranks sends half, twice; 2 micro-batches a step.
        assert_eq!(collectives.1, 2 * (2 * 320 / 2));
    }

    #[test]
    fn a_residual_block_splits_inside_and_keeps_norms_and_the_stream_whole() {
        let model = r#"
            module Block(d: int) {
              norm = layer_norm(d)
              forward(x: [B, d]) -> [B, d] { x + (x |> norm |> linear(d, 4 * d) |> gelu |> linear(4 * d, d)) }
            }
            module Glu(d: int) {
              forward(x: [B, d]) -> [B, d] { ((x |> linear(d, 2 * d) |> silu) * (x |> linear(d, 2 * d))) |> linear(2 * d, d) }
            }
            model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 32) |> repeat 2 { Block(32) } |> Glu(32) |> linear(32, 10) } }
        "#;
        let plan = compile(&experiment(model, "tensor = 4; data = auto"), vec![8]).unwrap();
        assert_eq!(plan.topology.parallelism.data, 2);
        let got = splits(&plan);
        let names: Vec<&str> = got.iter().map(|(n, _)| *n).collect();
        assert!(!names.contains(&"0") && !names.contains(&"3"), "{got:?}");
        assert!(got.contains(&("1.0.0", TensorSplit::Column)), "{got:?}");
        assert!(got.contains(&("1.0.2", TensorSplit::Row)), "{got:?}");
        let glu: Vec<TensorSplit> = got
            .iter()
            .filter(|(n, _)| n.starts_with("2."))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            glu,
            [
                TensorSplit::Column,
                TensorSplit::Sharded,
                TensorSplit::Column,
                TensorSplit::Sharded,
                TensorSplit::Row
            ]
        );
        // Tensor ranks adjacent: rank 5 is replica 1's second tensor rank.
        let r = &plan.topology.ranks[5];
        assert_eq!((r.replica, r.tensor), (1, 1));
        // The gradient of each block's norm output, and of the stream the
        // GLU's two linears read (once for both), in backward.
        let backward: Vec<Vec<String>> = plan
            .step_program
            .iter()
            .find_map(|op| match op {
                StepOp::TensorAllReduces { collectives, .. } => Some(collectives),
                _ => None,
            })
            .unwrap()
            .iter()
            .filter(|c| c.pass == Pass::Backward)
            .map(|c| c.layers.clone())
            .collect();
        assert_eq!(backward.len(), 3, "{backward:?}");
        assert_eq!(backward[0], ["2.0", "2.2"]);
    }

    #[test]
    fn widths_and_heads_that_do_not_divide_are_errors_at_the_layer() {
        let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> linear(100, 10) } }";
        let err = compile(&experiment(model, "tensor = 3"), vec![]).unwrap_err();
        assert!(
            err.contains("`0` (linear(64, 100)) is column-parallel: its output features, 100, do not split into 3"),
            "{err}"
        );
        assert!(err.contains("linear(64, 100) |> relu"), "{err}");
        let model = r#"model Net { forward(x: [B, 64]) -> [B, 10] { x |> reshape([4, 16]) |> attention(16, 8, kv_heads: 2) |> mean(1) |> linear(16, 10) } }"#;
        let source = experiment(model, "tensor = 3");
        let err = compile(&source, vec![]).unwrap_err();
        assert!(
            err.contains("its 8 heads do not split into 3 equal parts"),
            "{err}"
        );
        let err = compile(&source.replace("tensor = 3", "tensor = 4"), vec![]).unwrap_err();
        assert!(
            err.contains("its 2 key/value heads do not split into 4 equal parts"),
            "{err}"
        );
        let plan = compile(&source.replace("tensor = 3", "tensor = 2"), vec![]).unwrap();
        assert_eq!(splits(&plan), [("1", TensorSplit::Heads)]);
    }

    #[test]
    fn a_model_with_nothing_to_split_and_a_world_that_does_not_divide_are_errors() {
        let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) } }";
        let err = compile(&experiment(model, "tensor = 2"), vec![]).unwrap_err();
        assert!(
            err.contains("`tensor = 2` splits no layer of `Net`"),
            "{err}"
        );
        let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> linear(100, 10) } }";
        let err = compile(&experiment(model, "tensor = 2; data = auto"), vec![5]).unwrap_err();
        assert!(
            err.contains("world size 5 is not a multiple of the 2 ranks of a replica (tensor 2 × pipeline 1)"),
            "{err}"
        );
        let err = compile(&experiment(model, "tensor = 2; data = 2"), vec![2]).unwrap_err();
        assert!(
            err.contains("world size 2 ≠ data 2 × tensor 2 × pipeline 1 = 4"),
            "{err}"
        );
    }
}
