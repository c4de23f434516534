//! The NCCL backend: collectives on CUDA tensors through cudarc's NCCL
//! bindings, called on the raw device pointers of the tensors
//! (`Tensor::data_ptr`) and issued on the legacy default stream (a null
//! stream), the one libtorch computes on through tch: NCCL's kernels are
//! ordered with the torch operations before and after them, and the host
//! never waits for them except where it reads a result.
//!
//! cudarc loads NCCL at run time and panics when it cannot, so the library
//! is probed first; cudarc 0.19 looks for `libnccl.so` but the torch wheel
//! ships `libnccl.so.2` (in `site-packages/nvidia/nccl/lib`):
//! [`library_dir`] finds it next to torch's libraries and makes a
//! `libnccl.so` link to it that `dtl run` puts on the library path when it
//! starts itself. Every failure becomes an error naming what is missing.
//!
//! The unique id is created by rank 0 and broadcast over the control
//! communicator (MPI); host-side values (losses, flags) go over it too.

use std::ffi::{c_int, CStr};
use std::path::{Path, PathBuf};

use cudarc::nccl::{result, sys};
use tch::{Device, Tensor};

use super::{check_contiguous, CommError, Communicator, Element, Pending, PendingOp, ReduceOp};

pub struct Nccl {
    comm: sys::ncclComm_t,
    rank: usize,
    size: usize,
    device: i64,
    /// MPI (or one process): the unique id, host values, aborting the job.
    control: Box<dyn Communicator>,
}

/// The legacy default stream: the one libtorch (through tch) computes on.
fn stream() -> sys::cudaStream_t {
    std::ptr::null_mut()
}

/// Whether NCCL can be loaded (cudarc would panic where it cannot).
pub fn available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

/// The folder of torch's CUDA libraries, from the libraries this process
/// has loaded.
fn torch_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().last())
        .find(|path| path.ends_with("/libtorch_cuda.so") || path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
}

/// Where the NCCL of the torch wheel lives: `DTL_NCCL_LIB` (a file) if set,
/// else `nvidia/nccl/lib/libnccl.so.2` beside torch's folder.
pub fn locate() -> Result<PathBuf, CommError> {
    if let Some(path) = std::env::var_os("DTL_NCCL_LIB") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(CommError(format!(
                "DTL_NCCL_LIB names {}, which is not a file",
                path.display()
            )))
        };
    }
    let torch = torch_lib_dir().ok_or_else(|| {
        CommError(
            "NCCL: cannot tell where torch's libraries are (no libtorch in /proc/self/maps)".into(),
        )
    })?;
    // site-packages/torch/lib → site-packages/nvidia/nccl/lib/libnccl.so.2
    let candidate = torch
        .parent()
        .and_then(Path::parent)
        .map(|site| site.join("nvidia/nccl/lib/libnccl.so.2"));
    match candidate {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(CommError(format!(
            "NCCL: no libnccl.so.2 beside torch ({}/../../nvidia/nccl/lib); install torch's CUDA wheel or set DTL_NCCL_LIB",
            torch.display()
        ))),
    }
}

/// A folder holding a `libnccl.so` link to torch's NCCL, for the library
/// path of a process started afterwards (the loader reads the path once,
/// at start). `None` when NCCL already loads as it is.
pub fn library_dir() -> Result<Option<PathBuf>, CommError> {
    if available() {
        return Ok(None);
    }
    let target = locate()?;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let dir = std::env::temp_dir().join(format!("dtl-nccl-{uid}"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CommError(format!("NCCL: cannot create {}: {e}", dir.display())))?;
    let link = dir.join("libnccl.so");
    // Replace a stale link (another torch) atomically: link under a
    // temporary name, then rename over.
    let tmp = dir.join(format!("libnccl.so.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .map_err(|e| CommError(format!("NCCL: cannot link {}: {e}", link.display())))?;
    Ok(Some(dir))
}

/// NCCL's words for an error code.
fn message(code: sys::ncclResult_t) -> String {
    // SAFETY: NCCL returns a static C string for every code.
    let text = unsafe { CStr::from_ptr(sys::ncclGetErrorString(code)) };
    format!("{} ({code:?})", text.to_string_lossy())
}

fn check<T>(result: Result<T, result::NcclError>, what: &str) -> Result<T, CommError> {
    result.map_err(|e| CommError(format!("NCCL could not {what}: {}", message(e.0))))
}

fn element(tensor: &Tensor) -> Result<sys::ncclDataType_t, CommError> {
    Ok(match Element::of(tensor)? {
        Element::F32 => sys::ncclDataType_t::ncclFloat32,
        Element::F64 => sys::ncclDataType_t::ncclFloat64,
        Element::I64 => sys::ncclDataType_t::ncclInt64,
        Element::BF16 => sys::ncclDataType_t::ncclBfloat16,
    })
}

fn operation(op: ReduceOp) -> sys::ncclRedOp_t {
    match op {
        ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
        ReduceOp::Max => sys::ncclRedOp_t::ncclMax,
        ReduceOp::Min => sys::ncclRedOp_t::ncclMin,
    }
}

impl Nccl {
    /// One NCCL communicator over the ranks of `control`, on CUDA device
    /// `device` of this process.
    pub fn init(control: Box<dyn Communicator>, device: i64) -> Result<Nccl, CommError> {
        if !available() {
            let hint = locate()
                .map(|p| format!("found {}, but it is not on the library path (dtl run puts it there; set LD_LIBRARY_PATH when starting ranks yourself)", p.display()))
                .unwrap_or_else(|e| e.0);
            return Err(CommError(format!("NCCL library not found: {hint}")));
        }
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::runtime::sys::is_culib_present() } {
            return Err(CommError(
                "NCCL needs the CUDA runtime (libcudart), which cannot be loaded".into(),
            ));
        }
        // NCCL works on the current device: make it this rank's.
        // SAFETY: the CUDA runtime is present (checked above).
        let set = unsafe { cudarc::runtime::sys::cudaSetDevice(device as c_int) };
        if set != cudarc::runtime::sys::cudaError_t::cudaSuccess {
            return Err(CommError(format!(
                "cannot select CUDA device {device}: {set:?}"
            )));
        }
        let (rank, size) = (control.rank(), control.size());
        let mut id = if rank == 0 {
            check(result::get_uniqueid(), "create a unique id")?
        } else {
            sys::ncclUniqueId { internal: [0; 128] }
        };
        // The id's 128 bytes travel as int64 values over the control group.
        let mut values = Tensor::from_slice(&id.internal.map(|b| b as i64));
        control
            .broadcast(&mut values, 0)
            .map_err(|e| CommError(format!("NCCL: share the unique id: {e}")))?;
        let bytes = Vec::<i64>::try_from(&values)
            .map_err(|e| CommError(format!("NCCL: read the unique id: {e}")))?;
        for (slot, value) in id.internal.iter_mut().zip(bytes) {
            *slot = value as _;
        }
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` is an out-parameter; every rank of `control` calls
        // this with the same id and its own rank.
        let code =
            unsafe { result::comm_init_rank(comm.as_mut_ptr(), size as c_int, id, rank as c_int) };
        check(code, "create the communicator")?;
        Ok(Nccl {
            // SAFETY: initialised by comm_init_rank, which succeeded.
            comm: unsafe { comm.assume_init() },
            rank,
            size,
            device,
            control,
        })
    }

    fn device_pointer(
        &self,
        tensor: &Tensor,
        what: &str,
    ) -> Result<*mut std::ffi::c_void, CommError> {
        if tensor.device() != Device::Cuda(self.device as usize) {
            return Err(CommError(format!(
                "{what}: NCCL works on tensors of CUDA device {}, not {:?}",
                self.device,
                tensor.device()
            )));
        }
        check_contiguous(tensor, what)?;
        Ok(tensor.data_ptr())
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: a communicator this struct created; nothing uses it after.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

/// NCCL's operations are queued on the stream libtorch computes on: the
/// torch operations queued after them see their result, so there is nothing
/// to wait for on the host.
struct Queued(Tensor);

impl PendingOp for Queued {
    fn test(&mut self) -> Result<bool, CommError> {
        Ok(true)
    }

    fn wait(self: Box<Self>) -> Result<Tensor, CommError> {
        Ok(self.0)
    }
}

impl Communicator for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> super::Backend {
        super::Backend::Nccl
    }

    fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<(), CommError> {
        let ptr = self.device_pointer(tensor, "all-reduce")?;
        // SAFETY: `ptr` addresses `numel` contiguous elements on this
        // rank's device; sending and receiving in place is allowed.
        let code = unsafe {
            result::all_reduce(
                ptr,
                ptr,
                tensor.numel(),
                element(tensor)?,
                operation(op),
                self.comm,
                stream(),
            )
        };
        check(code, "all-reduce").map(drop)
    }

    fn all_reduce_start(&self, mut tensor: Tensor) -> Result<Pending, CommError> {
        self.all_reduce(&mut tensor, ReduceOp::Sum)?;
        Ok(Pending::new(Queued(tensor)))
    }

    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        super::gather_sizes(send, recv, self.size())?;
        let input = self.device_pointer(send, "all-gather")?;
        let output = self.device_pointer(recv, "all-gather")?;
        // SAFETY: `input` addresses `numel` contiguous elements and `output`
        // `size()` times as many, both on this rank's device, alive for the
        // call (ordered on the stream torch computes on).
        let code = unsafe {
            result::all_gather(
                input,
                output,
                send.numel(),
                element(send)?,
                self.comm,
                stream(),
            )
        };
        check(code, "all-gather").map(drop)
    }

    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        super::gather_sizes(recv, send, self.size())?;
        let input = self.device_pointer(send, "reduce-scatter")?;
        let output = self.device_pointer(recv, "reduce-scatter")?;
        // SAFETY: as in `all_gather`, the sizes the other way round.
        let code = unsafe {
            result::reduce_scatter(
                input,
                output,
                recv.numel(),
                element(recv)?,
                operation(ReduceOp::Sum),
                self.comm,
                stream(),
            )
        };
        check(code, "reduce-scatter").map(drop)
    }

    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), CommError> {
        let ptr = self.device_pointer(tensor, "broadcast")?;
        // SAFETY: as in `all_reduce`.
        let code = unsafe {
            result::broadcast(
                ptr,
                ptr,
                tensor.numel(),
                element(tensor)?,
                root as c_int,
                self.comm,
                stream(),
            )
        };
        check(code, "broadcast").map(drop)
    }

    fn send(&self, tensor: &Tensor, to: usize) -> Result<(), CommError> {
        let ptr = self.device_pointer(tensor, "send")?;
        // SAFETY: as in `all_reduce`; NCCL only reads the buffer.
        let code = unsafe {
            result::send(
                ptr,
                tensor.numel(),
                element(tensor)?,
                to as c_int,
                self.comm,
                stream(),
            )
        };
        check(code, &format!("send to rank {to}")).map(drop)
    }

    fn recv(&self, tensor: &mut Tensor, from: usize) -> Result<(), CommError> {
        let ptr = self.device_pointer(tensor, "receive")?;
        // SAFETY: as in `all_reduce`. NCCL cannot tell a message's size: the
        // plan fixes the shapes, and the pipeline checks them on arrival.
        let code = unsafe {
            result::recv(
                ptr,
                tensor.numel(),
                element(tensor)?,
                from as c_int,
                self.comm,
                stream(),
            )
        };
        check(code, &format!("receive from rank {from}")).map(drop)
    }

    fn exchange(
        &self,
        sends: &[(&Tensor, usize)],
        recvs: &mut [(&mut Tensor, usize)],
    ) -> Result<(), CommError> {
        // One group: NCCL runs its sends and receives together, so two
        // stages sending to each other do not block each other's stream.
        check(result::group_start(), "start a group")?;
        let mut outcome = Ok(());
        for (tensor, to) in sends {
            outcome = outcome.and_then(|()| self.send(tensor, *to));
        }
        for (tensor, from) in recvs.iter_mut() {
            outcome = outcome.and_then(|()| self.recv(tensor, *from));
        }
        check(result::group_end(), "end a group")?;
        outcome
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, CommError> {
        let control = self.control.split(color, key)?;
        Ok(Box::new(Nccl::init(control, self.device)?))
    }

    fn all_reduce_host(&self, values: &mut [f64], op: ReduceOp) -> Result<(), CommError> {
        self.control.all_reduce_host(values, op)
    }

    fn health_probe(&self) -> Option<super::HealthProbe> {
        // The handle as an integer: NCCL allows polling a communicator's
        // asynchronous error from another thread.
        let comm = self.comm as usize;
        Some(Box::new(move || {
            let mut state = sys::ncclResult_t::ncclSuccess;
            // SAFETY: the communicator outlives the run's watchdog, which
            // stops before the world is dropped.
            unsafe { sys::ncclCommGetAsyncError(comm as sys::ncclComm_t, &mut state) };
            match state {
                sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => None,
                error => Some(format!("NCCL failed in the background: {}", message(error))),
            }
        }))
    }

    fn abort(&self, code: i32) -> ! {
        // SAFETY: tears the communicator down without waiting for peers.
        let _ = unsafe { result::comm_abort(self.comm) };
        self.control.abort(code)
    }
}
