//! Pipeline schedules: which stage runs the forward or backward pass of which
//! micro-batch in which time slot. A backward pass is assumed to take as
//! long as a forward pass, one slot each.
//!
//! Each stage runs its passes in a fixed order (its program); a pass starts
//! in the first slot where its stage is free and its input exists: the
//! forward of micro-batch m on stage s needs the forward of m on stage s − 1,
//! its backward needs the backward of m on stage s + 1 (on the last stage,
//! its own forward). The two schedules differ only in the programs.

use crate::lower::schedule::stage_order;
pub use crate::plan::{PipeOp, PipelineSchedule};

/// What a stage does in one time slot: the plan's [`PipeOp::Forward`] or
/// [`PipeOp::Backward`] of a micro-batch (counted from 0).
pub type Slot = PipeOp;

/// The schedule per stage, per time slot (`None`: idle). Every row has the
/// same length: the step's total time, `2 · (micro_batches + stages − 1)`
/// slots for both schedules. Empty when there is nothing to run.
pub fn timeline(
    stages: u32,
    micro_batches: u32,
    schedule: PipelineSchedule,
) -> Vec<Vec<Option<Slot>>> {
    // One slot a pass, no time between the stages.
    let passes = timed(stages, micro_batches, schedule, |_, _| 1.0, |_| 0.0);
    let total = passes
        .iter()
        .filter_map(|row| row.last().map(|p| p.end as usize))
        .max()
        .unwrap_or(0);
    passes
        .iter()
        .map(|row| {
            let mut slots = vec![None; total];
            for p in row {
                slots[p.start as usize] = Some(p.op);
            }
            slots
        })
        .collect()
}

/// A pass a stage runs, from `start` to `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    pub op: Slot,
    pub start: f64,
    pub end: f64,
}

/// Each stage's passes in the order it runs them, timed: a pass of stage
/// `s` takes `took(s, pass)`, and a value (the activations forward, their
/// gradients back) reaches the next stage `delay(s)` after stage `s` or
/// `s + 1` finishes the pass that made it. A pass starts when its stage is
/// free and its input has arrived.
pub fn timed(
    stages: u32,
    micro_batches: u32,
    schedule: PipelineSchedule,
    took: impl Fn(usize, Slot) -> f64,
    delay: impl Fn(usize) -> f64,
) -> Vec<Vec<Timed>> {
    let (s_n, m_n) = (stages as usize, micro_batches as usize);
    if s_n == 0 || m_n == 0 {
        return vec![Vec::new(); s_n];
    }
    let programs: Vec<Vec<Slot>> = (0..stages)
        .map(|s| program(stages, micro_batches, s, schedule))
        .collect();
    // When each pass ended, once it has run.
    let mut forward_end = vec![vec![None::<f64>; m_n]; s_n];
    let mut backward_end = vec![vec![None::<f64>; m_n]; s_n];
    let mut next = vec![0usize; s_n];
    let mut free_at = vec![0.0f64; s_n];
    let mut rows: Vec<Vec<Timed>> = vec![Vec::new(); s_n];
    // Every pass waits on one other pass only, and the programs never wait
    // on each other in a cycle, so each sweep schedules at least one pass.
    while (0..s_n).any(|s| next[s] < programs[s].len()) {
        let mut progressed = false;
        for s in 0..s_n {
            let Some(&pass) = programs[s].get(next[s]) else {
                continue;
            };
            let ready = match pass {
                PipeOp::Forward { .. } if s == 0 => Some(0.0),
                PipeOp::Forward { micro_batch: m } => {
                    forward_end[s - 1][m as usize].map(|t| t + delay(s - 1))
                }
                PipeOp::Backward { micro_batch: m } if s + 1 == s_n => forward_end[s][m as usize],
                PipeOp::Backward { micro_batch: m } => {
                    backward_end[s + 1][m as usize].map(|t| t + delay(s))
                }
                transfer => unreachable!("a stage order holds passes only, not {transfer:?}"),
            };
            let Some(ready) = ready else { continue };
            let start = ready.max(free_at[s]);
            let end = start + took(s, pass);
            match pass {
                PipeOp::Forward { micro_batch: m } => forward_end[s][m as usize] = Some(end),
                PipeOp::Backward { micro_batch: m } => backward_end[s][m as usize] = Some(end),
                transfer => unreachable!("a stage order holds passes only, not {transfer:?}"),
            }
            rows[s].push(Timed {
                op: pass,
                start,
                end,
            });
            free_at[s] = end;
            next[s] += 1;
            progressed = true;
        }
        assert!(progressed, "pipeline programs deadlocked");
    }
    rows
}

/// The order in which stage `s` runs its passes: the plan's.
fn program(stages: u32, micro_batches: u32, s: u32, schedule: PipelineSchedule) -> Vec<Slot> {
    stage_order(schedule, s as u64, stages as u64, micro_batches as u64)
}

/// Most micro-batches whose forward has run and backward has not, per stage:
/// the activations a stage must hold at once.
pub(super) fn peak_in_flight(rows: &[Vec<Option<Slot>>]) -> Vec<u32> {
    rows.iter()
        .map(|row| {
            let (mut now, mut peak) = (0u32, 0u32);
            for slot in row.iter().flatten() {
                match slot {
                    PipeOp::Forward { .. } => now += 1,
                    PipeOp::Backward { .. } => now = now.saturating_sub(1),
                    transfer => unreachable!("a timeline holds passes only, not {transfer:?}"),
                }
                peak = peak.max(now);
            }
            peak
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::PipelineSchedule::{Gpipe, OneFOneB};
    use super::*;
    use crate::plan::parallel::bubble;

    #[allow(non_snake_case)]
    fn F(micro_batch: u32) -> Slot {
        PipeOp::Forward {
            micro_batch: micro_batch as u64,
        }
    }

    #[allow(non_snake_case)]
    fn B(micro_batch: u32) -> Slot {
        PipeOp::Backward {
            micro_batch: micro_batch as u64,
        }
    }

    const SIZES: [(u32, u32); 9] = [
        (1, 1),
        (1, 4),
        (2, 1),
        (2, 2),
        (2, 5),
        (3, 3),
        (4, 8),
        (4, 2),
        (6, 16),
    ];

    fn when(rows: &[Vec<Option<Slot>>], s: usize, pass: Slot) -> usize {
        let hits: Vec<usize> = (0..rows[s].len())
            .filter(|&t| rows[s][t] == Some(pass))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "stage {s} runs {pass:?} {} times",
            hits.len()
        );
        hits[0]
    }

    #[test]
    fn every_pass_runs_once_after_what_it_needs() {
        for (stages, mbs) in SIZES {
            for schedule in [Gpipe, OneFOneB] {
                let rows = timeline(stages, mbs, schedule);
                let s_n = stages as usize;
                assert_eq!(rows.len(), s_n);
                for (s, row) in rows.iter().enumerate() {
                    assert_eq!(
                        row.iter().flatten().count(),
                        2 * mbs as usize,
                        "{schedule:?} stage {s}"
                    );
                }
                for s in 0..s_n {
                    for m in 0..mbs {
                        let (f, b) = (when(&rows, s, F(m)), when(&rows, s, B(m)));
                        assert!(f < b, "{schedule:?} s={s} m={m}: backward before forward");
                        if s > 0 {
                            assert!(when(&rows, s - 1, F(m)) < f);
                        }
                        if s + 1 < s_n {
                            assert!(when(&rows, s + 1, B(m)) < b);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn both_schedules_take_the_same_time_and_idle_the_bubble() {
        for (stages, mbs) in SIZES {
            let total = 2 * (mbs + stages - 1) as usize;
            for schedule in [Gpipe, OneFOneB] {
                let rows = timeline(stages, mbs, schedule);
                assert!(
                    rows.iter().all(|r| r.len() == total),
                    "{schedule:?} {stages}×{mbs}"
                );
                let idle = rows.iter().flatten().filter(|s| s.is_none()).count();
                let (num, den) = bubble(stages as u64, mbs as u64);
                // idle / (stages · total) = (stages − 1) / (micro_batches + stages − 1)
                assert_eq!(idle * den as usize, num as usize * stages as usize * total);
            }
        }
    }

    #[test]
    fn one_f_one_b_holds_fewer_micro_batches() {
        for (stages, mbs) in SIZES {
            let gpipe = peak_in_flight(&timeline(stages, mbs, Gpipe));
            assert!(
                gpipe.iter().all(|&p| p == mbs),
                "Gpipe {stages}×{mbs}: {gpipe:?}"
            );
            let one_f = peak_in_flight(&timeline(stages, mbs, OneFOneB));
            for (s, &peak) in one_f.iter().enumerate() {
                assert!(
                    peak <= (stages - s as u32).min(mbs),
                    "1F1B {stages}×{mbs} stage {s}: {peak}"
                );
            }
        }
        assert_eq!(peak_in_flight(&timeline(4, 8, OneFOneB)), [4, 3, 2, 1]);
    }

    #[test]
    fn the_textbook_pictures() {
        let rows = timeline(2, 2, Gpipe);
        assert_eq!(
            rows[0],
            [Some(F(0)), Some(F(1)), None, None, Some(B(0)), Some(B(1))]
        );
        assert_eq!(
            rows[1],
            [None, Some(F(0)), Some(F(1)), Some(B(0)), Some(B(1)), None]
        );
        let rows = timeline(2, 2, OneFOneB);
        assert_eq!(
            rows[0],
            [Some(F(0)), Some(F(1)), None, Some(B(0)), None, Some(B(1))]
        );
        assert_eq!(
            rows[1],
            [None, Some(F(0)), Some(B(0)), Some(F(1)), Some(B(1)), None]
        );
    }

    #[test]
    fn nothing_to_run_is_empty() {
        assert!(timeline(0, 4, Gpipe).is_empty());
        assert_eq!(
            timeline(3, 0, OneFOneB),
            vec![Vec::<Option<Slot>>::new(); 3]
        );
    }
}
