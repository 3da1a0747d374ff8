/* hal_iree_abi.h: the parts of IREE's CPU executable library ABI (library version 6,
 * "v0" structures) that the local CPU backend uses to run IREE's llvm-cpu output
 * (formats "embedded-elf-x86_64" and "system-elf-x86_64"), declared from the published
 * layout, plus the per-export record this backend keeps for the replay loop.
 *
 * A library exports `iree_hal_executable_library_query(max_version, environment)`,
 * which returns a pointer to a pointer to its header; the header pointer is the first
 * field of the library structure. Each export is called once per workgroup as
 * fn(environment, dispatch_state, workgroup_state) and returns 0 on success.
 */
#ifndef HAL_IREE_ABI_H_
#define HAL_IREE_ABI_H_

#include <stddef.h>
#include <stdint.h>

#define HAL_IREE_LIBRARY_VERSION 6u
#define HAL_IREE_LOCAL_MEMORY_PAGE_SIZE 4096u
#define HAL_IREE_MAX_BINDINGS 64u
#define HAL_IREE_BINDING_ALIGNMENT 64u

typedef int (*hal_iree_import_fn_t)(void* params, void* context, void* reserved);
typedef int (*hal_iree_import_thunk_t)(hal_iree_import_fn_t fn, void* params, void* context,
                                       void* reserved);

typedef struct hal_iree_processor_t {
  uint64_t data[8];
} hal_iree_processor_t;

typedef struct hal_iree_environment_t {
  const uint32_t* constants;
  hal_iree_import_thunk_t import_thunk;
  const hal_iree_import_fn_t* import_funcs;
  const void** import_contexts;
  hal_iree_processor_t processor;
} hal_iree_environment_t;

typedef struct hal_iree_dispatch_state_t {
  uint32_t workgroup_size_x;
  uint32_t workgroup_size_y;
  uint16_t workgroup_size_z;
  uint16_t constant_count;
  uint32_t workgroup_count_x;
  uint32_t workgroup_count_y;
  uint16_t workgroup_count_z;
  uint8_t max_concurrency;
  uint8_t binding_count;
  const uint32_t* constants;
  void* const* binding_ptrs;
  const size_t* binding_lengths;
} hal_iree_dispatch_state_t;

typedef struct hal_iree_workgroup_state_t {
  uint32_t workgroup_id_x;
  uint32_t workgroup_id_y;
  uint16_t workgroup_id_z;
  uint16_t reserved;
  uint32_t processor_id;
  void* local_memory;
  uint32_t local_memory_size;
} hal_iree_workgroup_state_t;

typedef int (*hal_iree_dispatch_fn_t)(const hal_iree_environment_t* environment,
                                      const hal_iree_dispatch_state_t* dispatch_state,
                                      const hal_iree_workgroup_state_t* workgroup_state);

/* The library side: what the query returns (a pointer to `header`, the first field of
 * hal_iree_library_t). Optional tables may be NULL. */
typedef struct hal_iree_library_header_t {
  uint32_t version; /* HAL_IREE_LIBRARY_VERSION */
  const char* name;
  uint32_t features;  /* none defined: 0 */
  int32_t sanitizer;  /* 0: none */
} hal_iree_library_header_t;

typedef struct hal_iree_dispatch_attrs_t {
  uint64_t flags; /* bit 0: sequential, bit 1: dynamic workgroup size */
  uint16_t local_memory_pages;
  uint8_t constant_count;
  uint8_t binding_count;
  uint32_t workgroup_size_x;
  uint32_t workgroup_size_y;
  uint16_t workgroup_size_z;
  uint16_t parameter_count;
  uint64_t reserved_1[5];
} hal_iree_dispatch_attrs_t;

typedef struct hal_iree_dispatch_parameter_t {
  uint8_t type;   /* 0 constant, 1 binding, 2 buffer pointer */
  uint8_t size;   /* bytes */
  uint16_t flags;
  uint16_t name;  /* index into parameter_names, 0xFFFF: unnamed */
  uint16_t offset; /* constants: byte offset; bindings: ordinal */
} hal_iree_dispatch_parameter_t;

typedef struct hal_iree_import_table_t {
  uint32_t count;
  const char* const* symbols; /* sorted; "?name" marks an optional import */
} hal_iree_import_table_t;

typedef struct hal_iree_export_table_t {
  uint32_t count;
  const hal_iree_dispatch_fn_t* ptrs;
  const hal_iree_dispatch_attrs_t* attrs;
  const hal_iree_dispatch_parameter_t* const* params;
  const void* occupancy;
  const char* const* names;
  const char* const* tags;
  const char* const* parameter_names;
  const void* source_locations;
  const void* stage_locations;
} hal_iree_export_table_t;

typedef struct hal_iree_library_t {
  const hal_iree_library_header_t* header;
  hal_iree_import_table_t imports;
  hal_iree_export_table_t exports;
  uint32_t constant_count; /* executable-level constants, in environment->constants */
} hal_iree_library_t;

/* What the replay loop needs of one export beyond the record: built by the backend at
 * load time, alive as long as the executable. */
typedef struct hal_iree_export_t {
  const hal_iree_environment_t* environment;
  uint32_t local_memory_size; /* bytes (pages * 4096) */
  uint32_t max_concurrency;   /* 1..255 */
} hal_iree_export_t;

/* Calls `fn(params, context, reserved)`: the import thunk handed to every library. */
int hal_iree_import_thunk(hal_iree_import_fn_t fn, void* params, void* context,
                          void* reserved);

#endif /* HAL_IREE_ABI_H_ */
