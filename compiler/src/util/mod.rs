//! Small helpers that more than one phase uses: "did you mean" suggestions
//! for names, and the seeded generator and hash behind every reproducible
//! stream (data order, initial weights, synthetic data, fuzzing).
//! Nothing here knows about the language or the plan.

pub mod glob;
pub mod mutate;
pub mod rng;
pub mod suggest;
pub mod time;
