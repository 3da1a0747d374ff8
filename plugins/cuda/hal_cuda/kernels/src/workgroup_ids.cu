// Driver test kernel: each workgroup writes its id (dispatched as 32 workgroups of 64).
#include "hal_kernel.cuh"

HAL_KERNEL void HAL_WORKGROUP_SIZE(64) write_workgroup_ids(uint32_t* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = blockIdx.x;
}
