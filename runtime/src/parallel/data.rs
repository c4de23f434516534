//! Data parallelism, as PyTorch's DDP does it: each replica computes the
//! gradients of its own rows; the gradients are flattened into the plan's
//! buckets (reverse parameter order, about `bucket_mb` each), all-reduced
//! and divided by the number of replicas, so every replica applies the same
//! average and stays identical. Local SGD averages parameters (and the
//! optimizer's moments) instead; asynchronous updates keep all-reduces in
//! flight while later steps compute.
//!
//! tch has no gradient hooks, so a bucket cannot be sent while backward is
//! still computing the others (DDP's overlap). What overlaps instead: one
//! bucket's all-reduce runs while the next is flattened and started, and
//! under `async` every bucket's runs while the next steps compute.

use std::collections::{BTreeMap, VecDeque};

use dtl_compiler::plan::Plan;
use tch::{Kind, Tensor};

use crate::comm::{CommError, Communicator, Pending, ReduceOp};
use crate::error::{InPlace, RunError, TorchContext};
use crate::flat::{flatten, lay_out, scatter, Kept};

/// The gradient buckets of this rank's stage, as indices into the model's
/// parameters.
pub struct Buckets {
    buckets: Vec<Vec<usize>>,
    /// Every step's exchange's buffer, as long as the largest bucket.
    exchange: Kept,
}

/// Flattened bucket buffers on their way through an all-reduce.
pub struct InFlight {
    /// The step whose gradients these are.
    pub step: u64,
    pending: Vec<Pending>,
}

impl Buckets {
    /// The plan's buckets for `stage`, over `params` (the model's
    /// parameters by name, in order). Without buckets in the plan (one
    /// replica), one bucket of every parameter.
    pub fn new(plan: &Plan, stage: u64, params: &[(String, Tensor)]) -> Result<Buckets, RunError> {
        let index: BTreeMap<&str, usize> = params
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.as_str(), i))
            .collect();
        let mut buckets = Vec::new();
        for bucket in plan.topology.buckets.iter().filter(|b| b.stage == stage) {
            let indices = bucket
                .parameters
                .iter()
                .map(|name| {
                    index
                        .get(name.as_str())
                        .copied()
                        .ok_or_else(|| RunError::Torch {
                            context: "gradient buckets".into(),
                            message: format!(
                                "the plan's bucket names `{name}`, which this stage does not hold"
                            ),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            buckets.push(indices);
        }
        // A stage whose parameters are all frozen has nothing to average.
        if buckets.is_empty() && !params.is_empty() {
            buckets.push((0..params.len()).rev().collect());
        }
        let longest = buckets
            .iter()
            .map(|b| b.iter().map(|&i| params[i].1.numel() as i64).sum::<i64>())
            .max()
            .unwrap_or(0);
        Ok(Buckets {
            buckets,
            exchange: Kept::new(longest),
        })
    }

    /// Each bucket's parameters, as indices into the stage's parameters.
    pub fn indices(&self) -> &[Vec<usize>] {
        &self.buckets
    }

    /// Averages the gradients over `comm`'s replicas in place, a bucket
    /// at a time: copied into the exchange's buffer, summed there by a
    /// blocking all-reduce, and divided by the replicas on the way back
    /// into the gradients (two passes over the values, no allocation
    /// after the first step). The exchange holds one buffer of the
    /// largest bucket (and, under MPI, Open MPI's temporary of its size).
    /// Blocking, not started and waited: Open MPI's non-blocking
    /// all-reduce (libnbc) took 2.3-2.6× the blocking one's time at 13-16
    /// MiB on the CPU, and progresses only inside MPI calls, so a second
    /// bucket under way overlapped nothing.
    pub fn average_gradients(
        &self,
        comm: &dyn Communicator,
        params: &[(String, Tensor)],
        step: u64,
    ) -> Result<(), RunError> {
        let replicas = comm.size() as f64;
        let ctx = || format!("step {step}: average gradients");
        for bucket in &self.buckets {
            let grads: Vec<Tensor> = bucket
                .iter()
                .map(|&i| gradient(&params[i]))
                .collect::<Result<_, _>>()?;
            let Some(like) = grads.first() else {
                continue;
            };
            let len = grads.iter().map(|g| g.numel() as i64).sum();
            let mut flat = self.exchange.first(len, like, step)?;
            let places = lay_out(&grads, &flat, step)?;
            comm.all_reduce(&mut flat, ReduceOp::Sum)
                .map_err(collective(step))?;
            tch::no_grad(|| -> Result<(), RunError> {
                for (place, grad) in places.iter().zip(&grads) {
                    drop(place.f_div_scalar_out(grad, replicas).context(ctx)?);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Starts summing bucket `b`'s gradients over the replicas: flattened
    /// into a buffer of its own.
    fn start_bucket(
        &self,
        b: usize,
        comm: &dyn Communicator,
        params: &[(String, Tensor)],
        step: u64,
    ) -> Result<Pending, RunError> {
        let flat = flatten(self.buckets[b].iter().map(|&i| gradient(&params[i])), step)?;
        comm.all_reduce_start(flat).map_err(collective(step))
    }

    /// Starts summing every bucket's gradients over the replicas.
    pub fn start(
        &self,
        comm: &dyn Communicator,
        params: &[(String, Tensor)],
        step: u64,
    ) -> Result<InFlight, RunError> {
        let pending = (0..self.buckets.len())
            .map(|b| self.start_bucket(b, comm, params, step))
            .collect::<Result<_, _>>()?;
        Ok(InFlight { step, pending })
    }

    /// Waits for the sums and divides them by the number of replicas: each
    /// bucket's averaged gradients, flat.
    pub fn wait(&self, in_flight: InFlight, replicas: usize) -> Result<Vec<Tensor>, RunError> {
        let step = in_flight.step;
        in_flight
            .pending
            .into_iter()
            .map(|pending| averaged(pending, replicas, step))
            .collect()
    }

    /// Writes each bucket's flat gradients into the parameters' gradients.
    pub fn write(
        &self,
        step: u64,
        flats: &[Tensor],
        params: &[(String, Tensor)],
    ) -> Result<(), RunError> {
        if flats.len() != self.buckets.len() {
            return Err(RunError::Torch {
                context: format!("step {step}: gradient buckets"),
                message: format!("{} buffers for {} buckets", flats.len(), self.buckets.len()),
            });
        }
        for (b, flat) in flats.iter().enumerate() {
            self.write_bucket(b, flat, params, step)?;
        }
        Ok(())
    }

    /// Writes bucket `b`'s flat gradients into the parameters' gradients.
    fn write_bucket(
        &self,
        b: usize,
        flat: &Tensor,
        params: &[(String, Tensor)],
        step: u64,
    ) -> Result<(), RunError> {
        scatter(
            flat,
            self.buckets[b].iter().map(|&i| gradient(&params[i])),
            step,
        )
    }

    /// Averages tensors that every replica holds (parameters, optimizer
    /// moments, buffers) over the replicas, in place, in groups of the
    /// buckets' size.
    pub fn average_tensors(
        comm: &dyn Communicator,
        tensors: &[Tensor],
        step: u64,
    ) -> Result<(), RunError> {
        let replicas = comm.size() as f64;
        tch::no_grad(|| {
            // Float tensors only: int64 counters are the same everywhere.
            let floats: Vec<&Tensor> = tensors.iter().filter(|t| t.kind() == Kind::Float).collect();
            for group in floats.chunks(64) {
                let mut flat = flatten(group.iter().map(|t| Ok(t.shallow_clone())), step)?;
                comm.all_reduce(&mut flat, ReduceOp::Sum)
                    .map_err(collective(step))?;
                let average = flat
                    .f_div_scalar(replicas)
                    .context(|| format!("step {step}: average"))?;
                scatter(&average, group.iter().map(|t| Ok(t.shallow_clone())), step)?;
            }
            Ok(())
        })
    }
}

/// An `async` update on its way: in flight, or already averaged (a
/// checkpoint waits for those in flight so it can save them).
pub enum AsyncUpdate {
    Flying(InFlight),
    /// The step and each bucket's averaged gradients, flat.
    Ready(u64, Vec<Tensor>),
}

impl AsyncUpdate {
    /// The step whose gradients these are.
    pub fn step(&self) -> u64 {
        match self {
            AsyncUpdate::Flying(in_flight) => in_flight.step,
            AsyncUpdate::Ready(step, _) => *step,
        }
    }

    /// Waits for an update in flight: it becomes `Ready`.
    pub fn settle(self, buckets: &Buckets, replicas: usize) -> Result<AsyncUpdate, RunError> {
        match self {
            AsyncUpdate::Flying(in_flight) => {
                let step = in_flight.step;
                Ok(AsyncUpdate::Ready(step, buckets.wait(in_flight, replicas)?))
            }
            ready => Ok(ready),
        }
    }

    /// Writes the averaged gradients into the parameters' gradients.
    pub fn apply(
        self,
        buckets: &Buckets,
        replicas: usize,
        params: &[(String, Tensor)],
    ) -> Result<(), RunError> {
        match self.settle(buckets, replicas)? {
            AsyncUpdate::Ready(step, averaged) => buckets.write(step, &averaged, params),
            AsyncUpdate::Flying(_) => unreachable!("settled"),
        }
    }
}

/// Lets the all-reduces in flight move on, without waiting for them (an
/// MPI without a progress thread advances them only inside MPI calls).
pub fn progress(queue: &mut VecDeque<AsyncUpdate>) -> Result<(), RunError> {
    for update in queue {
        if let AsyncUpdate::Flying(in_flight) = update {
            for pending in &mut in_flight.pending {
                pending.test().map_err(collective(in_flight.step))?;
            }
        }
    }
    Ok(())
}

/// Waits for a bucket's sum and divides it by the number of replicas, in
/// place: a second gradient-sized buffer per bucket would double what the
/// exchange holds.
fn averaged(pending: Pending, replicas: usize, step: u64) -> Result<Tensor, RunError> {
    let mut sum = pending.wait().map_err(collective(step))?;
    sum.f_div_scalar_(replicas as f64)
        .in_place(|| format!("step {step}: average gradients"))?;
    Ok(sum)
}

fn collective(step: u64) -> impl Fn(CommError) -> RunError {
    move |e| RunError::Collective { step, message: e.0 }
}

/// A parameter's gradient; one that backward never reached is an error
/// under data parallelism (the replicas would disagree on its update).
pub(super) fn gradient((name, param): &(String, Tensor)) -> Result<Tensor, RunError> {
    let grad = param.grad();
    if grad.defined() {
        Ok(grad)
    } else {
        Err(RunError::Torch {
            context: format!("parameter `{name}`"),
            message: "received no gradient; every parameter must take part in the loss under data parallelism".into(),
        })
    }
}
