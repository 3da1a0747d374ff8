// The CTS dispatch kernels (library "cts_kernels") in the AMDGPU format: the same function
// names, bindings, constants and observable results as hal_local_cpu's cts_kernels.c.
//
// HAL kernarg ABI: bindings first (8-byte device pointers), then the 32-bit constants. The
// ABI carries no binding lengths, so the element kernels take their element count as an
// explicit last constant (in every format) and never touch an element at or past it: the
// caller's count, not the GPU, bounds each binding.
//
// Element kernels work on float32 in 64-element tiles: workgroup x (64 work-items) handles
// elements [64*x, min(count, 64*x + 64)).
#include "hal_kernel.h"

#define TILE 64

static inline uint32_t hal_tile_index(void) { return hal_group_id_x() * TILE + hal_local_id_x(); }

// Workgroup counts from the dispatch packet (grid in work-items / workgroup size).
static inline uint32_t hal_linear_group_id(void) {
  const __constant uint16_t* p16 = (const __constant uint16_t*)__builtin_amdgcn_dispatch_ptr();
  const __constant uint32_t* p32 = (const __constant uint32_t*)__builtin_amdgcn_dispatch_ptr();
  uint32_t cx = p32[3] / p16[2];  // grid_size_x / workgroup_size_x
  uint32_t cy = p32[4] / p16[3];  // grid_size_y / workgroup_size_y
  return __builtin_amdgcn_workgroup_id_x() + __builtin_amdgcn_workgroup_id_y() * cx +
         __builtin_amdgcn_workgroup_id_z() * cx * cy;
}

// out[i] = in[i] * scale + offset for i < count.
kernel __attribute__((reqd_work_group_size(TILE, 1, 1)))
void scale_and_offset(global const float* in, global float* out, float scale,
                      float offset, uint32_t count) {
  uint32_t i = hal_tile_index();
  if (i < count) out[i] = in[i] * scale + offset;
}

// out[i] = -in[i] for i < count.
kernel __attribute__((reqd_work_group_size(TILE, 1, 1)))
void negate(global const float* in, global float* out, uint32_t count) {
  uint32_t i = hal_tile_index();
  if (i < count) out[i] = -in[i];
}

// out[i] = in[i] * 2 for i < count. "double" is an OpenCL C keyword, so the kernel symbol
// is given by an assembler label.
kernel void double_values(global const float* in, global float* out, uint32_t count)
    __asm__("double");
kernel __attribute__((reqd_work_group_size(TILE, 1, 1)))
void double_values(global const float* in, global float* out, uint32_t count) {
  uint32_t i = hal_tile_index();
  if (i < count) out[i] = in[i] * 2.0f;
}

// out[linear workgroup id] = linear workgroup id (one work-item per workgroup). The output
// must hold one uint32 per workgroup: without binding lengths the kernel cannot check it.
kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void write_workgroup_ids(global uint32_t* out) {
  uint32_t id = hal_linear_group_id();
  out[id] = id;
}

// Writes its three constants as uint32 workgroup counts (a producer of indirect
// parameters for a later dispatch); only workgroup 0 writes.
kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void write_workgroup_count(global uint32_t* out, uint32_t x, uint32_t y, uint32_t z) {
  if (hal_linear_group_id() == 0) {
    out[0] = x;
    out[1] = y;
    out[2] = z;
  }
}

kernel __attribute__((reqd_work_group_size(1, 1, 1))) void noop(void) {}

// At workgroup `at` the kernel traps (s_trap): a GPU kernel cannot return a status, so the
// failure surfaces as a queue fault; `status` is kept for signature parity with the other
// formats.
kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void fail_status(uint32_t status, uint32_t at) {
  if (hal_linear_group_id() == at) __builtin_trap();
}
