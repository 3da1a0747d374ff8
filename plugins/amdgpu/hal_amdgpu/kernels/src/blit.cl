// Builtin transfer kernels used by the queue for fill and copy: 1-D, grid-stride loops
// over elements of 1, 2, 4 or 8 bytes (fill) and 1, 4 or 16 bytes (copy).
// Kernargs: fill {target_ptr, element_length, pattern}; copy {source_ptr, target_ptr,
// element_length}.
#include "hal_kernel.h"

#define HAL_FILL(SUFFIX, T)                                                              \
  kernel void hal_amdgpu_buffer_fill_##SUFFIX(global T* target, uint64_t element_length, \
                                              uint64_t pattern) {                        \
    uint64_t stride = hal_grid_size_x();                                                 \
    for (uint64_t i = hal_global_id_x(); i < element_length; i += stride)                \
      target[i] = (T)pattern;                                                            \
  }

HAL_FILL(x1, uint8_t)
HAL_FILL(x2, uint16_t)
HAL_FILL(x4, uint32_t)
HAL_FILL(x8, uint64_t)

#define HAL_COPY(SUFFIX, T)                                                             \
  kernel void hal_amdgpu_buffer_copy_##SUFFIX(global const T* source, global T* target, \
                                              uint64_t element_length) {                \
    uint64_t stride = hal_grid_size_x();                                                \
    for (uint64_t i = hal_global_id_x(); i < element_length; i += stride)               \
      target[i] = source[i];                                                            \
  }

HAL_COPY(x1, uint8_t)
HAL_COPY(x4, uint32_t)
HAL_COPY(x16, uint4)
