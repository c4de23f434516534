//! Collectives behind one small trait: rank and size, all-reduce in place
//! (blocking, or started and waited for later), broadcast, point-to-point
//! send and receive, and splitting into sub-groups. Backends:
//!
//! - [`Local`]: one process, every operation a no-op (world size 1 is not
//!   a separate code path: it is this communicator);
//! - `mpi::Mpi` (feature `mpi`): Open MPI through rsmpi's raw bindings, for
//!   CPU tensors (CUDA tensors are staged through the host);
//! - `nccl::Nccl` (feature `nccl`): NCCL through cudarc, on the raw device
//!   pointers of CUDA tensors, on the stream libtorch computes on.
//!
//! Nothing outside the runtime depends on this module; the compiler never
//! sees it.

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod throttle;

use tch::{Kind, Tensor};

/// The library a communicator runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// One process: nothing to carry.
    Local,
    Mpi,
    Nccl,
}

impl Backend {
    /// The name people know it by, as the plan's `backend` setting spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Mpi => "mpi",
            Backend::Nccl => "nccl",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How values are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

/// A failed collective, in words that name what failed.
#[derive(Debug, Clone, PartialEq)]
pub struct CommError(pub String);

impl std::fmt::Display for CommError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group of processes that compute together.
pub trait Communicator {
    /// This process's index in the group, `0..size()`.
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// The library that carries this group's collectives.
    fn backend(&self) -> Backend;
    /// Combines `tensor` (contiguous float32, float64 or int64) over the
    /// group, in place.
    fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<(), CommError>;
    /// Starts summing `tensor` over the group and returns at once; the sum
    /// is in the tensor when [`Pending::wait`] returns.
    fn all_reduce_start(&self, tensor: Tensor) -> Result<Pending, CommError>;
    /// Gathers every rank's `send` (a contiguous tensor of the same
    /// length and kind on every rank) into `recv`, of `size()` times that
    /// length: rank r's values at `r * len`, on every rank.
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError>;
    /// Sums `send` (contiguous, `size()` times `recv`'s length, the same
    /// kind) over the group and leaves rank r values `r * len` … of the
    /// sum in `recv`.
    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError>;
    /// Overwrites `tensor` with rank `root`'s.
    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), CommError>;
    /// Sends `tensor` to rank `to`, which receives it with [`Communicator::recv`].
    fn send(&self, tensor: &Tensor, to: usize) -> Result<(), CommError>;
    /// Receives into `tensor` what rank `from` sent; a message of another
    /// size is an error.
    fn recv(&self, tensor: &mut Tensor, from: usize) -> Result<(), CommError>;
    /// Sends and receives several tensors at once: all posted before any
    /// is waited for, so two ranks that send to each other at the same
    /// moment (a pipeline's activations one way, gradients the other) do
    /// not wait on each other. Each received tensor must arrive with its
    /// size; messages between two ranks match in the order they were
    /// posted.
    fn exchange(
        &self,
        sends: &[(&Tensor, usize)],
        recvs: &mut [(&mut Tensor, usize)],
    ) -> Result<(), CommError>;
    /// The sub-group of the processes that gave the same `color`, ordered by
    /// `key`: every process of this group must call it.
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, CommError>;
    /// Combines host values over the group, in place (losses, flags,
    /// hashes: small control data, whatever the backend computes on).
    fn all_reduce_host(&self, values: &mut [f64], op: ReduceOp) -> Result<(), CommError>;
    /// The ranks of this group its backend knows to have failed (a process
    /// or its host lost); `None` when the backend cannot tell.
    fn failed_ranks(&self) -> Option<Vec<usize>> {
        None
    }

    /// A check another thread may call at any time, saying whether the
    /// backend has failed in the background (NCCL's asynchronous errors);
    /// `None` for backends that report every error where it happens.
    fn health_probe(&self) -> Option<HealthProbe> {
        None
    }
    /// Ends the whole job at once, every process of it, with `code`: what a
    /// rank does when it fails alone, so that no peer waits forever in a
    /// collective it will never join.
    fn abort(&self, code: i32) -> !;
}

/// A background failure check: `Some(message)` once the backend failed.
pub type HealthProbe = Box<dyn Fn() -> Option<String> + Send>;

/// An all-reduce under way.
pub struct Pending {
    inner: Box<dyn PendingOp>,
}

/// What a backend keeps of an all-reduce under way.
pub trait PendingOp {
    /// Lets the operation progress; `true` once it is complete.
    fn test(&mut self) -> Result<bool, CommError>;
    /// Waits for it and hands the summed tensor back.
    fn wait(self: Box<Self>) -> Result<Tensor, CommError>;
}

impl Pending {
    pub fn new(op: impl PendingOp + 'static) -> Self {
        Pending {
            inner: Box::new(op),
        }
    }

    /// Lets the operation progress (some MPI libraries move a non-blocking
    /// collective forward only inside MPI calls); `true` once complete.
    pub fn test(&mut self) -> Result<bool, CommError> {
        self.inner.test()
    }

    pub fn wait(self) -> Result<Tensor, CommError> {
        self.inner.wait()
    }
}

/// One process alone: every collective leaves its data as it is.
#[derive(Debug, Default)]
pub struct Local;

/// The finished "all-reduce" of one process.
struct Done(Tensor);

impl PendingOp for Done {
    fn test(&mut self) -> Result<bool, CommError> {
        Ok(true)
    }

    fn wait(self: Box<Self>) -> Result<Tensor, CommError> {
        Ok(self.0)
    }
}

impl Communicator for Local {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn backend(&self) -> Backend {
        Backend::Local
    }

    fn all_reduce(&self, _: &mut Tensor, _: ReduceOp) -> Result<(), CommError> {
        Ok(())
    }

    fn all_reduce_start(&self, tensor: Tensor) -> Result<Pending, CommError> {
        Ok(Pending::new(Done(tensor)))
    }

    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        gather_sizes(send, recv, 1)?;
        tch::no_grad(|| recv.f_copy_(&send.reshape(recv.size())))
            .map_err(|e| CommError(format!("all-gather: {e}")))
    }

    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        gather_sizes(recv, send, 1)?;
        tch::no_grad(|| recv.f_copy_(&send.reshape(recv.size())))
            .map_err(|e| CommError(format!("reduce-scatter: {e}")))
    }

    fn broadcast(&self, _: &mut Tensor, _: usize) -> Result<(), CommError> {
        Ok(())
    }

    fn send(&self, _: &Tensor, to: usize) -> Result<(), CommError> {
        Err(CommError(format!(
            "one process has no rank {to} to send to"
        )))
    }

    fn recv(&self, _: &mut Tensor, from: usize) -> Result<(), CommError> {
        Err(CommError(format!(
            "one process has no rank {from} to receive from"
        )))
    }

    fn exchange(
        &self,
        sends: &[(&Tensor, usize)],
        recvs: &mut [(&mut Tensor, usize)],
    ) -> Result<(), CommError> {
        match (sends.first(), recvs.first()) {
            (None, None) => Ok(()),
            (Some((_, to)), _) | (None, Some((_, to))) => Err(CommError(format!(
                "one process has no rank {to} to exchange tensors with"
            ))),
        }
    }

    fn split(&self, _: usize, _: usize) -> Result<Box<dyn Communicator>, CommError> {
        Ok(Box::new(Local))
    }

    fn all_reduce_host(&self, _: &mut [f64], _: ReduceOp) -> Result<(), CommError> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The element type of a tensor a collective may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    F32,
    F64,
    I64,
    /// bfloat16, summed by rounding each partial sum to bfloat16 (as
    /// NCCL does).
    BF16,
}

impl Element {
    pub fn of(tensor: &Tensor) -> Result<Element, CommError> {
        match tensor.kind() {
            Kind::Float => Ok(Element::F32),
            Kind::Double => Ok(Element::F64),
            Kind::Int64 => Ok(Element::I64),
            Kind::BFloat16 => Ok(Element::BF16),
            other => Err(CommError(format!(
                "collectives carry float32, float64, int64 or bfloat16 tensors, not {other:?}"
            ))),
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Element::BF16 => 2,
            Element::F32 => 4,
            Element::F64 | Element::I64 => 8,
        }
    }
}

/// Checks an all-gather's buffers (or a reduce-scatter's, the other way
/// round): `recv` holds `ranks` times `send`'s values, of the same kind.
pub fn gather_sizes(send: &Tensor, recv: &Tensor, ranks: usize) -> Result<(), CommError> {
    if recv.numel() != send.numel() * ranks || recv.kind() != send.kind() {
        return Err(CommError(format!(
            "all-gather: {ranks} rank(s) of {} {:?} values do not fill a buffer of {} {:?}",
            send.numel(),
            send.kind(),
            recv.numel(),
            recv.kind()
        )));
    }
    Ok(())
}

/// Checks that a tensor can be handed to a collective by its data pointer.
pub fn check_contiguous(tensor: &Tensor, what: &str) -> Result<(), CommError> {
    if tensor.is_contiguous() {
        Ok(())
    } else {
        Err(CommError(format!(
            "{what}: the tensor {:?} is not contiguous",
            tensor.size()
        )))
    }
}
