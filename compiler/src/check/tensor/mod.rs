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
//! - `embedding` is split by vocabulary (each rank looks up the ids in its
//!   rows, the parts summed);
//! - the output layer, a `linear` that gives the model's result under
//!   `cross_entropy`, is column-parallel: the loss is computed from the
//!   sharded scores (Megatron-LM's vocabulary-parallel cross-entropy),
//!   never gathered whole. Tied to an embedding, both split alike;
//! - everything else is whole on every rank (norms, a `linear` whose
//!   output goes anywhere else, a `linear` whose weight another node also
//!   reads).
//!
//! An embedding or output layer whose vocabulary does not divide into T
//! parts stays whole (a layout choice, not an error: explain shows it).
//!
//! A sharded tensor thus never reaches a node that needs it whole (a norm,
//! a reshape, the loss): the region between column- and row-parallel
//! layers is closed by construction. What can fail is the arithmetic:
//! every split width must divide into T equal parts, an error at the
//! layer's call.

use std::collections::{BTreeMap, BTreeSet};

use super::{CheckError, Lint};
use crate::plan::{ModelPlan, Node, NodeSplit, Op, TensorSplit};
use crate::span::Span;
pub use overrides::{parse as parse_overrides, SplitOverride};
use region::Graph;

mod overrides;
mod placement;
mod region;
pub mod sequence;

/// Where each node was written, and its name in the user's terms.
type Sources<'a> = (&'a [Span], &'a [String]);

/// What tensor parallelism does not run with yet (the runtime refuses a
/// plan with it too): `shard = parameters`, reported at `at`, the `tensor`
/// setting, before anything is launched.
pub fn not_done(shard: super::parallel::ShardMode, at: Span, errors: &mut Vec<CheckError>) {
    if shard == super::parallel::ShardMode::Parameters {
        errors.push(CheckError::Unsupported {
            message: "tensor parallelism with `shard = parameters` is not done yet".into(),
            span: at,
            help: Some(
                "use `shard = gradients` (ZeRO-2), which runs with `tensor`, or drop `tensor`"
                    .into(),
            ),
        });
    }
}

/// The nodes `tensor = t` splits, in node order: `overrides`
/// (`tensor_split`), the default split filled in around them, each value's
/// placement checked. `None` when an override or a placement is wrong, a
/// width does not divide (each reported at the layer), or nothing at all
/// would be split (reported at `at`, the setting). `vocab_loss`: the loss
/// can be computed from sharded scores (`cross_entropy`).
pub fn splits(
    model: &ModelPlan,
    (spans, names): Sources,
    (t, vocab_loss): (u64, bool),
    (at, overrides): (Span, &[SplitOverride]),
    (errors, lints): (&mut Vec<CheckError>, &mut Vec<Lint>),
) -> Option<Vec<NodeSplit>> {
    let nodes = &model.nodes;
    let before = errors.len();
    let fixed = overrides::fixed(model, overrides, errors);
    if errors.len() > before {
        return None;
    }
    let pinned: BTreeMap<usize, Option<TensorSplit>> =
        fixed.iter().map(|(&i, &(s, _))| (i, s)).collect();
    let fixed: BTreeMap<usize, Span> = fixed.iter().map(|(&i, &(_, at))| (i, at)).collect();
    let mut split = default_split(model, t as i64, vocab_loss, &pinned);
    let sources = (spans, names);
    placement::check(model, &mut split, (sources, &fixed), vocab_loss, errors);
    if errors.len() > before {
        return None;
    }
    whole_vocabularies(model, sources, (t, vocab_loss), (&split, &fixed), lints);
    let mut reported = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let Some(how) = split[i] else { continue };
        let span = spans.get(i).copied().unwrap_or(at);
        if let Some(message) = indivisible(node, &label(model, names, i, ""), how, t as i64) {
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

/// A warning at each embedding, and the output layer under
/// `cross_entropy`, left whole because its vocabulary does not divide
/// into `t` parts: on a large vocabulary the biggest matrix of the model,
/// on every rank.
fn whole_vocabularies(
    model: &ModelPlan,
    (spans, names): Sources,
    (t, vocab_loss): (u64, bool),
    (split, fixed): (&[Option<TensorSplit>], &BTreeMap<usize, Span>),
    lints: &mut Vec<Lint>,
) {
    let sizes: BTreeMap<&str, u64> = model
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p.shape.iter().product::<i64>() as u64))
        .collect();
    let mut warned = BTreeSet::new();
    for (i, node) in model.nodes.iter().enumerate() {
        let (vocabulary, weight) = match &node.op {
            Op::Embedding {
                num_embeddings,
                weight,
                ..
            } => (*num_embeddings, weight),
            Op::Linear {
                out_features,
                weight,
                ..
            } if i == model.result && vocab_loss => (*out_features, weight),
            _ => continue,
        };
        // Split, dividing, kept whole by the user's choice, or warned of.
        let whole = split[i].is_none() && !fixed.contains_key(&i);
        if !whole || vocabulary % t as i64 == 0 || !warned.insert(weight) {
            continue;
        }
        let padded = (vocabulary as u64).div_ceil(t) * t;
        lints.push(Lint::TensorVocabWhole {
            layer: label(model, names, i, ""),
            vocabulary,
            t,
            values: sizes.get(weight.as_str()).copied().unwrap_or(0),
            span: spans.get(i).copied().unwrap_or_default(),
            help: format!(
                "pad the vocabulary to a multiple of {t} ({padded}, as nanoGPT pads GPT-2's 50257 to 50304): ids past the data's are never looked up, and their scores take part in the softmax as the others, learned down"
            ),
        });
    }
}

/// Node `i` as messages name it: as the file writes it (`Lm › Block(16)
/// › fc`), with its path, the key `tensor_split` takes (`1.fc`), and
/// `more` after the path.
pub(super) fn label(model: &ModelPlan, names: &[String], i: usize, more: &str) -> String {
    let path = &model.nodes[i].name;
    let more = match more {
        "" => String::new(),
        more => format!(", {more}"),
    };
    match names.get(i) {
        Some(name) if !name.is_empty() => format!("`{name}` (`{path}`{more})"),
        _ if more.is_empty() => format!("`{path}`"),
        _ => format!("`{path}` ({})", &more[2..]),
    }
}

/// Why `node` (named `name`), split as `how`, cannot be cut into `t`
/// equal parts.
fn indivisible(node: &Node, name: &str, how: TensorSplit, t: i64) -> Option<String> {
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
                    "{name}, linear({in_features}, {out_features}), is {what}, {n}, do not split into {t} equal parts"
                )
            })
        }
        (
            Op::Embedding {
                num_embeddings: n, ..
            },
            TensorSplit::Vocab,
        ) => (n % t != 0).then(|| {
            format!("{name}, an embedding, is split by vocabulary: its {n} rows do not split into {t} equal parts")
        }),
        (
            Op::Attention {
                heads, kv_heads, ..
            },
            TensorSplit::Heads,
        ) => {
            // Key/value heads fewer than the ranks are shared: each rank
            // holds the one its query heads read.
            let what = if heads % t != 0 {
                Some(format!(
                    "its {heads} heads do not split into {t} equal parts"
                ))
            } else if kv_heads % t != 0 && t % kv_heads != 0 {
                Some(format!(
                    "its {kv_heads} key/value heads neither split into {t} equal parts nor divide {t} (for each to be shared by equally many ranks)"
                ))
            } else {
                None
            };
            what.map(|what| format!("{name}, an attention, is split by heads: {what}"))
        }
        _ => None,
    }
}

/// Each node's split over `t` ranks under the default rules (`None`:
/// whole on every rank), around the nodes `pinned` fixes; see the
/// module's documentation.
pub fn default_split(
    model: &ModelPlan,
    t: i64,
    vocab_loss: bool,
    pinned: &BTreeMap<usize, Option<TensorSplit>>,
) -> Vec<Option<TensorSplit>> {
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
    // Free to split by the rules: its weights its own, not fixed by the user.
    let free = |n: usize| own_weights(n) && !pinned.contains_key(&n);
    let is_pinned = |n: usize| pinned.contains_key(&n);
    let mut split = vec![None; nodes.len()];
    for i in 0..nodes.len() {
        if is_pinned(i) {
            continue;
        }
        // An embedding's weight may be the output layer's too (`tied`).
        if let Op::Embedding {
            num_embeddings,
            weight,
            ..
        } = &nodes[i].op
        {
            let result = &nodes[model.result].op;
            let tied = uses[weight.as_str()] == 2 && result.params().contains(&weight.as_str());
            if num_embeddings % t == 0 && (uses[weight.as_str()] == 1 || tied) {
                split[i] = Some(TensorSplit::Vocab);
            }
            continue;
        }
        if split[i].is_some() || !own_weights(i) {
            continue;
        }
        match nodes[i].op {
            Op::Linear { .. } => {
                let graph = Graph {
                    nodes,
                    readers: &readers,
                    result: model.result,
                    pinned: &is_pinned,
                };
                if let Some(region) = graph.region(i, &split, &free) {
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
    for (&i, &how) in pinned {
        split[i] = how;
    }
    if !is_pinned(model.result) {
        vocabulary(model, t, vocab_loss, (&uses, pinned), &mut split);
    }
    split
}

/// The output layer split by vocabulary, with the embedding its weight is
/// tied to (both or neither).
fn vocabulary(
    model: &ModelPlan,
    t: i64,
    vocab_loss: bool,
    (uses, pinned): (
        &BTreeMap<&str, usize>,
        &BTreeMap<usize, Option<TensorSplit>>,
    ),
    split: &mut [Option<TensorSplit>],
) {
    let nodes = &model.nodes;
    let result = model.result;
    let Op::Linear {
        out_features,
        weight,
        ..
    } = &nodes[result].op
    else {
        return;
    };
    let whole_input = nodes[result]
        .inputs
        .iter()
        .all(|&i| split[i].is_none_or(|s| !s.sharded_output()));
    let tied: Vec<usize> = (0..nodes.len())
        .filter(|&i| i != result && nodes[i].op.params().contains(&weight.as_str()))
        .collect();
    let tie_splits = match tied.as_slice() {
        [] => uses[weight.as_str()] == 1,
        [e] => matches!(nodes[*e].op, Op::Embedding { .. }) && split[*e].is_some(),
        _ => false,
    };
    if vocab_loss && split[result].is_none() && whole_input && out_features % t == 0 && tie_splits {
        split[result] = Some(TensorSplit::Column);
    } else {
        // A tied embedding stays whole with its output layer (unless the
        // user split it: the placement check then says they differ).
        for e in tied.into_iter().filter(|e| !pinned.contains_key(e)) {
            split[e] = None;
        }
    }
}

#[cfg(test)]
mod tests;
