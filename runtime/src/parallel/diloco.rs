//! DiLoCo's outer optimizer (Douillard et al. 2023): a global copy of the
//! parameters, θ_global, starting as the initial weights; after every
//! `period` inner steps (and after the last step), with θ̄ the mean of the
//! sync groups' parameters, Δ = θ_global − θ̄ is the gradient of an SGD
//! step on θ_global with Nesterov momentum, as `torch.optim.SGD(lr,
//! momentum, nesterov=True)` takes it (plain SGD at momentum 0): the
//! buffer becomes μ·buf plus Δ (Δ itself the first time), and θ_global
//! moves by −lr·(Δ + μ·buf). Every group then continues from θ_global;
//! its inner optimizer's state stays its own.

use tch::Tensor;

use crate::error::{RunError, TorchContext};

/// θ_global and the outer momentum of every trainable parameter, in the
/// model's order; the same on every rank.
pub struct Outer {
    global: Vec<Tensor>,
    momentum: Vec<Option<Tensor>>,
    lr: f64,
    mu: f64,
}

impl Outer {
    /// θ_global from the parameters as they start.
    pub fn new(params: &[(String, Tensor)], lr: f64, mu: f64) -> Result<Outer, RunError> {
        let global = params
            .iter()
            .map(|(name, p)| {
                p.f_detach()
                    .map(|t| t.copy())
                    .context(|| format!("copy `{name}` for DiLoCo's global parameters"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outer {
            momentum: global.iter().map(|_| None).collect(),
            global,
            lr,
            mu,
        })
    }

    /// The outer step, `params` holding the mean of the groups' parameters:
    /// θ_global updated, and every parameter set to it.
    pub fn step(&mut self, params: &[(String, Tensor)], step: u64) -> Result<(), RunError> {
        tch::no_grad(|| {
            for (i, (name, p)) in params.iter().enumerate() {
                let ctx = || format!("step {step}: DiLoCo's outer step on `{name}`");
                let delta = self.global[i].f_sub(p).context(ctx)?;
                let update = match self.mu > 0.0 {
                    true => {
                        let buf = match &mut self.momentum[i] {
                            Some(buf) => {
                                // In place: the returned handle is buf's own.
                                let _ = buf
                                    .f_mul_scalar_(self.mu)
                                    .and_then(|mut b| b.f_add_(&delta))
                                    .context(ctx)?;
                                buf.shallow_clone()
                            }
                            slot @ None => slot.insert(delta.copy()).shallow_clone(),
                        };
                        delta
                            .f_add(&buf.f_mul_scalar(self.mu).context(ctx)?)
                            .context(ctx)?
                    }
                    false => delta,
                };
                let global = &mut self.global[i];
                let _ = global
                    .f_sub_(&update.f_mul_scalar(self.lr).context(ctx)?)
                    .context(ctx)?;
                p.shallow_clone().f_copy_(global).context(ctx)?;
            }
            Ok(())
        })
    }
}
