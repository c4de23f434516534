//! Where this process stands in a run: its rank among the world's, its
//! place in the layout (replica, stage, …) and the communicator groups it
//! belongs to, all read from the plan's topology, and its device. Nothing
//! here derives a coordinate: the plan spells out every rank. One process
//! is world size 1 with [`Local`] communicators: the same step loop, no
//! separate path.
//!
//! A process started by an MPI launcher (`mpirun`, `srun`) takes its rank
//! and the world size from MPI; the world size must be the plan's, checked
//! before anything is written or computed, on every rank.

use dtl_compiler::plan::{Backend, GroupKind, Plan, RankPlan, Shard, Topology};
use tch::Device;

use crate::comm::throttle::{Link, Throttled};
use crate::comm::{self, Communicator, Local};
use crate::device::{self, DeviceChoice};
use crate::error::RunError;

pub struct World {
    /// This process's rank, `0..size`.
    pub rank: usize,
    pub size: usize,
    /// Its place in the layout, as the plan's topology gives it.
    pub place: RankPlan,
    pub device: Device,
    /// Every rank: control values (losses, flags, hashes) and aborting the
    /// whole job.
    pub all: Box<dyn Communicator>,
    /// The replicas of this rank's stage, which average their gradients (or
    /// parameters) with each other: the plan's `replicas` group.
    pub replicas: Box<dyn Communicator>,
    /// The stages of this rank's replica, in stage order (its rank in the
    /// group is its stage): activations and gradients between stages, the
    /// gradient norm over them: the plan's `pipeline` group.
    pub pipeline: Box<dyn Communicator>,
    /// Under `shard_group`: the replicas of its stage that split one copy
    /// of the sharded state (a group of one otherwise).
    pub shard: Box<dyn Communicator>,
    /// Under `shard_group`: the replicas of its stage that hold the same
    /// slices as it in the other copies (a group of one otherwise).
    pub replicate: Box<dyn Communicator>,
    /// Under `tensor = T`: the T ranks that split its replica's layers,
    /// in tensor rank order (a group of one otherwise).
    pub tensor: Box<dyn Communicator>,
    /// Under `groups`: the replicas of its sync group, which average their
    /// gradients every step (a group of one otherwise).
    pub group: Box<dyn Communicator>,
    /// Under `groups`: the replicas at its place in every sync group (a
    /// group of one otherwise); see [`World::across`].
    across: Box<dyn Communicator>,
    /// Whether the plan cuts the replicas into sync groups (`groups`).
    grouped: bool,
    /// The library the replicas' collectives run on (the tensor group's
    /// without replicas, the pipeline's without either).
    pub backend: comm::Backend,
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
    if layout.tensor > 1 {
        tensor_runs(plan)?;
    }
    Ok(())
}

/// What a tensor-parallel run does not do yet (`shard = parameters`):
/// said before anything starts, rather than run wrong.
fn tensor_runs(plan: &Plan) -> Result<(), RunError> {
    let layout = &plan.topology.parallelism;
    match layout.shard {
        Shard::Parameters => Err(RunError::TensorNotRun {
            tensor: layout.tensor,
            what: "with `shard = parameters`".into(),
        }),
        _ => Ok(()),
    }
}

impl World {
    /// Joins the run: every rank calls this first.
    pub fn join(plan: &Plan, choice: DeviceChoice) -> Result<World, RunError> {
        supports(plan, choice)?;
        let topology = &plan.topology;
        check_topology(topology)?;
        let all = world_communicator()?;
        let (rank, size) = (all.rank(), all.size());
        if size != topology.ranks.len() {
            let layout = &topology.parallelism;
            return Err(RunError::WorldSize {
                rank,
                ranks: size,
                plan: topology.ranks.len(),
                data: layout.data,
                pipeline: layout.pipeline,
            });
        }
        let device = rank_device(choice)?;
        let library = collective_library(topology.parallelism.backend, device);
        let join = |kind| group(all.as_ref(), topology, rank, kind, library, device);
        // Every rank creates the groups in the same order: MPI's split is
        // collective over the world.
        let replicas = join(GroupKind::Replicas)?;
        let pipeline = join(GroupKind::Pipeline)?;
        let shard = join(GroupKind::Shard)?;
        let replicate = join(GroupKind::Replicate)?;
        let tensor = join(GroupKind::Tensor)?;
        let group = join(GroupKind::Group)?;
        let across = join(GroupKind::Across)?;
        let backend = if replicas.size() > 1 {
            replicas.backend()
        } else if tensor.size() > 1 {
            tensor.backend()
        } else {
            pipeline.backend()
        };
        Ok(World {
            rank,
            size,
            place: topology.ranks[rank].clone(),
            device,
            all,
            replicas,
            pipeline,
            shard,
            replicate,
            tensor,
            group,
            across,
            grouped: topology.parallelism.groups > 0,
            backend,
        })
    }

    /// Puts the slow `link` between the sites of the layout (`--link`, a
    /// testing aid: [`comm::throttle`]): every communicator of this rank
    /// whose ranks lie on more than one site crosses it.
    pub fn slow_link(&mut self, link: &Link, topology: &Topology) -> Result<(), String> {
        let layout = &topology.parallelism;
        let per_site = layout.data / link.sites_of(layout)?;
        let spans = |kind: GroupKind| {
            topology
                .group_of(self.rank as u64, kind)
                .is_some_and(|(_, group, _)| {
                    let site = |r: &u64| topology.ranks[*r as usize].replica / per_site;
                    let first = group.ranks.first().map(site);
                    group.ranks.iter().any(|r| Some(site(r)) != first)
                })
        };
        for (kind, comm) in [
            (GroupKind::Replicas, &mut self.replicas),
            (GroupKind::Shard, &mut self.shard),
            (GroupKind::Replicate, &mut self.replicate),
            (GroupKind::Group, &mut self.group),
            (GroupKind::Across, &mut self.across),
        ] {
            if spans(kind) {
                let inner = std::mem::replace(comm, Box::new(Local));
                *comm = Box::new(Throttled::new(inner, *link));
            }
        }
        Ok(())
    }

    /// The replicas that meet across sync groups (DiLoCo's outer step,
    /// local SGD's average): one at each group under `groups`, else every
    /// replica of the stage (each is its own group).
    pub fn across(&self) -> &dyn Communicator {
        match self.grouped {
            true => self.across.as_ref(),
            false => self.replicas.as_ref(),
        }
    }

    /// The replicas that split one copy of the sharded state: the shard
    /// group under `shard_group`, else all of the stage's replicas.
    pub fn shard_group(&self) -> &dyn Communicator {
        if self.shard.size() > 1 {
            self.shard.as_ref()
        } else {
            self.replicas.as_ref()
        }
    }

    /// Rank 0's `text` on every rank (`None` everywhere when rank 0 has
    /// none): a short string (a path) as bytes through two host
    /// all-reduces, the other ranks adding zeros. Every rank calls it.
    pub fn text_from_rank_zero(&self, text: Option<&str>) -> Result<Option<String>, RunError> {
        let comm_err = |e: comm::CommError| RunError::Backend { message: e.0 };
        let mine = if self.rank == 0 { text } else { None };
        let mut length = [mine.map_or(-1.0, |t| t.len() as f64)];
        if self.rank != 0 {
            length[0] = 0.0;
        }
        self.all
            .all_reduce_host(&mut length, comm::ReduceOp::Sum)
            .map_err(comm_err)?;
        if length[0] < 0.0 {
            return Ok(None);
        }
        let mut bytes = vec![0.0; length[0] as usize];
        if let Some(text) = mine {
            for (slot, byte) in bytes.iter_mut().zip(text.bytes()) {
                *slot = f64::from(byte);
            }
        }
        self.all
            .all_reduce_host(&mut bytes, comm::ReduceOp::Sum)
            .map_err(comm_err)?;
        let bytes: Vec<u8> = bytes.into_iter().map(|b| b as u8).collect();
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The background failure checks of every group's backend, for the
    /// watchdog.
    pub fn health_probes(&self) -> Vec<comm::HealthProbe> {
        [
            &self.all,
            &self.replicas,
            &self.pipeline,
            &self.shard,
            &self.tensor,
            &self.replicate,
            &self.group,
            &self.across,
        ]
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

/// The device of this rank: with CUDA, each rank on a machine takes its
/// own GPU.
pub(crate) fn rank_device(choice: DeviceChoice) -> Result<Device, RunError> {
    Ok(match device::resolve(choice)? {
        Device::Cuda(_) => Device::Cuda(local_rank() % tch::Cuda::device_count().max(1) as usize),
        cpu => cpu,
    })
}

/// The library the plan's `backend` setting means on `device`.
pub(crate) fn collective_library(backend: Backend, device: Device) -> comm::Backend {
    match (backend, device) {
        (Backend::Auto, Device::Cuda(_)) | (Backend::Nccl, _) => comm::Backend::Nccl,
        (Backend::Auto | Backend::Mpi, _) => comm::Backend::Mpi,
    }
}

/// A plan read from a file is checked before its groups are created: a
/// rank missing from a group, or in two groups of one kind, would make the
/// ranks disagree about which collectives to join, and wait forever.
fn check_topology(topology: &Topology) -> Result<(), RunError> {
    let bad = |message: String| RunError::Backend {
        message: format!("the plan's topology: {message}"),
    };
    let n = topology.ranks.len();
    if n as u64 != topology.world_size() {
        return Err(bad(format!(
            "{n} ranks listed for a world of {}",
            topology.world_size()
        )));
    }
    if let Some((i, place)) = (topology.ranks.iter().enumerate()).find(|(i, p)| p.rank != *i as u64)
    {
        return Err(bad(format!("entry {i} is rank {}", place.rank)));
    }
    for kind in GroupKind::ALL {
        let mut seen = vec![0u32; n];
        for group in topology.communicators.iter().filter(|g| g.kind == kind) {
            for &r in &group.ranks {
                let slot = seen
                    .get_mut(r as usize)
                    .ok_or_else(|| bad(format!("a {kind:?} group names rank {r}")))?;
                *slot += 1;
            }
        }
        let listed = seen.iter().any(|&c| c > 0);
        if let Some(r) = seen.iter().position(|&c| c > 1 || (listed && c == 0)) {
            return Err(bad(format!(
                "rank {r} is in {} {kind:?} groups (each rank must be in exactly one, or no rank in any)",
                seen[r]
            )));
        }
        let disagrees = topology
            .ranks
            .iter()
            .find(|p| topology.group_of(p.rank, kind).is_some() != listed);
        if let Some(place) = disagrees {
            return Err(bad(format!(
                "rank {}'s communicators disagree with the {kind:?} groups",
                place.rank
            )));
        }
    }
    Ok(())
}

/// This rank's communicator of `kind`: its group of the plan over
/// `library`, or [`Local`] when the plan has no group of that kind.
fn group(
    all: &dyn Communicator,
    topology: &Topology,
    rank: usize,
    kind: GroupKind,
    library: comm::Backend,
    device: Device,
) -> Result<Box<dyn Communicator>, RunError> {
    let Some((index, _, place)) = topology.group_of(rank as u64, kind) else {
        return Ok(Box::new(Local));
    };
    let control = all
        .split(index, place)
        .map_err(|e| RunError::Backend { message: e.0 })?;
    match (library, device) {
        (comm::Backend::Nccl, Device::Cuda(index)) => nccl_group(control, index as i64),
        (comm::Backend::Nccl, _) => Err(nccl_needs_cuda()),
        _ => Ok(control),
    }
}

/// Every rank of the run: MPI's world when an MPI launcher started this
/// process, else this process alone.
pub(crate) fn world_communicator() -> Result<Box<dyn Communicator>, RunError> {
    if !launched_by_mpi() {
        return Ok(Box::new(Local));
    }
    #[cfg(feature = "mpi")]
    {
        comm::mpi::Mpi::init()
            .map(|comm| Box::new(comm) as Box<dyn Communicator>)
            .map_err(|e| RunError::Backend { message: e.0 })
    }
    #[cfg(not(feature = "mpi"))]
    Err(RunError::Backend {
        message: "this process was started by an MPI launcher, but this dtl was built without MPI (the `mpi` feature)".into(),
    })
}

pub(crate) fn nccl_needs_cuda() -> RunError {
    RunError::Backend {
        message: "`backend = nccl` works on CUDA tensors; this run is on the CPU (use `backend = mpi` or `auto`, or `--device cuda`)".into(),
    }
}

/// An NCCL communicator over the ranks of `control` (which hands out
/// NCCL's unique id), on CUDA device `device`.
#[cfg(feature = "nccl")]
pub(crate) fn nccl_group(
    control: Box<dyn Communicator>,
    device: i64,
) -> Result<Box<dyn Communicator>, RunError> {
    comm::nccl::Nccl::init(control, device)
        .map(|comm| Box::new(comm) as Box<dyn Communicator>)
        .map_err(|e| RunError::Backend { message: e.0 })
}

#[cfg(not(feature = "nccl"))]
pub(crate) fn nccl_group(
    _: Box<dyn Communicator>,
    _: i64,
) -> Result<Box<dyn Communicator>, RunError> {
    Err(RunError::Backend {
        message: "this plan uses NCCL (`backend = nccl`, or `auto` on a GPU), but this dtl was built without it (the `nccl` feature)".into(),
    })
}
