//! DiLoCo's outer optimizer (Douillard et al. 2023), streaming (Douillard
//! et al. 2025): a global copy of the parameters, θ_global, starting as
//! the initial weights, and the parameters cut into the plan's fragments.
//! After step s = `after_step` + k·period of a fragment, each group's change
//! Δ = θ_global − θ_group of the fragment is all-reduced over the groups
//! (in float32, or rounded to bfloat16: `outer_precision`), in the
//! background while `delay` more inner steps run; then the mean change is
//! the gradient of an SGD step on θ_global with Nesterov momentum, as
//! `torch.optim.SGD(lr, momentum, nesterov=True)` takes it (plain SGD at
//! momentum 0): the buffer becomes μ·buf plus Δ (Δ itself the first time),
//! and θ_global moves by −lr·(Δ + μ·buf). Every group then takes θ_global
//! for the fragment, the inner steps it made meanwhile let go (torchft's
//! `fragment_update_alpha = 0`). Its inner optimizer's state stays its
//! own. One fragment without delay is DiLoCo.
//!
//! After the last step, a change still on the wire lands, and every
//! fragment that has not just met meets without delay, so the run ends on
//! θ_global.

use std::collections::BTreeMap;

use dtl_compiler::plan::{OuterPrecision, Plan, StepOp};
use tch::{Kind, Tensor};

use crate::checkpoint::Named;
use crate::comm::{Communicator, Pending};
use crate::error::{RunError, TorchContext};
use crate::model::TensorPart;

/// θ_global, the outer momentum and the fragments' schedule, over this
/// rank's trainable parameters in the model's order (its stage's, its
/// part of split ones); the same on the ranks at its place in every group.
pub struct Outer {
    names: Vec<String>,
    global: Vec<Tensor>,
    momentum: Vec<Option<Tensor>>,
    lr: f64,
    mu: f64,
    /// The fragment of each parameter.
    fragment_of: Vec<usize>,
    /// The first step after which each fragment meets.
    after_step: Vec<u64>,
    period: u64,
    delay: u64,
    precision: OuterPrecision,
    in_flight: Option<InFlight>,
}

/// A fragment's all-reduce started after step `started`.
struct InFlight {
    fragment: usize,
    started: u64,
    changes: Changes,
}

/// The groups' changes of a fragment: their sum on the wire, or their mean
/// per parameter of the fragment (in the fragment's order) once it landed.
enum Changes {
    Summing(Pending),
    Mean(Vec<Tensor>),
}

/// What one meeting did: the bytes this rank sent, and whether the last
/// fragment started (with which the buffers are averaged).
pub struct Meeting {
    pub bytes: u64,
    pub last_started: bool,
}

impl Outer {
    /// θ_global from the parameters as they start, with the plan's outer
    /// step.
    pub fn new(params: &[(String, Tensor)], plan: &Plan) -> Result<Outer, RunError> {
        let Some(StepOp::OuterStep {
            every,
            outer_lr,
            outer_momentum,
            delay,
            outer_precision,
            fragments,
            ..
        }) = plan
            .step_program
            .iter()
            .find(|op| matches!(op, StepOp::OuterStep { .. }))
        else {
            return Err(plan_error(
                "the plan synchronises by DiLoCo but has no outer step",
            ));
        };
        // The checker's rules, again for a plan written by hand: one
        // fragment on the wire at a time.
        let count = fragments.len() as u64;
        if count == 0 || !every.is_multiple_of(count) || *delay >= every / count {
            return Err(plan_error(&format!(
                "{count} fragment(s) with a delay of {delay} in a period of {every}: the fragments must divide the period, and the delay be below period / fragments"
            )));
        }
        let trained: Vec<&str> = plan
            .model
            .parameters
            .iter()
            .filter(|p| !p.frozen)
            .map(|p| p.name.as_str())
            .collect();
        let mut fragment_by_name = BTreeMap::new();
        for (f, fragment) in fragments.iter().enumerate() {
            let first = trained
                .iter()
                .position(|n| *n == fragment.first_parameter)
                .ok_or_else(|| {
                    plan_error(&format!(
                        "fragment {f} starts at `{}`, which the model does not train",
                        fragment.first_parameter
                    ))
                })?;
            let run = trained
                .iter()
                .skip(first)
                .take(fragment.parameters as usize);
            fragment_by_name.extend(run.map(|n| (*n, f)));
        }
        let fragment_of = params
            .iter()
            .map(|(name, _)| {
                fragment_by_name.get(name.as_str()).copied().ok_or_else(|| {
                    plan_error(&format!("`{name}` is in no fragment of the outer step"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let global = params
            .iter()
            .map(|(name, p)| {
                p.f_detach()
                    .map(|t| t.copy())
                    .context(|| format!("copy `{name}` for DiLoCo's global parameters"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outer {
            names: params.iter().map(|(name, _)| name.clone()).collect(),
            momentum: global.iter().map(|_| None).collect(),
            global,
            lr: *outer_lr,
            mu: *outer_momentum,
            fragment_of,
            after_step: fragments.iter().map(|f| f.after_step).collect(),
            period: *every,
            delay: *delay,
            precision: *outer_precision,
            in_flight: None,
        })
    }

    /// The fragment that starts meeting after `step`, if one does.
    fn starting(&self, step: u64) -> Option<usize> {
        (0..self.after_step.len()).find(|&f| self.meets(f, step))
    }

    /// Whether fragment `f` starts meeting after `step`: its first step,
    /// then every period.
    fn meets(&self, f: usize, step: u64) -> bool {
        let first = self.after_step[f];
        step >= first && (step - first).is_multiple_of(self.period)
    }

    /// After the optimizer step of `step`: the change on the wire lands
    /// when due, and the fragment due to start starts (and lands at once
    /// without delay). `comm`: the ranks at this place in every group.
    pub fn after_step(
        &mut self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<Meeting, RunError> {
        if let Some(flight) = &mut self.in_flight {
            if flight.started + self.delay == step {
                self.land(params, comm.size(), step)?;
            } else if let Changes::Summing(pending) = &mut flight.changes {
                // Some MPI libraries move a background collective on only
                // inside MPI calls.
                pending
                    .test()
                    .map_err(|e| RunError::Collective { step, message: e.0 })?;
            }
        }
        let mut met = Meeting {
            bytes: 0,
            last_started: false,
        };
        if let Some(f) = self.starting(step) {
            met.bytes = self.start(f, params, comm, step)?;
            met.last_started = f + 1 == self.after_step.len();
            if self.delay == 0 {
                self.land(params, comm.size(), step)?;
            }
        }
        Ok(met)
    }

    /// After the last step: the change on the wire lands, and every
    /// fragment that did not meet after this very step meets now, without
    /// delay.
    pub fn finish(
        &mut self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<Meeting, RunError> {
        let mut met = Meeting {
            bytes: 0,
            last_started: false,
        };
        let landing = self.in_flight.as_ref().map(|f| f.fragment);
        if landing.is_some() {
            self.land(params, comm.size(), step)?;
        }
        for f in 0..self.after_step.len() {
            let landed_now = step
                .checked_sub(self.delay)
                .is_some_and(|started| self.meets(f, started));
            if landing == Some(f) || landed_now {
                continue;
            }
            met.bytes += self.start(f, params, comm, step)?;
            met.last_started |= f + 1 == self.after_step.len();
            self.land(params, comm.size(), step)?;
        }
        Ok(met)
    }

    /// Starts fragment `f`'s all-reduce of the groups' changes: the bytes
    /// this rank sends in it.
    fn start(
        &mut self,
        f: usize,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<u64, RunError> {
        let ctx = || format!("step {step}: DiLoCo's change of fragment {f}");
        if self.members(f).next().is_none() {
            // None of the fragment on this stage: nor on the ranks it
            // meets, which hold the same stage.
            self.in_flight = Some(InFlight {
                fragment: f,
                started: step,
                changes: Changes::Mean(Vec::new()),
            });
            return Ok(0);
        }
        let changes = tch::no_grad(|| -> Result<Vec<Tensor>, RunError> {
            self.members(f)
                .map(|i| {
                    let change = self.global[i].f_sub(&params[i].1).context(ctx)?;
                    change.f_reshape([-1]).context(ctx)
                })
                .collect()
        })?;
        let mut flat = Tensor::f_cat(&changes, 0).context(ctx)?;
        if self.precision == OuterPrecision::Bf16 {
            flat = flat.f_to_kind(Kind::BFloat16).context(ctx)?;
        }
        let bytes = flat.numel() as u64 * self.precision.bytes();
        let groups = comm.size() as u64;
        let changes = match groups > 1 {
            true => Changes::Summing(
                comm.all_reduce_start(flat)
                    .map_err(|e| RunError::Collective { step, message: e.0 })?,
            ),
            false => Changes::Mean(self.unflatten(f, &flat, 1, step)?),
        };
        self.in_flight = Some(InFlight {
            fragment: f,
            started: step,
            changes,
        });
        Ok(dtl_compiler::lower::cost::ring_bytes(bytes, groups))
    }

    /// The parameters of fragment `f`, by index.
    fn members(&self, f: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.fragment_of.len()).filter(move |&i| self.fragment_of[i] == f)
    }

    /// The sum of `groups` groups' changes of fragment `f`, flat, as each
    /// parameter's mean change in float32.
    fn unflatten(
        &self,
        f: usize,
        sum: &Tensor,
        groups: usize,
        step: u64,
    ) -> Result<Vec<Tensor>, RunError> {
        let ctx = || format!("step {step}: DiLoCo's mean change of fragment {f}");
        let mean = sum
            .f_to_kind(Kind::Float)
            .and_then(|s| s.f_div_scalar(groups as f64))
            .context(ctx)?;
        let mut offset = 0;
        self.members(f)
            .map(|i| {
                let shape = self.global[i].size();
                let n = self.global[i].numel() as i64;
                let part = mean
                    .f_narrow(0, offset, n)
                    .and_then(|p| p.f_view(shape.as_slice()));
                offset += n;
                part.context(ctx)
            })
            .collect()
    }

    /// Waits for the change on the wire, leaving its mean per parameter
    /// (a checkpoint saves it).
    pub fn settle(&mut self, groups: usize, step: u64) -> Result<(), RunError> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(());
        };
        let mean = match flight.changes {
            Changes::Summing(pending) => {
                let sum = pending
                    .wait()
                    .map_err(|e| RunError::Collective { step, message: e.0 })?;
                self.unflatten(flight.fragment, &sum, groups, step)?
            }
            Changes::Mean(mean) => mean,
        };
        self.in_flight = Some(InFlight {
            changes: Changes::Mean(mean),
            ..flight
        });
        Ok(())
    }

    /// The change on the wire lands: θ_global's SGD step on its fragment,
    /// which every parameter of the fragment takes.
    fn land(
        &mut self,
        params: &[(String, Tensor)],
        groups: usize,
        step: u64,
    ) -> Result<(), RunError> {
        self.settle(groups, step)?;
        let Some(InFlight {
            fragment,
            changes: Changes::Mean(mean),
            ..
        }) = self.in_flight.take()
        else {
            return Ok(());
        };
        let members: Vec<usize> = self.members(fragment).collect();
        tch::no_grad(|| {
            for (i, delta) in members.into_iter().zip(mean) {
                self.outer_sgd(i, delta, &params[i].1, step)?;
            }
            Ok(())
        })
    }

    /// θ_global's SGD step on parameter `i` with `delta` as its gradient,
    /// copied into the parameter `p`.
    fn outer_sgd(
        &mut self,
        i: usize,
        delta: Tensor,
        p: &Tensor,
        step: u64,
    ) -> Result<(), RunError> {
        let name = &self.names[i];
        let ctx = || format!("step {step}: DiLoCo's outer step on `{name}`");
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
        Ok(())
    }

    /// θ_global, the outer momentum and the mean change still to land, by
    /// parameter name, as a checkpoint keeps them under `global.`,
    /// `momentum.` and `landing.` (no momentum before the first outer step
    /// with momentum; a change to land only between its all-reduce's start
    /// and its landing, settled first): this rank's parts.
    pub fn saved(&self) -> [(&'static str, Named); 3] {
        let named = |tensors: Vec<(usize, Tensor)>| -> Named {
            tensors
                .into_iter()
                .map(|(i, t)| (self.names[i].clone(), t))
                .collect()
        };
        let global = self.global.iter().map(Tensor::shallow_clone);
        let momentum = self.momentum.iter().enumerate();
        let landing = match &self.in_flight {
            Some(InFlight {
                fragment,
                changes: Changes::Mean(mean),
                ..
            }) => self
                .members(*fragment)
                .zip(mean.iter().map(Tensor::shallow_clone))
                .collect(),
            _ => Vec::new(),
        };
        [
            ("global", named(global.enumerate().collect())),
            (
                "momentum",
                named(
                    momentum
                        .filter_map(|(i, t)| Some((i, t.as_ref()?.shallow_clone())))
                        .collect(),
                ),
            ),
            ("landing", named(landing)),
        ]
    }

    /// θ_global, the outer momentum and the change to land read back from
    /// `saved` (named as [`Outer::saved`] with its prefixes, whole) of a
    /// checkpoint after `step` (`last`: the run's last), this rank's part of
    /// each (`part`: under `tensor = T`), onto the parameters' devices.
    pub fn restore(
        &mut self,
        saved: &BTreeMap<String, Tensor>,
        params: &[(String, Tensor)],
        part: Option<&TensorPart>,
        (step, last): (u64, bool),
    ) -> Result<(), RunError> {
        let mut landing = Vec::new();
        for (i, (name, p)) in params.iter().enumerate() {
            let ctx = || format!("restore DiLoCo's outer state of `{name}`");
            let local = |kind: &str| -> Result<Option<Tensor>, RunError> {
                let Some(whole) = saved.get(&format!("{kind}.{name}")) else {
                    return Ok(None);
                };
                let t = match part {
                    Some(part) => part.local(name, whole.shallow_clone())?,
                    None => whole.shallow_clone(),
                };
                if t.size() != p.size() {
                    return Err(RunError::Torch {
                        context: ctx(),
                        message: format!(
                            "saved as {:?}, the parameter is {:?}",
                            t.size(),
                            p.size()
                        ),
                    });
                }
                t.f_to_device(p.device()).map(Some).context(ctx)
            };
            self.global[i] = local("global")?.ok_or_else(|| RunError::Torch {
                context: ctx(),
                message: "the checkpoint has no global copy of it".into(),
            })?;
            self.momentum[i] = local("momentum")?;
            if let Some(change) = local("landing")? {
                landing.push((i, change));
            }
        }
        // The fragment that started within `delay` steps of the checkpoint
        // (none after the last step: every change has landed).
        let started = (step.saturating_sub(self.delay) + 1..=step)
            .rev()
            .find_map(|s| self.starting(s).map(|f| (f, s)))
            .filter(|_| self.delay > 0 && !last);
        self.in_flight = match started {
            Some((fragment, started)) => {
                // (Empty for a fragment with none of it on this stage.)
                let members: Vec<usize> = self.members(fragment).collect();
                let held: Vec<usize> = landing.iter().map(|(i, _)| *i).collect();
                if held != members {
                    return Err(plan_error(&format!(
                        "the checkpoint's change to land is not fragment {fragment}'s, which the schedule has on the wire after step {step}"
                    )));
                }
                Some(InFlight {
                    fragment,
                    started,
                    changes: Changes::Mean(landing.into_iter().map(|(_, t)| t).collect()),
                })
            }
            None if landing.is_empty() => None,
            None => {
                return Err(plan_error(&format!(
                    "the checkpoint has a change to land, where the schedule has none on the wire after step {step}"
                )))
            }
        };
        Ok(())
    }
}

fn plan_error(message: &str) -> RunError {
    RunError::Torch {
        context: "DiLoCo's outer step".into(),
        message: message.into(),
    }
}
