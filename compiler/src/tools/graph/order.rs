//! Steps 2 and 3 of the layout: the lanes long edges hold, and the order of
//! boxes and lanes within each layer.

use super::clusters::common;
use super::placement::{Item, Kind, Placement, Slots, LABEL_FONT, LANE_W};
use super::{text_width, Graph};

/// The items of layer `l` in order, with their extents, and the lane slots
/// beside each of its boxes.
pub(super) fn order_layer(
    graph: &Graph,
    p: &Placement,
    l: usize,
    width: &[f64],
) -> (Vec<Item>, Vec<Slots>) {
    let prev = |e: usize| -> Option<f64> { p.lane_index(l.checked_sub(1)?, e).map(|i| i as f64) };
    let mut keyed: Vec<(f64, usize, usize, Item)> = Vec::new();
    for (b, gb) in graph
        .boxes
        .iter()
        .enumerate()
        .filter(|(b, _)| p.layer_of[*b] == l)
    {
        let feeds: Vec<f64> = graph
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.to == b && e.from < b)
            .filter_map(|(i, e)| {
                if p.long[i] {
                    prev(i)
                } else {
                    Some(p.box_at[e.from].1 as f64)
                }
            })
            .collect();
        let key = if feeds.is_empty() {
            0.0
        } else {
            feeds.iter().sum::<f64>() / feeds.len() as f64
        };
        let half = width[b] / 2.0;
        let item = Item {
            kind: Kind::Box(b),
            left: half,
            right: half,
            x: 0.0,
            cluster: gb.cluster,
        };
        keyed.push((key, 0, b, item));
    }
    for (e, edge) in graph.edges.iter().enumerate() {
        if p.long[e] && p.layer_of[edge.from] < l && l < p.layer_of[edge.to] {
            keyed.push((prev(e).unwrap_or(0.0), 1, e, lane(graph, p, l, vec![e])));
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut items = Vec::new();
    let mut all_slots = Vec::new();
    for (key, _, _, item) in keyed {
        let Kind::Box(b) = item.kind else {
            items.push(item);
            continue;
        };
        // A shortcut arriving from the left enters on the left.
        let from_left = |e: usize| prev(e).is_some_and(|i| i < key);
        let slots = slots_beside(graph, p, b, &from_left);
        items.extend(
            slots
                .left
                .iter()
                .rev()
                .map(|edges| lane(graph, p, l, edges.clone())),
        );
        items.push(item);
        items.extend(
            slots
                .right
                .iter()
                .map(|edges| lane(graph, p, l, edges.clone())),
        );
        all_slots.push(slots);
    }
    (items, all_slots)
}

/// Shortest spans innermost, so lanes nest instead of crossing.
fn slots_beside(
    graph: &Graph,
    p: &Placement,
    b: usize,
    from_left: &dyn Fn(usize) -> bool,
) -> Slots {
    let span = |e: usize| p.layer_of[graph.edges[e].to] - p.layer_of[graph.edges[e].from];
    let long = |e: &usize| p.long[*e];
    let mut into: Vec<usize> = (0..graph.edges.len())
        .filter(long)
        .filter(|&e| graph.edges[e].to == b)
        .collect();
    let mut out: Vec<usize> = (0..graph.edges.len())
        .filter(long)
        .filter(|&e| graph.edges[e].from == b)
        .collect();
    into.sort_by_key(|&e| (span(e), e));
    out.sort_by_key(|&e| (span(e), e));
    let (left, into): (Vec<usize>, Vec<usize>) = into.into_iter().partition(|&e| from_left(e));
    let right = (0..into.len().max(out.len()))
        .map(|k| into.get(k).into_iter().chain(out.get(k)).copied().collect())
        .collect();
    Slots {
        boxed: b,
        left: left.into_iter().map(|e| vec![e]).collect(),
        right,
    }
}

fn lane(graph: &Graph, p: &Placement, l: usize, edges: Vec<usize>) -> Item {
    let mut cluster = graph.boxes[graph.edges[edges[0]].from].cluster;
    for &e in &edges {
        for end in [graph.edges[e].from, graph.edges[e].to] {
            cluster = common(&graph.clusters, cluster, graph.boxes[end].cluster);
        }
    }
    let label = edges
        .iter()
        .filter(|&&e| p.label_layer(graph, e) == l)
        .map(|&e| 4.0 + text_width(&graph.edges[e].label, LABEL_FONT, false))
        .fold(0.0, f64::max);
    Item {
        kind: Kind::Lane(edges),
        left: LANE_W / 2.0,
        right: LANE_W / 2.0 + label,
        x: 0.0,
        cluster,
    }
}
