"""The cffi declarations of every C interface of this backend, on one ``ffi``.

* ``hal_cpu_abi.h``: the ``local-cpu-native`` library ABI;
* ``hal_iree_abi.h``: IREE's CPU executable library ABI (library version 6) and the
  per-export record of the replay loop;
* ``replay.c``: the command-buffer replay loop.

One ``ffi`` so that pointers pass between them without casts; declarations mirror the
headers exactly (ABI mode: cffi computes the layouts from these).
"""

from __future__ import annotations

import cffi

__all__ = ["ffi"]

ffi = cffi.FFI()
ffi.cdef(
    """
    typedef struct hal_cpu_dispatch_state_t {
      uint32_t workgroup_count[3];
      uint32_t workgroup_size[3];
      uint32_t constant_count;
      uint32_t binding_count;
      const uint32_t* constants;
      void* const* binding_ptrs;
      const uint64_t* binding_lengths;
    } hal_cpu_dispatch_state_t;
    typedef int (*hal_cpu_workgroup_fn_t)(const hal_cpu_dispatch_state_t*, uint32_t,
                                          uint32_t, uint32_t);
    typedef struct hal_cpu_export_t {
      const char* name;
      hal_cpu_workgroup_fn_t fn;
      uint32_t binding_count;
      uint32_t constant_count;
      uint32_t workgroup_size[3];
      uint32_t flags;
    } hal_cpu_export_t;
    typedef struct hal_cpu_library_t {
      uint32_t abi_version;
      uint32_t export_count;
      const hal_cpu_export_t* exports;
    } hal_cpu_library_t;
    const hal_cpu_library_t* hal_cpu_library_query(uint32_t abi_version);

    typedef int (*hal_iree_import_fn_t)(void* params, void* context, void* reserved);
    typedef int (*hal_iree_import_thunk_t)(hal_iree_import_fn_t fn, void* params,
                                           void* context, void* reserved);
    typedef struct hal_iree_processor_t { uint64_t data[8]; } hal_iree_processor_t;
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
    typedef int (*hal_iree_dispatch_fn_t)(const hal_iree_environment_t*,
                                          const hal_iree_dispatch_state_t*,
                                          const hal_iree_workgroup_state_t*);
    typedef struct hal_iree_export_t {
      const hal_iree_environment_t* environment;
      uint32_t local_memory_size;
      uint32_t max_concurrency;
    } hal_iree_export_t;

    typedef struct hal_iree_library_header_t {
      uint32_t version;
      const char* name;
      uint32_t features;
      int32_t sanitizer;
    } hal_iree_library_header_t;
    typedef struct hal_iree_dispatch_attrs_t {
      uint64_t flags;
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
      uint8_t type;
      uint8_t size;
      uint16_t flags;
      uint16_t name;
      uint16_t offset;
    } hal_iree_dispatch_parameter_t;
    typedef struct hal_iree_import_table_t {
      uint32_t count;
      const char* const* symbols;
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
      uint32_t constant_count;
    } hal_iree_library_t;
    const hal_iree_library_header_t** iree_hal_executable_library_query(
        uint32_t max_version, const hal_iree_environment_t* environment);

    int hal_iree_import_thunk(hal_iree_import_fn_t fn, void* params, void* context,
                              void* reserved);
    int hal_replay_run(const int64_t* recs, int64_t begin, int64_t end,
                       const int64_t* bases, const int64_t* base_lens,
                       const int64_t* bind_base, const int64_t* bind_off,
                       const int64_t* bind_len, int64_t* err);
    int hal_replay_counts(const int64_t* rec, const int64_t* bases,
                          const int64_t* base_lens, uint32_t* counts);
    int hal_replay_dispatch_range(const int64_t* rec, const int64_t* bases,
                                  const int64_t* base_lens, const int64_t* bind_base,
                                  const int64_t* bind_off, const int64_t* bind_len,
                                  const uint32_t* counts, int64_t begin, int64_t end);
    """
)
