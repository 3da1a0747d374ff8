// Shared definitions for the hal-cuda kernels (the CUDA twins of hal-amdgpu's OpenCL C
// kernels, compiled to PTX by tools/build_kernels.sh).
//
// HAL kernel ABI: a kernel's parameters are its bindings, in order, as 64-bit device
// pointers, then its 32-bit constants, in order; nothing else. The ABI carries no binding
// lengths, so the element kernels take their element count as an explicit last constant.
#ifndef HAL_CUDA_KERNEL_CUH_
#define HAL_CUDA_KERNEL_CUH_

#include <stdint.h>

// A fixed workgroup size (OpenCL's reqd_work_group_size). nvcc emits __launch_bounds__ as
// `.maxntid N, 1, 1` (`__block_size__`, which emits `.reqntid`, needs sm_90), and the build
// rewrites that directive to `.reqntid N, 1, 1`: a kernel so marked must be launched with
// exactly N threads per block, and the driver reads its workgroup size from the PTX.
#define HAL_WORKGROUP_SIZE(n) __launch_bounds__(n)

// Every kernel is extern "C" so its PTX entry name is its HAL export name.
#define HAL_KERNEL extern "C" __global__

static __device__ __forceinline__ uint32_t hal_global_id_x() {
  return blockIdx.x * blockDim.x + threadIdx.x;
}

// Workgroup ids linearised x fastest, as every HAL backend numbers them.
static __device__ __forceinline__ uint32_t hal_linear_group_id() {
  return blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
}

#endif  // HAL_CUDA_KERNEL_CUH_
