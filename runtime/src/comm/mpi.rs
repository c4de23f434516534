//! The MPI backend: Open MPI (the wheel set-up installs) through rsmpi's raw
//! bindings. rsmpi's safe layer has no in-place all-reduce and no request
//! that outlives a scope, and it aborts on any error; the raw calls give all
//! three: in-place reductions on the tensor's own memory (no scratch copy),
//! non-blocking all-reduces held across steps, and error codes turned into
//! messages. CPU tensors only: this Open MPI is not CUDA-aware, so a CUDA
//! tensor is copied to the host and back.

use std::ffi::{c_int, c_void};
use std::rc::Rc;

use mpi::environment::{Threading, Universe};
use mpi::ffi;
use tch::{Device, Tensor};

use super::{check_contiguous, CommError, Communicator, Element, Pending, PendingOp, ReduceOp};

extern "C" {
    /// `MPI_IN_PLACE`, from `mpi_shim.c`.
    fn dtl_mpi_in_place() -> *mut c_void;
    /// The failed ranks of a communicator (Open MPI's ULFM), from
    /// `mpi_shim.c`: their count, or -1 when MPI cannot tell.
    fn dtl_mpi_failed_ranks(comm: ffi::MPI_Comm, ranks: *mut c_int, max: c_int) -> c_int;
    /// The sum of bfloat16 values (as 16-bit words), from `mpi_shim.c`.
    fn dtl_mpi_bf16_sum() -> ffi::MPI_Op;
}

/// The tag of every point-to-point message: pairs of ranks exchange their
/// messages in program order, so one tag is enough.
const TAG: c_int = 17;

/// A communicator of an initialised MPI. It keeps MPI alive: MPI is
/// finalised when the last communicator is dropped.
pub struct Mpi {
    comm: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    /// `MPI_COMM_WORLD` is MPI's own; split groups are freed on drop.
    owned: bool,
    universe: Rc<Universe>,
}

/// Whether this process was started by an MPI launcher (mpirun, srun with
/// PMIx): then it takes its rank and the world size from MPI.
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

impl Mpi {
    /// Initialises MPI (once per process) and returns the world.
    pub fn init() -> Result<Mpi, CommError> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| CommError("MPI was initialised already in this process".into()))?;
        // SAFETY: MPI is initialised; the constants are link-time handles.
        let comm = unsafe { ffi::RSMPI_COMM_WORLD };
        // Errors come back as codes (turned into messages here) instead of
        // aborting the process from inside MPI, on the world and on
        // MPI_COMM_SELF (where MPI raises errors of no communicator). A
        // lost peer is such an error only with Open MPI's fault tolerance
        // on (`OMPI_MCA_mpi_ft_enable`, which `dtl run` sets): without it,
        // MPI ends the process itself.
        // SAFETY: reading a link-time constant handle.
        let own = unsafe { ffi::RSMPI_COMM_SELF };
        for (handle, what) in [(comm, "the world"), (own, "self")] {
            // SAFETY: `handle` is a valid communicator.
            let code = unsafe { ffi::MPI_Comm_set_errhandler(handle, ffi::RSMPI_ERRORS_RETURN) };
            check(code, &format!("set the error handler of {what}"))?;
        }
        Mpi::wrap(comm, false, Rc::new(universe))
    }

    fn wrap(comm: ffi::MPI_Comm, owned: bool, universe: Rc<Universe>) -> Result<Mpi, CommError> {
        let (mut rank, mut size): (c_int, c_int) = (0, 0);
        // SAFETY: `comm` is a valid communicator; the outputs are plain ints.
        let code = unsafe { ffi::MPI_Comm_rank(comm, &mut rank) };
        check(code, "read the rank")?;
        // SAFETY: as above.
        let code = unsafe { ffi::MPI_Comm_size(comm, &mut size) };
        check(code, "read the size")?;
        Ok(Mpi {
            comm,
            rank: rank as usize,
            size: size as usize,
            owned,
            universe,
        })
    }

    /// rsmpi's view of MPI's world (for comparisons with its safe API).
    pub fn world_handle(&self) -> mpi::topology::SimpleCommunicator {
        self.universe.world()
    }

    /// The MPI library's own version line.
    pub fn library_version() -> String {
        mpi::environment::library_version()
            .map(|v| v.trim_end_matches('\0').trim().to_string())
            .unwrap_or_else(|_| "unknown MPI".into())
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: a communicator this struct created and nobody else holds.
            unsafe {
                ffi::MPI_Comm_free(&mut self.comm);
            }
        }
    }
}

/// An MPI return code as a result, with MPI's own words for an error.
fn check(code: c_int, what: &str) -> Result<(), CommError> {
    // SAFETY: reading a link-time constant.
    if code == ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    let mut text = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: the buffer holds MPI_MAX_ERROR_STRING (256) bytes and more.
    unsafe {
        ffi::MPI_Error_string(code, text.as_mut_ptr() as *mut _, &mut len);
    }
    text.truncate(len.max(0) as usize);
    Err(CommError(format!(
        "MPI could not {what}: {} (code {code})",
        String::from_utf8_lossy(&text)
    )))
}

fn datatype(element: Element) -> ffi::MPI_Datatype {
    // SAFETY: reading link-time constants.
    unsafe {
        match element {
            Element::F32 => ffi::RSMPI_FLOAT,
            Element::F64 => ffi::RSMPI_DOUBLE,
            Element::I64 => ffi::RSMPI_INT64_T,
            // Its bits; summed by `dtl_mpi_bf16_sum`.
            Element::BF16 => ffi::RSMPI_UINT16_T,
        }
    }
}

/// The MPI operation `op` on `element`s: bfloat16 has MPI's own
/// operations on none, so a sum of them is the shim's.
fn operation(op: ReduceOp, element: Element) -> Result<ffi::MPI_Op, CommError> {
    // SAFETY: reading link-time constants; the shim creates its operation
    // once, after MPI_Init (every collective runs after it).
    unsafe {
        Ok(match (op, element) {
            (ReduceOp::Sum, Element::BF16) => dtl_mpi_bf16_sum(),
            (_, Element::BF16) => {
                return Err(CommError(
                    "bfloat16 values are only summed, not compared".into(),
                ))
            }
            (ReduceOp::Sum, _) => ffi::RSMPI_SUM,
            (ReduceOp::Max, _) => ffi::RSMPI_MAX,
            (ReduceOp::Min, _) => ffi::RSMPI_MIN,
        })
    }
}

/// The most elements one MPI call carries (its counts are C ints).
const MAX_COUNT: usize = i32::MAX as usize;

/// A tensor's memory as MPI sees it, on the host: the tensor itself when
/// it is a contiguous CPU tensor, else a host copy that `finish` copies back.
struct HostBuffer {
    host: Tensor,
    /// The tensor to copy the result back into, for a staged one.
    device: Option<Tensor>,
    element: Element,
}

impl HostBuffer {
    fn of(tensor: &Tensor, what: &str) -> Result<HostBuffer, CommError> {
        let element = Element::of(tensor)?;
        if tensor.device() == Device::Cpu {
            check_contiguous(tensor, what)?;
            return Ok(HostBuffer {
                host: tensor.shallow_clone(),
                device: None,
                element,
            });
        }
        let host = tensor
            .f_to_device(Device::Cpu)
            .and_then(|t| t.f_contiguous())
            .map_err(|e| CommError(format!("{what}: copy to the host: {e}")))?;
        Ok(HostBuffer {
            host,
            device: Some(tensor.shallow_clone()),
            element,
        })
    }

    fn ptr(&self) -> *mut c_void {
        self.host.data_ptr()
    }

    fn len(&self) -> usize {
        self.host.numel()
    }

    /// The chunks of at most `MAX_COUNT` elements: (pointer, count).
    fn chunks(&self) -> Vec<(*mut c_void, c_int)> {
        let (base, len, bytes) = (self.ptr() as *mut u8, self.len(), self.element.bytes());
        (0..len)
            .step_by(MAX_COUNT)
            .map(|start| {
                let count = (len - start).min(MAX_COUNT);
                // SAFETY: `start < len`, inside the tensor's allocation.
                let ptr = unsafe { base.add(start * bytes) } as *mut c_void;
                (ptr, count as c_int)
            })
            .collect()
    }

    /// Copies a staged result back to where the tensor lives.
    fn finish(self, what: &str) -> Result<Tensor, CommError> {
        match self.device {
            None => Ok(self.host),
            Some(mut device) => {
                tch::no_grad(|| device.f_copy_(&self.host))
                    .map_err(|e| CommError(format!("{what}: copy back from the host: {e}")))?;
                Ok(device)
            }
        }
    }
}

/// Non-blocking all-reduces of one tensor (one request per chunk).
struct MpiPending {
    requests: Vec<ffi::MPI_Request>,
    buffer: Option<HostBuffer>,
}

impl PendingOp for MpiPending {
    fn test(&mut self) -> Result<bool, CommError> {
        let mut all = true;
        for request in &mut self.requests {
            let mut flag: c_int = 0;
            // SAFETY: a request this struct owns; the buffer it writes is
            // kept alive in `self.buffer` until it completes.
            let code = unsafe { ffi::MPI_Test(request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            check(code, "test an all-reduce")?;
            all &= flag != 0;
        }
        Ok(all)
    }

    fn wait(mut self: Box<Self>) -> Result<Tensor, CommError> {
        for request in &mut self.requests {
            // SAFETY: as in `test`.
            let code = unsafe { ffi::MPI_Wait(request, ffi::RSMPI_STATUS_IGNORE) };
            check(code, "wait for an all-reduce")?;
        }
        let buffer = self.buffer.take().expect("waited once");
        buffer.finish("all-reduce")
    }
}

impl Drop for MpiPending {
    fn drop(&mut self) {
        // An all-reduce abandoned on an error path: let it finish before its
        // buffer is freed (MPI would write into freed memory otherwise).
        for request in &mut self.requests {
            // SAFETY: as in `test`; a completed request is REQUEST_NULL.
            unsafe {
                ffi::MPI_Wait(request, ffi::RSMPI_STATUS_IGNORE);
            }
        }
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> super::Backend {
        super::Backend::Mpi
    }

    fn failed_ranks(&self) -> Option<Vec<usize>> {
        let mut ranks = vec![0 as c_int; self.size];
        // SAFETY: `ranks` holds `size` ints, the most the call writes.
        let n = unsafe { dtl_mpi_failed_ranks(self.comm, ranks.as_mut_ptr(), self.size as c_int) };
        if n < 0 {
            return None;
        }
        ranks.truncate(n as usize);
        Some(ranks.into_iter().map(|r| r as usize).collect())
    }

    fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<(), CommError> {
        let buffer = HostBuffer::of(tensor, "all-reduce")?;
        for (ptr, count) in buffer.chunks() {
            // SAFETY: `ptr` addresses `count` elements of the tensor's
            // contiguous host memory, alive for the call; MPI_IN_PLACE makes
            // it both input and output.
            let code = unsafe {
                ffi::MPI_Allreduce(
                    dtl_mpi_in_place(),
                    ptr,
                    count,
                    datatype(buffer.element),
                    operation(op, buffer.element)?,
                    self.comm,
                )
            };
            check(code, "all-reduce")?;
        }
        buffer.finish("all-reduce").map(drop)
    }

    fn all_reduce_start(&self, tensor: Tensor) -> Result<Pending, CommError> {
        let buffer = HostBuffer::of(&tensor, "all-reduce")?;
        let mut requests = Vec::new();
        for (ptr, count) in buffer.chunks() {
            // SAFETY: a null request for MPI to fill in.
            let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
            // SAFETY: as in `all_reduce`; the buffer is moved into the
            // pending operation, which waits before it lets it go.
            let code = unsafe {
                ffi::MPI_Iallreduce(
                    dtl_mpi_in_place(),
                    ptr,
                    count,
                    datatype(buffer.element),
                    operation(ReduceOp::Sum, buffer.element)?,
                    self.comm,
                    &mut request,
                )
            };
            check(code, "start an all-reduce")?;
            requests.push(request);
        }
        Ok(Pending::new(MpiPending {
            requests,
            buffer: Some(buffer),
        }))
    }

    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        let what = "all-gather";
        let ranks = self.size();
        super::gather_sizes(send, recv, ranks)?;
        let input = HostBuffer::of(send, what)?;
        let output = HostBuffer::of(recv, what)?;
        let (n, element) = (input.len(), input.element);
        // MPI counts in `int`: a longer buffer is gathered in chunks, each
        // through a staging buffer laid out rank by rank.
        let host_err = |e: tch::TchError| CommError(format!("{what}: {e}"));
        for start in (0..n.max(1)).step_by(MAX_COUNT) {
            let count = (n - start).min(MAX_COUNT);
            let whole = count == n;
            let staged = if whole {
                output.host.shallow_clone()
            } else {
                Tensor::f_empty([(count * ranks) as i64], (output.host.kind(), Device::Cpu))
                    .map_err(host_err)?
            };
            let piece = input
                .host
                .f_reshape([-1])
                .and_then(|t| t.f_narrow(0, start as i64, count as i64))
                .map_err(host_err)?;
            // SAFETY: `piece` addresses `count` contiguous host elements and
            // `staged` `count * ranks`, both alive for the call.
            let code = unsafe {
                ffi::MPI_Allgather(
                    piece.data_ptr(),
                    count as c_int,
                    datatype(element),
                    staged.data_ptr(),
                    count as c_int,
                    datatype(element),
                    self.comm,
                )
            };
            check(code, what)?;
            if !whole {
                let flat = output.host.f_reshape([-1]).map_err(host_err)?;
                for r in 0..ranks {
                    let at = (r * n + start) as i64;
                    flat.f_narrow(0, at, count as i64)
                        .and_then(|mut dst| {
                            dst.f_copy_(&staged.f_narrow(0, (r * count) as i64, count as i64)?)
                        })
                        .map_err(host_err)?;
                }
            }
        }
        output.finish(what).map(drop)
    }

    /// A ring: in each of `size() - 1` rounds every rank passes a partial
    /// sum of one slice to the next rank and adds its own values to the
    /// one it receives, so that each rank sends and receives
    /// `(size() - 1) / size()` of the buffer and holds two slices besides
    /// its input. Open MPI's own (`MPI_Reduce_scatter_block`) reduces the
    /// whole buffer on rank 0 and scatters it at these sizes: rank 0 then
    /// holds two more whole buffers and receives every other rank's.
    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        let what = "reduce-scatter";
        super::gather_sizes(recv, send, self.size())?;
        check_contiguous(send, what)?;
        let (ranks, rank) = (self.size(), self.rank());
        let n = recv.numel() as i64;
        let torch = |e: tch::TchError| CommError(format!("{what}: {e}"));
        let flat = send.f_reshape([-1]).map_err(torch)?;
        let slice = |k: usize| flat.f_narrow(0, k as i64 * n, n).map_err(torch);
        let (next, previous) = ((rank + 1) % ranks, (rank + ranks - 1) % ranks);
        tch::no_grad(|| {
            // Round `s` passes on the partial sum of slice
            // `rank - 1 - s` and receives that of `rank - 2 - s`: the last
            // one received is this rank's own, into `recv`.
            let mut passing = slice(previous)?.f_contiguous().map_err(torch)?;
            let mut incoming = match ranks {
                2 => None,
                _ => Some(passing.f_empty_like().map_err(torch)?),
            };
            for round in 0..ranks - 1 {
                let last = round == ranks - 2;
                let into = match (&mut incoming, last) {
                    (Some(buffer), false) => buffer,
                    _ => &mut *recv,
                };
                self.exchange(&[(&passing, next)], &mut [(&mut *into, previous)])?;
                let own = (rank + 2 * ranks - 2 - round) % ranks;
                into.f_add_(&slice(own)?).map(drop).map_err(torch)?;
                if !last {
                    if let Some(buffer) = &mut incoming {
                        std::mem::swap(&mut passing, buffer);
                    }
                }
            }
            Ok(())
        })
    }

    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), CommError> {
        let buffer = HostBuffer::of(tensor, "broadcast")?;
        for (ptr, count) in buffer.chunks() {
            // SAFETY: `ptr` addresses `count` elements of host memory alive
            // for the call.
            let code = unsafe {
                ffi::MPI_Bcast(
                    ptr,
                    count,
                    datatype(buffer.element),
                    root as c_int,
                    self.comm,
                )
            };
            check(code, "broadcast")?;
        }
        buffer.finish("broadcast").map(drop)
    }

    fn send(&self, tensor: &Tensor, to: usize) -> Result<(), CommError> {
        let buffer = HostBuffer::of(tensor, "send")?;
        for (ptr, count) in buffer.chunks() {
            // SAFETY: as in `broadcast`; MPI only reads the buffer.
            let code = unsafe {
                ffi::MPI_Send(
                    ptr,
                    count,
                    datatype(buffer.element),
                    to as c_int,
                    TAG,
                    self.comm,
                )
            };
            check(code, &format!("send to rank {to}"))?;
        }
        Ok(())
    }

    fn recv(&self, tensor: &mut Tensor, from: usize) -> Result<(), CommError> {
        let buffer = HostBuffer::of(tensor, "receive")?;
        let element = datatype(buffer.element);
        for (ptr, count) in buffer.chunks() {
            // SAFETY: a status for MPI to fill in.
            let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            // SAFETY: plain out-parameters.
            let code = unsafe { ffi::MPI_Probe(from as c_int, TAG, self.comm, &mut status) };
            check(code, &format!("wait for a message from rank {from}"))?;
            let mut arrived: c_int = 0;
            // SAFETY: `status` was filled by MPI_Probe.
            let code = unsafe { ffi::MPI_Get_count(&status, element, &mut arrived) };
            check(code, "size a message")?;
            if arrived != count {
                return Err(CommError(format!(
                    "rank {from} sent {arrived} values where {count} were expected (a tensor of shape {:?})",
                    tensor.size()
                )));
            }
            // SAFETY: `ptr` addresses `count` elements of writable host
            // memory alive for the call; the message has exactly `count`.
            let code = unsafe {
                ffi::MPI_Recv(
                    ptr,
                    count,
                    element,
                    from as c_int,
                    TAG,
                    self.comm,
                    ffi::RSMPI_STATUS_IGNORE,
                )
            };
            check(code, &format!("receive from rank {from}"))?;
        }
        buffer.finish("receive").map(drop)
    }

    fn exchange(
        &self,
        sends: &[(&Tensor, usize)],
        recvs: &mut [(&mut Tensor, usize)],
    ) -> Result<(), CommError> {
        let outgoing: Vec<(HostBuffer, usize)> = sends
            .iter()
            .map(|(t, to)| HostBuffer::of(t, "send").map(|b| (b, *to)))
            .collect::<Result<_, _>>()?;
        let incoming: Vec<(HostBuffer, usize)> = recvs
            .iter()
            .map(|(t, from)| HostBuffer::of(t, "receive").map(|b| (b, *from)))
            .collect::<Result<_, _>>()?;
        let too_big = outgoing
            .iter()
            .chain(&incoming)
            .any(|(b, _)| b.len() > MAX_COUNT);
        if too_big {
            return Err(CommError(format!(
                "a tensor of more than {MAX_COUNT} values cannot be sent in one message"
            )));
        }
        // SAFETY: null requests for MPI to fill in.
        let null = unsafe { ffi::RSMPI_REQUEST_NULL };
        let mut requests = vec![null; incoming.len() + outgoing.len()];
        for (i, (buffer, from)) in incoming.iter().enumerate() {
            // SAFETY: the buffer is host memory of `len` elements, alive
            // until MPI_Waitall below returns.
            let code = unsafe {
                ffi::MPI_Irecv(
                    buffer.ptr(),
                    buffer.len() as c_int,
                    datatype(buffer.element),
                    *from as c_int,
                    TAG,
                    self.comm,
                    &mut requests[i],
                )
            };
            check(code, &format!("post a receive from rank {from}"))?;
        }
        for (i, (buffer, to)) in outgoing.iter().enumerate() {
            // SAFETY: as above; MPI only reads the buffer.
            let code = unsafe {
                ffi::MPI_Isend(
                    buffer.ptr(),
                    buffer.len() as c_int,
                    datatype(buffer.element),
                    *to as c_int,
                    TAG,
                    self.comm,
                    &mut requests[incoming.len() + i],
                )
            };
            check(code, &format!("post a send to rank {to}"))?;
        }
        // SAFETY: statuses for MPI to fill in, one per request.
        let mut statuses: Vec<ffi::MPI_Status> = (0..requests.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        // SAFETY: every request was posted above over buffers still alive.
        let code = unsafe {
            ffi::MPI_Waitall(
                requests.len() as c_int,
                requests.as_mut_ptr(),
                statuses.as_mut_ptr(),
            )
        };
        check(code, "exchange tensors")?;
        for (i, (buffer, from)) in incoming.iter().enumerate() {
            let mut arrived: c_int = 0;
            // SAFETY: the status of a completed receive.
            let code =
                unsafe { ffi::MPI_Get_count(&statuses[i], datatype(buffer.element), &mut arrived) };
            check(code, "size a message")?;
            if arrived as usize != buffer.len() {
                return Err(CommError(format!(
                    "rank {from} sent {arrived} values where {} were expected (a tensor of shape {:?})",
                    buffer.len(),
                    buffer.host.size()
                )));
            }
        }
        for ((buffer, _), (tensor, _)) in incoming.into_iter().zip(recvs.iter_mut()) {
            let done = buffer.finish("receive")?;
            if done.device() != tensor.device() || done.data_ptr() != tensor.data_ptr() {
                tch::no_grad(|| tensor.f_copy_(&done))
                    .map_err(|e| CommError(format!("receive: {e}")))?;
            }
        }
        Ok(())
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, CommError> {
        // SAFETY: a null communicator for MPI to fill in.
        let mut comm = unsafe { ffi::RSMPI_COMM_NULL };
        // SAFETY: every rank of `self.comm` calls this (the caller's
        // contract); `comm` is an out-parameter.
        let code =
            unsafe { ffi::MPI_Comm_split(self.comm, color as c_int, key as c_int, &mut comm) };
        check(code, "split the communicator")?;
        Ok(Box::new(Mpi::wrap(comm, true, self.universe.clone())?))
    }

    fn all_reduce_host(&self, values: &mut [f64], op: ReduceOp) -> Result<(), CommError> {
        // SAFETY: `values` is host memory alive for the call.
        let code = unsafe {
            ffi::MPI_Allreduce(
                dtl_mpi_in_place(),
                values.as_mut_ptr() as *mut c_void,
                values.len() as c_int,
                ffi::RSMPI_DOUBLE,
                operation(op, Element::F64)?,
                self.comm,
            )
        };
        check(code, "all-reduce")
    }

    fn abort(&self, code: i32) -> ! {
        // SAFETY: ends every process of the job; does not return.
        unsafe {
            ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
        }
        std::process::exit(code)
    }
}
