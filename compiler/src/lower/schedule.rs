//! Pipeline schedules: the order in which each stage runs the forward and
//! backward passes of a round's micro-batches, and each stage's program
//! with the receives before and the sends after them. The plan's
//! [`PipeOp`]s are the one representation of a schedule; the timeline
//! drawing and the runtime read the same ones.

use std::collections::BTreeSet;

use crate::plan::{PipeOp, PipelineSchedule, StagePlan, StageProgram};

/// The forward and backward passes ([`PipeOp::Forward`],
/// [`PipeOp::Backward`]) of each micro-batch, in the order stage `stage`
/// of `stages` runs them. 1F1B warms up with `stages − stage − 1` forwards,
/// then alternates, so at most `stages − stage` micro-batches are in flight.
pub fn stage_order(
    schedule: PipelineSchedule,
    stage: u64,
    stages: u64,
    micro_batches: u64,
) -> Vec<PipeOp> {
    let m = micro_batches;
    let forward = |micro_batch| PipeOp::Forward { micro_batch };
    let backward = |micro_batch| PipeOp::Backward { micro_batch };
    match schedule {
        PipelineSchedule::Gpipe => (0..m).map(forward).chain((0..m).map(backward)).collect(),
        PipelineSchedule::OneFOneB => {
            let warm = (stages - stage - 1).min(m);
            let mut order: Vec<PipeOp> = (0..warm).map(forward).collect();
            for i in 0..m - warm {
                order.push(forward(warm + i));
                order.push(backward(i));
            }
            order.extend((m - warm..m).map(backward));
            order
        }
    }
}

/// Each stage's program for one round of `micro_batches` micro-batches: the
/// schedule's forwards and backwards with the receives before and the sends
/// after them.
pub fn stage_programs(
    stages: &[StagePlan],
    schedule: PipelineSchedule,
    micro_batches: u64,
) -> Vec<StageProgram> {
    let count = stages.len() as u64;
    stages
        .iter()
        .map(|stage| {
            let s = stage.stage;
            // Stages this one reads from, and the stages that read it.
            let from: Vec<u64> = stages
                .iter()
                .filter(|other| other.sends.iter().any(|t| t.to_stage == s))
                .map(|other| other.stage)
                .collect();
            // Sends are listed per tensor; a stage is sent to once per piece.
            let to: Vec<u64> = stage
                .sends
                .iter()
                .map(|t| t.to_stage)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut ops = Vec::new();
            for pass in stage_order(schedule, s, count, micro_batches) {
                match pass {
                    PipeOp::Forward { micro_batch } => {
                        ops.extend(
                            from.iter()
                                .map(|&from| PipeOp::RecvActivations { micro_batch, from }),
                        );
                        ops.push(pass);
                        ops.extend(
                            to.iter()
                                .map(|&to| PipeOp::SendActivations { micro_batch, to }),
                        );
                    }
                    PipeOp::Backward { micro_batch } => {
                        ops.extend(
                            to.iter()
                                .map(|&from| PipeOp::RecvGradients { micro_batch, from }),
                        );
                        ops.push(pass);
                        ops.extend(
                            from.iter()
                                .map(|&to| PipeOp::SendGradients { micro_batch, to }),
                        );
                    }
                    other => unreachable!("stage_order gives passes only, not {other:?}"),
                }
            }
            StageProgram { stage: s, ops }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Transfer;

    fn transfer(node: &str, to_stage: u64) -> Transfer {
        Transfer {
            node: node.into(),
            index: 0,
            to_stage,
            shape: vec![],
            values_per_sample: 1,
        }
    }

    fn stage(stage: u64, sends: Vec<Transfer>) -> StagePlan {
        StagePlan {
            stage,
            first_node: 0,
            last_node: 0,
            parameters: 0,
            forward_flops: 0,
            sends,
        }
    }

    /// Stage 0's tensors go to stages 1, 2 and 1 again (a skip connection
    /// between two that go to the next stage): one send to each stage per
    /// piece, and one receive of gradients from each.
    #[test]
    fn a_stage_sends_to_each_later_stage_once_per_micro_batch() {
        let stages = vec![
            stage(
                0,
                vec![transfer("a", 1), transfer("b", 2), transfer("c", 1)],
            ),
            stage(1, vec![transfer("d", 2)]),
            stage(2, vec![]),
        ];
        let programs = stage_programs(&stages, PipelineSchedule::Gpipe, 1);
        assert_eq!(
            programs[0].ops,
            vec![
                PipeOp::Forward { micro_batch: 0 },
                PipeOp::SendActivations {
                    micro_batch: 0,
                    to: 1
                },
                PipeOp::SendActivations {
                    micro_batch: 0,
                    to: 2
                },
                PipeOp::RecvGradients {
                    micro_batch: 0,
                    from: 1
                },
                PipeOp::RecvGradients {
                    micro_batch: 0,
                    from: 2
                },
                PipeOp::Backward { micro_batch: 0 },
            ]
        );
        // Stage 2 hears from both earlier stages.
        assert_eq!(
            programs[2].ops[..2],
            [
                PipeOp::RecvActivations {
                    micro_batch: 0,
                    from: 0
                },
                PipeOp::RecvActivations {
                    micro_batch: 0,
                    from: 1
                },
            ]
        );
    }
}
