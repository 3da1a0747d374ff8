// Work-item indexing for hal-amdgpu kernels built without the ROCm device libraries:
// the dispatch packet (hsa_kernel_dispatch_packet_t) is read through the dispatch pointer,
// so every index below is computed from what the AQL packet carried.
#ifndef HAL_AMDGPU_KERNEL_H_
#define HAL_AMDGPU_KERNEL_H_

typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
typedef unsigned short uint16_t;
typedef unsigned char uint8_t;

static inline uint32_t hal_group_id_x(void) { return __builtin_amdgcn_workgroup_id_x(); }
static inline uint32_t hal_local_id_x(void) { return __builtin_amdgcn_workitem_id_x(); }
static inline uint32_t hal_group_size_x(void) {
  const __constant uint16_t* packet = (const __constant uint16_t*)__builtin_amdgcn_dispatch_ptr();
  return packet[2];  // workgroup_size_x at byte offset 4
}
static inline uint32_t hal_grid_size_x(void) {
  const __constant uint32_t* packet = (const __constant uint32_t*)__builtin_amdgcn_dispatch_ptr();
  return packet[3];  // grid_size_x at byte offset 12
}
static inline uint32_t hal_global_id_x(void) {
  return hal_group_id_x() * hal_group_size_x() + hal_local_id_x();
}

#endif  // HAL_AMDGPU_KERNEL_H_
