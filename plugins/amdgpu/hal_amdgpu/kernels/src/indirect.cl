// CTS kernel for indirect dispatch: the workgroup count comes from a parameters buffer, so
// the kernel reads the count it was launched with from the implicit arguments (code object
// v5 hidden_block_count_x, at byte 0 of the implicit-argument block): out[i] = base + i for
// every work-item of the grid.
#include "hal_kernel.h"

kernel void indirect_iota(global uint32_t* out, uint32_t base) {
  const __constant uint32_t* implicit_args =
      (const __constant uint32_t*)__builtin_amdgcn_implicitarg_ptr();
  uint32_t total = implicit_args[0] * hal_group_size_x();
  uint32_t i = hal_global_id_x();
  if (i < total) out[i] = base + i;
}
