//! Loading the plan's data source into tensors, the seeded train/valid split
//! and the stream of micro-batches, whose position can be saved and
//! restored for checkpoints.

use std::path::Path;
use std::sync::Arc;

use dtl_compiler::dataset::{self, Targets, TokenFile, TokenSplit};
use dtl_compiler::plan::{BadRows, DataPlan, DataSource, RowSlice};
use tch::{Kind, Tensor};

use crate::augment::Transforms;
use crate::error::{RunError, TorchContext};
use crate::images::{self, Images};
use dtl_compiler::util::rng::Rng;

/// Samples and their targets, on the CPU: a table in memory, or windows of
/// a memory-mapped token file read as they are asked for.
pub struct Dataset {
    source: Source,
    pub rows: usize,
    /// Normalisation of every row read; random crops and flips of the
    /// training rows (in [`Batches`]).
    transforms: Transforms,
}

enum Source {
    /// Features `[rows, *sample_shape]` (float32) and targets: class
    /// indices (int64) or real values (float32), `[rows, *target_shape]`.
    Table {
        features: Tensor,
        targets: Tensor,
    },
    Tokens(Windows),
    /// Images decoded as they are asked for.
    Images(Images),
}

/// Windows of a token file: row i starts at token `first + i × context`.
#[derive(Clone)]
struct Windows {
    file: Arc<TokenFile>,
    path: String,
    first: u64,
    context: u64,
    /// Ids must be below this (the classes the model scores).
    classes: i64,
}

impl Windows {
    /// The windows starting at tokens `starts`: inputs `[n, context]`
    /// (float32 ids) and targets `[n, context]` (the next tokens, int64).
    fn at(&self, starts: &[u64]) -> Result<(Tensor, Tensor), RunError> {
        let t = self.context as usize;
        let mut ids = vec![0f32; starts.len() * (t + 1)];
        for (k, &start) in starts.iter().enumerate() {
            self.file
                .read(start, &mut ids[k * (t + 1)..(k + 1) * (t + 1)]);
        }
        if let Some(at) = ids.iter().position(|&id| id as i64 >= self.classes) {
            let (k, j) = (at / (t + 1), at % (t + 1));
            return Err(RunError::Data {
                path: self.path.clone(),
                message: format!(
                    "token {} (at token {}) is not below the model's {} classes",
                    ids[at],
                    starts[k] + j as u64,
                    self.classes
                ),
            });
        }
        let ctx = || "arrange token windows".to_string();
        let all = Tensor::from_slice(&ids)
            .f_reshape([starts.len() as i64, t as i64 + 1])
            .context(ctx)?;
        let x = all
            .f_narrow(1, 0, t as i64)
            .context(ctx)?
            .f_contiguous()
            .context(ctx)?;
        let y = all
            .f_narrow(1, 1, t as i64)
            .and_then(|y| y.f_to_kind(Kind::Int64))
            .context(ctx)?;
        Ok((x, y))
    }
}

impl Dataset {
    fn shallow_clone(&self) -> Dataset {
        let source = match &self.source {
            Source::Table { features, targets } => Source::Table {
                features: features.shallow_clone(),
                targets: targets.shallow_clone(),
            },
            Source::Tokens(windows) => Source::Tokens(windows.clone()),
            Source::Images(images) => Source::Images(images.clone()),
        };
        Dataset {
            source,
            rows: self.rows,
            transforms: self.transforms.clone(),
        }
    }

    /// Rows `idx` (features, targets), normalised.
    pub fn rows_at(&self, idx: &[i64]) -> Result<(Tensor, Tensor), RunError> {
        let (x, y) = self.raw_rows_at(idx)?;
        Ok((self.transforms.normalize(x)?, y))
    }

    /// Rows `idx` (features, targets) before normalisation.
    fn raw_rows_at(&self, idx: &[i64]) -> Result<(Tensor, Tensor), RunError> {
        match &self.source {
            Source::Images(images) => images.at(idx),
            Source::Table { features, targets } => {
                let ctx = || "select batch".to_string();
                let idx = Tensor::from_slice(idx);
                let x = features.f_index_select(0, &idx).context(ctx)?;
                let y = targets.f_index_select(0, &idx).context(ctx)?;
                Ok((x, y))
            }
            Source::Tokens(windows) => {
                let starts: Vec<u64> = idx
                    .iter()
                    .map(|&i| windows.first + i as u64 * windows.context)
                    .collect();
                windows.at(&starts)
            }
        }
    }

    /// Rows `start .. start + len` (features, targets).
    pub fn range(&self, start: usize, len: usize) -> Result<(Tensor, Tensor), RunError> {
        match &self.source {
            Source::Table { features, targets } => {
                let ctx = || "select rows".to_string();
                let x = features
                    .f_narrow(0, start as i64, len as i64)
                    .context(ctx)?;
                let y = targets.f_narrow(0, start as i64, len as i64).context(ctx)?;
                Ok((self.transforms.normalize(x)?, y))
            }
            Source::Tokens(_) | Source::Images(_) => {
                let idx: Vec<i64> = (start as i64..(start + len) as i64).collect();
                self.rows_at(&idx)
            }
        }
    }

    /// Target values in all rows (a class label, or a real value, each).
    pub fn target_count(&self) -> usize {
        match &self.source {
            Source::Table { targets, .. } => targets.numel(),
            Source::Tokens(windows) => self.rows * windows.context as usize,
            Source::Images(_) => self.rows,
        }
    }

    /// For a token file read at random offsets: the largest offset a
    /// training window may start at.
    fn random_windows(&self) -> Option<(&Windows, u64)> {
        match &self.source {
            Source::Tokens(windows) => Some((
                windows,
                windows.first + (self.rows as u64 - 1) * windows.context,
            )),
            Source::Table { .. } | Source::Images(_) => None,
        }
    }
}

pub struct Split {
    pub train: Dataset,
    pub valid: Dataset,
    /// `test = <source>`: evaluated once after the last step.
    pub test: Option<Dataset>,
    /// Rows left out under `on_bad_row = skip`, by file (files that left
    /// none out are not listed).
    pub skipped: Vec<(String, dataset::Skipped)>,
}

/// Reads the data file, checks it against what the plan was compiled for
/// and splits it: the rows are shuffled with `seed` (unless `shuffle` is
/// off) and the last `valid_fraction` of them are held out. A token file
/// is mapped, not read: its last windows are held out.
pub fn load(plan: &DataPlan, seed: u64) -> Result<Split, RunError> {
    same_files(plan)?;
    let path = plan.source.path().to_string();
    let data_err = |message: String| RunError::Data {
        path: path.clone(),
        message,
    };
    if let DataSource::Tokens { dtype, context, .. } = &plan.source {
        let file = TokenFile::open(Path::new(&path), *dtype).map_err(data_err)?;
        let split = TokenSplit::new(file.len(), *context, |w| plan.held_out(w));
        if split.train_windows == 0 {
            return Err(data_err(format!(
                "{} tokens leave no window of {context} for training",
                file.len()
            )));
        }
        let windows = Windows {
            file: Arc::new(file),
            path: path.clone(),
            first: 0,
            context: *context,
            classes: plan.classes,
        };
        let valid = Windows {
            first: split.valid_start(0),
            ..windows.clone()
        };
        return Ok(Split {
            train: Dataset {
                source: Source::Tokens(windows),
                rows: split.train_windows as usize,
                transforms: Transforms::new(&plan.augment, seed),
            },
            valid: Dataset {
                source: Source::Tokens(valid),
                rows: split.valid_windows() as usize,
                transforms: Transforms::new(&plan.augment, seed),
            },
            skipped: Vec::new(),
            test: None,
        });
    }
    if let DataSource::Images { .. } = &plan.source {
        return load_images(plan, seed);
    }
    let skipped = std::cell::RefCell::new(Vec::new());
    let read = |source: &DataSource| -> Result<dataset::Table, RunError> {
        let mut table = read_source(plan, source)?;
        if table.skipped.rows > 0 {
            let left_out = std::mem::take(&mut table.skipped);
            skipped
                .borrow_mut()
                .push((source.path().to_string(), left_out));
        }
        Ok(table)
    };
    let table = read(&plan.source)?;
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
    // A held-out or test file: every row, in the file's order.
    let every_row = |source: &DataSource| -> Result<Dataset, RunError> {
        let table = read(source)?;
        let all: Vec<usize> = (0..table.rows).collect();
        take(plan, &table, &all, seed)
    };
    Ok(Split {
        train: take(plan, &table, train_idx, seed)?,
        valid: match &plan.valid_source {
            Some(source) => every_row(source)?,
            None => take(plan, &table, valid_idx, seed)?,
        },
        test: plan.test_source.as_ref().map(every_row).transpose()?,
        skipped: skipped.into_inner(),
    })
}

/// An image folder split as a table is (a seeded shuffle, the last
/// `valid_fraction` held out), or with every image of a held-out folder,
/// whose classes must be the training folder's.
fn load_images(plan: &DataPlan, seed: u64) -> Result<Split, RunError> {
    let skipped = std::cell::RefCell::new(Vec::new());
    let list = |source: &DataSource| -> Result<Arc<dataset::images::ImageFolder>, RunError> {
        let (folder, left_out) = images::list(source, plan.on_bad_row)?;
        if left_out.rows > 0 {
            skipped
                .borrow_mut()
                .push((source.path().to_string(), left_out));
        }
        Ok(Arc::new(folder))
    };
    let folder = list(&plan.source)?;
    let refuse = |path: &str, message: String| RunError::Data {
        path: path.to_string(),
        message,
    };
    if folder.classes.len() as i64 != plan.classes {
        return Err(refuse(
            plan.source.path(),
            format!(
                "{} class folders, but the plan was compiled for {}",
                folder.classes.len(),
                plan.classes
            ),
        ));
    }
    let dataset =
        |folder: &Arc<dataset::images::ImageFolder>, files: Vec<usize>, source: &DataSource| {
            let DataSource::Images { size, channels, .. } = source else {
                unreachable!("an image folder's held-out sources are image folders (checked)")
            };
            Dataset {
                rows: files.len(),
                source: Source::Images(Images {
                    folder: folder.clone(),
                    files: Arc::new(files),
                    channels: *channels,
                    size: *size,
                    scale: plan.scale,
                }),
                transforms: Transforms::new(&plan.augment, seed),
            }
        };
    let every_image = |source: &DataSource| -> Result<Dataset, RunError> {
        let other = list(source)?;
        if other.classes != folder.classes {
            return Err(refuse(
                source.path(),
                "its class folders are not the training folder's: class i must be the same folder name in both".into(),
            ));
        }
        Ok(dataset(&other, (0..other.files.len()).collect(), source))
    };
    let mut order: Vec<usize> = (0..folder.files.len()).collect();
    if plan.shuffle {
        Rng::new(seed).shuffle(&mut order);
    }
    let train_rows = order.len() - plan.held_out(order.len() as u64) as usize;
    if train_rows == 0 {
        return Err(refuse(
            plan.source.path(),
            "no images left for training after the validation split".into(),
        ));
    }
    let valid_idx = order.split_off(train_rows);
    Ok(Split {
        train: dataset(&folder, order, &plan.source),
        valid: match &plan.valid_source {
            Some(source) => every_image(source)?,
            None => dataset(&folder, valid_idx, &plan.source),
        },
        test: plan.test_source.as_ref().map(every_image).transpose()?,
        skipped: skipped.into_inner(),
    })
}

/// Every row of a table source, in the file's order (`dtl eval --data`).
pub fn load_every_row(plan: &DataPlan) -> Result<Dataset, RunError> {
    same_files(plan)?;
    let table = read_source(plan, &plan.source)?;
    let all: Vec<usize> = (0..table.rows).collect();
    take(plan, &table, &all, 0)
}

/// A table source of the plan's data read whole and checked against what
/// the plan was compiled for.
fn read_source(plan: &DataPlan, source: &DataSource) -> Result<dataset::Table, RunError> {
    let path = source.path().to_string();
    let data_err = |message: String| RunError::Data {
        path: path.clone(),
        message,
    };
    let limits = dataset::Limits {
        skip_bad_rows: plan.on_bad_row == BadRows::Skip,
        ..dataset::Limits::unbounded()
    };
    let table = dataset::load(source, plan.target, &limits).map_err(|e| RunError::Data {
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
    Ok(table)
}

/// The rows `idx` of `table` as a dataset: features scaled and shaped,
/// targets shaped.
fn take(
    plan: &DataPlan,
    table: &dataset::Table,
    idx: &[usize],
    seed: u64,
) -> Result<Dataset, RunError> {
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
        source: Source::Table {
            features,
            targets: targets.f_reshape(&target_shape).context(ctx)?,
        },
        rows: idx.len(),
        transforms: Transforms::new(&plan.augment, seed),
    })
}

/// Each of the source's files must be the one the plan was made with: a
/// file replaced or edited since (or another one at the same path, for a
/// run resumed from another folder) is refused, by name.
pub fn same_files(plan: &DataPlan) -> Result<(), RunError> {
    for file in &plan.files {
        let refuse = |message: String| RunError::Data {
            path: file.path.clone(),
            message,
        };
        let (bytes, hash) = dataset::read::fingerprint(Path::new(&file.path)).map_err(refuse)?;
        if bytes != file.bytes {
            return Err(refuse(format!(
                "changed since the plan was made: {} bytes then, {bytes} now; compile again (`dtl run FILE` does), or restore the file",
                file.bytes
            )));
        }
        if hash != file.sample_hash {
            return Err(refuse(
                "changed since the plan was made: the same size, other contents; compile again (`dtl run FILE` does), or restore the file".into(),
            ));
        }
    }
    Ok(())
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

/// An endless stream of micro-batches: this rank's slice of each global
/// micro-batch, as the plan's topology gives it (`rows`, of `global`
/// rows). Each epoch visits the rows in a new seeded order (if `shuffle`),
/// a global micro-batch at a time; the rows left over at the end of an
/// epoch, fewer than a global micro-batch, are skipped. The cursor is the
/// same on every rank.
///
/// A token file is read without an order: with `shuffle` each global
/// micro-batch is `global` windows at offsets drawn from the cursor's
/// generator (anywhere in the training tokens), otherwise the windows in
/// the file's order; an epoch is as many windows as the training part
/// holds.
pub struct Batches {
    data: Dataset,
    cursor: Cursor,
    /// This rank's rows of each global micro-batch.
    rows: std::ops::Range<usize>,
    /// Rows of a global micro-batch.
    global: usize,
    shuffle: bool,
}

impl Batches {
    pub fn new(
        data: &Dataset,
        rows: RowSlice,
        global: u64,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self, RunError> {
        let (first, count) = (rows.first as usize, rows.count as usize);
        if global as usize > data.rows || first + count > global as usize || count == 0 {
            return Err(RunError::Data {
                path: "the training split".into(),
                message: format!(
                    "a global micro-batch of {global} rows (this rank's {first}..{}) does not fit the {} training rows",
                    first + count,
                    data.rows
                ),
            });
        }
        let order = match data.source {
            Source::Table { .. } | Source::Images(_) => (0..data.rows as i64).collect(),
            Source::Tokens(_) => Vec::new(),
        };
        let mut batches = Batches {
            data: data.shallow_clone(),
            cursor: Cursor {
                order: Arc::new(order),
                pos: 0,
                epoch: 0,
                rng: Rng::new(seed.wrapping_add(1)).state(),
            },
            rows: first..first + count,
            global: global as usize,
            shuffle,
        };
        batches.start_epoch();
        Ok(batches)
    }

    /// Rows in the order an epoch visits (a token file has none).
    fn ordered(&self) -> usize {
        match self.data.source {
            Source::Table { .. } | Source::Images(_) => self.data.rows,
            Source::Tokens(_) => 0,
        }
    }

    /// Continues from a saved position.
    pub fn resume(&mut self, cursor: Cursor) -> Result<(), RunError> {
        if cursor.order.len() != self.ordered() || cursor.pos > self.data.rows {
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
        if self.shuffle && self.ordered() > 0 {
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
        let global = self.global;
        if self.cursor.pos + global > self.data.rows {
            self.start_epoch();
        }
        let mine = self.rows.clone();
        let batch = match self.data.random_windows() {
            Some((windows, last)) if self.shuffle => {
                let mut rng = Rng::from_state(self.cursor.rng);
                let starts: Vec<u64> = (0..global).map(|_| rng.below(last + 1)).collect();
                self.cursor.rng = rng.state();
                windows.at(&starts[mine])
            }
            _ if self.cursor.order.is_empty() => {
                let at = self.cursor.pos as i64;
                let idx: Vec<i64> = (at + mine.start as i64..at + mine.end as i64).collect();
                self.data.rows_at(&idx)
            }
            _ => {
                let at = self.cursor.pos;
                let (x, y) = self
                    .data
                    .raw_rows_at(&self.cursor.order[at + mine.start..at + mine.end])?;
                let transforms = &self.data.transforms;
                let x = transforms.randomize(&x, self.cursor.epoch, (at + mine.start) as u64)?;
                Ok((transforms.normalize(x)?, y))
            }
        };
        self.cursor.pos += global;
        batch
    }
}
