//! `shard = parameters` (ZeRO-3, FSDP's full sharding): the replicas of
//! the shard group split the parameters themselves. Each of the plan's
//! units lays its trainable parameters end to end in one flat buffer,
//! padded to equal slices, and the parameters become leaves on its memory. A
//! replica keeps its own slice (the values its optimizer updates) in a
//! tensor of its own; the flat buffer's memory exists only while the unit
//! is gathered:
//!
//! - before a unit's forward the replicas all-gather their slices into it;
//! - after the forward it is freed (`reshard_after_forward`), and gathered
//!   again before the unit's backward: the graph's references to the
//!   parameters see the new memory, as FSDP's flat parameters do;
//! - after the unit's backward its gradients are reduce-scattered, each
//!   replica adding the sum of its slice to the earlier micro-batches',
//!   and the unit is freed;
//! - a unit that spans its whole stage (the root, with parameters several
//!   units read) is gathered once, before the first forward, and freed at
//!   the end of backward (of the step's micro-batch, or of a pipeline's
//!   round of pieces).
//!
//! The segmented forward ([`super::segments`]) calls these at each unit's
//! edges. An evaluation gathers them one at a time too
//! ([`Units::around_node`]), and the weights written at the end go
//! through the replicas' slices ([`crate::checkpoint::shards`]).
//!
//! At the start a rank lays out one unit at a time: its values are made
//! (by the initialisers, or read from a checkpoint) into the flat buffer,
//! the rank keeps its slice, and the buffer goes before the next unit's
//! is made, so that no rank holds the whole model.

use std::cell::Cell;

use dtl_compiler::plan::Plan;
use tch::Tensor;

use crate::comm::{CommError, Communicator};
use crate::error::{InPlace, RunError, TorchContext};
use crate::flat::{lay_out, Kept};
use crate::model::Edge;
use crate::torch_ops;

/// Writes a deferred parameter's values (by name) into its place in a
/// unit's flat buffer.
pub type Fill<'a> = dyn FnMut(&str, &mut Tensor) -> Result<(), RunError> + 'a;

/// One rank's units.
pub struct Units {
    units: Vec<Unit>,
    /// Free a unit after its forward.
    reshard: bool,
    /// Per unit: this replica's slice of the gradients' sum over the
    /// replicas, added up over the step's micro-batches.
    grads: Vec<Option<Tensor>>,
    /// The flat gradients of the unit being reduce-scattered, as long as
    /// the largest unit's.
    exchange: Kept,
}

struct Unit {
    name: String,
    nodes: std::ops::RangeInclusive<usize>,
    /// Spans the whole stage: held from the first forward to the end of
    /// backward.
    held: bool,
    /// Its parameters, as indices into the model's trainable ones.
    params: Vec<usize>,
    /// The whole values, padded: the parameters view it. Its memory is
    /// there only while `gathered`.
    flat: Tensor,
    /// This replica's slice of `flat`, in memory of its own.
    shard: Tensor,
    gathered: Cell<bool>,
}

impl Units {
    /// The plan's units of pipeline stage `stage` over `params` (the
    /// stage's trainable parameters), this replica being `rank` of `size`.
    /// The parameters hold their whole initial values, or, with `fill`,
    /// are placeholders of their shape whose values `fill` writes into
    /// their place in the unit's flat buffer (`fill(name, place)`). Each
    /// unit is freed once its slice is taken.
    pub fn new(
        plan: &Plan,
        stage: u64,
        params: &mut [(String, Tensor)],
        (rank, size): (usize, usize),
        mut fill: Option<&mut Fill<'_>>,
    ) -> Result<Option<Units>, RunError> {
        let stages = &plan.topology.stages;
        let planned: Vec<_> = plan.topology.stage_units(stage).collect();
        if planned.is_empty() || size < 2 {
            return Ok(None);
        }
        let mut units = Vec::with_capacity(planned.len());
        for unit in planned {
            let ctx = || format!("shard unit `{}`", unit.name);
            let indices = unit
                .parameters
                .iter()
                .map(|p| {
                    params
                        .iter()
                        .position(|(n, _)| *n == p.name)
                        .ok_or_else(|| RunError::Torch {
                            context: ctx(),
                            message: format!(
                                "the plan's parameter `{}` is not trained here",
                                p.name
                            ),
                        })
                })
                .collect::<Result<Vec<usize>, RunError>>()?;
            // The plan's layout is the optimizer's too: end to end, each
            // slice the values / size rounded up.
            let mut end = 0;
            for p in &unit.parameters {
                if p.offset != end {
                    return Err(RunError::Torch {
                        context: ctx(),
                        message: format!(
                            "`{}` starts at {} of the flat buffer, not at {end}",
                            p.name, p.offset
                        ),
                    });
                }
                end += p.values;
            }
            if unit.slice != end.div_ceil(size as u64) {
                return Err(RunError::Torch {
                    context: ctx(),
                    message: format!(
                        "slices of {} values for {end} values over {size} replicas: the plan was made for another shard degree",
                        unit.slice
                    ),
                });
            }
            let (kind, device) = (params[indices[0]].1.kind(), params[indices[0]].1.device());
            let slice = unit.slice as i64;
            let flat = tch::no_grad(|| Tensor::f_zeros([slice * size as i64], (kind, device)))
                .context(ctx)?;
            for (&i, p) in indices.iter().zip(&unit.parameters) {
                let (name, param) = &mut params[i];
                let part = flat
                    .f_narrow(0, p.offset as i64, p.values as i64)
                    .and_then(|part| part.f_view(param.size().as_slice()))
                    .context(ctx)?;
                if param.kind() != kind {
                    return Err(RunError::Torch {
                        context: ctx(),
                        message: format!(
                            "`{name}` is {:?} and `{}` {kind:?}: a unit's parameters share one flat buffer",
                            param.kind(),
                            unit.parameters[0].name,
                        ),
                    });
                }
                match &mut fill {
                    Some(fill) => fill(name, &mut part.shallow_clone())?,
                    None => {
                        tch::no_grad(|| part.shallow_clone().f_copy_(param)).context(ctx)?;
                    }
                }
                // A new leaf on the flat buffer's memory: the old tensor
                // goes, and with it its memory (a view keeps its base).
                *param = part.f_detach().context(ctx)?.set_requires_grad(true);
            }
            let shard = flat
                .f_narrow(0, rank as i64 * slice, slice)
                .and_then(|s| s.f_detach_copy())
                .context(ctx)?;
            torch_ops::free_storage(&flat).context(ctx)?;
            units.push(Unit {
                name: unit.name.clone(),
                nodes: unit.first_node..=unit.last_node,
                held: unit.held(stages),
                params: indices,
                flat,
                shard,
                gathered: Cell::new(false),
            });
        }
        let longest = units.iter().map(|u| u.flat.numel() as i64).max();
        Ok(Some(Units {
            grads: units.iter().map(|_| None).collect(),
            exchange: Kept::new(longest.unwrap_or(0)),
            units,
            reshard: plan.topology.parallelism.reshard_after_forward,
        }))
    }

    /// Each unit's parameters (indices into the trainable ones), in order:
    /// the optimizer's buckets.
    pub fn params(&self) -> Vec<Vec<usize>> {
        self.units.iter().map(|u| u.params.clone()).collect()
    }

    /// This replica's slice of each unit (sharing memory): what its
    /// optimizer updates.
    pub fn shards(&self) -> Vec<Tensor> {
        self.units.iter().map(|u| u.shard.shallow_clone()).collect()
    }

    /// Which of `params` (the trainable ones) the units hold.
    pub fn sharded(&self, params: &[(String, Tensor)]) -> Vec<bool> {
        let mut out = vec![false; params.len()];
        for unit in &self.units {
            for &i in &unit.params {
                out[i] = true;
            }
        }
        out
    }

    /// The unit whose forward starts or whose backward ends at node
    /// `first` (a segment's first node), if one that is not held does.
    fn at(&self, first: usize) -> Option<usize> {
        self.units
            .iter()
            .position(|u| !u.held && u.nodes.contains(&first))
    }

    /// All-gathers unit `u` unless it is gathered.
    fn gather(&self, u: usize, comm: &dyn Communicator, step: u64) -> Result<(), RunError> {
        let unit = &self.units[u];
        if unit.gathered.get() {
            return Ok(());
        }
        let ctx = || format!("step {step}: gather shard unit `{}`", unit.name);
        torch_ops::alloc_storage(&unit.flat).context(ctx)?;
        // The parameters share the flat buffer's version counter, which
        // autograd checks in backward: the collective writes into a tensor
        // of its own on the same memory, so that a copy it makes (a
        // collective staged through the host) changes no version.
        // SAFETY: the memory was just allocated for `flat`'s values, which
        // outlives `target`; nothing frees it before the gather returns.
        let mut target = unsafe {
            Tensor::f_from_blob(
                unit.flat.data_ptr() as *const u8,
                &[unit.flat.numel() as i64],
                &[1],
                unit.flat.kind(),
                unit.flat.device(),
            )
        }
        .context(ctx)?;
        comm.all_gather(&unit.shard, &mut target)
            .map_err(collective(step, &unit.name))?;
        unit.gathered.set(true);
        Ok(())
    }

    /// Lets unit `u`'s whole values go.
    fn free(&self, u: usize, step: u64) -> Result<(), RunError> {
        let unit = &self.units[u];
        if !unit.gathered.get() {
            return Ok(());
        }
        torch_ops::free_storage(&unit.flat)
            .context(|| format!("step {step}: free shard unit `{}`", unit.name))?;
        unit.gathered.set(false);
        Ok(())
    }

    /// A forward pass outside a step (an evaluation), unit by unit: before
    /// node `j` the held units (at the first node) and the unit that
    /// starts at `j` are gathered, after it the unit that ends at `j` is
    /// freed, so that one unit (and the held ones) is whole at a time. A
    /// collective over the shard group at each unit: every replica runs
    /// the same passes, rows or none.
    pub fn around_node(
        &self,
        (j, edge): (usize, Edge),
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<(), RunError> {
        for (u, unit) in self.units.iter().enumerate() {
            match edge {
                Edge::Before if unit.held || *unit.nodes.start() == j => {
                    self.gather(u, comm, step)?;
                }
                Edge::After if !unit.held && *unit.nodes.end() == j => self.free(u, step)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Frees every unit.
    pub fn free_all(&self, step: u64) -> Result<(), RunError> {
        (0..self.units.len()).try_for_each(|u| self.free(u, step))
    }

    /// Reduce-scatters unit `u`'s gradients: this replica adds its slice of
    /// their sum to the step's, and the whole gradients go.
    fn reduce(
        &mut self,
        u: usize,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<(), RunError> {
        let unit = &self.units[u];
        let ctx = || format!("step {step}: reduce-scatter shard unit `{}`", unit.name);
        tch::no_grad(|| {
            let grads = unit
                .params
                .iter()
                .map(|&i| super::data::gradient(&params[i]))
                .collect::<Result<Vec<_>, _>>()?;
            let whole = unit.flat.numel() as i64;
            let like = grads.first().unwrap_or(&unit.shard);
            let send = self.exchange.first(whole, like, step)?;
            lay_out(&grads, &send, step)?;
            let mut recv = unit.shard.f_zeros_like().context(ctx)?;
            comm.reduce_scatter(&send, &mut recv)
                .map_err(collective(step, &unit.name))?;
            for &i in &unit.params {
                let (name, param) = &params[i];
                torch_ops::reset_grad(&mut param.shallow_clone())
                    .context(|| format!("step {step}: let the gradient of `{name}` go"))?;
            }
            match &mut self.grads[u] {
                Some(sum) => {
                    sum.f_add_(&recv).in_place(ctx)?;
                }
                none => *none = Some(recv),
            }
            Ok(())
        })
    }

    /// This replica's gradient slices of the step, one per unit, divided
    /// by `average_over` when given; the sums start again.
    pub fn take_grads(
        &mut self,
        average_over: Option<usize>,
        step: u64,
    ) -> Result<Vec<Tensor>, RunError> {
        let fresh = self.units.iter().map(|_| None).collect();
        let taken = std::mem::replace(&mut self.grads, fresh);
        taken
            .into_iter()
            .zip(&self.units)
            .map(|(grad, unit)| {
                let ctx = || {
                    format!(
                        "step {step}: the gradient slice of shard unit `{}`",
                        unit.name
                    )
                };
                let mut grad = match grad {
                    Some(g) => g,
                    None => unit.shard.f_zeros_like().context(ctx)?,
                };
                if let Some(n) = average_over {
                    grad.f_div_scalar_(n as f64).in_place(ctx)?;
                }
                Ok(grad)
            })
            .collect()
    }
}

/// What the segmented forward and backward do at each segment's edges
/// under `shard = parameters`: the units, the parameters whose gradients
/// they reduce-scatter, the shard group, the step.
pub struct Gathering<'a> {
    pub units: &'a mut Units,
    pub params: &'a [(String, Tensor)],
    pub comm: &'a dyn Communicator,
    pub step: u64,
}

impl Gathering<'_> {
    /// Before the forward of the segment starting at node `first`: the
    /// held units (once) and its own.
    pub fn before_forward(&mut self, first: usize) -> Result<(), RunError> {
        for u in 0..self.units.units.len() {
            if self.units.units[u].held {
                self.units.gather(u, self.comm, self.step)?;
            }
        }
        match self.units.at(first) {
            Some(u) => self.units.gather(u, self.comm, self.step),
            None => Ok(()),
        }
    }

    /// After the forward of the segment ending at node `last`: its unit
    /// is freed when the segment is the unit's last (`unit_mb` joins
    /// several segments into one unit).
    pub fn after_forward(&mut self, last: usize) -> Result<(), RunError> {
        match self.units.at(last) {
            Some(u) if self.units.reshard && *self.units.units[u].nodes.end() == last => {
                self.units.free(u, self.step)
            }
            _ => Ok(()),
        }
    }

    /// Before that segment's backward (and its recomputation).
    pub fn before_backward(&mut self, first: usize) -> Result<(), RunError> {
        match self.units.at(first) {
            Some(u) => self.units.gather(u, self.comm, self.step),
            None => Ok(()),
        }
    }

    /// After that segment's backward: when it is its unit's first
    /// segment (the last whose backward runs), the unit's gradients are
    /// reduce-scattered and the unit freed; before, its earlier segments'
    /// backward still needs the weights and adds to the gradients.
    pub fn after_backward(&mut self, first: usize) -> Result<(), RunError> {
        let Some(u) = self.units.at(first) else {
            return Ok(());
        };
        if *self.units.units[u].nodes.start() != first {
            return Ok(());
        }
        self.units.reduce(u, self.params, self.comm, self.step)?;
        self.units.free(u, self.step)
    }

    /// After the whole backward (of a micro-batch, or of a pipeline
    /// round's every piece): the held units' turn.
    pub fn after_all(&mut self) -> Result<(), RunError> {
        for u in 0..self.units.units.len() {
            if self.units.units[u].held {
                self.units.reduce(u, self.params, self.comm, self.step)?;
                self.units.free(u, self.step)?;
            }
        }
        Ok(())
    }
}

fn collective<'a>(step: u64, unit: &'a str) -> impl Fn(CommError) -> RunError + 'a {
    move |e| RunError::Collective {
        step,
        message: format!("shard unit `{unit}`: {}", e.0),
    }
}
