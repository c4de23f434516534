//! `tensor = T` on one rank: the nodes the plan splits run on this rank's
//! shards of their weights (Megatron-LM's layout, `TensorSplit`'s rules).
//!
//! - A column-parallel linear holds rows r·n/T … of its weight and bias:
//!   its whole input gives this rank's part of the output.
//! - A row-parallel linear holds columns r·n/T … of its weight: its part
//!   of the input gives a partial sum of the output, summed over the
//!   tensor group in forward, then its whole bias added. In backward the
//!   sum passes the gradient through unchanged.
//! - Attention split by heads holds its heads' query, key and value rows
//!   and the matching columns of the output projection: a partial sum, as
//!   a row-parallel linear's.
//! - Dropout on a sharded value draws the whole mask, as one process
//!   would (every tensor rank has the same random state), and keeps this
//!   rank's part: the run draws the masks of one process.
//! - The gradient of a value that column-parallel linears or split
//!   attention read is a partial sum on each rank: the segmented backward
//!   sums it over the group ([`crate::parallel::segments`]).
//!
//! Weights are read and written whole: a rank builds the split parameters
//! as placeholders, makes each whole in turn (from its initialiser, the
//! `init` file or the checkpoint) and keeps its part
//! ([`Model::split_for_tensor`]), so no rank holds the whole model; the
//! files are written from the shards gathered back ([`TensorPart::whole`]).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use dtl_compiler::plan::{local_kv_heads, NodeSplit, Op, TensorSplit};
use tch::Tensor;

use super::shared_heads::SharedHeads;
use super::Model;
use crate::comm::{Communicator, ReduceOp};
use crate::error::{RunError, TorchContext};
use crate::ops::Weights;
use crate::tensor_file::{Described, Lazy};
use crate::torch_ops;

/// How a sharded parameter is cut over the tensor group.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cut {
    /// Into T equal parts along a dimension, rank r the r-th.
    Dim(i64),
    /// An attention's packed query, key and value rows: rank r takes its
    /// heads' rows of each, and the key/value heads they read (one, shared
    /// with other ranks, where there are fewer than the ranks).
    InProj {
        heads: i64,
        kv_heads: i64,
        head_dim: i64,
    },
}

/// This rank's part of a tensor-parallel model.
#[derive(Debug)]
pub struct TensorPart {
    /// This rank's place in its tensor group, and the group's size.
    pub rank: i64,
    pub size: i64,
    cuts: BTreeMap<String, Cut>,
    /// Row-parallel and head-split nodes: their output is summed over the
    /// group, then this bias (whole) added.
    pub(super) sums: BTreeMap<usize, Option<String>>,
    /// Nodes whose input's gradient is a partial sum on each rank.
    readers: BTreeSet<usize>,
    /// Dropout nodes on sharded values.
    dropouts: BTreeSet<usize>,
    /// Attention layers whose key/value heads several ranks share.
    pub(super) shared: Vec<SharedHeads>,
    /// Embeddings split by vocabulary: the rows each rank holds.
    pub(super) vocab: BTreeMap<usize, i64>,
    /// The output layer is split by vocabulary: the result is sharded.
    pub(super) sharded_result: bool,
    /// All-reduces over the group issued so far (forward and backward).
    pub(super) issued: Cell<u64>,
    /// `sequence = true`: the nodes held by parts of the sequence.
    pub(super) sequence: Option<super::sequence::Sequence>,
}

impl Model {
    /// Takes this rank's (`rank` of `size`) shards of the weights the
    /// plan's `splits` cut, after the whole weights are built and loaded,
    /// and turns the split nodes into their local versions.
    pub fn split_for_tensor(
        &mut self,
        splits: &[NodeSplit],
        (rank, size): (i64, i64),
        fill: &mut dyn FnMut(&str, &mut Tensor) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        let mut part = TensorPart {
            rank,
            size,
            cuts: BTreeMap::new(),
            sums: BTreeMap::new(),
            readers: BTreeSet::new(),
            dropouts: BTreeSet::new(),
            shared: Vec::new(),
            vocab: BTreeMap::new(),
            sharded_result: false,
            issued: Cell::new(0),
            sequence: None,
        };
        let result = self.result;
        for split in splits {
            let j = split.node;
            let node = &mut self.nodes[j];
            // Which tensors are cut, and along which dimension: the plan's
            // rule, which explain's memory follows too. An attention's
            // packed rows are cut by heads.
            for (name, dim) in split.split.sharded_params(&node.op) {
                let cut = match &node.op {
                    Op::Attention {
                        dim: d,
                        heads,
                        kv_heads,
                        ..
                    } if dim == 0 => Cut::InProj {
                        heads: *heads,
                        kv_heads: *kv_heads,
                        head_dim: *d / *heads,
                    },
                    _ => Cut::Dim(dim as i64),
                };
                part.cuts.insert(name.to_string(), cut);
            }
            part.localize(split.split, j == result, (j, node))?;
        }
        // A pipeline stage holds its own layers' tensors only.
        part.cuts.retain(|name, _| self.index.contains_key(name));
        for (name, cut) in &part.cuts {
            // A deferred parameter is made whole here (`fill`), alone.
            let deferred = self.deferred.remove(name);
            let tensor = self.tensor_mut(name).ok_or_else(|| RunError::Torch {
                context: "tensor parallelism".into(),
                message: format!("`{name}` is not a tensor of this model"),
            })?;
            let ctx = || format!("take this rank's part of `{name}`");
            let trains = tensor.requires_grad();
            let whole = match deferred {
                true => {
                    let mut whole = tensor.f_zeros_like().context(ctx)?;
                    fill(name, &mut whole)?;
                    whole
                }
                false => tensor.shallow_clone(),
            };
            let local = cut
                .local(&whole, rank, size)
                .and_then(|t| t.f_detach())
                .map(|t| t.copy())
                .context(ctx)?;
            *tensor = local.set_requires_grad(trains);
        }
        self.tensor = Some(part);
        Ok(())
    }

    /// The tensor-parallel part of this model, if it is split.
    pub fn tensor_part(&self) -> Option<&TensorPart> {
        self.tensor.as_ref()
    }
}

impl TensorPart {
    /// Turns node `j` into its local version under `how`: its widths, and
    /// what this part does around it (a sum, a bias added after, a
    /// gradient summed, a shared key/value head). `is_result`: it gives
    /// the model's result.
    fn localize(
        &mut self,
        how: TensorSplit,
        is_result: bool,
        (j, node): (usize, &mut super::Node),
    ) -> Result<(), RunError> {
        match (how, &mut node.op) {
            (TensorSplit::Column, Op::Linear { out_features, .. }) => {
                *out_features /= self.size;
                self.readers.insert(j);
                self.sharded_result |= is_result;
            }
            (TensorSplit::Vocab, Op::Embedding { num_embeddings, .. }) => {
                *num_embeddings /= self.size;
                self.vocab.insert(j, *num_embeddings);
                self.sums.insert(j, None);
            }
            (
                TensorSplit::Row,
                Op::Linear {
                    in_features, bias, ..
                },
            ) => {
                *in_features /= self.size;
                self.sums.insert(j, bias.take());
            }
            (
                TensorSplit::Heads,
                Op::Attention {
                    dim,
                    heads,
                    kv_heads,
                    in_proj_weight,
                    in_proj_bias,
                    out_proj_bias,
                    ..
                },
            ) => {
                self.sums.insert(j, out_proj_bias.take());
                if *kv_heads % self.size != 0 {
                    self.shared.push(SharedHeads {
                        node: j,
                        tensors: std::iter::once(in_proj_weight.clone())
                            .chain(in_proj_bias.clone())
                            .collect(),
                        query_rows: *dim / self.size,
                        head_dim: *dim / *heads,
                        kv_heads: *kv_heads,
                    });
                }
                *dim /= self.size;
                *heads /= self.size;
                *kv_heads = local_kv_heads(*kv_heads, self.size);
                self.readers.insert(j);
            }
            (TensorSplit::Sharded, Op::Dropout { .. }) => {
                self.dropouts.insert(j);
            }
            (TensorSplit::Sharded, _) => {}
            (how, op) => {
                return Err(RunError::Torch {
                    context: format!("tensor parallelism: layer `{}`", node.name),
                    message: format!("a {} cannot be split as {how:?}", op.kind()),
                })
            }
        }
        Ok(())
    }
}

impl Cut {
    /// An attention's query rows, and key (or value) rows, one rank of
    /// `size` holds; (0, 0) for other cuts.
    fn rows_per_rank(self, size: i64) -> (i64, i64) {
        match self {
            Cut::InProj {
                heads,
                kv_heads,
                head_dim,
            } => (
                heads / size * head_dim,
                local_kv_heads(kv_heads, size) * head_dim,
            ),
            Cut::Dim(_) => (0, 0),
        }
    }

    /// The first key/value head rank `r` of `size` holds: its share, or
    /// the one its query heads read when the heads are fewer than the
    /// ranks.
    pub(super) fn first_kv_head(kv_heads: i64, r: i64, size: i64) -> i64 {
        r * kv_heads / size
    }

    /// Whether rank `r` of `size` is the first that holds its key/value
    /// heads (each rank is, unless the heads are fewer than the ranks).
    pub(super) fn first_holder(kv_heads: i64, r: i64, size: i64) -> bool {
        r == 0 || Cut::first_kv_head(kv_heads, r, size) != Cut::first_kv_head(kv_heads, r - 1, size)
    }

    /// Rank `r`'s part of `whole`, of `size` parts.
    fn local(self, whole: &Tensor, r: i64, size: i64) -> Result<Tensor, tch::TchError> {
        match self {
            Cut::Dim(d) => {
                let n = whole.size()[d as usize] / size;
                whole.f_narrow(d, r * n, n)?.f_contiguous()
            }
            Cut::InProj {
                heads,
                kv_heads,
                head_dim,
            } => {
                let (q, kv) = self.rows_per_rank(size);
                let at = Cut::first_kv_head(kv_heads, r, size) * head_dim;
                let parts = [
                    whole.f_narrow(0, r * q, q)?,
                    whole.f_narrow(0, heads * head_dim + at, kv)?,
                    whole.f_narrow(0, (heads + kv_heads) * head_dim + at, kv)?,
                ];
                Tensor::f_cat(&parts, 0)
            }
        }
    }

    /// The whole tensor's shape, from a rank's part's.
    fn whole_shape(self, part: &[i64], size: i64) -> Vec<i64> {
        let mut shape = part.to_vec();
        match self {
            Cut::Dim(d) => shape[d as usize] *= size,
            Cut::InProj {
                heads,
                kv_heads,
                head_dim,
            } => shape[0] = (heads + 2 * kv_heads) * head_dim,
        }
        shape
    }

    /// The whole tensor from every rank's part, in rank order.
    fn whole(self, parts: &[Tensor], size: i64) -> Result<Tensor, tch::TchError> {
        match self {
            Cut::Dim(d) => Tensor::f_cat(parts, d),
            Cut::InProj { kv_heads, .. } => {
                let (q, kv) = self.rows_per_rank(size);
                let mut pieces = [Vec::new(), Vec::new(), Vec::new()];
                for (r, part) in parts.iter().enumerate() {
                    // A shared key/value head once, from its first rank.
                    let first = Cut::first_holder(kv_heads, r as i64, size);
                    for (k, piece) in part
                        .f_split_with_sizes([q, kv, kv], 0)?
                        .into_iter()
                        .enumerate()
                    {
                        if k == 0 || first {
                            pieces[k].push(piece);
                        }
                    }
                }
                let [qs, ks, vs] = pieces;
                let all: Vec<Tensor> = qs.into_iter().chain(ks).chain(vs).collect();
                Tensor::f_cat(&all, 0)
            }
        }
    }
}

impl TensorPart {
    /// Whether node `j`'s input gradient is a partial sum on each rank.
    pub fn reads_whole(&self, j: usize) -> bool {
        self.readers.contains(&j)
    }

    /// Whether parameter `name` is cut over the tensor group.
    pub fn is_cut(&self, name: &str) -> bool {
        self.cuts.contains_key(name)
    }

    /// All-reduces issued over the tensor group so far.
    pub fn issued(&self) -> u64 {
        self.issued.get()
    }

    /// How `name` is cut: a parameter's own name, or an optimizer state's
    /// (`<parameter>.<slot>`).
    fn cut_of(&self, name: &str) -> Option<Cut> {
        self.cuts.get(name).copied().or_else(|| {
            let (param, _) = name.rsplit_once('.')?;
            self.cuts.get(param).copied()
        })
    }

    /// This rank's part of a whole tensor of the file (a parameter, or an
    /// optimizer state of one, by name); others as they are.
    pub fn local(&self, name: &str, whole: Tensor) -> Result<Tensor, RunError> {
        match self.cut_of(name) {
            Some(cut) => cut
                .local(&whole, self.rank, self.size)
                .context(|| format!("take this rank's part of `{name}`")),
            None => Ok(whole),
        }
    }

    /// The tensors of `named` (parameters, their optimizer state), each
    /// made whole when its turn comes: a split one gathered over `group`
    /// then, so every rank of the group makes them in the same order and
    /// holds one whole tensor at a time. Only tensor rank 0 writes them: on
    /// the others a split tensor's parts are gathered (the collective needs
    /// every rank) but not put together, and its own part stands for it.
    pub fn whole<'a>(
        &'a self,
        named: Vec<(String, Tensor)>,
        group: &'a dyn Communicator,
        step: u64,
    ) -> Vec<Lazy<'a>> {
        let whole = move |(name, tensor): (String, Tensor)| {
            let Some(cut) = self.cut_of(&name) else {
                return Lazy::ready(name, tensor);
            };
            let described = Described {
                name: name.clone(),
                kind: tensor.kind(),
                shape: cut.whole_shape(&tensor.size(), self.size),
            };
            Lazy::new(described, move || {
                let comm = |e: crate::comm::CommError| RunError::Collective { step, message: e.0 };
                let ctx = || format!("gather `{name}` over the tensor group");
                let parts = self.gather(&tensor, group, &ctx, &comm)?;
                match self.rank {
                    0 => cut.whole(&parts, self.size).context(ctx),
                    _ => Ok(tensor),
                }
            })
        };
        named.into_iter().map(whole).collect()
    }

    /// Node `j`'s output after its op: summed over the group where it is a
    /// partial sum (the gradient passes through unchanged), then its bias
    /// added.
    pub fn finish(
        &self,
        j: usize,
        y: Tensor,
        model: &Model,
        group: Option<&dyn Communicator>,
    ) -> Result<Tensor, RunError> {
        let Some(bias) = self.sums.get(&j) else {
            return Ok(y);
        };
        let group = group.ok_or_else(|| RunError::Torch {
            context: format!("layer `{}`", model.nodes[j].name),
            message: "a tensor-parallel layer run without its tensor group".into(),
        })?;
        let ctx = || format!("sum `{}` over the tensor group", model.nodes[j].name);
        // The partial output becomes the sum where it lies (no copy, no
        // temporaries: 74 MB of rank 0's peak on the character GPT at
        // T = 2), keeping its graph: the gradient passes through unchanged.
        // Its version is bumped, so that an op which saved it for backward
        // (none does: the product of a linear) would fail loudly there.
        let y = self.sum_in_place(y, group, &ctx)?;
        torch_ops::bump_version(&y).context(ctx)?;
        match bias {
            Some(b) => y.f_add(&model.weight(b)).context(ctx),
            None => Ok(y),
        }
    }

    /// Dropout node `j` on this rank's part `x` of a sharded value: the
    /// whole mask drawn (as one process draws it), this rank's part kept.
    /// `None` for other nodes.
    pub fn dropout(
        &self,
        j: usize,
        x: &Tensor,
        p: f64,
        train: bool,
    ) -> Option<Result<Tensor, tch::TchError>> {
        if !self.dropouts.contains(&j) {
            return None;
        }
        let last = x.dim() as i64 - 1;
        Some(self.dropout_part(x, (p, train), last))
    }

    /// Dropout on this rank's part `x` of a value cut along `dim` (its
    /// t-th of T equal parts): the whole mask drawn, as one process draws
    /// it, and this rank's part of it kept.
    pub(super) fn dropout_part(
        &self,
        x: &Tensor,
        (p, train): (f64, bool),
        dim: i64,
    ) -> Result<Tensor, tch::TchError> {
        if !train || p == 0.0 {
            return Ok(x.shallow_clone());
        }
        let mut whole = x.size();
        let len = whole[dim as usize];
        whole[dim as usize] = len * self.size;
        let mut noise = Tensor::f_empty(whole.as_slice(), (x.kind(), x.device()))?;
        let noise = noise.f_bernoulli_float_(1.0 - p)?.f_div_scalar(1.0 - p)?;
        // A copy of this rank's part: the whole mask goes now (the
        // product keeps its factor for backward).
        let mine = noise.f_narrow(dim, self.rank * len, len)?.copy();
        x.f_mul(&mine)
    }

    /// Sums, over the group, the gradient of a value that split layers
    /// read (each rank's is a partial sum).
    /// (Its values are the sum afterwards.)
    pub fn sum_gradient(&self, grad: Tensor, group: &dyn Communicator) -> Result<Tensor, RunError> {
        self.sum_in_place(grad, group, &|| {
            "sum a gradient over the tensor group".to_string()
        })
    }

    /// `t` summed over `group`, counted: in `t`'s own memory (outside the
    /// graph: its graph, if any, is kept) where it is contiguous, else in a
    /// contiguous copy.
    fn sum_in_place(
        &self,
        t: Tensor,
        group: &dyn Communicator,
        ctx: &dyn Fn() -> String,
    ) -> Result<Tensor, RunError> {
        if !t.is_contiguous() {
            let mut total = t.f_detach().and_then(|d| d.f_contiguous()).context(ctx)?;
            self.reduce(&mut total, (ReduceOp::Sum, group), ctx)?;
            if !t.requires_grad() {
                return Ok(total);
            }
            // The sum's value with t's graph: t − t is 0 exactly.
            return t
                .f_sub(&t.f_detach().context(ctx)?)
                .and_then(|zero| total.f_add(&zero))
                .context(ctx);
        }
        let mut values = t.f_detach().context(ctx)?;
        self.reduce(&mut values, (ReduceOp::Sum, group), ctx)?;
        Ok(t)
    }

    /// All-reduces `t` over `group` in place, counted among the group's
    /// all-reduces.
    pub(super) fn reduce(
        &self,
        t: &mut Tensor,
        (op, group): (ReduceOp, &dyn Communicator),
        ctx: &dyn Fn() -> String,
    ) -> Result<(), RunError> {
        group.all_reduce(t, op).map_err(|e| RunError::Torch {
            context: ctx(),
            message: e.0,
        })?;
        self.issued.set(self.issued.get() + 1);
        Ok(())
    }

    /// Every rank's `t` (all of one shape), gathered over `group`, in rank
    /// order; `comm` turns the backend's error into the caller's.
    pub(super) fn gather(
        &self,
        t: &Tensor,
        group: &dyn Communicator,
        ctx: &dyn Fn() -> String,
        comm: &dyn Fn(crate::comm::CommError) -> RunError,
    ) -> Result<Vec<Tensor>, RunError> {
        let send = t
            .f_contiguous()
            .and_then(|t| t.f_reshape([-1]))
            .context(ctx)?;
        let mut recv = Tensor::f_zeros(
            [send.numel() as i64 * self.size],
            (send.kind(), send.device()),
        )
        .context(ctx)?;
        group.all_gather(&send, &mut recv).map_err(comm)?;
        recv.f_chunk(self.size, 0)
            .and_then(|parts| parts.iter().map(|p| p.f_reshape(t.size())).collect())
            .context(ctx)
    }
}
