//! What the layout steps share: the sizes of the picture's parts, the
//! items of a layer (boxes and lanes), and the [`Placement`] the steps fill
//! in turn. It imports none of the steps, so `layout` can call `order` and
//! `position` while both read and write these types.

use super::Graph;

pub(super) const NODE_H: f64 = 36.0;
pub(super) const CLUSTER_PAD: f64 = 10.0;
pub(super) const CAPTION_H: f64 = 14.0;
pub(super) const LABEL_FONT: f64 = 10.0;
pub(super) const TITLE_FONT: f64 = 12.0;
pub(super) const DETAIL_FONT: f64 = 11.0;
pub(super) const LANE_W: f64 = 8.0;
/// The free band between rows that holds edge labels.
pub(super) const BAND: f64 = 30.0;

/// Top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }
    pub fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
    pub fn cy(&self) -> f64 {
        self.y + self.h / 2.0
    }
}

/// What a layer holds, left to right.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Box(usize),
    /// A lane and the long edges that use it here: in a layer between its
    /// ends one edge; beside a box, one edge into it (upper half) and one
    /// out of it (lower half) can share.
    Lane(Vec<usize>),
}

#[derive(Debug, Clone)]
pub(super) struct Item {
    pub kind: Kind,
    /// Extents left and right of `x`.
    pub left: f64,
    pub right: f64,
    pub x: f64,
    /// The module whose box must enclose this item.
    pub cluster: Option<usize>,
}

/// The placed picture, before edges are drawn.
pub(super) struct Placement {
    pub layer_of: Vec<usize>,
    pub layers: Vec<Vec<Item>>,
    /// Skips at least one layer.
    pub long: Vec<bool>,
    /// Row tops per layer.
    pub row_y: Vec<f64>,
    /// Middle of the label band below each row.
    pub band_y: Vec<f64>,
    pub height: f64,
    pub boxes: Vec<Rect>,
    /// `(layer, index)` of each box.
    pub box_at: Vec<(usize, usize)>,
    /// The lanes beside each box.
    pub slots: Vec<Slots>,
}

/// The lanes beside a box, innermost first: the long edges that end or
/// start at it turn between the box and these lanes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Slots {
    pub boxed: usize,
    /// Shortcuts into the box from the left, one per lane.
    pub left: Vec<Vec<usize>>,
    /// The k-th pairs the k-th other edge into the box (upper half of the
    /// lane) with the k-th edge out of it (lower half).
    pub right: Vec<Vec<usize>>,
}

impl Placement {
    /// Index in layer `l` of the lane that edge `e` holds there.
    pub fn lane_index(&self, l: usize, e: usize) -> Option<usize> {
        self.layers
            .get(l)?
            .iter()
            .position(|item| match &item.kind {
                Kind::Lane(edges) => edges.contains(&e),
                Kind::Box(_) => false,
            })
    }

    /// The layer where long edge `e` has its label: halfway down.
    pub fn label_layer(&self, graph: &Graph, e: usize) -> usize {
        let (a, b) = (
            self.layer_of[graph.edges[e].from],
            self.layer_of[graph.edges[e].to],
        );
        a + (b - a) / 2
    }
}
