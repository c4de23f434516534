//! What the plan's `recompute` makes of its model: the model's nodes cut
//! into pieces at its blocks' edges (derived from the plan, not part of
//! it), which explain and the runtime share.

use super::{Block, ModelPlan, Recompute};

/// A run of consecutive nodes `recompute` treats as one: a block, or the
/// nodes between two blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub first_node: usize,
    pub last_node: usize,
    /// Dropped after forward and recomputed in backward.
    pub recomputed: bool,
}

impl ModelPlan {
    /// Whether `mode` recomputes any piece of this model.
    pub fn recomputes(&self, mode: Recompute) -> bool {
        self.pieces(mode).iter().any(|p| p.recomputed)
    }

    /// The model's nodes cut at its blocks' edges, each piece marked as
    /// `mode` recomputes it. The piece that computes the model's output is
    /// never recomputed: backward would recompute it at once.
    pub fn pieces(&self, mode: Recompute) -> Vec<Piece> {
        let mut blocks: Vec<&Block> = self.blocks.iter().collect();
        blocks.sort_by_key(|b| b.first_node);
        let mut pieces = Vec::new();
        let mut next = 0;
        let mut push = |first: usize, last: usize, block: bool| {
            let wanted = match mode {
                Recompute::None => false,
                Recompute::Blocks => block,
                Recompute::All => true,
            };
            pieces.push(Piece {
                first_node: first,
                last_node: last,
                recomputed: wanted && !(first..=last).contains(&self.result),
            });
        };
        for block in blocks {
            if block.first_node < next || block.last_node >= self.nodes.len() {
                continue;
            }
            if block.first_node > next {
                push(next, block.first_node - 1, false);
            }
            push(block.first_node, block.last_node, true);
            next = block.last_node + 1;
        }
        if next < self.nodes.len() {
            push(next, self.nodes.len() - 1, false);
        }
        pieces
    }
}
