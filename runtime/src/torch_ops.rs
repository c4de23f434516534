//! libtorch operations whose scalar arguments tch's generated bindings drop
//! (`elu`'s alpha, `leaky_relu`'s slope, `add_`'s alpha), called through
//! runtime/src/torch_shim.cpp so that they are PyTorch's own kernels, with
//! PyTorch's autograd and rounding; the state of the random generator
//! dropout draws from; and the memory behind a tensor. Nothing else of the
//! runtime.

use std::ffi::{c_char, c_void, CStr};

use tch::{TchError, Tensor};

extern "C" {
    fn dtl_last_error() -> *const c_char;
    fn dtl_elu(x: *const c_void, alpha: f64, out: *mut *mut c_void) -> i32;
    fn dtl_leaky_relu(x: *const c_void, negative_slope: f64, out: *mut *mut c_void) -> i32;
    fn dtl_add_scaled_(target: *mut c_void, other: *const c_void, alpha: f64) -> i32;
    fn dtl_reset_grad(target: *mut c_void) -> i32;
    fn dtl_rng_state(cuda: i32, index: i32, out: *mut *mut c_void) -> i32;
    fn dtl_set_rng_state(cuda: i32, index: i32, state: *const c_void) -> i32;
    fn dtl_resize_storage(t: *const c_void, nbytes: i64) -> i32;
    fn dtl_backward(outputs: *const *const c_void, grads: *const *const c_void, n: i32) -> i32;
    fn dtl_bump_version(t: *const c_void) -> i32;
}

/// libtorch's message for a call that returned `status` 1.
fn check(status: i32) -> Result<(), TchError> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim keeps the message in a thread-local string that
    // lives until the next failing call on this thread.
    let message = unsafe { CStr::from_ptr(dtl_last_error()) };
    Err(TchError::Torch(message.to_string_lossy().into_owned()))
}

/// A tensor the shim created (`new at::Tensor`), now owned here.
fn owned(status: i32, out: *mut c_void) -> Result<Tensor, TchError> {
    check(status)?;
    // SAFETY: on success `out` is a fresh at::Tensor that nothing else
    // owns; tch frees it when the Tensor drops.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// `F.elu(x, alpha)`: x for x > 0, alpha · (exp(x) − 1) otherwise.
pub fn elu(x: &Tensor, alpha: f64) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `x` is a live tensor for the call; `out` receives a new one.
    let status = unsafe { dtl_elu(x.as_ptr().cast(), alpha, &mut out) };
    owned(status, out)
}

/// `F.leaky_relu(x, negative_slope)`.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: as in `elu`.
    let status = unsafe { dtl_leaky_relu(x.as_ptr().cast(), negative_slope, &mut out) };
    owned(status, out)
}

/// `target.add_(other, alpha=alpha)`: target + alpha · other rounded once,
/// as `torch.optim` updates parameters.
pub fn add_scaled_(target: &mut Tensor, other: &Tensor, alpha: f64) -> Result<(), TchError> {
    // SAFETY: both tensors are live for the call; `target` is changed in
    // place, as tch's own `_` methods change it.
    check(unsafe { dtl_add_scaled_(target.as_mut_ptr().cast(), other.as_ptr().cast(), alpha) })
}

/// `param.grad = None`: lets the gradient's memory go.
pub fn reset_grad(param: &mut Tensor) -> Result<(), TchError> {
    // SAFETY: the tensor is live for the call; only its gradient changes.
    check(unsafe { dtl_reset_grad(param.as_mut_ptr().cast()) })
}

/// The state of the default random generator of `device` (what
/// `torch.get_rng_state()` returns on the CPU), which dropout draws from.
pub fn rng_state(device: tch::Device) -> Result<Tensor, TchError> {
    let (cuda, index) = match device {
        tch::Device::Cuda(i) => (1, i as i32),
        _ => (0, 0),
    };
    let mut out = std::ptr::null_mut();
    // SAFETY: `out` receives a new tensor.
    let status = unsafe { dtl_rng_state(cuda, index, &mut out) };
    owned(status, out)
}

/// Puts back a state [`rng_state`] returned for the same device.
pub fn set_rng_state(device: tch::Device, state: &Tensor) -> Result<(), TchError> {
    let (cuda, index) = match device {
        tch::Device::Cuda(i) => (1, i as i32),
        _ => (0, 0),
    };
    // SAFETY: the state tensor is live for the call and only read.
    check(unsafe { dtl_set_rng_state(cuda, index, state.as_ptr().cast()) })
}

/// Frees the memory behind `t` (and every tensor viewing its storage):
/// they keep their sizes but must not be read until [`alloc_storage`].
pub fn free_storage(t: &Tensor) -> Result<(), TchError> {
    // SAFETY: the tensor is live for the call; its storage is emptied, and
    // the callers read no tensor of it until it is allocated again.
    check(unsafe { dtl_resize_storage(t.as_ptr().cast(), 0) })
}

/// Backward from every `(output, gradient)` of `roots` in one pass of the
/// engine (the gradients accumulate into the leaves' `.grad`); the
/// outputs' values are not read, so one whose storage [`free_storage`]
/// let go can be a root.
pub fn backward(roots: &[(Tensor, Tensor)]) -> Result<(), TchError> {
    let outputs: Vec<*const c_void> = roots.iter().map(|(t, _)| t.as_ptr().cast()).collect();
    let grads: Vec<*const c_void> = roots.iter().map(|(_, g)| g.as_ptr().cast()).collect();
    // SAFETY: every tensor is live for the call (borrowed from `roots`),
    // and the two arrays hold `roots.len()` pointers each.
    check(unsafe { dtl_backward(outputs.as_ptr(), grads.as_ptr(), roots.len() as i32) })
}

/// Marks `t` changed in place for autograd (its version counter), after
/// its memory was written outside torch (an all-reduce in place): a
/// backward that saved it then fails instead of reading the new values.
pub fn bump_version(t: &Tensor) -> Result<(), TchError> {
    // SAFETY: the tensor is live for the call; only its version changes.
    check(unsafe { dtl_bump_version(t.as_ptr().cast()) })
}

/// Gives the storage behind `t` fresh, uninitialised memory for `t`'s
/// values (the whole storage `t` was made with), to be filled at once.
pub fn alloc_storage(t: &Tensor) -> Result<(), TchError> {
    let nbytes = (t.numel() * t.kind().elt_size_in_bytes()) as i64;
    // SAFETY: as in `free_storage`.
    check(unsafe { dtl_resize_storage(t.as_ptr().cast(), nbytes) })
}
