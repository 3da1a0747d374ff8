/* hal_cpu_abi.h: the native executable ABI of the hal-local-cpu backend (version 1).
 *
 * A native executable is a shared library (built with e.g. `cc -shared -fPIC -O2`)
 * exporting ONE symbol, `hal_cpu_library_query`. The backend loads it (format string
 * "local-cpu-native"), calls the query with the ABI version it speaks, and reads the
 * export table it returns. The table and everything it points to must stay valid while
 * the library is loaded.
 *
 * Each export names a workgroup function. A dispatch of W = x*y*z workgroups calls the
 * function W times, once per workgroup id, possibly concurrently from several threads
 * (local-task spreads workgroups over its worker pool) and always without the Python GIL.
 * The function must therefore be thread-safe across workgroups of one dispatch and must
 * not call back into Python.
 *
 * Return 0 for success. Any other value is an IREE status code (1..18, e.g. 3 for
 * INVALID_ARGUMENT, 11 for OUT_OF_RANGE); the dispatch stops and the submission's signal
 * semaphores fail with that code. Values outside 1..18 are reported as UNKNOWN.
 */
#ifndef HAL_CPU_ABI_H_
#define HAL_CPU_ABI_H_

#include <stdint.h>

#define HAL_CPU_ABI_VERSION 1u
#define HAL_CPU_MAX_BINDINGS 64u

/* What one workgroup call sees. Read-only for the kernel. */
typedef struct hal_cpu_dispatch_state_t {
  uint32_t workgroup_count[3];
  uint32_t workgroup_size[3];
  uint32_t constant_count;            /* 32-bit words in `constants` */
  uint32_t binding_count;             /* entries in `binding_ptrs` / `binding_lengths` */
  const uint32_t* constants;
  void* const* binding_ptrs;          /* each already offset to the bound range */
  const uint64_t* binding_lengths;    /* bytes of each bound range */
} hal_cpu_dispatch_state_t;

typedef int (*hal_cpu_workgroup_fn_t)(const hal_cpu_dispatch_state_t* state,
                                      uint32_t workgroup_id_x, uint32_t workgroup_id_y,
                                      uint32_t workgroup_id_z);

typedef struct hal_cpu_export_t {
  const char* name;                   /* stable identity of the function */
  hal_cpu_workgroup_fn_t fn;
  uint32_t binding_count;
  uint32_t constant_count;
  uint32_t workgroup_size[3];
  uint32_t flags;                     /* reserved, 0 */
} hal_cpu_export_t;

typedef struct hal_cpu_library_t {
  uint32_t abi_version;               /* HAL_CPU_ABI_VERSION */
  uint32_t export_count;
  const hal_cpu_export_t* exports;
} hal_cpu_library_t;

/* Returns the library's export table, or NULL if it cannot serve `abi_version`. */
const hal_cpu_library_t* hal_cpu_library_query(uint32_t abi_version);

#endif /* HAL_CPU_ABI_H_ */
