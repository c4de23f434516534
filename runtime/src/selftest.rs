//! `dtl info --collectives`: checks a collective backend over the ranks
//! this process was started with, on real tensors: an all-reduce (blocking
//! and started-then-waited), a broadcast, host values, and between pairs of
//! ranks a send and a receive; each result is checked against what it must
//! be. One line per check, from this rank. Nothing of training uses this.

use dtl_compiler::plan::Backend;
use tch::{Device, Kind, Tensor};

use crate::comm::{self, CommError, Communicator, Local, ReduceOp};
use crate::device::DeviceChoice;
use crate::error::RunError;
use crate::world::{
    collective_library, nccl_group, nccl_needs_cuda, rank_device, world_communicator,
};

/// The checks, over `megabytes` of float32 per tensor.
pub fn check_collectives(
    choice: DeviceChoice,
    backend: Backend,
    megabytes: f64,
) -> Result<Vec<String>, RunError> {
    let all = world_communicator()?;
    let device = rank_device(choice)?;
    let group: Box<dyn Communicator> = match collective_library(backend, device) {
        comm::Backend::Nccl => {
            let Device::Cuda(index) = device else {
                return Err(nccl_needs_cuda());
            };
            let control = all.split(0, all.rank()).map_err(backend_err)?;
            nccl_group(control, index as i64)?
        }
        _ if all.size() == 1 => Box::new(Local),
        _ => all.split(0, all.rank()).map_err(backend_err)?,
    };
    let check = Check {
        rank: all.rank(),
        size: all.size(),
        n: ((megabytes * 1024.0 * 1024.0 / 4.0) as i64).max(1),
        device,
        label: format!(
            "{} over {} rank(s), {:?}",
            group.backend(),
            all.size(),
            device
        ),
    };
    let mut lines = check.reductions(group.as_ref(), megabytes)?;
    lines.push(check.host_values(all.as_ref())?);
    lines.extend(check.point_to_point(group.as_ref())?);
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    Ok(lines)
}

fn backend_err(e: CommError) -> RunError {
    RunError::Backend { message: e.0 }
}

/// What every check of one rank shares.
struct Check {
    rank: usize,
    size: usize,
    /// Values per tensor.
    n: i64,
    device: Device,
    label: String,
}

impl Check {
    fn fail(&self, what: &str, message: String) -> RunError {
        RunError::Backend {
            message: format!("rank {}: {what}: {message}", self.rank),
        }
    }

    fn comm(&self, what: &'static str) -> impl Fn(CommError) -> RunError + '_ {
        move |e| self.fail(what, e.0)
    }

    fn torch(&self, what: &'static str) -> impl Fn(tch::TchError) -> RunError + '_ {
        move |e| self.fail(what, e.to_string())
    }

    fn full(&self, value: f64) -> Result<Tensor, RunError> {
        Tensor::f_full([self.n], value, (Kind::Float, self.device)).map_err(self.torch("allocate"))
    }

    /// The sum 1 + 2 + … + size that an all-reduce of rank + 1 gives.
    fn expected_sum(&self) -> f64 {
        (self.size * (self.size + 1) / 2) as f64
    }

    /// Every value of `t` must be `want`.
    fn all_equal(&self, t: &Tensor, want: f64, what: &str) -> Result<(), RunError> {
        let read = |m: Result<Tensor, tch::TchError>| {
            m.and_then(|m| m.f_double_value(&[]))
                .map_err(self.torch("read back"))
        };
        let (low, high) = (read(t.f_min())?, read(t.f_max())?);
        if low != want || high != want {
            return Err(self.fail(
                what,
                format!("expected {want} everywhere, got values in [{low}, {high}]"),
            ));
        }
        Ok(())
    }

    /// A blocking all-reduce, a started-then-waited one and a broadcast.
    fn reductions(
        &self,
        group: &dyn Communicator,
        megabytes: f64,
    ) -> Result<Vec<String>, RunError> {
        let (rank, label) = (self.rank, &self.label);
        let mut lines = Vec::new();
        let mut x = self.full((rank + 1) as f64)?;
        let started = std::time::Instant::now();
        group
            .all_reduce(&mut x, ReduceOp::Sum)
            .map_err(self.comm("all-reduce"))?;
        self.all_equal(&x, self.expected_sum(), "all-reduce")?;
        lines.push(format!(
            "rank {rank}: all-reduce of {megabytes} MB, {label}: ok ({:.2} ms)",
            started.elapsed().as_secs_f64() * 1e3
        ));

        let pending = group
            .all_reduce_start(self.full((rank + 1) as f64)?)
            .map_err(self.comm("start an all-reduce"))?;
        let y = pending
            .wait()
            .map_err(self.comm("wait for an all-reduce"))?;
        self.all_equal(&y, self.expected_sum(), "non-blocking all-reduce")?;
        lines.push(format!("rank {rank}: non-blocking all-reduce, {label}: ok"));

        let mut z = self.full(if rank == 0 { 42.0 } else { -1.0 })?;
        group.broadcast(&mut z, 0).map_err(self.comm("broadcast"))?;
        self.all_equal(&z, 42.0, "broadcast")?;
        lines.push(format!("rank {rank}: broadcast from rank 0, {label}: ok"));
        Ok(lines)
    }

    /// Host values summed over every rank.
    fn host_values(&self, all: &dyn Communicator) -> Result<String, RunError> {
        let mut values = [self.rank as f64 + 1.0];
        all.all_reduce_host(&mut values, ReduceOp::Sum)
            .map_err(self.comm("host all-reduce"))?;
        if values[0] != self.expected_sum() {
            return Err(self.fail(
                "host all-reduce",
                format!("expected {}, got {}", self.expected_sum(), values[0]),
            ));
        }
        Ok(format!(
            "rank {}: host values over {} rank(s): ok",
            self.rank, self.size
        ))
    }

    /// Pairs (0, 1), (2, 3), …: the even rank sends, the odd one receives.
    fn point_to_point(&self, group: &dyn Communicator) -> Result<Option<String>, RunError> {
        let (rank, label) = (self.rank, &self.label);
        if self.size < 2 || (rank % 2 == 0 && rank + 1 >= self.size) {
            return Ok(None);
        }
        let mut t = self.full(rank as f64)?;
        if rank % 2 == 0 {
            group.send(&t, rank + 1).map_err(self.comm("send"))?;
            return Ok(Some(format!(
                "rank {rank}: sent to rank {}, {label}: ok",
                rank + 1
            )));
        }
        group.recv(&mut t, rank - 1).map_err(self.comm("receive"))?;
        self.all_equal(&t, (rank - 1) as f64, "receive")?;
        Ok(Some(format!(
            "rank {rank}: received from rank {}, {label}: ok",
            rank - 1
        )))
    }
}
