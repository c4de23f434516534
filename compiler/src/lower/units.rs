//! `shard = parameters` (ZeRO-3): the units whose parameters are gathered
//! together. The model is cut where `recompute` cuts it, at its blocks'
//! edges, and at the pipeline's stage edges; each piece with trainable
//! parameters is a unit. A parameter that nodes of several pieces of a
//! stage read (a tied embedding) goes to that stage's `root`, which stays
//! gathered from the first forward to the end of backward, as FSDP keeps
//! its root module's parameters (a pipeline never cuts a tied parameter's
//! readers apart). Frozen parameters are not sharded: they have no
//! gradient and no optimizer state.
//!
//! `unit_mb` makes units coarser: consecutive pieces of a stage join one
//! unit until it holds at least that many bytes of weights, so that a
//! model of many small blocks is gathered in fewer, larger collectives.
//! A joined unit is named by its first and last pieces (`1.0 to 1.3`).

use std::collections::BTreeMap;

use crate::plan::{ModelPlan, Piece, Recompute, ShardUnit, StagePlan, UnitParameter};

/// Bytes of a weight's value (float32).
const BYTES_PER_VALUE: u64 = 4;

/// The units of `model` cut into `stages`, each cut into `degree` equal
/// slices, stage by stage; consecutive pieces joined until a unit holds
/// `unit_bytes` of weights (0: a unit per piece).
pub(super) fn units(
    model: &ModelPlan,
    stages: &[StagePlan],
    degree: u64,
    unit_bytes: u64,
) -> Vec<ShardUnit> {
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
            stage_units(model, stage, &within, (degree, unit_bytes))
        })
        .collect()
}

/// The units of one stage, whose nodes `pieces` cut.
fn stage_units(
    model: &ModelPlan,
    stage: &StagePlan,
    pieces: &[Piece],
    (degree, unit_bytes): (u64, u64),
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
    let mut joined: Vec<Joined> = Vec::new();
    for (p, piece) in pieces.iter().enumerate() {
        let own: Vec<&str> = order
            .iter()
            .copied()
            .filter(|name| readers[name] == [p])
            .collect();
        if own.is_empty() {
            continue;
        }
        let name = piece_name(model, piece);
        let own_values: u64 = own.iter().map(|n| values[n]).sum();
        match joined.last_mut() {
            Some(j) if j.values * BYTES_PER_VALUE < unit_bytes => {
                j.last_node = piece.last_node;
                j.params.extend(own);
                j.values += own_values;
                j.names.push(name);
            }
            _ => joined.push(Joined {
                first_node: piece.first_node,
                last_node: piece.last_node,
                params: own,
                values: own_values,
                names: vec![name],
            }),
        }
    }
    for Joined {
        first_node,
        last_node,
        params,
        names,
        ..
    } in joined
    {
        let name = match &names[..] {
            [one] => one.clone(),
            [first, .., last] => format!("{first} to {last}"),
            [] => unreachable!("a unit has a piece"),
        };
        units.push(unit(name, first_node, last_node, params));
    }
    units
}

/// Consecutive pieces of a stage joined into one unit.
struct Joined<'a> {
    first_node: usize,
    last_node: usize,
    params: Vec<&'a str>,
    /// The parameters' values.
    values: u64,
    /// The pieces' names.
    names: Vec<String>,
}

/// A piece's name: its block's, its one node's, or its first and last
/// nodes'.
fn piece_name(model: &ModelPlan, piece: &Piece) -> String {
    match model
        .blocks
        .iter()
        .find(|b| b.first_node == piece.first_node)
    {
        Some(block) => block.name.clone(),
        None if piece.first_node == piece.last_node => model.nodes[piece.first_node].name.clone(),
        None => format!(
            "{}…{}",
            model.nodes[piece.first_node].name, model.nodes[piece.last_node].name
        ),
    }
}
