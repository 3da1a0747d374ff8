// CTS kernel: each workgroup writes its id (dispatched as 32 workgroups of 64).
#include "hal_kernel.h"

kernel __attribute__((reqd_work_group_size(64, 1, 1)))
void write_workgroup_ids(global uint32_t* out) {
  if (hal_local_id_x() == 0) out[hal_group_id_x()] = hal_group_id_x();
}
