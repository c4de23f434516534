//! A sharded region of the default split: the column-parallel linears
//! that open it, the element-wise nodes inside, the row-parallel linears
//! that close it.

use crate::plan::{Node, Op, TensorSplit};

/// Element-wise: a sharded input gives the output sharded alike.
pub(super) fn elementwise(op: &Op) -> bool {
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

pub(super) struct Graph<'a> {
    pub nodes: &'a [Node],
    pub readers: &'a [Vec<usize>],
    pub result: usize,
    /// Nodes whose split the user fixed (`tensor_split`): no region
    /// takes them in.
    pub pinned: &'a dyn Fn(usize) -> bool,
}

/// A sharded region: the column-parallel linears that open it, the
/// element-wise nodes inside, the row-parallel linears that close it.
#[derive(Default)]
pub(super) struct Region {
    pub columns: Vec<usize>,
    pub sharded: Vec<usize>,
    pub rows: Vec<usize>,
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
    pub fn region(
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
                } else if split[reader].is_none()
                    && !(self.pinned)(reader)
                    && elementwise(&nodes[reader].op)
                {
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
