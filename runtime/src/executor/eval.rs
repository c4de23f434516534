//! The held-out evaluation: the loss and the plan's metrics over the rows
//! the data split held out, dropout off, in chunks. Every rank takes part:
//! when the replicas hold the same weights each evaluates its share of the
//! rows, otherwise (local SGD between averages) replica 0 evaluates them
//! all; a pipelined replica evaluates through its stages. The sums are then
//! added up over every rank, so every rank knows the result (and decides
//! the same about the best weights and stopping early).

use dtl_compiler::plan::SyncMode;
use dtl_compiler::records::EvalRecord;

use tch::Tensor;

use super::Executor;
use crate::comm::ReduceOp;
use crate::data::Dataset;
use crate::error::{RunError, TorchContext};
use crate::metrics::{chunk_rows, over_rows, Measure};

impl Executor<'_> {
    /// The evaluation of the weights, and with `ema` of their average (its
    /// measures `ema_`-prefixed in the same record). `progress` is called
    /// after every chunk.
    pub fn evaluate(&mut self, step: u64, progress: &dyn Fn()) -> Result<EvalRecord, RunError> {
        let record = self.evaluate_whole(step, progress);
        self.free_units(step)?;
        record
    }

    /// `shard = parameters`: the units held through an evaluation go.
    fn free_units(&self, step: u64) -> Result<(), RunError> {
        match &self.units {
            Some(units) => units.free_all(step),
            None => Ok(()),
        }
    }

    fn evaluate_whole(&mut self, step: u64, progress: &dyn Fn()) -> Result<EvalRecord, RunError> {
        if self.broadcast_buffers && self.eval_shared(step) {
            // The replicas evaluate with replica 0's batch-norm statistics,
            // as they will train with them at the next step.
            self.broadcast_buffers(step)?;
        }
        let measure = Measure::new(self.plan);
        let mut record = self.measure(&measure, step, progress, "")?;
        if let Some(mut ema) = self.ema.take() {
            let swapped = ema.swap(&self.model);
            let averaged = swapped.and_then(|()| self.measure(&measure, step, progress, "ema_"));
            let back = ema.swap(&self.model);
            self.ema = Some(ema);
            back?;
            record.measures.0.extend(averaged?.measures.0);
        }
        Ok(record)
    }

    /// The evaluation of the test file (`test = <source>`), once, after the
    /// last step: the same measures as the held-out evaluation, over its
    /// every row. None without a test file.
    pub fn evaluate_test(
        &mut self,
        step: u64,
        progress: &dyn Fn(),
    ) -> Result<Option<EvalRecord>, RunError> {
        let Some(test) = self.test.take() else {
            return Ok(None);
        };
        if self.broadcast_buffers && self.eval_shared(step) {
            self.broadcast_buffers(step)?;
        }
        let measure = Measure::new(self.plan);
        let record = self.measure_on(&test, &measure, step, progress, "");
        self.free_units(step)?;
        self.test = Some(test);
        record.map(Some)
    }

    /// One evaluation of the weights the model holds now.
    fn measure(
        &self,
        measure: &Measure,
        step: u64,
        progress: &dyn Fn(),
        prefix: &str,
    ) -> Result<EvalRecord, RunError> {
        self.measure_on(&self.valid, measure, step, progress, prefix)
    }

    /// One evaluation over `rows` of the weights the model holds now.
    fn measure_on(
        &self,
        rows: &Dataset,
        measure: &Measure,
        step: u64,
        progress: &dyn Fn(),
        prefix: &str,
    ) -> Result<EvalRecord, RunError> {
        let group = self.world.shard_group();
        let pass = |x: &Tensor| match (&self.stage, &self.units) {
            (Some(stage), units) => {
                let mut around = |j, edge| match units {
                    Some(units) => units.around_node((j, edge), group, step),
                    None => Ok(()),
                };
                let (pipeline, tensor) = (self.world.pipeline.as_ref(), self.world.tensor.as_ref());
                stage.evaluate(x, &self.model, (pipeline, tensor, &mut around), step)
            }
            (None, Some(units)) => {
                let mut around = |j, edge| units.around_node((j, edge), group, step);
                self.model
                    .forward_with(x, false, &mut around, None)
                    .map(Some)
            }
            (None, None) => {
                let tensor = Some(self.world.tensor.as_ref());
                let mut around = |_, _| Ok(());
                self.model
                    .forward_with(x, false, &mut around, tensor)
                    .map(Some)
            }
        };
        // Scores split by vocabulary are measured whole.
        let tensor = Some(self.world.tensor.as_ref());
        let mut forward = |x: &Tensor| {
            pass(x)?
                .map(|y| self.model.whole_result(y, tensor))
                .transpose()
        };
        let (first, count) = self.eval_rows(rows.rows, step);
        let what = format!("step {step}: evaluation");
        let mut values = over_rows(
            &what,
            measure,
            (rows, first, count),
            &self.plan.model.output,
            self.device,
            &mut forward,
            progress,
        )?;
        if !self.plan.topology.units.is_empty() {
            // Each pass gathers the units: every replica runs as many (and
            // every stage, a stage without units too: the passes cross
            // the pipeline).
            let chunk = chunk_rows(&self.plan.model.output);
            let mut passes = [count.div_ceil(chunk) as f64];
            group
                .all_reduce_host(&mut passes, ReduceOp::Max)
                .map_err(|e| RunError::Collective { step, message: e.0 })?;
            let empty = rows.range(0, 1)?.0.f_narrow(0, 0, 0);
            let empty = empty
                .and_then(|x| x.f_to_device(self.device))
                .context(|| what.clone())?;
            for _ in count.div_ceil(chunk)..passes[0] as usize {
                tch::no_grad(|| forward(&empty))?;
            }
        }
        self.world
            .all
            .all_reduce_host(&mut values, ReduceOp::Sum)
            .map_err(|e| RunError::Collective { step, message: e.0 })?;
        Ok(measure.record(step, rows.rows, &values, prefix))
    }

    /// Whether the replicas share the held-out rows at `step`: they hold
    /// the same weights after every step when they average gradients
    /// (every step, or asynchronously: each applies the same averages), and
    /// under local SGD and DiLoCo after a meeting; never under streaming
    /// DiLoCo, whose groups always hold fragments of their own.
    fn eval_shared(&self, step: u64) -> bool {
        match self.plan.topology.parallelism.sync {
            SyncMode::Diloco {
                fragments, delay, ..
            } if fragments > 1 || delay > 0 => false,
            sync => sync
                .meets_every()
                .is_none_or(|period| step.is_multiple_of(period)),
        }
    }

    /// The first of `rows` evaluated rows this rank's replica evaluates, and
    /// how many: replica g of D takes rows [g·n/D, (g+1)·n/D) when the
    /// replicas share them, replica 0 takes every row otherwise.
    pub(super) fn eval_rows(&self, rows: usize, step: u64) -> (usize, usize) {
        let replica = self.world.place.replica as usize;
        if self.eval_shared(step) {
            let replicas = self.world.replicas.size();
            let (start, end) = (replica * rows / replicas, (replica + 1) * rows / replicas);
            (start, end - start)
        } else if replica == 0 {
            (0, rows)
        } else {
            (0, 0)
        }
    }
}
