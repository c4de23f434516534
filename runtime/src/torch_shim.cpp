// libtorch settings that tch does not expose, called from Rust through a C
// interface (runtime/src/device.rs).
#include <ATen/Context.h>

extern "C" {

// Matrix products (cuBLAS) and convolutions (cuDNN) on CUDA in TF32 when
// `on`, in IEEE float32 otherwise for matrix products (PyTorch's defaults:
// `torch.backends.cuda.matmul.fp32_precision = "ieee"`, convolutions TF32).
// Returns 0, or 1 when libtorch threw.
int dtl_set_cuda_tf32(int on) {
  try {
    auto& context = at::globalContext();
    context.setFloat32Precision(
        at::Float32Backend::CUDA, at::Float32Op::MATMUL,
        on ? at::Float32Precision::TF32 : at::Float32Precision::IEEE);
    context.setFloat32Precision(
        at::Float32Backend::CUDA, at::Float32Op::CONV,
        at::Float32Precision::TF32);
    return 0;
  } catch (...) {
    return 1;
  }
}

}  // extern "C"
