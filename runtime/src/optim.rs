//! Optimizers, written out with the update rules of PyTorch's `torch.optim`
//! (SGD, Adam, AdamW, single-tensor code path) so that a run can be compared
//! with PyTorch step for step and its state saved.

use dtl_compiler::plan::Optimizer as OptimizerPlan;
use tch::Tensor;

use crate::error::{InPlace, RunError, TorchContext};

pub struct Optimizer {
    plan: OptimizerPlan,
    /// Steps taken so far (Adam's bias correction counts from 1).
    step: u64,
    /// Per parameter: the momentum buffer (SGD) or first moment (Adam).
    first: Vec<Option<Tensor>>,
    /// Per parameter: Adam's second moment.
    second: Vec<Option<Tensor>>,
}

impl Optimizer {
    pub fn new(plan: &OptimizerPlan, params: usize) -> Self {
        Optimizer {
            plan: plan.clone(),
            step: 0,
            first: (0..params).map(|_| None).collect(),
            second: (0..params).map(|_| None).collect(),
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The state tensors, named `<parameter>.first` / `<parameter>.second`
    /// after the parameters they belong to (`names`, in parameter order).
    pub fn state(&self, names: &[&str]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            for (slot, buffers) in [("first", &self.first), ("second", &self.second)] {
                if let Some(t) = &buffers[i] {
                    out.push((format!("{name}.{slot}"), t.shallow_clone()));
                }
            }
        }
        out
    }

    /// Every state tensor that exists (momentum buffers, moments), sharing
    /// storage with the optimizer's: for averaging over replicas.
    pub fn state_tensors(&self) -> Vec<Tensor> {
        self.first
            .iter()
            .chain(&self.second)
            .flatten()
            .map(Tensor::shallow_clone)
            .collect()
    }

    /// Restores what [`Optimizer::state`] saved; a tensor missing from
    /// `saved` means the slot was empty.
    pub fn restore(
        &mut self,
        steps: u64,
        names: &[&str],
        saved: &std::collections::BTreeMap<String, Tensor>,
        device: tch::Device,
    ) -> Result<(), RunError> {
        self.step = steps;
        for (i, name) in names.iter().enumerate() {
            for (slot, buffers) in [("first", &mut self.first), ("second", &mut self.second)] {
                let key = format!("{name}.{slot}");
                buffers[i] = match saved.get(&key) {
                    Some(t) => Some(
                        t.f_to_device(device)
                            .context(|| format!("restore `{key}`"))?,
                    ),
                    None => None,
                };
            }
        }
        Ok(())
    }

    /// One update of every parameter from its `.grad()`, at learning rate `lr`.
    pub fn step<'a>(
        &mut self,
        params: impl Iterator<Item = &'a Tensor>,
        lr: f64,
    ) -> Result<(), RunError> {
        self.step += 1;
        let step = self.step;
        tch::no_grad(|| {
            for (i, param) in params.enumerate() {
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                let ctx = || format!("optimizer step {step}");
                let mut param = param.shallow_clone();
                match self.plan {
                    OptimizerPlan::Sgd {
                        momentum,
                        dampening,
                        nesterov,
                        weight_decay,
                        ..
                    } => {
                        let mut d_p = if weight_decay != 0.0 {
                            grad.f_add(&param.f_mul_scalar(weight_decay).context(ctx)?)
                                .context(ctx)?
                        } else {
                            grad.shallow_clone()
                        };
                        if momentum != 0.0 {
                            let buf = match self.first[i].take() {
                                None => d_p.f_detach().context(ctx)?.copy(),
                                Some(mut buf) => {
                                    buf.f_mul_scalar_(momentum).in_place(ctx)?;
                                    buf.f_add_(&d_p.f_mul_scalar(1.0 - dampening).context(ctx)?)
                                        .in_place(ctx)?;
                                    buf
                                }
                            };
                            d_p = if nesterov {
                                d_p.f_add(&buf.f_mul_scalar(momentum).context(ctx)?)
                                    .context(ctx)?
                            } else {
                                buf.shallow_clone()
                            };
                            self.first[i] = Some(buf);
                        }
                        param
                            .f_sub_(&d_p.f_mul_scalar(lr).context(ctx)?)
                            .in_place(ctx)?;
                    }
                    OptimizerPlan::Adam {
                        betas,
                        eps,
                        weight_decay,
                        ..
                    }
                    | OptimizerPlan::AdamW {
                        betas,
                        eps,
                        weight_decay,
                        ..
                    } => {
                        let decoupled = matches!(self.plan, OptimizerPlan::AdamW { .. });
                        let grad = if decoupled {
                            param.f_mul_scalar_(1.0 - lr * weight_decay).in_place(ctx)?;
                            grad.shallow_clone()
                        } else if weight_decay != 0.0 {
                            grad.f_add(&param.f_mul_scalar(weight_decay).context(ctx)?)
                                .context(ctx)?
                        } else {
                            grad.shallow_clone()
                        };
                        let m = self.first[i].get_or_insert_with(|| grad.zeros_like());
                        m.f_lerp_(&grad, 1.0 - betas[0]).in_place(ctx)?;
                        let v = self.second[i].get_or_insert_with(|| grad.zeros_like());
                        // PyTorch: v.mul_(β2).addcmul_(g, g, value=1 − β2), which
                        // rounds (value·g)·g; the same order here keeps the bits.
                        v.f_mul_scalar_(betas[1]).in_place(ctx)?;
                        {
                            // Dropped at once: a step holds at most two
                            // parameter-sized temporaries (denom and the
                            // scaled m below), in-place where the values
                            // allow it (the same bits either way).
                            let scaled = grad.f_mul_scalar(1.0 - betas[1]).context(ctx)?;
                            v.f_addcmul_(&scaled, &grad).in_place(ctx)?;
                        }
                        let bias1 = 1.0 - betas[0].powi(step as i32);
                        let bias2_sqrt = (1.0 - betas[1].powi(step as i32)).sqrt();
                        let step_size = lr / bias1;
                        let mut denom = v.f_sqrt().context(ctx)?;
                        denom.f_div_scalar_(bias2_sqrt).in_place(ctx)?;
                        denom.f_add_scalar_(eps).in_place(ctx)?;
                        // PyTorch: p.addcdiv_(m, denom, value=−step_size), which
                        // rounds (value·m)/denom.
                        let scaled = m.f_mul_scalar(-step_size).context(ctx)?;
                        param.f_addcdiv_(&scaled, &denom).in_place(ctx)?;
                    }
                }
            }
            Ok(())
        })
    }
}
