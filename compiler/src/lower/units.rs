//! `shard = parameters` (ZeRO-3): the units whose parameters are gathered
//! together. The model is cut where `recompute` cuts it, at its blocks'
//! edges, and at the pipeline's stage edges; each piece with trainable
//! parameters is a unit. A parameter that nodes of several pieces of a
//! stage read (a tied embedding) goes to that stage's `root`, which stays
//! gathered from the first forward to the end of backward, as FSDP keeps
//! its root module's parameters (a pipeline never cuts a tied parameter's
//! readers apart). Frozen parameters are not sharded: they have no
//! gradient and no optimizer state.

use std::collections::BTreeMap;

use crate::plan::{ModelPlan, Piece, Recompute, ShardUnit, StagePlan, UnitParameter};

/// The units of `model` cut into `stages`, each cut into `degree` equal
/// slices, stage by stage.
pub(super) fn units(model: &ModelPlan, stages: &[StagePlan], degree: u64) -> Vec<ShardUnit> {
    let pieces = model.pieces(Recompute::Blocks);
    stages
        .iter()
        .flat_map(|stage| {
            // The pieces cut at the stage's edges.
            let within: Vec<Piece> = pieces
                .iter()
                .filter(|p| p.last_node >= stage.first_node && p.first_node <= stage.last_node)
                .map(|p| Piece {
                    first_node: p.first_node.max(stage.first_node),
                    last_node: p.last_node.min(stage.last_node),
                    ..*p
                })
                .collect();
            stage_units(model, stage, &within, degree)
        })
        .collect()
}

/// The units of one stage, whose nodes `pieces` cut.
fn stage_units(
    model: &ModelPlan,
    stage: &StagePlan,
    pieces: &[Piece],
    degree: u64,
) -> Vec<ShardUnit> {
    let values: BTreeMap<&str, u64> = model
        .parameters
        .iter()
        .filter(|p| !p.frozen)
        .map(|p| (p.name.as_str(), p.shape.iter().product::<i64>() as u64))
        .collect();
    // Each parameter's pieces, in the order nodes first read it.
    let mut readers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (p, piece) in pieces.iter().enumerate() {
        for node in &model.nodes[piece.first_node..=piece.last_node] {
            for name in node.op.params() {
                if !values.contains_key(name) {
                    continue;
                }
                let of = readers.entry(name).or_default();
                if of.is_empty() {
                    order.push(name);
                }
                if !of.contains(&p) {
                    of.push(p);
                }
            }
        }
    }
    let unit = |name: String, first: usize, last: usize, params: Vec<&str>| {
        let mut offset = 0;
        let parameters: Vec<UnitParameter> = params
            .into_iter()
            .map(|p| {
                let n = values[p];
                offset += n;
                UnitParameter {
                    name: p.to_string(),
                    offset: offset - n,
                    values: n,
                }
            })
            .collect();
        ShardUnit {
            name,
            stage: stage.stage,
            first_node: first,
            last_node: last,
            parameters,
            slice: offset.div_ceil(degree.max(1)),
        }
    };
    let shared: Vec<&str> = order
        .iter()
        .copied()
        .filter(|p| readers[p].len() > 1)
        .collect();
    let mut units = Vec::new();
    if !shared.is_empty() {
        units.push(unit(
            "root".into(),
            stage.first_node,
            stage.last_node,
            shared,
        ));
    }
    for (p, piece) in pieces.iter().enumerate() {
        let own: Vec<&str> = order
            .iter()
            .copied()
            .filter(|name| readers[name] == [p])
            .collect();
        if own.is_empty() {
            continue;
        }
        let name = match model
            .blocks
            .iter()
            .find(|b| b.first_node == piece.first_node)
        {
            Some(block) => block.name.clone(),
            None if piece.first_node == piece.last_node => {
                model.nodes[piece.first_node].name.clone()
            }
            None => format!(
                "{}…{}",
                model.nodes[piece.first_node].name, model.nodes[piece.last_node].name
            ),
        };
        units.push(unit(name, piece.first_node, piece.last_node, own));
    }
    units
}
