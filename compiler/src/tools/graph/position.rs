//! Step 4 of the layout: the x of every box and lane, layer by layer, with
//! the order fixed.

use super::clusters::{ancestors, common, Cluster};
use super::placement::{Item, Kind, Placement, CLUSTER_PAD};
use super::Graph;

/// Between a box and its neighbour in a layer.
const BOX_GAP: f64 = 28.0;
/// Between two lanes.
const LANE_GAP: f64 = 10.0;
/// Boxes are pinned this much harder than lanes beside them when both want
/// a place.
const BOX_WEIGHT: f64 = 1000.0;

/// Moves each long edge's lanes right towards its rightmost one, as far as
/// their right neighbours allow, so lanes bend only where they must. Lanes
/// are light: the top-down pass lets boxes push them aside layer by layer.
pub(super) fn straighten(graph: &Graph, p: &mut Placement) {
    for e in (0..graph.edges.len()).filter(|&e| p.long[e]) {
        let at: Vec<(usize, usize)> = (0..p.layers.len())
            .filter_map(|l| p.lane_index(l, e).map(|i| (l, i)))
            .collect();
        let goal = at
            .iter()
            .map(|&(l, i)| p.layers[l][i].x)
            .fold(f64::NEG_INFINITY, f64::max);
        for (l, i) in at {
            let items = &p.layers[l];
            let room = items.get(i + 1).map_or(f64::INFINITY, |next| {
                next.x - separation(&graph.clusters, &items[i], next)
            });
            let x = goal.min(room).max(items[i].x);
            p.layers[l][i].x = x;
        }
    }
}

/// Least distance between the anchors of neighbours `a` and `b`: their
/// extents, a gap, and the padding of every module one of them is in and
/// the other is not.
fn separation(clusters: &[Cluster], a: &Item, b: &Item) -> f64 {
    let both_lanes = matches!((&a.kind, &b.kind), (Kind::Lane(_), Kind::Lane(_)));
    let gap = if both_lanes { LANE_GAP } else { BOX_GAP };
    let shared = ancestors(clusters, common(clusters, a.cluster, b.cluster)).len();
    let own = ancestors(clusters, a.cluster).len() + ancestors(clusters, b.cluster).len();
    a.right + gap + CLUSTER_PAD * (own - 2 * shared) as f64 + b.left
}

/// x of every item of layer `l`, whose order is fixed: each as near as it
/// can get to the mean x of what it is joined to in layer `toward` (the one
/// above or below). The first pass packs items joined to nothing against
/// their left neighbour; later passes leave them where they are.
pub(super) fn place_layer(
    graph: &Graph,
    p: &mut Placement,
    l: usize,
    toward: Option<usize>,
    first: bool,
) {
    let items = &p.layers[l];
    let near = |e: usize| -> Option<f64> {
        let n = toward?;
        p.lane_index(n, e).map(|i| p.layers[n][i].x)
    };
    let sep: Vec<f64> = items
        .windows(2)
        .map(|w| separation(&graph.clusters, &w[0], &w[1]))
        .collect();
    let mut desired = Vec::with_capacity(items.len());
    let mut weight = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let want = match &item.kind {
            Kind::Box(b) => {
                let mut direct = Vec::new();
                let mut lanes = Vec::new();
                for (e, edge) in graph.edges.iter().enumerate() {
                    let other = match (edge.from == *b, edge.to == *b) {
                        (true, false) => edge.to,
                        (false, true) => edge.from,
                        _ => continue,
                    };
                    if p.long[e] {
                        lanes.extend(near(e));
                    } else if Some(p.layer_of[other]) == toward {
                        let (ol, k) = p.box_at[other];
                        direct.push(p.layers[ol][k].x);
                    }
                }
                let from = if direct.is_empty() { lanes } else { direct };
                (!from.is_empty()).then(|| from.iter().sum::<f64>() / from.len() as f64)
            }
            Kind::Lane(edges) => edges.iter().find_map(|&e| near(e)),
        };
        let fallback = match (first, i) {
            (false, _) => item.x,
            (true, 0) => 0.0,
            (true, _) => desired[i - 1] + sep[i - 1],
        };
        desired.push(want.unwrap_or(fallback));
        // Boxes and lanes between their edge's ends hold their places equally
        // hard; lanes beside a box give way to it.
        let passing = match &item.kind {
            Kind::Box(_) => true,
            Kind::Lane(edges) => edges.iter().all(|&e| {
                let (from, to) = (graph.edges[e].from, graph.edges[e].to);
                p.layer_of[from] != l && p.layer_of[to] != l
            }),
        };
        weight.push(if passing { BOX_WEIGHT } else { 1.0 });
    }
    let x = pool_adjacent_violators(&desired, &weight, &sep);
    for (item, x) in p.layers[l].iter_mut().zip(x) {
        item.x = x;
    }
}

/// Positions minimising Σ weight·(x − desired)² subject to
/// `x[i + 1] − x[i] ≥ sep[i]`: isotonic regression on `desired − offset`.
fn pool_adjacent_violators(desired: &[f64], weight: &[f64], sep: &[f64]) -> Vec<f64> {
    let mut offset = vec![0.0; desired.len()];
    for i in 1..desired.len() {
        offset[i] = offset[i - 1] + sep[i - 1];
    }
    // (Σ w·t, Σ w, members)
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for i in 0..desired.len() {
        blocks.push((weight[i] * (desired[i] - offset[i]), weight[i], 1));
        while let [.., (s1, w1, n1), (s2, w2, n2)] = blocks[..] {
            if s1 / w1 <= s2 / w2 {
                break;
            }
            blocks.pop();
            *blocks.last_mut().expect("two blocks") = (s1 + s2, w1 + w2, n1 + n2);
        }
    }
    let mut x = Vec::with_capacity(desired.len());
    for (s, w, n) in blocks {
        for _ in 0..n {
            x.push(s / w + offset[x.len()]);
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::pool_adjacent_violators;

    #[test]
    fn pooling_keeps_order_and_distance() {
        // Two boxes that both want x = 0 end up centred on it.
        assert_eq!(
            pool_adjacent_violators(&[0.0, 0.0], &[1.0, 1.0], &[10.0]),
            [-5.0, 5.0]
        );
        // Nothing to resolve: every item keeps its wish.
        assert_eq!(
            pool_adjacent_violators(&[0.0, 50.0], &[1.0, 1.0], &[10.0]),
            [0.0, 50.0]
        );
        // A heavy box stays; the light lane moves out of its way.
        let x = pool_adjacent_violators(&[0.0, 5.0], &[1000.0, 1.0], &[10.0]);
        assert!(x[0].abs() < 0.01 && (x[1] - x[0] - 10.0).abs() < 1e-9);
    }
}
