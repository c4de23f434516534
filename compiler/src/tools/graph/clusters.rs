//! Module clusters: node names are module paths (`2.0.norm1` is the layer
//! `norm1` of module `2.0`, itself inside module `2`), so every proper prefix
//! of a name is a module that encloses the node.

use crate::plan::ModelPlan;

/// One module: the nodes and modules directly inside it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Cluster {
    /// Dotted module path, e.g. `2.0`.
    pub path: String,
    pub parent: Option<usize>,
    /// 1 for a top-level module, 2 inside that, …
    pub depth: usize,
    /// Nodes whose innermost module this is, in node order.
    pub nodes: Vec<usize>,
    /// Modules directly inside, in order of first appearance.
    pub children: Vec<usize>,
}

/// The model's modules in order of first appearance (a parent before its
/// children), and each node's innermost module.
pub(super) fn clusters(model: &ModelPlan) -> (Vec<Cluster>, Vec<Option<usize>>) {
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut cluster_of = Vec::with_capacity(model.nodes.len());
    for (i, node) in model.nodes.iter().enumerate() {
        let segments: Vec<&str> = node.name.split('.').collect();
        let mut parent: Option<usize> = None;
        for depth in 1..segments.len() {
            let path = segments[..depth].join(".");
            let found = clusters.iter().position(|c| c.path == path);
            let id = found.unwrap_or_else(|| {
                clusters.push(Cluster {
                    path,
                    parent,
                    depth,
                    nodes: Vec::new(),
                    children: Vec::new(),
                });
                let id = clusters.len() - 1;
                if let Some(p) = parent {
                    clusters[p].children.push(id);
                }
                id
            });
            parent = Some(id);
        }
        if let Some(c) = parent {
            clusters[c].nodes.push(i);
        }
        cluster_of.push(parent);
    }
    (clusters, cluster_of)
}

/// The modules enclosing `cluster`, innermost first, `cluster` included.
pub(super) fn ancestors(clusters: &[Cluster], cluster: Option<usize>) -> Vec<usize> {
    let mut chain = Vec::new();
    let mut at = cluster;
    while let Some(c) = at {
        chain.push(c);
        at = clusters[c].parent;
    }
    chain
}

/// The innermost module enclosing both `a` and `b`.
pub(super) fn common(clusters: &[Cluster], a: Option<usize>, b: Option<usize>) -> Option<usize> {
    let of_b = ancestors(clusters, b);
    ancestors(clusters, a)
        .into_iter()
        .find(|c| of_b.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Dim, Node, Op};

    fn model(names: &[&str]) -> ModelPlan {
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                name: name.to_string(),
                op: if i == 0 { Op::Input } else { Op::Relu },
                inputs: if i == 0 { vec![] } else { vec![i - 1] },
                output: vec![Dim::Symbol("B".into())],
            })
            .collect();
        ModelPlan {
            name: "M".into(),
            input: vec![],
            output: vec![],
            parameter_count: 0,
            parameters: vec![],
            buffers: vec![],
            nodes,
            result: names.len() - 1,
            blocks: vec![],
        }
    }

    #[test]
    fn module_paths_nest() {
        let m = model(&["input", "0", "2.0.norm1", "2.0.0", "2.1.norm1", "3"]);
        let (clusters, of) = clusters(&m);
        let paths: Vec<&str> = clusters.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["2", "2.0", "2.1"]);
        assert_eq!(of, [None, None, Some(1), Some(1), Some(2), None]);
        assert_eq!(clusters[0].children, [1, 2]);
        assert_eq!((clusters[1].parent, clusters[1].depth), (Some(0), 2));
        assert_eq!(clusters[1].nodes, [2, 3]);
        assert_eq!(ancestors(&clusters, Some(2)), [2, 0]);
        assert_eq!(common(&clusters, Some(1), Some(2)), Some(0));
        assert_eq!(common(&clusters, Some(1), None), None);
    }
}
