//! The held-out evaluation: the mean loss (and accuracy) over the rows the
//! data split held out, dropout off, in chunks; through the stages of
//! replica 0 when the model is cut into stages.

use dtl_compiler::records::EvalRecord;
use tch::Reduction;

use super::Executor;
use crate::comm::ReduceOp;
use crate::error::{RunError, TorchContext};
use crate::loss;

impl Executor<'_> {
    /// Mean loss (and accuracy) over the held-out rows, dropout off, in
    /// chunks of [`eval_chunk`] rows.
    /// `progress` is called after every chunk.
    pub fn evaluate(&self, step: u64, progress: &dyn Fn()) -> Result<EvalRecord, RunError> {
        if self.stage.is_some() {
            return self.evaluate_pipelined(step, progress);
        }
        let rows = self.valid.rows;
        let kind = &self.plan.train.loss;
        if rows == 0 {
            return Ok(EvalRecord {
                step,
                eval_loss: f64::NAN,
                eval_accuracy: None,
                eval_rows: 0,
            });
        }
        let ctx = || format!("step {step}: evaluation");
        tch::no_grad(|| {
            let (mut loss_sum, mut correct) = (0.0, None::<i64>);
            let chunk = eval_chunk(&self.plan.model.output);
            let mut start = 0i64;
            while start < rows as i64 {
                let len = chunk.min(rows as i64 - start);
                let (x, y) = self.valid.range(start as usize, len as usize)?;
                let x = x.f_to_device(self.device).context(ctx)?;
                let y = y.f_to_device(self.device).context(ctx)?;
                let output = self.model.forward(&x, false)?;
                let sum = loss::loss(kind, &output, &y, Reduction::Sum).context(ctx)?;
                loss_sum += sum.f_double_value(&[]).context(ctx)?;
                if let Some(hits) = loss::correct(kind, &output, &y).context(ctx)? {
                    correct = Some(correct.unwrap_or(0) + hits);
                }
                start += len;
                progress();
            }
            let targets = self.valid.target_count() as f64;
            Ok(EvalRecord {
                step,
                eval_loss: loss_sum / targets,
                eval_accuracy: correct.map(|c| c as f64 / targets),
                eval_rows: rows,
            })
        })
    }

    /// The held-out evaluation through the stages of replica 0: the last
    /// stage's sums, shared with every stage.
    fn evaluate_pipelined(&self, step: u64, progress: &dyn Fn()) -> Result<EvalRecord, RunError> {
        let stage = self.stage.as_ref().expect("a pipeline stage");
        let rows = self.valid.rows;
        let kind = &self.plan.train.loss;
        let ctx = || format!("step {step}: evaluation");
        let (mut loss_sum, mut correct, mut counted) = (0.0, 0.0, 0.0);
        let chunk = eval_chunk(&self.plan.model.output);
        let mut start = 0i64;
        while start < rows as i64 {
            let len = chunk.min(rows as i64 - start);
            let (x, y) = self.valid.range(start as usize, len as usize)?;
            let x = x.f_to_device(self.device).context(ctx)?;
            let y = y.f_to_device(self.device).context(ctx)?;
            let pipeline = self.world.pipeline.as_ref();
            let (sum, hits) = stage.evaluate(&x, &y, &self.model, kind, pipeline, step)?;
            loss_sum += sum;
            if let Some(hits) = hits {
                correct += hits as f64;
                counted = 1.0;
            }
            start += len;
            progress();
        }
        let mut sums = [loss_sum, correct, counted];
        self.world
            .pipeline
            .all_reduce_host(&mut sums, ReduceOp::Sum)
            .map_err(|e| RunError::Collective { step, message: e.0 })?;
        let targets = self.valid.target_count().max(1) as f64;
        Ok(EvalRecord {
            step,
            eval_loss: if rows == 0 {
                f64::NAN
            } else {
                sums[0] / targets
            },
            eval_accuracy: (sums[2] > 0.0).then(|| sums[1] / targets),
            eval_rows: rows,
        })
    }
}

/// Held-out rows evaluated at once: up to 1024, fewer when the model's
/// output per row is large (a language model's scores for every token),
/// so that a chunk's output stays under 2^24 values.
fn eval_chunk(output: &[dtl_compiler::plan::Dim]) -> i64 {
    let per_row = dtl_compiler::lower::cost::numel(output).max(1);
    ((1u64 << 24) / per_row).clamp(1, 1024) as i64
}
