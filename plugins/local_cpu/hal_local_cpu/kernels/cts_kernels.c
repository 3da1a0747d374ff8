/* cts_kernels.c: the CTS dispatch kernels in the local-cpu native format.
 *
 * Built by the CTS with `cc -shared -fPIC -O2 -I<hal_local_cpu>`; see hal_cpu_abi.h for
 * the ABI. Python twins with the same names and results live in cts_kernels.py.
 *
 * Element kernels work on float32 and give each workgroup a 64-element tile:
 * workgroup x handles elements [64*x, min(n, 64*x + 64)), where n is the explicit `count`
 * constant (the last constant) clamped to the binding lengths. The count is part of the
 * contract in every format because GPU kernarg ABIs (AMDGPU) carry no binding lengths.
 */
#include <string.h>

#include "hal_cpu_abi.h"

#define TILE 64u

static float as_float(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}

static uint32_t linear_id(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y,
                          uint32_t z) {
  return x + y * s->workgroup_count[0] + z * s->workgroup_count[0] * s->workgroup_count[1];
}

/* Elements an element kernel may touch: `count`, clamped to both bindings. */
static uint64_t element_count(const hal_cpu_dispatch_state_t* s, uint32_t count) {
  uint64_t n = count;
  if (s->binding_lengths[0] / 4 < n) n = s->binding_lengths[0] / 4;
  if (s->binding_lengths[1] / 4 < n) n = s->binding_lengths[1] / 4;
  return n;
}

/* out[i] = in[i] * scale + offset; constants: scale, offset (float32 bits), count. */
static int scale_and_offset(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y,
                            uint32_t z) {
  const float* in = (const float*)s->binding_ptrs[0];
  float* out = (float*)s->binding_ptrs[1];
  uint64_t n = element_count(s, s->constants[2]);
  float scale = as_float(s->constants[0]), offset = as_float(s->constants[1]);
  for (uint64_t i = (uint64_t)x * TILE; i < n && i < (uint64_t)x * TILE + TILE; ++i)
    out[i] = in[i] * scale + offset;
  return 0;
}

/* out[i] = -in[i]; constants: count. */
static int negate(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y, uint32_t z) {
  const float* in = (const float*)s->binding_ptrs[0];
  float* out = (float*)s->binding_ptrs[1];
  uint64_t n = element_count(s, s->constants[0]);
  for (uint64_t i = (uint64_t)x * TILE; i < n && i < (uint64_t)x * TILE + TILE; ++i)
    out[i] = -in[i];
  return 0;
}

/* out[i] = in[i] * 2; constants: count. */
static int double_values(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y,
                         uint32_t z) {
  const float* in = (const float*)s->binding_ptrs[0];
  float* out = (float*)s->binding_ptrs[1];
  uint64_t n = element_count(s, s->constants[0]);
  for (uint64_t i = (uint64_t)x * TILE; i < n && i < (uint64_t)x * TILE + TILE; ++i)
    out[i] = in[i] * 2.0f;
  return 0;
}

/* out[linear workgroup id] = linear workgroup id (uint32); OUT_OF_RANGE past the end. */
static int write_workgroup_ids(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y,
                               uint32_t z) {
  uint32_t id = linear_id(s, x, y, z);
  if ((uint64_t)id * 4 + 4 > s->binding_lengths[0]) return 11;
  ((uint32_t*)s->binding_ptrs[0])[id] = id;
  return 0;
}

/* Writes the three constants as uint32 workgroup counts (a producer of indirect
 * parameters for a later dispatch). */
static int write_workgroup_count(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y,
                                 uint32_t z) {
  uint32_t* out = (uint32_t*)s->binding_ptrs[0];
  out[0] = s->constants[0];
  out[1] = s->constants[1];
  out[2] = s->constants[2];
  return 0;
}

static int noop(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y, uint32_t z) {
  return 0;
}

/* Returns constants[0] as its status at workgroup constants[1] (and 0 elsewhere). */
static int fail_status(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y, uint32_t z) {
  return linear_id(s, x, y, z) == s->constants[1] ? (int)s->constants[0] : 0;
}

static const hal_cpu_export_t kExports[] = {
    {"scale_and_offset", scale_and_offset, 2, 3, {1, 1, 1}, 0},
    {"negate", negate, 2, 1, {1, 1, 1}, 0},
    {"double", double_values, 2, 1, {1, 1, 1}, 0},
    {"write_workgroup_ids", write_workgroup_ids, 1, 0, {1, 1, 1}, 0},
    {"write_workgroup_count", write_workgroup_count, 1, 3, {1, 1, 1}, 0},
    {"noop", noop, 0, 0, {1, 1, 1}, 0},
    {"fail_status", fail_status, 0, 2, {1, 1, 1}, 0},
};

static const hal_cpu_library_t kLibrary = {
    HAL_CPU_ABI_VERSION, sizeof(kExports) / sizeof(kExports[0]), kExports};

const hal_cpu_library_t* hal_cpu_library_query(uint32_t abi_version) {
  return abi_version == HAL_CPU_ABI_VERSION ? &kLibrary : 0;
}
