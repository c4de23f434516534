// libtorch calls that tch does not expose, called from Rust through a C
// interface: the TF32 settings (runtime/src/device.rs), the random
// generators' state (recompute's dropout masks), the memory behind a
// tensor (`shard = parameters` frees gathered units), and operations whose
// scalar arguments tch's generated bindings drop (elu's alpha, leaky_relu's
// slope, add_'s alpha; runtime/src/torch_ops.rs). A tch `Tensor` holds a
// pointer to an at::Tensor (torch-sys's `tensor`), which these take and
// return; a returned tensor is owned by the caller, as tch's own are.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StorageImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/variable.h>

#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

// Runs `body`; 0 on success, 1 (with the message kept for
// dtl_last_error) when libtorch threw.
template <typename F>
int guarded(F body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown libtorch exception";
  }
  return 1;
}

}  // namespace

extern "C" {

// Marks `t` as changed in place (its autograd version counter), as an
// in-place torch op would: after its memory was written behind autograd's
// back, a backward that saved `t` refuses to run instead of reading the
// new values. Returns 0, or 1 when libtorch threw.
int dtl_bump_version(const at::Tensor* t) {
  return guarded([&] { torch::autograd::impl::bump_version(*t); });
}

// The message of the last failed call on this thread.
const char* dtl_last_error() { return last_error.c_str(); }

// Matrix products (cuBLAS) and convolutions (cuDNN) on CUDA in TF32 when
// `on`, in IEEE float32 otherwise for matrix products (PyTorch's defaults:
// `torch.backends.cuda.matmul.fp32_precision = "ieee"`, convolutions TF32).
// Returns 0, or 1 when libtorch threw.
int dtl_set_cuda_tf32(int on) {
  return guarded([&] {
    auto& context = at::globalContext();
    context.setFloat32Precision(
        at::Float32Backend::CUDA, at::Float32Op::MATMUL,
        on ? at::Float32Precision::TF32 : at::Float32Precision::IEEE);
    context.setFloat32Precision(
        at::Float32Backend::CUDA, at::Float32Op::CONV,
        at::Float32Precision::TF32);
  });
}

// *out = F.elu(x, alpha), recorded by autograd.
int dtl_elu(const at::Tensor* x, double alpha, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(at::elu(*x, alpha)); });
}

// *out = F.leaky_relu(x, negative_slope), recorded by autograd.
int dtl_leaky_relu(const at::Tensor* x, double negative_slope,
                   at::Tensor** out) {
  return guarded(
      [&] { *out = new at::Tensor(at::leaky_relu(*x, negative_slope)); });
}

// self.add_(other, alpha=alpha): one rounding of self + alpha · other, as
// torch.optim's updates round it.
int dtl_add_scaled_(at::Tensor* self, const at::Tensor* other, double alpha) {
  return guarded([&] { self->add_(*other, alpha); });
}

// self.grad = None: the gradient's memory is let go (the next backward
// allocates a new one).
int dtl_reset_grad(at::Tensor* self) {
  return guarded([&] { self->mutable_grad().reset(); });
}

// *out = the state of the default random generator of the CPU (`cuda` 0)
// or of CUDA device `index`: torch.get_rng_state() /
// torch.cuda.get_rng_state(index), which dropout draws from.
int dtl_rng_state(int cuda, int index, at::Tensor** out) {
  return guarded([&] {
    at::Device device = cuda ? at::Device(at::kCUDA, index) : at::Device(at::kCPU);
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    *out = new at::Tensor(gen.get_state());
  });
}

// Puts back a state dtl_rng_state returned.
int dtl_set_rng_state(int cuda, int index, const at::Tensor* state) {
  return guarded([&] {
    at::Device device = cuda ? at::Device(at::kCUDA, index) : at::Device(at::kCPU);
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*state);
  });
}

// Gives the storage behind `t` `nbytes` bytes: 0 frees its memory, any
// other size allocates that many new, uninitialised bytes from the
// storage's allocator (what `t.untyped_storage().resize_(n)` does, without
// copying the old bytes over). The tensors viewing the storage keep their
// sizes and autograd's saved references to them stay valid; they must not
// be read while the storage is empty.
int dtl_resize_storage(const at::Tensor* t, int64_t nbytes) {
  return guarded([&] {
    c10::StorageImpl* storage = t->storage().unsafeGetStorageImpl();
    TORCH_CHECK(storage->resizable(), "the tensor's storage cannot be resized");
    TORCH_CHECK(nbytes >= 0, "a negative storage size");
    if (nbytes == 0) {
      storage->set_data_ptr_noswap(at::DataPtr(nullptr, t->device()));
    } else {
      c10::OptionalDeviceGuard guard(t->device());
      storage->set_data_ptr_noswap(storage->allocator()->allocate(nbytes));
    }
    storage->set_nbytes(static_cast<size_t>(nbytes));
  });
}

// Backward from `n` tensors at once, each with its gradient (one pass of
// the engine, as `torch.autograd.backward(outputs, grads)`): the outputs'
// values are not read, so an output whose storage was freed
// (`dtl_resize_storage`) can be a root. Returns 0, or 1 when libtorch
// threw.
int dtl_backward(const at::Tensor* const* outputs, const at::Tensor* const* grads, int n) {
  return guarded([&] {
    std::vector<at::Tensor> roots;
    std::vector<at::Tensor> seeds;
    for (int k = 0; k < n; ++k) {
      roots.push_back(*outputs[k]);
      seeds.push_back(*grads[k]);
    }
    torch::autograd::backward(roots, seeds);
  });
}

}  // extern "C"
