// Driver test kernels: two entry points in one executable (no fixed workgroup size).
#include "hal_kernel.cuh"

HAL_KERNEL void negate(const float* in, float* out, uint32_t count) {
  uint32_t i = hal_global_id_x();
  if (i < count) out[i] = -in[i];
}

// "double" is a C++ keyword: the build renames this PTX entry to "double".
HAL_KERNEL void hal_export_double(const float* in, float* out, uint32_t count) {
  uint32_t i = hal_global_id_x();
  if (i < count) out[i] = in[i] * 2.0f;
}
