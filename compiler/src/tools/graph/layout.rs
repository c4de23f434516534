//! Where the SVG picture of a model puts things: a layered drawing in the
//! manner of Sugiyama et al., simplified for what models mostly are, chains
//! with residual shortcuts.
//!
//! 1. Layers: a box sits one layer below the lowest of its inputs (the
//!    longest path from the input), so every edge points down.
//! 2. Lanes (`order`): an edge that skips layers runs down a lane, a narrow
//!    slot it holds in every layer it spans. It leaves its source sideways
//!    into a lane right beside it and enters its target the same way (from
//!    the left when it arrives from the left), so a plain chain stays
//!    straight and shortcuts run alongside it.
//! 3. Order within a layer (`order`): by the mean position of what feeds
//!    each item in the layer above (barycentre), boxes before lanes, then
//!    plan order.
//! 4. x (`position`): every item as close as it can get to the mean x of
//!    what it is joined to while items keep their order and their distance
//!    (weighted pool adjacent violators); a sweep down, one up, one down
//!    again, then lanes are straightened.
//! 5. y (here): rows top to bottom, with room for the captions of modules
//!    that open and the padding of modules that close, and a band for edge
//!    labels.
//!
//! `route` draws the edges and module boxes from the result.

use super::clusters::ancestors;
use super::order::order_layer;
use super::placement::{
    Kind, Placement, Rect, Slots, BAND, CAPTION_H, CLUSTER_PAD, DETAIL_FONT, LABEL_FONT, NODE_H,
    TITLE_FONT,
};
use super::position::{place_layer, straighten};
use super::{text_width, Graph};

const MIN_NODE_W: f64 = 150.0;

pub(super) fn place(graph: &Graph) -> Placement {
    let layer_of = layers(graph);
    let long: Vec<bool> = graph
        .edges
        .iter()
        .map(|e| layer_of[e.to] > layer_of[e.from] + 1)
        .collect();
    let width = box_width(graph);
    let mut p = Placement {
        layers: Vec::new(),
        long,
        row_y: Vec::new(),
        band_y: Vec::new(),
        height: 0.0,
        boxes: Vec::new(),
        box_at: vec![(0, 0); graph.boxes.len()],
        slots: vec![Slots::default(); graph.boxes.len()],
        layer_of,
    };
    let depth = p.layer_of.iter().copied().max().map_or(0, |d| d + 1);
    for l in 0..depth {
        let (items, slots) = order_layer(graph, &p, l, &width);
        for slot in slots {
            let b = slot.boxed;
            p.slots[b] = slot;
        }
        for (i, item) in items.iter().enumerate() {
            if let Kind::Box(b) = item.kind {
                p.box_at[b] = (l, i);
            }
        }
        p.layers.push(items);
        place_layer(graph, &mut p, l, l.checked_sub(1), true);
    }
    // One sweep up and one down again, so a box can also line up with what
    // it feeds, and shortcuts push their neighbours aside all along.
    for l in (0..depth.saturating_sub(1)).rev() {
        place_layer(graph, &mut p, l, Some(l + 1), false);
    }
    for l in 1..depth {
        place_layer(graph, &mut p, l, Some(l - 1), false);
    }
    straighten(graph, &mut p);
    rows(graph, &mut p);
    p.boxes = (0..graph.boxes.len())
        .map(|b| {
            let (l, i) = p.box_at[b];
            let item = &p.layers[l][i];
            Rect {
                x: item.x - item.left,
                y: p.row_y[l],
                w: item.left + item.right,
                h: NODE_H,
            }
        })
        .collect();
    p
}

/// Longest path from a box without inputs.
fn layers(graph: &Graph) -> Vec<usize> {
    let mut layer = vec![0usize; graph.boxes.len()];
    for to in 0..graph.boxes.len() {
        for e in graph.edges.iter().filter(|e| e.to == to && e.from < to) {
            layer[to] = layer[to].max(layer[e.from] + 1);
        }
    }
    layer
}

/// One width for all boxes: the widest label, and room below each box for
/// the label of the edge leaving it, right of its middle.
fn box_width(graph: &Graph) -> Vec<f64> {
    let widest_label = graph
        .edges
        .iter()
        .map(|e| text_width(&e.label, LABEL_FONT, false))
        .fold(0.0, f64::max);
    let widest_text = graph
        .boxes
        .iter()
        .filter(|b| !b.terminal)
        .map(|b| {
            let detail = b.detail.as_deref().unwrap_or("");
            text_width(&b.title, TITLE_FONT, true).max(text_width(detail, DETAIL_FONT, false))
        })
        .fold(0.0, f64::max);
    let node_w = MIN_NODE_W
        .max(widest_text + 24.0)
        .max(2.0 * (widest_label + 12.0));
    graph
        .boxes
        .iter()
        .map(|b| {
            if b.terminal {
                text_width(&b.title, TITLE_FONT, true) + 36.0
            } else {
                node_w
            }
        })
        .collect()
}

/// Row tops and label bands, with room for module captions and padding.
fn rows(graph: &Graph, p: &mut Placement) {
    let n = graph.clusters.len();
    let (mut first, mut last) = (vec![usize::MAX; n], vec![0; n]);
    for (b, gb) in graph.boxes.iter().enumerate() {
        for c in ancestors(&graph.clusters, gb.cluster) {
            first[c] = first[c].min(p.layer_of[b]);
            last[c] = last[c].max(p.layer_of[b]);
        }
    }
    let mut y = 0.0;
    for (l, items) in p.layers.iter().enumerate() {
        let count = |ends: &[usize]| {
            items
                .iter()
                .filter_map(|item| match item.kind {
                    Kind::Box(b) => Some(ancestors(&graph.clusters, graph.boxes[b].cluster)),
                    Kind::Lane(_) => None,
                })
                .map(|chain| chain.iter().filter(|&&c| ends[c] == l).count())
                .max()
                .unwrap_or(0) as f64
        };
        y += count(&first) * (CAPTION_H + CLUSTER_PAD);
        p.row_y.push(y);
        y += NODE_H + count(&last) * CLUSTER_PAD;
        p.band_y.push(y + BAND / 2.0);
        y += BAND;
    }
    p.height = y - BAND;
}
