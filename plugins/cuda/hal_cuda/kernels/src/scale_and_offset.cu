// Driver test kernel: out[i] = in[i] * scale + offset. HAL ABI: bindings (in, out), then
// the 32-bit constants (scale, offset, count). No fixed workgroup size: the dispatch picks
// the block size (the export is WORKGROUP_SIZE_DYNAMIC).
#include "hal_kernel.cuh"

HAL_KERNEL void scale_and_offset(const float* in, float* out, float scale, float offset,
                                 uint32_t count) {
  uint32_t i = hal_global_id_x();
  if (i < count) out[i] = in[i] * scale + offset;
}
