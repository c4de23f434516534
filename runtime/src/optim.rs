//! Optimizers, written out with the update rules of PyTorch's `torch.optim`
//! (SGD, Adam, AdamW, Adafactor, single-tensor code path) and of Lion's
//! paper, so that a run can be compared with PyTorch step for step and its
//! state saved.

use dtl_compiler::plan::{Optimizer as OptimizerPlan, ParamGroup};
use tch::{TchError, Tensor};

use crate::error::{RunError, TorchContext};
use crate::torch_ops;

/// The names of the state slots, as a checkpoint names them.
pub const SLOTS: [&str; 2] = ["first", "second"];

pub struct Optimizer {
    plan: OptimizerPlan,
    /// Per parameter: the optimizer its group gives it (another weight
    /// decay) and the factor on the step's learning rate, for those in a
    /// `groups` entry.
    grouped: Vec<Option<(OptimizerPlan, f64)>>,
    /// Steps taken so far (Adam's bias correction counts from 1).
    step: u64,
    /// Per parameter: the momentum buffer (SGD) or first moment (Adam).
    first: Vec<Option<Tensor>>,
    /// Per parameter: Adam's second moment.
    second: Vec<Option<Tensor>>,
}

impl Optimizer {
    /// The optimizer of the parameters `names` (this rank's trainable
    /// ones, in order), with the plan's parameter groups.
    pub fn new(plan: &OptimizerPlan, names: &[&str], groups: &[ParamGroup]) -> Self {
        let params = names.len();
        let grouped = names
            .iter()
            .map(|name| {
                let group = groups
                    .iter()
                    .find(|g| g.parameters.iter().any(|p| p == name))?;
                let plan = match group.weight_decay {
                    Some(decay) => plan.with_weight_decay(decay),
                    None => plan.clone(),
                };
                Some((plan, group.lr_scale))
            })
            .collect();
        Optimizer {
            plan: plan.clone(),
            grouped,
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

    /// Restores what [`Optimizer::state`] saved: `saved(name, slot)` gives
    /// a parameter's saved slot, `None` when the slot was empty.
    pub fn restore(
        &mut self,
        steps: u64,
        names: &[&str],
        saved: impl Fn(&str, &str) -> Result<Option<Tensor>, RunError>,
        device: tch::Device,
    ) -> Result<(), RunError> {
        self.step = steps;
        for (i, name) in names.iter().enumerate() {
            for (slot, buffers) in [("first", &mut self.first), ("second", &mut self.second)] {
                buffers[i] = match saved(name, slot)? {
                    Some(t) => Some(
                        t.f_to_device(device)
                            .context(|| format!("restore `{name}.{slot}`"))?,
                    ),
                    None => None,
                };
            }
        }
        Ok(())
    }

    pub fn slots_in_use(&self) -> [bool; 2] {
        [
            self.first.iter().any(Option::is_some),
            self.second.iter().any(Option::is_some),
        ]
    }

    /// Parameter `i`'s state in slot `slot` (0: `first`, 1: `second`).
    pub fn slot(&self, i: usize, slot: usize) -> Option<&Tensor> {
        [&self.first, &self.second][slot][i].as_ref()
    }

    /// One update of every parameter from its `.grad()`, at learning rate `lr`.
    pub fn step<'a>(
        &mut self,
        params: impl Iterator<Item = &'a Tensor>,
        lr: f64,
    ) -> Result<(), RunError> {
        let pairs = params.map(|p| {
            let grad = p.grad();
            (p.shallow_clone(), grad.defined().then_some(grad))
        });
        self.step_pairs(pairs.collect(), lr)
    }

    /// One update of each tensor from the gradient beside it (none: left
    /// as it is), at learning rate `lr`: the whole parameters, or slices of
    /// them (`shard = optimizer`: each update rule but Adafactor's works
    /// value by value).
    pub fn step_pairs(
        &mut self,
        pairs: Vec<(Tensor, Option<Tensor>)>,
        lr: f64,
    ) -> Result<(), RunError> {
        self.step += 1;
        let step = self.step;
        tch::no_grad(|| {
            for (i, (mut param, grad)) in pairs.into_iter().enumerate() {
                let Some(grad) = grad else {
                    continue;
                };
                let ctx = || format!("optimizer step {step}");
                let state = Slots {
                    first: &mut self.first[i],
                    second: &mut self.second[i],
                };
                let (plan, lr) = match &self.grouped[i] {
                    Some((plan, scale)) => (plan, lr * scale),
                    None => (&self.plan, lr),
                };
                let at = Step { lr, step };
                match plan {
                    OptimizerPlan::Sgd { .. } => sgd(plan, &mut param, &grad, state, at),
                    OptimizerPlan::Adam { .. } | OptimizerPlan::AdamW { .. } => {
                        adam(plan, &mut param, &grad, state, at)
                    }
                    OptimizerPlan::Lion { .. } => lion(plan, &mut param, &grad, state, at),
                    OptimizerPlan::Adafactor { .. } => {
                        adafactor(plan, &mut param, &grad, state, at)
                    }
                }
                .context(ctx)?;
            }
            Ok(())
        })
    }
}

/// One parameter's state: SGD's momentum buffer, Adam's two moments,
/// Lion's momentum (`first`), Adafactor's row and column second moments
/// of a tensor of two or more dimensions, or the whole second moment of a
/// vector (`first`).
struct Slots<'a> {
    first: &'a mut Option<Tensor>,
    second: &'a mut Option<Tensor>,
}

/// The learning rate of this step and the step's number (from 1).
#[derive(Clone, Copy)]
struct Step {
    lr: f64,
    step: u64,
}

type Update = Result<(), TchError>;

fn sgd(plan: &OptimizerPlan, param: &mut Tensor, grad: &Tensor, state: Slots, at: Step) -> Update {
    let OptimizerPlan::Sgd {
        momentum,
        dampening,
        nesterov,
        weight_decay,
        ..
    } = *plan
    else {
        unreachable!("sgd is called for SGD")
    };
    let mut d_p = if weight_decay != 0.0 {
        grad.f_add(&param.f_mul_scalar(weight_decay)?)?
    } else {
        grad.shallow_clone()
    };
    if momentum != 0.0 {
        let buf = match state.first.take() {
            None => d_p.f_detach()?.copy(),
            Some(mut buf) => {
                buf.f_mul_scalar_(momentum).map(drop)?;
                buf.f_add_(&d_p.f_mul_scalar(1.0 - dampening)?).map(drop)?;
                buf
            }
        };
        d_p = if nesterov {
            d_p.f_add(&buf.f_mul_scalar(momentum)?)?
        } else {
            buf.shallow_clone()
        };
        *state.first = Some(buf);
    }
    param.f_sub_(&d_p.f_mul_scalar(at.lr)?).map(drop)?;
    Ok(())
}

fn adam(plan: &OptimizerPlan, param: &mut Tensor, grad: &Tensor, state: Slots, at: Step) -> Update {
    let (OptimizerPlan::Adam {
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
    }) = *plan
    else {
        unreachable!("adam is called for Adam and AdamW")
    };
    let Step { lr, step } = at;
    let decoupled = matches!(plan, OptimizerPlan::AdamW { .. });
    let grad = if decoupled {
        param.f_mul_scalar_(1.0 - lr * weight_decay).map(drop)?;
        grad.shallow_clone()
    } else if weight_decay != 0.0 {
        grad.f_add(&param.f_mul_scalar(weight_decay)?)?
    } else {
        grad.shallow_clone()
    };
    let m = state.first.get_or_insert_with(|| grad.zeros_like());
    m.f_lerp_(&grad, 1.0 - betas[0]).map(drop)?;
    let v = state.second.get_or_insert_with(|| grad.zeros_like());
    // PyTorch: v.mul_(β2).addcmul_(g, g, value=1 − β2), which
    // rounds (value·g)·g; the same order here keeps the bits.
    v.f_mul_scalar_(betas[1]).map(drop)?;
    {
        // Dropped at once: a step holds at most two parameter-sized
        // temporaries (denom and the scaled m below), in-place where the
        // values allow it (the same bits either way).
        let scaled = grad.f_mul_scalar(1.0 - betas[1])?;
        v.f_addcmul_(&scaled, &grad).map(drop)?;
    }
    let bias1 = 1.0 - betas[0].powi(step as i32);
    let bias2_sqrt = (1.0 - betas[1].powi(step as i32)).sqrt();
    let step_size = lr / bias1;
    let mut denom = v.f_sqrt()?;
    denom.f_div_scalar_(bias2_sqrt).map(drop)?;
    denom.f_add_scalar_(eps).map(drop)?;
    // PyTorch: p.addcdiv_(m, denom, value=−step_size), which rounds
    // (value·m)/denom.
    let scaled = m.f_mul_scalar(-step_size)?;
    param.f_addcdiv_(&scaled, &denom).map(drop)?;
    Ok(())
}

/// Lion as its paper writes it (Chen et al. 2023, Algorithm 2), each
/// product and sum rounded on its own:
///   c = β1·m + (1 − β1)·g
///   p ← p·(1 − lr·wd) − lr·sign(c)
///   m ← β2·m + (1 − β2)·g
fn lion(plan: &OptimizerPlan, param: &mut Tensor, grad: &Tensor, state: Slots, at: Step) -> Update {
    let OptimizerPlan::Lion {
        betas,
        weight_decay,
        ..
    } = *plan
    else {
        unreachable!("lion is called for Lion")
    };
    let m = state.first.get_or_insert_with(|| grad.zeros_like());
    let c = m
        .f_mul_scalar(betas[0])?
        .f_add(&grad.f_mul_scalar(1.0 - betas[0])?)?;
    if weight_decay != 0.0 {
        param.f_mul_scalar_(1.0 - at.lr * weight_decay).map(drop)?;
    }
    param.f_sub_(&c.f_sign()?.f_mul_scalar(at.lr)?).map(drop)?;
    let next = m
        .f_mul_scalar(betas[1])?
        .f_add(&grad.f_mul_scalar(1.0 - betas[1])?)?;
    *m = next;
    Ok(())
}

/// `torch.optim.Adafactor`'s single-tensor update, in its order and with
/// its roundings (the Python scalars in float64, `.item()`s of float32
/// norms). `step` counts from 1, the same for every parameter.
fn adafactor(
    plan: &OptimizerPlan,
    param: &mut Tensor,
    grad: &Tensor,
    state: Slots,
    at: Step,
) -> Update {
    let OptimizerPlan::Adafactor {
        beta2_decay,
        eps: [eps1, eps2],
        d,
        weight_decay,
        ..
    } = *plan
    else {
        unreachable!("adafactor is called for Adafactor")
    };
    let Step { lr, step } = at;
    let step_float = step as f64;
    let one_minus_beta2_t = step_float.powf(beta2_decay);
    let rho_t = lr.min(1.0 / step_float.powf(0.5));
    let rms = param.f_norm()?.f_double_value(&[])? / (param.numel() as f64).powf(0.5);
    let alpha = eps2.max(rms) * rho_t;
    if weight_decay != 0.0 {
        param.f_mul_scalar_(1.0 - lr * weight_decay).map(drop)?;
    }
    let var_estimate = if grad.dim() > 1 {
        let size = grad.size();
        let (rows, cols) = (size[size.len() - 2], size[size.len() - 1]);
        // The mean of g² along a dimension, as ‖g‖² / n.
        let mean_square = |dim: i64, n: i64| -> Result<Tensor, TchError> {
            grad.f_norm_scalaropt_dim(2, [dim], true)?
                .f_square_()?
                .f_div_scalar_(n)
        };
        let row_var = zeros_in(state.first, grad, row_shape(&size, -1))?;
        row_var
            .f_lerp_(&mean_square(-1, cols)?, one_minus_beta2_t)
            .map(drop)?;
        let col_var = zeros_in(state.second, grad, row_shape(&size, -2))?;
        col_var
            .f_lerp_(&mean_square(-2, rows)?, one_minus_beta2_t)
            .map(drop)?;
        let mut estimate = row_var.f_matmul(col_var)?;
        let mut row_mean = row_var.f_mean_dim([-2i64].as_slice(), true, None::<tch::Kind>)?;
        row_mean.f_clamp_min_(eps1).map(drop)?;
        estimate.f_div_(&row_mean).map(drop)?;
        estimate
    } else {
        let variance = state.first.get_or_insert_with(|| grad.zeros_like());
        variance
            .f_lerp_(&grad.f_mul(grad)?, one_minus_beta2_t)
            .map(drop)?;
        variance.copy()
    };
    let mut update = var_estimate;
    update.f_clamp_min_(eps1 * eps1)?.f_rsqrt_().map(drop)?;
    update.f_mul_(grad).map(drop)?;
    let update_rms =
        update.f_norm()?.f_double_value(&[])? / ((update.numel() as f64).powf(0.5) * d);
    let denom = 1.0f64.max(update_rms);
    torch_ops::add_scaled_(param, &update, -alpha / denom)
}

/// The state in `slot`, zeros of `shape` (like `grad`) the first time.
fn zeros_in<'a>(
    slot: &'a mut Option<Tensor>,
    grad: &Tensor,
    shape: Vec<i64>,
) -> Result<&'a mut Tensor, TchError> {
    if slot.is_none() {
        *slot = Some(grad.f_new_zeros(shape, (grad.kind(), grad.device()))?);
    }
    Ok(slot.as_mut().expect("filled above"))
}

/// `size` with dimension `dim` (negative: from the end) set to 1.
fn row_shape(size: &[i64], dim: i64) -> Vec<i64> {
    let mut shape = size.to_vec();
    let at = (size.len() as i64 + dim) as usize;
    shape[at] = 1;
    shape
}
