// CTS kernel: out[i] = in[i] * scale + offset. HAL ABI: bindings (in, out), then the two
// 32-bit constants (scale, offset), then the element count.
#include "hal_kernel.h"

kernel void scale_and_offset(global const float* in, global float* out, float scale,
                             float offset, uint32_t count) {
  uint32_t i = hal_global_id_x();
  if (i < count) out[i] = in[i] * scale + offset;
}
