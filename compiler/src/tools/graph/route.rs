//! Edge paths and module boxes for a placed model graph, in final
//! coordinates: the picture's content starts at x = 0, y = 0.
//!
//! An edge between neighbouring layers leaves the bottom of its source and
//! enters the top of its target (a straight line, or a cubic S-bend when the
//! two are not above each other). A long edge runs sideways out of its
//! source into its lane, down the lane, and sideways into its target; where
//! its lane moves between layers it bends in the label band.

use super::clusters::common;
use super::layout::place;
use super::placement::{Kind, Placement, Rect, CAPTION_H, CLUSTER_PAD, LABEL_FONT, LANE_W, NODE_H};
use super::{num, text_width, Graph};

/// Radius of the corners where a long edge turns into or out of its lane.
const CORNER: f64 = 8.0;
/// Distance between edges that share a side of a box.
const PORT: f64 = 10.0;
pub(super) const CAPTION_FONT: f64 = 10.0;

/// An edge's SVG path and where its label goes (text baseline).
pub(super) struct Route {
    pub path: String,
    pub label_x: f64,
    pub label_y: f64,
    /// The label ends at `label_x` (it is left of the edge) rather than
    /// starting there.
    pub label_end: bool,
}

pub(super) struct Drawing {
    pub width: f64,
    pub height: f64,
    pub boxes: Vec<Rect>,
    pub clusters: Vec<Rect>,
    /// One per graph edge, in the graph's order.
    pub routes: Vec<Route>,
}

pub(super) fn draw(graph: &Graph) -> Drawing {
    let mut p = place(graph);
    let mut clusters = cluster_rects(graph, &p);
    // Routes once to measure their labels, once more where they end up.
    let (left, right) = extent(graph, &p, &clusters, &routes(graph, &p));
    let dx = if left.is_finite() { -left } else { 0.0 };
    for item in p.layers.iter_mut().flatten() {
        item.x += dx;
    }
    for r in p.boxes.iter_mut().chain(clusters.iter_mut()) {
        r.x += dx;
    }
    Drawing {
        width: (right - left).max(0.0),
        height: p.height,
        routes: routes(graph, &p),
        boxes: p.boxes,
        clusters,
    }
}

fn routes(graph: &Graph, p: &Placement) -> Vec<Route> {
    (0..graph.edges.len())
        .map(|e| {
            if p.long[e] {
                long_route(graph, p, e)
            } else {
                short_route(graph, p, e)
            }
        })
        .collect()
}

/// Leftmost and rightmost x of anything drawn.
fn extent(graph: &Graph, p: &Placement, clusters: &[Rect], routes: &[Route]) -> (f64, f64) {
    let mut spans: Vec<(f64, f64)> = p
        .boxes
        .iter()
        .chain(clusters)
        .map(|r| (r.x, r.right()))
        .collect();
    spans.extend(
        p.layers
            .iter()
            .flatten()
            .map(|item| (item.x - item.left, item.x + item.right)),
    );
    for (route, edge) in routes.iter().zip(&graph.edges) {
        let w = text_width(&edge.label, LABEL_FONT, false);
        let x = route.label_x;
        spans.push(if route.label_end {
            (x - w, x)
        } else {
            (x, x + w)
        });
    }
    spans
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(a, b)| {
            (lo.min(a), hi.max(b))
        })
}

/// Ports spread `PORT` apart around `centre`, for `n` edges.
fn port(centre: f64, k: usize, n: usize) -> f64 {
    centre + (k as f64 - (n as f64 - 1.0) / 2.0) * PORT
}

/// Bottom of the source to the top of the target, one layer down.
fn short_route(graph: &Graph, p: &Placement, e: usize) -> Route {
    let edge = &graph.edges[e];
    let (from, to) = (p.boxes[edge.from], p.boxes[edge.to]);
    // Ports in the order of what is at the other end, so edges do not cross.
    let side = |mine: &dyn Fn(usize) -> bool, other: &dyn Fn(usize) -> usize| {
        let mut peers: Vec<usize> = (0..graph.edges.len())
            .filter(|&i| !p.long[i] && mine(i))
            .collect();
        peers.sort_by(|&a, &b| {
            let (xa, xb) = (p.boxes[other(a)].cx(), p.boxes[other(b)].cx());
            xa.total_cmp(&xb).then(a.cmp(&b))
        });
        let k = peers.iter().position(|&i| i == e).unwrap_or(0);
        (k, peers.len())
    };
    let (k, n) = side(&|i| graph.edges[i].from == edge.from, &|i| {
        graph.edges[i].to
    });
    let x1 = port(from.cx(), k, n);
    let (k, n) = side(&|i| graph.edges[i].to == edge.to, &|i| graph.edges[i].from);
    let x2 = port(to.cx(), k, n);
    let (y1, y2) = (from.bottom(), to.y);
    let path = if (x1 - x2).abs() < 0.05 {
        format!("M{},{} V{}", num(x1), num(y1), num(y2))
    } else {
        let ym = (y1 + y2) / 2.0;
        format!(
            "M{},{} C{},{} {},{} {},{}",
            num(x1),
            num(y1),
            num(x1),
            num(ym),
            num(x2),
            num(ym),
            num(x2),
            num(y2)
        )
    };
    // The label sits in the band between the rows, beside the edge and on
    // the side it bends away to.
    let band = p.band_y[p.layer_of[edge.from]];
    let x = s_bend_x(x1, y1, x2, y2, band);
    let label_end = x2 < x1 - 0.05;
    // Beside a bend the label sits just above the band's middle, where the
    // edge has not yet arrived; beside a straight edge, centred on it.
    let label_y = if (x1 - x2).abs() < 0.05 {
        band + 3.5
    } else {
        band - 2.0
    };
    Route {
        path,
        label_x: if label_end { x - 6.0 } else { x + 6.0 },
        label_y,
        label_end,
    }
}

/// x where the S-bend from (x1, y1) to (x2, y2), with both control points
/// at mid-height, crosses height `y`: y falls monotonically with the
/// Bézier parameter, so bisection finds it.
fn s_bend_x(x1: f64, y1: f64, x2: f64, y2: f64, y: f64) -> f64 {
    let ym = (y1 + y2) / 2.0;
    let at = |t: f64| {
        let u = 1.0 - t;
        let (b0, b1, b2, b3) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
        (
            x1 * (b0 + b1) + x2 * (b2 + b3),
            y1 * b0 + ym * (b1 + b2) + y2 * b3,
        )
    };
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if at(mid).1 < y {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at((lo + hi) / 2.0).0
}

/// Heights on the right side of a box with `n` lane slots beside it, top to
/// bottom: into slot 0, 1, …, n − 1, then out of slot n − 1, …, 0. Inner
/// lanes turn nearest the box's top and bottom, so no turn crosses a lane.
fn side_port(row: f64, slot: usize, n: usize, into: bool) -> f64 {
    let count = 2 * n;
    let step = (NODE_H - 12.0) / count.max(2) as f64;
    let step = step.min(8.0);
    let j = if into { slot } else { count - 1 - slot };
    row + NODE_H / 2.0 + (j as f64 - (count as f64 - 1.0) / 2.0) * step
}

/// Out of the source's right side, down its lane, into the target's side.
fn long_route(graph: &Graph, p: &Placement, e: usize) -> Route {
    let edge = &graph.edges[e];
    let (a, b) = (p.layer_of[edge.from], p.layer_of[edge.to]);
    let lane_x = |l: usize| p.lane_index(l, e).map_or(0.0, |i| p.layers[l][i].x);
    let slot = |lanes: &[Vec<usize>]| {
        let k = lanes.iter().position(|s| s.contains(&e));
        k.map(|k| (k, lanes.len()))
    };
    let (k, n) = slot(&p.slots[edge.from].right).unwrap_or((0, 1));
    let (sx, sy) = (
        p.boxes[edge.from].right(),
        side_port(p.row_y[a], k, n, false),
    );
    let x0 = lane_x(a);
    let r = CORNER.min(x0 - sx).max(0.0);
    let mut path = format!(
        "M{},{} H{} Q{},{} {},{}",
        num(sx),
        num(sy),
        num(x0 - r),
        num(x0),
        num(sy),
        num(x0),
        num(sy + r)
    );
    for l in a..b {
        let (x, next) = (lane_x(l), lane_x(l + 1));
        if (x - next).abs() >= 0.05 {
            let (y1, y2) = (p.row_y[l] + NODE_H, p.row_y[l + 1]);
            let ym = (y1 + y2) / 2.0;
            path += &format!(
                " V{} C{},{} {},{} {},{}",
                num(y1),
                num(x),
                num(ym),
                num(next),
                num(ym),
                num(next),
                num(y2)
            );
        }
    }
    // Into the target's left side when the lane runs left of it.
    let target = &p.boxes[edge.to];
    let x1 = lane_x(b);
    let ((k, n), tx, dir) = match slot(&p.slots[edge.to].left) {
        Some(left) => (left, target.x, 1.0),
        None => (
            slot(&p.slots[edge.to].right).unwrap_or((0, 1)),
            target.right(),
            -1.0,
        ),
    };
    let ty = side_port(p.row_y[b], k, n, true);
    let r = CORNER.min(ty - p.row_y[b]).min((x1 - tx).abs()).max(0.0);
    path += &format!(
        " V{} Q{},{} {},{} H{}",
        num(ty - r),
        num(x1),
        num(ty),
        num(x1 + dir * r),
        num(ty),
        num(tx)
    );
    let m = p.label_layer(graph, e);
    Route {
        path,
        label_x: lane_x(m) + LANE_W / 2.0 + 4.0,
        label_y: p.row_y[m] + NODE_H / 2.0 + 3.5,
        label_end: false,
    }
}

/// Module boxes around their boxes, their modules and the lanes of edges
/// that stay inside them, with a caption band on top. Inner modules come
/// later in the list, so one pass from the end finds children first.
fn cluster_rects(graph: &Graph, p: &Placement) -> Vec<Rect> {
    let mut rects = vec![
        Rect {
            x: 0.0,
            y: 0.0,
            w: 0.0,
            h: 0.0
        };
        graph.clusters.len()
    ];
    for c in (0..graph.clusters.len()).rev() {
        let cluster = &graph.clusters[c];
        let mut content: Vec<Rect> = cluster.nodes.iter().map(|&b| p.boxes[b]).collect();
        content.extend(cluster.children.iter().map(|&child| rects[child]));
        for (e, edge) in graph.edges.iter().enumerate() {
            let inside = common(
                &graph.clusters,
                graph.boxes[edge.from].cluster,
                graph.boxes[edge.to].cluster,
            );
            if !p.long[e] || inside != Some(c) {
                continue;
            }
            let (y0, y1) = (p.boxes[edge.from].cy(), p.boxes[edge.to].cy());
            for items in &p.layers {
                for item in items {
                    if matches!(&item.kind, Kind::Lane(edges) if edges.contains(&e)) {
                        let (x, w) = (item.x - item.left, item.left + item.right);
                        content.push(Rect {
                            x,
                            y: y0,
                            w,
                            h: y1 - y0,
                        });
                    }
                }
            }
        }
        let x0 = content.iter().map(|r| r.x).fold(f64::INFINITY, f64::min);
        let y0 = content.iter().map(|r| r.y).fold(f64::INFINITY, f64::min);
        let x1 = content
            .iter()
            .map(Rect::right)
            .fold(f64::NEG_INFINITY, f64::max);
        let y1 = content
            .iter()
            .map(Rect::bottom)
            .fold(f64::NEG_INFINITY, f64::max);
        let caption = text_width(&cluster.path, CAPTION_FONT, false) + 16.0;
        rects[c] = Rect {
            x: x0 - CLUSTER_PAD,
            y: y0 - CLUSTER_PAD - CAPTION_H,
            w: (x1 - x0 + 2.0 * CLUSTER_PAD).max(caption),
            h: y1 - y0 + 2.0 * CLUSTER_PAD + CAPTION_H,
        };
    }
    rects
}
