//! One optimizer step: the plan's step program, op by op, on this rank.
//! The same loop for every world size: with one replica the collectives
//! are no-ops of a [`crate::comm::Local`] group.

use std::collections::BTreeMap;

use dtl_compiler::plan::{NanPolicy, NormType, StepOp, SyncMode};
use dtl_compiler::records::StepRecord;
use tch::Tensor;

use super::{dropout_seed, Executor};
use crate::clip;
use crate::comm::ReduceOp;
use crate::error::{RunError, TorchContext};
use crate::parallel::data::{self, AsyncUpdate, Buckets};
use crate::parallel::pipeline::{Objective, Rows};
use crate::parallel::segments::{Forward, Hooks};
use crate::parallel::units::Gathering;

/// What the step's ops have found so far.
struct StepState {
    /// The step's loss, summed over its micro-batches (scaled).
    loss: f64,
    grad_norm: Option<f64>,
    /// The update of this step is dropped (`on_nan = skip`).
    skipped: bool,
    /// Under `async`: the step whose averaged gradients this step applies,
    /// `None` while the first `staleness` steps' are still in flight.
    update_of: Option<u64>,
    /// The ranks whose own loss was not finite.
    bad_ranks: Vec<usize>,
    /// `loss` is still this rank's own: under local SGD and DiLoCo it is
    /// averaged over the replicas with the gradient norm, in one
    /// all-reduce ([`Executor::check_finite`]), which may cross a slow
    /// link between the groups.
    loss_is_own: bool,
    /// The gradient norm is the one over every pipeline stage.
    norm_over_stages: bool,
    /// `fp16`: a gradient overflowed at this step's loss scale; the step is
    /// skipped and the scale lowered (not a NaN for `on_nan`).
    overflow: bool,
}

impl Executor<'_> {
    /// Runs the step program once.
    pub fn step(&mut self, step: u64) -> Result<StepRecord, RunError> {
        let train = &self.plan.train;
        let replica = self.world.place.replica;
        // Replica 0 draws what one process draws; the others their own masks.
        tch::manual_seed(dropout_seed(
            train.seed ^ replica.wrapping_mul(0x9E37_79B9),
            step,
        ));
        if self.broadcast_buffers {
            self.broadcast_buffers(step)?;
        }
        let mut state = StepState {
            loss: 0.0,
            grad_norm: None,
            skipped: false,
            update_of: Some(step),
            bad_ranks: Vec::new(),
            loss_is_own: false,
            norm_over_stages: false,
            overflow: false,
        };
        let loss_scale = self.scaler.map(|s| s.scale);
        let program = self.plan.step_program.clone();
        let issued = self.model.tensor_part().map(|p| p.issued());
        for op in &program {
            self.run_op(op, step, &mut state)?;
        }
        if let (Some(before), Some(part)) = (issued, self.model.tensor_part()) {
            let now = part.issued() - before;
            self.tensor_all_reduces += now;
            self.last_tensor_all_reduces = Some(now);
        }
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model)?;
        }
        let lr_step = state.update_of.unwrap_or(step);
        let lr = if state.update_of.is_some() {
            train
                .schedule
                .lr_at(train.optimizer.lr(), lr_step, train.steps)
        } else {
            0.0
        };
        Ok(StepRecord {
            step,
            loss: state.loss,
            lr,
            grad_norm: state.grad_norm.unwrap_or(0.0),
            skipped: state.skipped,
            loss_scale,
        })
    }

    fn run_op(&mut self, op: &StepOp, step: u64, state: &mut StepState) -> Result<(), RunError> {
        let applies = !state.skipped && state.update_of.is_some();
        match op {
            StepOp::ForwardBackward {
                micro_batches,
                loss_scale,
                ..
            } => self.micro_batches(*micro_batches, *loss_scale, step, state)?,
            StepOp::GatherUnits { .. } => {
                // The forward and backward that follow gather the units
                // (a stage may have none: all of its layers parameterless).
                let stage = self.world.place.stage;
                let planned = self.plan.topology.stage_units(stage).next().is_some();
                if self.units.is_none() && planned {
                    return Err(RunError::Torch {
                        context: format!("step {step}: gather the shard units"),
                        message: "the plan shards the parameters, but this rank holds no units"
                            .into(),
                    });
                }
            }
            StepOp::AllReduceGradients { staleness, .. } => {
                self.all_reduce_gradients(step, *staleness, state)?;
            }
            StepOp::ReduceScatterGradients { .. } => {
                // Averaged here unless the copies' slices are summed next;
                // within sync groups, over the group.
                let group = self.world.shard_group();
                let average = match self.plan.topology.parallelism.sharded_in_groups() {
                    true => Some(group.size()),
                    false => {
                        (self.world.replicate.size() == 1).then_some(self.world.replicas.size())
                    }
                };
                self.optimizer
                    .reduce_scatter(&self.model.params, group, average, step)?;
            }
            StepOp::AllReduceGradientSlices { .. } => {
                let (copies, replicas) =
                    (self.world.replicate.as_ref(), self.world.replicas.size());
                self.optimizer.all_reduce_slices(copies, replicas, step)?;
            }
            StepOp::UnscaleGradients {
                growth,
                backoff,
                growth_interval,
                ..
            } if state.update_of.is_some() => {
                self.unscale(step, (*growth, *backoff, *growth_interval), state)?;
            }
            StepOp::UnscaleGradients { .. } => {}
            StepOp::CheckFinite { on_nan } if state.update_of.is_some() => {
                self.check_finite(step, *on_nan, state)?;
            }
            StepOp::CheckFinite { .. } => {}
            StepOp::ClipGradNorm { .. }
            | StepOp::ClipGradValue { .. }
            | StepOp::OptimizerStep
            | StepOp::AllGatherParameters { .. }
                if !applies => {}
            StepOp::ClipGradNorm {
                max_norm,
                norm_type,
            } => {
                let total = self.global_norm(*norm_type, state.norm_over_stages, step)?;
                clip::clip_to_norm(self.gradients(), *max_norm, total)?;
                state.grad_norm = Some(total);
            }
            StepOp::ClipGradValue { clip_value } => {
                if state.grad_norm.is_none() {
                    state.grad_norm = Some(self.l2_norm(state, step)?);
                }
                clip::clip_grad_value(self.gradients(), *clip_value)?;
            }
            StepOp::OptimizerStep => {
                if state.grad_norm.is_none() {
                    state.grad_norm = Some(self.l2_norm(state, step)?);
                }
                let train = &self.plan.train;
                let of = state.update_of.unwrap_or(step);
                let lr = train.schedule.lr_at(train.optimizer.lr(), of, train.steps);
                self.optimizer.step(&self.model.params, lr)?;
            }
            StepOp::AllGatherParameters { .. } => {
                let group = self.world.shard_group();
                self.optimizer.all_gather(&self.model.params, group, step)?;
            }
            StepOp::AverageParameters { .. } | StepOp::OuterStep { .. } => {
                self.meet_across(op, step)?
            }
            StepOp::ZeroGrad => self.model.zero_grad(),
            StepOp::Pipeline {
                rounds,
                micro_batches,
                loss_scale,
                stages,
                ..
            } => {
                let program = &stages[self.world.place.stage as usize].ops;
                let mut local = 0.0;
                for _ in 0..*rounds {
                    local += self.pipeline_round(program, *micro_batches, *loss_scale, step)?;
                    data::progress(&mut self.in_flight)?;
                }
                // The loss is the last stage's: every stage learns it.
                let mut total = [local / self.dynamic_scale()];
                self.world
                    .pipeline
                    .all_reduce_host(&mut total, ReduceOp::Sum)
                    .map_err(|e| RunError::Collective { step, message: e.0 })?;
                self.loss_over_replicas(total[0], step, state)?;
                self.hand_over_slices(step)?;
            }
            StepOp::AllReduceGradNorm { .. } => state.norm_over_stages = true,
            StepOp::TensorAllReduces { .. } => self.after_tensor_backward(step)?,
        }
        Ok(())
    }

    /// The step's backward passes are done: the gradients of key/value
    /// heads several tensor ranks share, and under `sequence = true` those
    /// of the sequence-parallel layers' parameters, summed over the group
    /// (the other tensor collectives ran with the passes).
    fn after_tensor_backward(&self, step: u64) -> Result<(), RunError> {
        let Some(part) = self.model.tensor_part() else {
            return Ok(());
        };
        let group = self.world.tensor.as_ref();
        part.sum_shared_gradients(&self.model, group)?;
        part.sum_sequence_gradients(&self.model, group, step)
    }

    /// `forward_backward`: the step's micro-batches, the loss over the
    /// replicas, and under `shard = parameters` the units' gradient slices
    /// handed to the optimizer.
    fn micro_batches(
        &mut self,
        count: u64,
        loss_scale: f64,
        step: u64,
        state: &mut StepState,
    ) -> Result<(), RunError> {
        let mut local = 0.0;
        for _ in 0..count {
            local += self.forward_backward(step, loss_scale)?;
            // Let all-reduces in flight move on.
            data::progress(&mut self.in_flight)?;
        }
        let local = local / self.dynamic_scale();
        self.loss_over_replicas(local, step, state)?;
        self.hand_over_slices(step)
    }

    /// Under `shard = parameters`: the units' gradient slices of the step,
    /// handed to the optimizer.
    fn hand_over_slices(&mut self, step: u64) -> Result<(), RunError> {
        if let Some(units) = &mut self.units {
            // Averaged here unless the copies' slices are summed next.
            let replicas = self.world.replicas.size();
            let average = (self.world.replicate.size() == 1).then_some(replicas);
            let slices = units.take_grads(average, step)?;
            self.optimizer.set_slices(slices, step)?;
        }
        Ok(())
    }

    /// One micro-batch forward and backward; returns its scaled loss.
    fn forward_backward(&mut self, step: u64, loss_scale: f64) -> Result<f64, RunError> {
        let batch = self.batches.next()?;
        self.cursor = batch.cursor;
        let ctx = || format!("step {step}: move batch");
        let x = batch.x.f_to_device(self.device).context(ctx)?;
        let y = batch.y.f_to_device(self.device).context(ctx)?;
        let result = self.model.result();
        let scale = self.faulty(step, loss_scale);
        let mut hooks = Hooks {
            replicas: Some(self.world.replicas.as_ref()),
            units: self.units.as_mut().map(|units| Gathering {
                units,
                params: &self.model.params,
                comm: self.world.shard_group(),
                step,
            }),
            tensor: Some(self.world.tensor.as_ref()),
        };
        let pass = match &self.segments {
            Some(segments) => Some(Forward::run(
                &self.model,
                &x,
                0..=self.model.nodes().len() - 1,
                &BTreeMap::new(),
                &[result],
                segments,
                &mut hooks,
            )?),
            None => None,
        };
        let output = match &pass {
            Some(pass) => pass
                .value(result)
                .ok_or_else(|| RunError::Torch {
                    context: format!("step {step}: forward"),
                    message: "the model's output was not kept".into(),
                })?
                .shallow_clone(),
            None => self.model.forward(&x, true)?,
        };
        let tensor = Some(self.world.tensor.as_ref());
        let scaled = self
            .model
            .loss(&self.plan.train.loss, (&output, &y), tensor, step)?
            .f_mul_scalar(scale)
            .context(|| format!("step {step}: scale the loss"))?;
        match pass {
            Some(pass) => {
                pass.backward(&self.model, Some(&scaled), &BTreeMap::new(), &mut hooks)?
            }
            None => scaled
                .f_backward()
                .context(|| format!("step {step}: backward"))?,
        }
        if let Some(units) = &mut hooks.units {
            units.after_all()?;
        }
        scaled
            .f_double_value(&[])
            .context(|| format!("step {step}: read loss"))
    }

    /// The L2 norm of the gradients (see [`Self::global_norm`]).
    fn l2_norm(&self, state: &StepState, step: u64) -> Result<f64, RunError> {
        self.global_norm(NormType::P(2.0), state.norm_over_stages, step)
    }

    /// The gradients the step's ops read: each parameter's, or under
    /// `shard = gradients` this replica's slices of their average.
    fn gradients(&self) -> Vec<Tensor> {
        self.optimizer
            .gradient_shards()
            .unwrap_or_else(|| self.model.tensors().map(Tensor::grad).collect())
    }

    /// The norm of the whole model's gradients: this rank's when it holds
    /// them all; else each holder's share (this rank's slices, its stage),
    /// added up over the replicas and the stages (the largest, for `inf`).
    fn global_norm(
        &self,
        norm_type: NormType,
        over_stages: bool,
        step: u64,
    ) -> Result<f64, RunError> {
        let sliced = self.optimizer.gradient_shards().is_some();
        let op = match norm_type {
            NormType::Inf => ReduceOp::Max,
            NormType::P(_) => ReduceOp::Sum,
        };
        if let Some(part) = self.model.tensor_part() {
            let mut total = [self.tensor_norm_share(part, norm_type, step)?];
            if over_stages {
                self.world
                    .pipeline
                    .all_reduce_host(&mut total, op)
                    .map_err(|e| RunError::Collective { step, message: e.0 })?;
            }
            return Ok(clip::norm_of_shares(total[0], norm_type));
        }
        if !sliced && !over_stages {
            return clip::grad_norm(self.gradients(), norm_type);
        }
        let mut share = [clip::norm_share(self.gradients(), norm_type)?];
        // A slice's copies in other shard groups hold the same values.
        let groups = [
            (sliced, self.world.shard_group()),
            (over_stages, self.world.pipeline.as_ref()),
        ];
        for (_, group) in groups.into_iter().filter(|(take, _)| *take) {
            group
                .all_reduce_host(&mut share, op)
                .map_err(|e| RunError::Collective { step, message: e.0 })?;
        }
        Ok(clip::norm_of_shares(share[0], norm_type))
    }

    /// Under `tensor = T`, this stage's share of the global norm: the
    /// split parameters' values summed over the tensor group (a shared
    /// key/value head counted once), the whole ones' counted once (every
    /// tensor rank holds the same); under `shard = gradients` from this
    /// replica's slices, added up over its shard group first.
    fn tensor_norm_share(
        &self,
        part: &crate::model::TensorPart,
        norm_type: NormType,
        step: u64,
    ) -> Result<f64, RunError> {
        let op = match norm_type {
            NormType::Inf => ReduceOp::Max,
            NormType::P(_) => ReduceOp::Sum,
        };
        let collective = |e: crate::comm::CommError| RunError::Collective { step, message: e.0 };
        let params = &self.model.params;
        let counted = |name: &str, t: &Tensor| {
            part.is_cut(name)
                .then(|| part.counted_values(name, &t.size()))
        };
        let [split, whole] = match self
            .optimizer
            .slice_norm_shares(params, counted, norm_type)?
        {
            Some(mut shares) => {
                self.world
                    .shard_group()
                    .all_reduce_host(&mut shares, op)
                    .map_err(collective)?;
                shares
            }
            None => {
                let (split, whole): (Vec<_>, Vec<_>) =
                    params.iter().partition(|(name, _)| part.is_cut(name));
                let grads = |list: Vec<&(String, Tensor)>| -> Result<Vec<Tensor>, RunError> {
                    list.into_iter()
                        .map(|(name, t)| {
                            part.counted(name, t.grad())
                                .context(|| format!("the gradient norm of `{name}`"))
                        })
                        .collect()
                };
                [
                    clip::norm_share(grads(split)?, norm_type)?,
                    clip::norm_share(grads(whole)?, norm_type)?,
                ]
            }
        };
        let mut split = [split];
        self.world
            .tensor
            .all_reduce_host(&mut split, op)
            .map_err(collective)?;
        Ok(match norm_type {
            NormType::Inf => split[0].max(whole),
            NormType::P(_) => split[0] + whole,
        })
    }

    /// One round of this stage's program over the next micro-batch, cut in
    /// `pieces`: the sum of the scaled losses (last stage; 0 elsewhere).
    fn pipeline_round(
        &mut self,
        program: &[dtl_compiler::plan::PipeOp],
        pieces: u64,
        loss_scale: f64,
        step: u64,
    ) -> Result<f64, RunError> {
        let batch = self.batches.next()?;
        self.cursor = batch.cursor;
        let ctx = || format!("step {step}: pipeline pieces");
        let x = batch.x.f_to_device(self.device).context(ctx)?;
        let y = batch.y.f_to_device(self.device).context(ctx)?;
        let xs = x.f_chunk(pieces as i64, 0).context(ctx)?;
        let ys = y.f_chunk(pieces as i64, 0).context(ctx)?;
        let rows: Vec<Rows> = xs.into_iter().zip(ys).map(|(x, y)| Rows { x, y }).collect();
        let scale = self.faulty(step, loss_scale);
        let stage = self.stage.as_mut().expect("a pipeline plan has a stage");
        let mut hooks = Hooks {
            replicas: None,
            units: self.units.as_mut().map(|units| Gathering {
                units,
                params: &self.model.params,
                comm: self.world.shard_group(),
                step,
            }),
            tensor: Some(self.world.tensor.as_ref()),
        };
        let (loss, passes) = stage.round(
            program,
            &rows,
            &self.model,
            Objective {
                loss: &self.plan.train.loss,
                scale,
            },
            (self.world.pipeline.as_ref(), &mut hooks),
            step,
        )?;
        if let Some(units) = &mut hooks.units {
            // The held units served every piece of the round.
            units.after_all()?;
        }
        self.passes.extend(passes);
        Ok(loss)
    }

    /// The loss scale (with fp16's dynamic scale: both are powers of two
    /// or `1 / accumulate`, and a product with a power of two rounds
    /// nothing), or NaN where a `nan` fault is planned for this rank and
    /// step (the reliability tests).
    fn faulty(&self, step: u64, loss_scale: f64) -> f64 {
        match crate::fault::at(self.world.rank, step) {
            Some(crate::fault::Kind::Nan) => f64::NAN,
            _ => loss_scale * self.dynamic_scale(),
        }
    }

    /// fp16's loss scale now (1 otherwise).
    fn dynamic_scale(&self) -> f64 {
        self.scaler.map_or(1.0, |s| s.scale)
    }

    /// fp16: the gradients divided by the loss scale (multiplied by its
    /// float32 reciprocal, as `GradScaler.unscale_`); an overflow on any
    /// rank skips the step everywhere and multiplies the scale by
    /// `backoff`, and `interval` steps in a row without one multiply it by
    /// `growth` (`GradScaler.update`).
    fn unscale(
        &mut self,
        step: u64,
        (growth, backoff, interval): (f64, f64, u64),
        state: &mut StepState,
    ) -> Result<(), RunError> {
        let Some(scaler) = self.scaler else {
            return Ok(());
        };
        let inverse = f64::from((1.0 / scaler.scale) as f32);
        let ctx = || format!("step {step}: unscale the gradients");
        let mut found = 0.0;
        for mut grad in self.gradients() {
            if !grad.defined() {
                continue;
            }
            let finite = grad
                .f_isfinite()
                .and_then(|f| f.f_all())
                .and_then(|f| f.f_int64_value(&[]))
                .context(ctx)?;
            if finite == 0 {
                found = 1.0;
            }
            let _ = grad.f_mul_scalar_(inverse).context(ctx)?;
        }
        let mut any = [found];
        if self.world.size > 1 {
            self.world
                .all
                .all_reduce_host(&mut any, ReduceOp::Max)
                .map_err(|e| RunError::Collective { step, message: e.0 })?;
        }
        if any[0] > 0.0 {
            state.overflow = true;
            state.skipped = true;
        }
        self.scaler = Some(scaler.next(any[0] > 0.0, growth, backoff, interval));
        Ok(())
    }

    /// The step's loss: the mean over the replicas of `local`, and the
    /// ranks whose own loss was not finite; under local SGD and DiLoCo
    /// left as this rank's own until the gradient norm joins it.
    fn loss_over_replicas(
        &self,
        local: f64,
        step: u64,
        state: &mut StepState,
    ) -> Result<(), RunError> {
        state.loss = local;
        if self.plan.topology.parallelism.sync.meets_every().is_some() {
            state.loss_is_own = true;
            return Ok(());
        }
        (state.loss, state.bad_ranks, _) = self.over_replicas(local, None, step)?;
        Ok(())
    }

    /// The means over the replicas of `loss` and of `also` (when given),
    /// and the ranks whose own loss was not finite: one all-reduce.
    fn over_replicas(
        &self,
        loss: f64,
        also: Option<f64>,
        step: u64,
    ) -> Result<(f64, Vec<usize>, Option<f64>), RunError> {
        let replicas = self.world.replicas.as_ref();
        let d = replicas.size();
        if d == 1 {
            let bad = match loss.is_finite() {
                true => vec![],
                false => vec![self.world.rank],
            };
            return Ok((loss, bad, also));
        }
        // [loss, also, one flag per replica].
        let mut values = vec![0.0; d + 2];
        values[0] = loss;
        values[1] = also.unwrap_or(0.0);
        values[2 + replicas.rank()] = f64::from(u8::from(!loss.is_finite()));
        replicas
            .all_reduce_host(&mut values, ReduceOp::Sum)
            .map_err(|e| RunError::Collective { step, message: e.0 })?;
        // The loss is the last stage's: name its ranks.
        let topology = &self.plan.topology;
        let last = topology.stages.len() as u64 - 1;
        let bad = (0..d)
            .filter(|&g| values[2 + g] > 0.0)
            .filter_map(|g| topology.rank_at(g as u64, last))
            .map(|r| r.rank as usize)
            .collect();
        let mean = |v: f64| v / d as f64;
        Ok((mean(values[0]), bad, also.map(|_| mean(values[1]))))
    }

    /// Every step: average now. `async(staleness)`: start this step's
    /// all-reduce and apply the one of `staleness` steps ago.
    fn all_reduce_gradients(
        &mut self,
        step: u64,
        staleness: u64,
        state: &mut StepState,
    ) -> Result<(), RunError> {
        // Local SGD and DiLoCo average inside their sync groups.
        let comm = match self.plan.topology.parallelism.sync.meets_every() {
            Some(_) => self.world.group.as_ref(),
            None => self.world.replicas.as_ref(),
        };
        let params = &self.model.params;
        match self.plan.topology.parallelism.sync {
            SyncMode::Async { .. } => {
                let started = self.buckets.start(comm, params, step)?;
                self.in_flight.push_back(AsyncUpdate::Flying(started));
                if self.in_flight.len() as u64 > staleness {
                    let oldest = self.in_flight.pop_front().expect("non-empty");
                    state.update_of = Some(oldest.step());
                    oldest.apply(&self.buckets, comm.size(), params)?;
                } else {
                    state.update_of = None;
                }
            }
            SyncMode::EveryStep | SyncMode::LocalSgd { .. } | SyncMode::Diloco { .. } => {
                self.buckets.average_gradients(comm, params, step)?;
            }
        }
        Ok(())
    }

    /// The finiteness check, decided the same way on every replica.
    fn check_finite(
        &mut self,
        step: u64,
        on_nan: NanPolicy,
        state: &mut StepState,
    ) -> Result<(), RunError> {
        let norm = match state.grad_norm {
            Some(norm) => norm,
            None => self.l2_norm(state, step)?,
        };
        // Local SGD's and DiLoCo's gradients are each group's own: report
        // their mean, averaged with the loss.
        let norm = match state.loss_is_own {
            true => {
                let (loss, bad, norm) = self.over_replicas(state.loss, Some(norm), step)?;
                (state.loss, state.bad_ranks, state.loss_is_own) = (loss, bad, false);
                norm.unwrap_or(0.0)
            }
            false => norm,
        };
        state.grad_norm = Some(norm);
        // An fp16 overflow is the loss scale's, handled: only the loss
        // itself counts then.
        let bad = [("loss", state.loss), ("gradient norm", norm)]
            .into_iter()
            .filter(|(what, _)| !(state.overflow && *what == "gradient norm"))
            .find(|(_, v)| !v.is_finite());
        let Some((what, value)) = bad else {
            return Ok(());
        };
        if on_nan == NanPolicy::Skip {
            state.skipped = true;
            return Ok(());
        }
        let kept = match self.last_checkpoint {
            Some(k) => format!("the checkpoint of step {k} is intact"),
            None => "no checkpoint was written".into(),
        };
        if self.world.size == 1 {
            return Err(RunError::NonFinite {
                step,
                what,
                value,
                kept,
            });
        }
        // The averaged values are the same on every replica, so every rank
        // stops here; say where the trouble started.
        let ranks = if state.bad_ranks.is_empty() {
            "every replica (the averaged gradients)".to_string()
        } else {
            state
                .bad_ranks
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(RunError::NonFiniteOnRanks {
            step,
            what,
            ranks,
            kept,
        })
    }

    /// Local SGD: every replica takes the average of the parameters, the
    /// optimizer's moments and the buffers.
    pub fn average_replicas(&mut self, step: u64) -> Result<(), RunError> {
        let comm = self.world.across();
        if comm.size() == 1 {
            return Ok(());
        }
        let mut tensors = self.model.state_tensors();
        tensors.extend(self.optimizer.state_tensors());
        self.across_group_bytes += super::groups::ring_bytes(&tensors, comm.size());
        Buckets::average_tensors(comm, &tensors, step)
    }

    /// Rank 0's batch-norm statistics on every replica, as DDP broadcasts
    /// its buffers before each forward pass.
    pub(super) fn broadcast_buffers(&mut self, step: u64) -> Result<(), RunError> {
        let comm = self.world.replicas.as_ref();
        for (_, buffer) in &mut self.model.buffers {
            comm.broadcast(buffer, 0)
                .map_err(|e| RunError::Collective { step, message: e.0 })?;
        }
        Ok(())
    }

    /// Applies what `async` still has in flight after the last step, in
    /// order, as the steps would have.
    pub fn drain(&mut self) -> Result<(), RunError> {
        while let Some(oldest) = self.in_flight.pop_front() {
            let of = oldest.step();
            oldest.apply(
                &self.buckets,
                self.world.replicas.size(),
                &self.model.params,
            )?;
            let mut state = StepState {
                loss: 0.0,
                grad_norm: None,
                skipped: false,
                update_of: Some(of),
                bad_ranks: Vec::new(),
                loss_is_own: false,
                norm_over_stages: self.stage.is_some(),
                overflow: false,
            };
            let program = self.plan.step_program.clone();
            for op in &program {
                if matches!(
                    op,
                    StepOp::CheckFinite { .. }
                        | StepOp::ClipGradValue { .. }
                        | StepOp::ClipGradNorm { .. }
                        | StepOp::OptimizerStep
                        | StepOp::ZeroGrad
                ) {
                    self.run_op(op, of, &mut state)?;
                }
            }
        }
        Ok(())
    }
}
