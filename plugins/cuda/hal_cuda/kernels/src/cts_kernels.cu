// The CTS dispatch kernels (library "cts_kernels") in the CUDA format: the same function
// names, bindings, constants and observable results as hal_local_cpu's cts_kernels.c and
// hal_amdgpu's cts_kernels.cl.
//
// HAL kernel ABI (hal_kernel.cuh): bindings first (64-bit device pointers), then the 32-bit
// constants. The ABI carries no binding lengths, so the element kernels take their element
// count as an explicit last constant (in every format) and never touch an element at or
// past it: the caller's count, not the GPU, bounds each binding.
//
// Element kernels work on float32 in 64-element tiles: workgroup x (64 threads) handles
// elements [64*x, min(count, 64*x + 64)).
#include "hal_kernel.cuh"

#define TILE 64

static __device__ __forceinline__ uint32_t hal_tile_index() {
  return blockIdx.x * TILE + threadIdx.x;
}

// out[i] = in[i] * scale + offset for i < count.
HAL_KERNEL void HAL_WORKGROUP_SIZE(TILE)
    scale_and_offset(const float* in, float* out, float scale, float offset, uint32_t count) {
  uint32_t i = hal_tile_index();
  if (i < count) out[i] = in[i] * scale + offset;
}

// out[i] = -in[i] for i < count.
HAL_KERNEL void HAL_WORKGROUP_SIZE(TILE) negate(const float* in, float* out, uint32_t count) {
  uint32_t i = hal_tile_index();
  if (i < count) out[i] = -in[i];
}

// out[i] = in[i] * 2 for i < count. "double" is a C++ keyword, so the kernel is written as
// hal_export_double and the build renames its PTX entry to "double".
HAL_KERNEL void HAL_WORKGROUP_SIZE(TILE)
    hal_export_double(const float* in, float* out, uint32_t count) {
  uint32_t i = hal_tile_index();
  if (i < count) out[i] = in[i] * 2.0f;
}

// out[linear workgroup id] = linear workgroup id (one thread per workgroup). The output
// must hold one uint32 per workgroup: without binding lengths the kernel cannot check it.
HAL_KERNEL void HAL_WORKGROUP_SIZE(1) write_workgroup_ids(uint32_t* out) {
  uint32_t id = hal_linear_group_id();
  out[id] = id;
}

// Writes its three constants as uint32 workgroup counts (a producer of indirect
// parameters for a later dispatch); only workgroup 0 writes.
HAL_KERNEL void HAL_WORKGROUP_SIZE(1)
    write_workgroup_count(uint32_t* out, uint32_t x, uint32_t y, uint32_t z) {
  if (hal_linear_group_id() == 0) {
    out[0] = x;
    out[1] = y;
    out[2] = z;
  }
}

HAL_KERNEL void HAL_WORKGROUP_SIZE(1) noop() {}

// At workgroup `at` the kernel traps (PTX `trap`): a GPU kernel cannot return a status, so
// the failure surfaces as a launch failure, which CUDA makes sticky for the context;
// `status` is kept for signature parity with the other formats.
HAL_KERNEL void HAL_WORKGROUP_SIZE(1) fail_status(uint32_t status, uint32_t at) {
  (void)status;
  if (hal_linear_group_id() == at) __trap();
}
