// CTS kernels: two entry points in one executable.
#include "hal_kernel.h"

kernel void negate(global const float* in, global float* out, uint32_t count) {
  uint32_t i = hal_global_id_x();
  if (i < count) out[i] = -in[i];
}

kernel void double_values(global const float* in, global float* out, uint32_t count) {
  uint32_t i = hal_global_id_x();
  if (i < count) out[i] = in[i] * 2.0f;
}
