//! Loading the plan's data source into tensors, the seeded train/valid split
//! and the stream of micro-batches, whose position can be saved and
//! restored for checkpoints.

use std::sync::Arc;

use dtl_compiler::dataset::{self, Targets};
use dtl_compiler::plan::DataPlan;
use tch::{Kind, Tensor};

use crate::error::{RunError, TorchContext};
use dtl_compiler::util::rng::Rng;

/// Samples and their targets, on the CPU: class indices (int64) or real
/// values (float32), `[rows, *target_shape]`.
pub struct Dataset {
    pub features: Tensor,
    pub targets: Tensor,
    pub rows: usize,
}

impl Dataset {
    fn shallow_clone(&self) -> Dataset {
        Dataset {
            features: self.features.shallow_clone(),
            targets: self.targets.shallow_clone(),
            rows: self.rows,
        }
    }
}

pub struct Split {
    pub train: Dataset,
    pub valid: Dataset,
}

/// Reads the data file, checks it against what the plan was compiled for
/// and splits it: the rows are shuffled with `seed` (unless `shuffle` is
/// off) and the last `valid_fraction` of them are held out.
pub fn load(plan: &DataPlan, seed: u64) -> Result<Split, RunError> {
    let path = plan.source.path().to_string();
    let data_err = |message: String| RunError::Data {
        path: path.clone(),
        message,
    };
    let table = dataset::load(&plan.source, plan.target).map_err(|e| RunError::Data {
        path: e.path,
        message: e.message,
    })?;
    let expected: i64 = plan.sample_shape.iter().product();
    if table.feature_count as i64 != expected {
        return Err(data_err(format!(
            "rows have {} features, but the plan was compiled for {expected}",
            table.feature_count
        )));
    }
    if table.targets.shape() != plan.target_shape.as_slice() {
        return Err(data_err(format!(
            "targets have shape {:?} per row, but the plan was compiled for {:?}",
            table.targets.shape(),
            plan.target_shape
        )));
    }
    if table.classes() > plan.classes {
        return Err(data_err(format!(
            "labels go up to {}, but the model has {} classes",
            table.classes() - 1,
            plan.classes
        )));
    }
    // The held-out rows are the last `valid_fraction` of the rows: of a
    // seeded shuffle, or of the file as it is when `shuffle = false`.
    let mut order: Vec<usize> = (0..table.rows).collect();
    if plan.shuffle {
        Rng::new(seed).shuffle(&mut order);
    }
    let valid_rows = plan.held_out(table.rows as u64) as usize;
    let train_rows = table.rows - valid_rows;
    if train_rows == 0 {
        return Err(data_err(
            "no rows left for training after the validation split".into(),
        ));
    }
    let (train_idx, valid_idx) = order.split_at(train_rows);
    let take = |idx: &[usize]| -> Result<Dataset, RunError> {
        let ctx = || "arrange the data".to_string();
        let mut shape = vec![idx.len() as i64];
        shape.extend(&plan.sample_shape);
        let features = Tensor::from_slice(&gather(&table.features, table.feature_count, idx))
            .f_mul_scalar(plan.scale)
            .and_then(|t| t.f_to_kind(Kind::Float))
            .and_then(|t| t.f_reshape(&shape))
            .context(ctx)?;
        let mut target_shape = vec![idx.len() as i64];
        target_shape.extend(&plan.target_shape);
        let per_row = plan.target_shape.iter().product::<i64>() as usize;
        let targets = match &table.targets {
            Targets::Classes { labels, .. } => Tensor::from_slice(&gather(labels, per_row, idx)),
            Targets::Values { values, .. } => Tensor::from_slice(&gather(values, per_row, idx)),
        };
        Ok(Dataset {
            features,
            targets: targets.f_reshape(&target_shape).context(ctx)?,
            rows: idx.len(),
        })
    };
    Ok(Split {
        train: take(train_idx)?,
        valid: take(valid_idx)?,
    })
}

/// The rows `idx` of a row-major table `width` values wide.
fn gather<T: Copy>(values: &[T], width: usize, idx: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(idx.len() * width);
    for &row in idx {
        out.extend_from_slice(&values[row * width..(row + 1) * width]);
    }
    out
}

/// Where the stream of micro-batches stands: the epoch's row order, the next
/// row, the epoch count and the shuffling generator. Saved in checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Shared with the batches in flight; copied when a new epoch reshuffles.
    pub order: Arc<Vec<i64>>,
    pub pos: usize,
    pub epoch: u64,
    pub rng: u64,
}

/// Which rows of every global micro-batch this process reads: replica
/// `replica` of `replicas` reads rows `replica·m .. (replica+1)·m` of each
/// `replicas·m` rows of the epoch's order, so the replicas together read
/// what one process with `micro_batch` `replicas·m` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub replica: u64,
    pub replicas: u64,
}

impl Shard {
    /// One process reads every row.
    pub fn whole() -> Shard {
        Shard {
            replica: 0,
            replicas: 1,
        }
    }
}

/// An endless stream of micro-batches of exactly `micro_batch` rows. Each
/// epoch visits the rows in a new seeded order (if `shuffle`), a global
/// micro-batch of `replicas × micro_batch` rows at a time, of which this
/// replica reads its part; the rows left over at the end of an epoch,
/// fewer than a global micro-batch, are skipped. The cursor is the same on
/// every replica.
pub struct Batches {
    data: Dataset,
    cursor: Cursor,
    micro_batch: usize,
    shard: Shard,
    shuffle: bool,
}

impl Batches {
    pub fn new(
        data: &Dataset,
        micro_batch: u64,
        shard: Shard,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self, RunError> {
        let global = micro_batch * shard.replicas;
        if (global as usize) > data.rows {
            return Err(RunError::Data {
                path: "the training split".into(),
                message: format!(
                    "{} replica(s) × micro_batch {micro_batch} is more than the {} training rows",
                    shard.replicas, data.rows
                ),
            });
        }
        let mut batches = Batches {
            data: data.shallow_clone(),
            cursor: Cursor {
                order: Arc::new((0..data.rows as i64).collect()),
                pos: 0,
                epoch: 0,
                rng: Rng::new(seed.wrapping_add(1)).state(),
            },
            micro_batch: micro_batch as usize,
            shard,
            shuffle,
        };
        batches.start_epoch();
        Ok(batches)
    }

    /// Continues from a saved position.
    pub fn resume(&mut self, cursor: Cursor) -> Result<(), RunError> {
        if cursor.order.len() != self.data.rows || cursor.pos > cursor.order.len() {
            return Err(RunError::Data {
                path: "the checkpoint".into(),
                message: format!(
                    "its data position ({} rows, row {}) does not fit the {} training rows",
                    cursor.order.len(),
                    cursor.pos,
                    self.data.rows
                ),
            });
        }
        self.cursor = cursor;
        Ok(())
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    fn start_epoch(&mut self) {
        if self.shuffle {
            let mut rng = Rng::from_state(self.cursor.rng);
            rng.shuffle(Arc::make_mut(&mut self.cursor.order).as_mut_slice());
            self.cursor.rng = rng.state();
        }
        self.cursor.pos = 0;
        self.cursor.epoch += 1;
    }

    /// The next micro-batch (features, targets), on the CPU: this
    /// replica's part of the next global micro-batch.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor), RunError> {
        let global = self.micro_batch * self.shard.replicas as usize;
        if self.cursor.pos + global > self.cursor.order.len() {
            self.start_epoch();
        }
        let start = self.cursor.pos + self.shard.replica as usize * self.micro_batch;
        let idx = Tensor::from_slice(&self.cursor.order[start..start + self.micro_batch]);
        self.cursor.pos += global;
        let ctx = || "select batch".to_string();
        let x = self.data.features.f_index_select(0, &idx).context(ctx)?;
        let y = self.data.targets.f_index_select(0, &idx).context(ctx)?;
        Ok((x, y))
    }
}
