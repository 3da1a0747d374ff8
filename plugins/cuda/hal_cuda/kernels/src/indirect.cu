// Driver test kernel for indirect dispatch: the workgroup count comes from a parameters
// buffer, so the kernel sizes itself from the grid it was launched with (gridDim, the CUDA
// counterpart of AMDGPU's hidden block count): out[i] = base + i for every thread of the
// grid (x axis).
#include "hal_kernel.cuh"

HAL_KERNEL void indirect_iota(uint32_t* out, uint32_t base) {
  uint32_t total = gridDim.x * blockDim.x;
  uint32_t i = hal_global_id_x();
  if (i < total) out[i] = base + i;
}
