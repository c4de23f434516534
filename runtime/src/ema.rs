//! The exponential moving average of the weights (`ema = 0.999` in
//! `train`), as `torch.optim.swa_utils.AveragedModel` keeps it with
//! `multi_avg_fn=get_ema_multi_avg_fn(decay)` and `use_buffers=True`: the
//! first update copies the weights and the buffers, every later one moves
//! the average towards them by `1 - decay` (`lerp`), after every optimizer
//! step. Each rank averages the tensors it holds (its stage's).

use tch::Tensor;

use crate::checkpoint::Named;
use crate::error::{RunError, TorchContext};
use crate::model::Model;

pub struct Ema {
    decay: f64,
    /// The average of the model's parameters, then of its buffers, in the
    /// model's order.
    average: Vec<Tensor>,
    /// Updates so far (AveragedModel's `n_averaged`).
    updates: u64,
    /// Which tensors are counters (batch norm's `num_batches_tracked`,
    /// int64 in PyTorch, whose average is cut to a whole number).
    counters: Vec<bool>,
}

impl Ema {
    /// An average not yet started: its first update copies.
    pub fn new(decay: f64, model: &Model) -> Result<Ema, RunError> {
        let average = tensors(model)
            .map(Tensor::f_detach_copy)
            .collect::<Result<_, _>>()
            .context(|| "set up the average of the weights".into())?;
        let counting: std::collections::BTreeSet<&str> = model
            .nodes()
            .iter()
            .filter_map(|n| match &n.op {
                dtl_compiler::plan::Op::BatchNorm {
                    num_batches_tracked,
                    ..
                } => Some(num_batches_tracked.as_str()),
                _ => None,
            })
            .collect();
        let counters = model
            .named()
            .iter()
            .map(|(name, _)| counting.contains(name.as_str()))
            .collect();
        Ok(Ema {
            decay,
            average,
            updates: 0,
            counters,
        })
    }

    /// Moves the average towards the model's weights now.
    pub fn update(&mut self, model: &Model) -> Result<(), RunError> {
        let ctx = || "update the average of the weights".to_string();
        let (decay, first) = (self.decay, self.updates == 0);
        tch::no_grad(|| -> Result<(), RunError> {
            let counters = self.counters.iter();
            for ((average, now), &counter) in
                self.average.iter_mut().zip(tensors(model)).zip(counters)
            {
                if first {
                    average.f_copy_(now).context(ctx)?;
                } else if counter || !average.is_floating_point() {
                    // Counters: PyTorch's `p_ema * decay + p * (1 - decay)`
                    // (in float32) copied back into the int64 tensor, which
                    // cuts it towards zero.
                    let mixed = (average.f_mul_scalar(decay).context(ctx)?)
                        .f_add(&now.f_mul_scalar(1.0 - decay).context(ctx)?)
                        .and_then(|m| m.f_trunc())
                        .context(ctx)?;
                    average.f_copy_(&mixed).context(ctx)?;
                } else {
                    let _ = average.f_lerp_(now, 1.0 - decay).context(ctx)?;
                }
            }
            Ok(())
        })?;
        self.updates += 1;
        Ok(())
    }

    /// How many updates the average has had.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The average, named as the model's tensors are.
    pub fn named(&self, model: &Model) -> Named {
        model
            .named()
            .into_iter()
            .zip(&self.average)
            .map(|((name, _), t)| (name, t.shallow_clone()))
            .collect()
    }

    /// A resumed run's average, from its checkpoint (after `updates`
    /// updates).
    pub fn restore(
        &mut self,
        saved: &std::collections::BTreeMap<String, Tensor>,
        model: &Model,
        updates: u64,
    ) -> Result<(), RunError> {
        for ((name, _), average) in model.named().iter().zip(&mut self.average) {
            let Some(tensor) = saved.get(name) else {
                return Err(RunError::Resume {
                    path: "checkpoint/state.safetensors".into(),
                    message: format!(
                        "the average of the weights (`ema`) has no `{name}`: the checkpoint was written without `ema`"
                    ),
                });
            };
            // Under `tensor = T` the checkpoint's average is whole: this
            // rank keeps its part.
            let tensor = match model.tensor_part() {
                Some(part) => part.local(name, tensor.shallow_clone())?,
                None => tensor.shallow_clone(),
            };
            tch::no_grad(|| average.f_copy_(&tensor))
                .context(|| format!("restore the average of `{name}`"))?;
        }
        self.updates = updates;
        Ok(())
    }

    /// Exchanges the model's weights with the average (a second call
    /// exchanges them back): the average is then evaluated as the model.
    pub fn swap(&mut self, model: &Model) -> Result<(), RunError> {
        let ctx = || "exchange the weights with their average".to_string();
        tch::no_grad(|| -> Result<(), RunError> {
            for (average, now) in self.average.iter_mut().zip(tensors(model)) {
                let held = now.f_detach_copy().context(ctx)?;
                now.shallow_clone().f_copy_(average).context(ctx)?;
                average.f_copy_(&held).context(ctx)?;
            }
            Ok(())
        })
    }
}

fn tensors(model: &Model) -> impl Iterator<Item = &Tensor> {
    model.all().map(|(_, t)| t)
}
