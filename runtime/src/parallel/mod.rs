//! The parallel strategies, one module each, over the communicators of
//! [`crate::comm`] and the groups [`crate::world`] read from the plan:
//!
//! - [`data`]: data parallelism (gradient buckets all-reduced every step,
//!   in the background under `async`, or parameters averaged under local
//!   SGD);
//! - [`pipeline`]: a pipeline stage, its activations and gradients sent
//!   point to point in the plan's schedule;
//! - [`segments`]: a forward pass cut into segments, their backward one
//!   by one, and what `recompute` drops from forward and runs again;
//! - [`sync_norm`]: batch norm with statistics over every replica;
//! - [`gather`]: the whole model on rank 0, from the stages that hold it;
//! - [`shard`]: the optimizer state (and the gradients) split over the
//!   replicas (ZeRO-1 and 2, and the optimizer of ZeRO-3);
//! - [`units`]: the parameters split over the replicas too (ZeRO-3),
//!   gathered unit by unit around their forward and backward;
//!
//! and what several of them share: [`crate::flat`] buffers. A strategy reads its
//! layout from the plan and the world; it computes no rank itself. The
//! executor ([`crate::executor`]) decides which to run, from the step
//! program.

pub mod data;
pub mod diloco;
pub mod gather;
pub mod pipeline;
pub mod segments;
pub mod shard;
pub mod sync_norm;
pub mod units;
