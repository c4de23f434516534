//! Loading the plan's data source into tensors, the seeded train/valid split
//! and the stream of micro-batches.

use dtl_compiler::dataset;
use dtl_compiler::plan::{DataPlan, DataSource};
use tch::{Device, Kind, Tensor};

use crate::error::{RunError, TorchContext};
use crate::rng::Rng;

/// Samples and their class labels, on the CPU.
pub struct Dataset {
    pub features: Tensor,
    pub labels: Tensor,
    pub rows: usize,
}

pub struct Split {
    pub train: Dataset,
    pub valid: Dataset,
}

/// The file a data source is named by in messages.
fn source_name(source: &DataSource) -> String {
    match source {
        DataSource::Csv { path, .. } => path.clone(),
        DataSource::Npy { features, .. } => features.clone(),
        DataSource::Idx { images, .. } => images.clone(),
        DataSource::Synthetic { .. } => "synthetic data".into(),
    }
}

/// Reads the data file, checks it against what the plan was compiled for
/// and splits it: the rows are shuffled with `seed` and the last
/// `valid_fraction` of them are held out.
pub fn load(plan: &DataPlan, seed: u64) -> Result<Split, RunError> {
    let path = source_name(&plan.source);
    let data_err = |message: String| {
        let message = message
            .strip_prefix(&format!("{path}: "))
            .map(str::to_string)
            .unwrap_or(message);
        RunError::Data {
            path: path.clone(),
            message,
        }
    };
    let table = dataset::load(&plan.source).map_err(data_err)?;
    let expected: i64 = plan.sample_shape.iter().product();
    if table.feature_count as i64 != expected {
        return Err(data_err(format!(
            "rows have {} features, but the plan was compiled for {expected}",
            table.feature_count
        )));
    }
    if table.classes() > plan.classes {
        return Err(data_err(format!(
            "labels go up to {}, but the model has {} classes",
            table.classes() - 1,
            plan.classes
        )));
    }
    let mut order: Vec<usize> = (0..table.rows).collect();
    Rng::new(seed).shuffle(&mut order);
    let valid_rows = (table.rows as f64 * plan.valid_fraction).round() as usize;
    let train_rows = table.rows - valid_rows;
    if train_rows == 0 {
        return Err(data_err(
            "no rows left for training after the validation split".into(),
        ));
    }
    let (train_idx, valid_idx) = order.split_at(train_rows);
    let take = |idx: &[usize]| -> Result<Dataset, RunError> {
        let width = table.feature_count;
        let mut features = Vec::with_capacity(idx.len() * width);
        let mut labels = Vec::with_capacity(idx.len());
        for &row in idx {
            features.extend(
                table.features[row * width..(row + 1) * width]
                    .iter()
                    .map(|v| v * plan.scale as f32),
            );
            labels.push(table.labels[row]);
        }
        let mut shape = vec![idx.len() as i64];
        shape.extend(&plan.sample_shape);
        let features = Tensor::from_slice(&features)
            .f_reshape(&shape)
            .context(|| "reshape data".into())?;
        Ok(Dataset {
            features,
            labels: Tensor::from_slice(&labels),
            rows: idx.len(),
        })
    };
    Ok(Split {
        train: take(train_idx)?,
        valid: take(valid_idx)?,
    })
}

/// An endless stream of micro-batches of exactly `micro_batch` rows. Each
/// epoch visits the rows in a new seeded order (if `shuffle`); the rows left
/// over at the end of an epoch, fewer than a batch, are skipped.
pub struct Batches {
    order: Vec<i64>,
    pos: usize,
    micro_batch: usize,
    shuffle: bool,
    rng: Rng,
    pub epoch: u64,
}

impl Batches {
    pub fn new(rows: usize, micro_batch: u64, shuffle: bool, seed: u64) -> Result<Self, RunError> {
        if (micro_batch as usize) > rows {
            return Err(RunError::Data {
                path: "the training split".into(),
                message: format!(
                    "micro_batch {micro_batch} is larger than the {rows} training rows"
                ),
            });
        }
        let mut batches = Batches {
            order: (0..rows as i64).collect(),
            pos: 0,
            micro_batch: micro_batch as usize,
            shuffle,
            rng: Rng::new(seed.wrapping_add(1)),
            epoch: 0,
        };
        batches.start_epoch();
        Ok(batches)
    }

    fn start_epoch(&mut self) {
        if self.shuffle {
            self.rng.shuffle(&mut self.order);
        }
        self.pos = 0;
        self.epoch += 1;
    }

    pub fn next(&mut self, data: &Dataset, device: Device) -> Result<(Tensor, Tensor), RunError> {
        if self.pos + self.micro_batch > self.order.len() {
            self.start_epoch();
        }
        let idx = Tensor::from_slice(&self.order[self.pos..self.pos + self.micro_batch]);
        self.pos += self.micro_batch;
        let x = data
            .features
            .f_index_select(0, &idx)
            .context(|| "select batch".into())?;
        let y = data
            .labels
            .f_index_select(0, &idx)
            .context(|| "select batch".into())?;
        Ok((
            x.f_to_device(device).context(|| "move batch".into())?,
            y.f_to_kind(Kind::Int64)
                .and_then(|y| y.f_to_device(device))
                .context(|| "move batch".into())?,
        ))
    }
}
