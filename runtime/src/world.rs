//! Where this process stands in a run: its rank among the world's, the
//! replica and the pipeline stage the plan gives that rank, its device, and
//! the groups it talks to. One process is world size 1 with [`Local`]
//! communicators: the same step loop, no separate path.
//!
//! A process started by an MPI launcher (`mpirun`, `srun`) takes its rank
//! and the world size from MPI; the world size must be the plan's, checked
//! before anything is written or computed, on every rank.

use dtl_compiler::plan::{Backend, Plan};
use tch::Device;

use crate::comm::{Communicator, Local};
use crate::device::{self, DeviceChoice};
use crate::error::RunError;

pub struct World {
    /// This process's rank, `0..size`.
    pub rank: usize,
    pub size: usize,
    /// The replica this rank is: rank % data.
    pub replica: usize,
    /// The pipeline stage it runs: rank / data.
    pub stage: usize,
    pub device: Device,
    /// Every rank: control values (losses, flags, hashes) and aborting the
    /// whole job.
    pub all: Box<dyn Communicator>,
    /// The replicas of this rank's stage, which average their gradients (or
    /// parameters) with each other.
    pub replicas: Box<dyn Communicator>,
    /// The stages of this rank's replica, in stage order (its rank in the
    /// group is its stage): activations and gradients between stages, the
    /// gradient norm over them.
    pub pipeline: Box<dyn Communicator>,
    /// The collective backend the replicas use: `local`, `mpi`, `nccl`.
    pub backend: &'static str,
}

/// Whether this process was started by an MPI launcher.
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// This process's rank as its launcher gave it, before MPI starts.
pub fn rank_from_launcher() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_RANK",
        "PMIX_RANK",
        "PMI_RANK",
        "SLURM_PROCID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// This process's index among the ranks on its machine, from the launcher
/// (Open MPI, Slurm, MPICH), 0 without one: which GPU it takes.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "SLURM_LOCALID",
        "MPI_LOCALRANKID",
        "LOCAL_RANK",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

/// How many ranks share this machine, from the launcher (1 without one).
pub fn local_size() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "SLURM_NTASKS_PER_NODE",
        "MPI_LOCALNRANKS",
        "LOCAL_WORLD_SIZE",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(1)
}

/// Whether this runtime can run `plan` on `choice` at all: refused before
/// any rank is started or anything written.
pub fn supports(plan: &Plan, choice: DeviceChoice) -> Result<(), RunError> {
    let layout = &plan.topology.parallelism;
    if layout.backend == Backend::Nccl && device::resolve(choice)? == Device::Cpu {
        return Err(nccl_needs_cuda());
    }
    Ok(())
}

impl World {
    /// Joins the run: every rank calls this first.
    pub fn join(plan: &Plan, choice: DeviceChoice) -> Result<World, RunError> {
        supports(plan, choice)?;
        let all = world_communicator()?;
        let (rank, size) = (all.rank(), all.size());
        let layout = &plan.topology.parallelism;
        let expected = plan.topology.world_size() as usize;
        if size != expected {
            return Err(RunError::WorldSize {
                rank,
                ranks: size,
                plan: expected,
                data: layout.data,
                pipeline: layout.pipeline,
            });
        }
        let data = layout.data as usize;
        let device = match device::resolve(choice)? {
            // Each rank on a machine takes its own GPU.
            Device::Cuda(_) => {
                Device::Cuda(local_rank() % tch::Cuda::device_count().max(1) as usize)
            }
            cpu => cpu,
        };
        let (replica, stage) = (rank % data, rank / data);
        let backend = match (layout.backend, device) {
            (Backend::Auto, Device::Cuda(_)) | (Backend::Nccl, _) => Backend::Nccl,
            (Backend::Auto | Backend::Mpi, _) => Backend::Mpi,
        };
        let replicas = replica_group(all.as_ref(), backend, device, stage, replica, data)?;
        let pipeline = if layout.pipeline == 1 {
            Box::new(Local) as Box<dyn Communicator>
        } else {
            let group = all
                .split(replica, stage)
                .map_err(|e| RunError::Backend { message: e.0 })?;
            match (backend, device) {
                (Backend::Nccl, Device::Cuda(index)) => {
                    nccl_group(Some(group), all.as_ref(), index as i64)?
                }
                _ => group,
            }
        };
        let backend = if data > 1 {
            replicas.backend()
        } else {
            pipeline.backend()
        };
        Ok(World {
            rank,
            size,
            replica,
            stage,
            device,
            all,
            replicas,
            pipeline,
            backend,
        })
    }

    /// The background failure checks of every group's backend, for the
    /// watchdog.
    pub fn health_probes(&self) -> Vec<crate::comm::HealthProbe> {
        [&self.all, &self.replicas, &self.pipeline]
            .into_iter()
            .filter_map(|group| group.health_probe())
            .collect()
    }

    /// Ends the whole job with `code` when this rank fails alone: peers
    /// blocked in a collective it will never join would wait forever.
    pub fn abort(&self, code: i32) -> ! {
        // Through a group whose backend has its own teardown (NCCL aborts
        // its communicator first); every group's abort ends the whole job.
        if self.replicas.size() > 1 {
            self.replicas.abort(code)
        } else if self.pipeline.size() > 1 {
            self.pipeline.abort(code)
        } else {
            self.all.abort(code)
        }
    }
}

/// Every rank of the run: MPI's world when an MPI launcher started this
/// process, else this process alone.
fn world_communicator() -> Result<Box<dyn Communicator>, RunError> {
    if !launched_by_mpi() {
        return Ok(Box::new(Local));
    }
    #[cfg(feature = "mpi")]
    {
        crate::comm::mpi::Mpi::init()
            .map(|comm| Box::new(comm) as Box<dyn Communicator>)
            .map_err(|e| RunError::Backend { message: e.0 })
    }
    #[cfg(not(feature = "mpi"))]
    Err(RunError::Backend {
        message: "this process was started by an MPI launcher, but this dtl was built without MPI (the `mpi` feature)".into(),
    })
}

/// The replicas of one stage: ranks `stage·data .. (stage+1)·data`, over
/// the backend the plan asks for.
fn replica_group(
    all: &dyn Communicator,
    backend: Backend,
    device: Device,
    stage: usize,
    replica: usize,
    data: usize,
) -> Result<Box<dyn Communicator>, RunError> {
    let comm_err = |e: crate::comm::CommError| RunError::Backend { message: e.0 };
    // Every rank of the world takes part in the split, whatever its group.
    let control = if all.size() == data {
        None
    } else {
        Some(all.split(stage, replica).map_err(comm_err)?)
    };
    match backend {
        Backend::Nccl => {
            let Device::Cuda(index) = device else {
                return Err(nccl_needs_cuda());
            };
            nccl_group(control, all, index as i64)
        }
        Backend::Mpi | Backend::Auto => {
            if data == 1 {
                return Ok(Box::new(Local));
            }
            match control {
                Some(group) => Ok(group),
                None => all.split(0, replica).map_err(comm_err),
            }
        }
    }
}

fn nccl_needs_cuda() -> RunError {
    RunError::Backend {
        message: "`backend = nccl` works on CUDA tensors; this run is on the CPU (use `backend = mpi` or `auto`, or `--device cuda`)".into(),
    }
}

#[cfg(feature = "nccl")]
fn nccl_group(
    control: Option<Box<dyn Communicator>>,
    all: &dyn Communicator,
    device: i64,
) -> Result<Box<dyn Communicator>, RunError> {
    let control = match control {
        Some(group) => group,
        // The whole world is one group: a communicator of its own.
        None => all
            .split(0, all.rank())
            .map_err(|e| RunError::Backend { message: e.0 })?,
    };
    crate::comm::nccl::Nccl::init(control, device)
        .map(|comm| Box::new(comm) as Box<dyn Communicator>)
        .map_err(|e| RunError::Backend { message: e.0 })
}

#[cfg(not(feature = "nccl"))]
fn nccl_group(
    _: Option<Box<dyn Communicator>>,
    _: &dyn Communicator,
    _: i64,
) -> Result<Box<dyn Communicator>, RunError> {
    Err(RunError::Backend {
        message: "this plan uses NCCL (`backend = nccl`, or `auto` on a GPU), but this dtl was built without it (the `nccl` feature)".into(),
    })
}

/// `dtl info --collectives`: checks a collective backend over the ranks
/// this process was started with, on real tensors of `megabytes`: an
/// all-reduce (blocking and started-then-waited), a broadcast, host values,
/// and between pairs of ranks a send and a receive; each result is checked
/// against what it must be. One line per check, from this rank.
pub fn check_collectives(
    choice: DeviceChoice,
    backend: Backend,
    megabytes: f64,
) -> Result<Vec<String>, RunError> {
    use crate::comm::ReduceOp;
    use tch::{Kind, Tensor};

    let all = world_communicator()?;
    let (rank, size) = (all.rank(), all.size());
    let device = match device::resolve(choice)? {
        Device::Cuda(_) => Device::Cuda(local_rank() % tch::Cuda::device_count().max(1) as usize),
        cpu => cpu,
    };
    let backend = match (backend, device) {
        (Backend::Auto, Device::Cuda(_)) | (Backend::Nccl, _) => Backend::Nccl,
        (Backend::Auto | Backend::Mpi, _) => Backend::Mpi,
    };
    let group: Box<dyn Communicator> = match backend {
        Backend::Nccl => {
            let Device::Cuda(index) = device else {
                return Err(nccl_needs_cuda());
            };
            nccl_group(None, all.as_ref(), index as i64)?
        }
        _ if size == 1 => Box::new(Local),
        _ => all
            .split(0, rank)
            .map_err(|e| RunError::Backend { message: e.0 })?,
    };
    let fail = |what: &str, message: String| RunError::Backend {
        message: format!("rank {rank}: {what}: {message}"),
    };
    let comm = |what: &'static str| {
        move |e: crate::comm::CommError| RunError::Backend {
            message: format!("rank {rank}: {what}: {}", e.0),
        }
    };
    let torch = |what: &'static str| {
        move |e: tch::TchError| RunError::Backend {
            message: format!("rank {rank}: {what}: {e}"),
        }
    };
    let n = ((megabytes * 1024.0 * 1024.0 / 4.0) as i64).max(1);
    let options = (Kind::Float, device);
    let expected = (size * (size + 1) / 2) as f64;
    let mut lines = Vec::new();
    let check_all = |t: &Tensor, want: f64, what: &str| -> Result<(), RunError> {
        let (low, high) = (
            t.f_min()
                .and_then(|m| m.f_double_value(&[]))
                .map_err(torch("read back"))?,
            t.f_max()
                .and_then(|m| m.f_double_value(&[]))
                .map_err(torch("read back"))?,
        );
        if low != want || high != want {
            return Err(fail(
                what,
                format!("expected {want} everywhere, got values in [{low}, {high}]"),
            ));
        }
        Ok(())
    };
    let label = format!("{} over {} rank(s), {:?}", group.backend(), size, device);

    let mut x = Tensor::f_full([n], (rank + 1) as f64, options).map_err(torch("allocate"))?;
    let started = std::time::Instant::now();
    group
        .all_reduce(&mut x, ReduceOp::Sum)
        .map_err(comm("all-reduce"))?;
    check_all(&x, expected, "all-reduce")?;
    lines.push(format!(
        "rank {rank}: all-reduce of {megabytes} MB, {label}: ok ({:.2} ms)",
        started.elapsed().as_secs_f64() * 1e3
    ));

    let y = Tensor::f_full([n], (rank + 1) as f64, options).map_err(torch("allocate"))?;
    let pending = group
        .all_reduce_start(y)
        .map_err(comm("start an all-reduce"))?;
    let y = pending.wait().map_err(comm("wait for an all-reduce"))?;
    check_all(&y, expected, "non-blocking all-reduce")?;
    lines.push(format!("rank {rank}: non-blocking all-reduce, {label}: ok"));

    let mut z = Tensor::f_full([n], if rank == 0 { 42.0 } else { -1.0 }, options)
        .map_err(torch("allocate"))?;
    group.broadcast(&mut z, 0).map_err(comm("broadcast"))?;
    check_all(&z, 42.0, "broadcast")?;
    lines.push(format!("rank {rank}: broadcast from rank 0, {label}: ok"));

    let mut values = [rank as f64 + 1.0];
    all.all_reduce_host(&mut values, ReduceOp::Sum)
        .map_err(comm("host all-reduce"))?;
    if values[0] != expected {
        return Err(fail(
            "host all-reduce",
            format!("expected {expected}, got {}", values[0]),
        ));
    }
    lines.push(format!(
        "rank {rank}: host values over {} rank(s): ok",
        size
    ));

    // Pairs (0, 1), (2, 3), …: the even rank sends, the odd one receives.
    if size >= 2 && (rank % 2 == 1 || rank + 1 < size) {
        let mut t = Tensor::f_full([n], rank as f64, options).map_err(torch("allocate"))?;
        if rank % 2 == 0 {
            group.send(&t, rank + 1).map_err(comm("send"))?;
            lines.push(format!(
                "rank {rank}: sent to rank {}, {label}: ok",
                rank + 1
            ));
        } else {
            group.recv(&mut t, rank - 1).map_err(comm("receive"))?;
            check_all(&t, (rank - 1) as f64, "receive")?;
            lines.push(format!(
                "rank {rank}: received from rank {}, {label}: ok",
                rank - 1
            ));
        }
    }
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    Ok(lines)
}
