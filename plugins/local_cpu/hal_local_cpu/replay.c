/* replay.c: the local-cpu command-buffer replay loop (compiled at first use).
 *
 * A finalized command buffer is an int64 array of fixed-width command records plus binding
 * arrays; `hal_replay_run` executes a contiguous range of records in one call, so a
 * reusable command buffer of N dispatches replays with one Python->C transition. Every
 * buffer address comes from the `bases` table (direct buffers first, then binding-table
 * slots, filled per submission by Python), so records never change after finalization.
 *
 * Ranges are re-checked against `base_lens` here, which makes UNVALIDATED command buffers
 * fail with OUT_OF_RANGE instead of touching memory outside their buffers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hal_cpu_abi.h"
#include "hal_iree_abi.h"

#define REC 16
enum { OP_NOP = 0, OP_DISPATCH = 1, OP_FILL = 2, OP_COPY = 3, OP_UPDATE = 4 };
/* 5 is a Python-kernel dispatch, never run here. */
enum { OP_IREE_DISPATCH = 6 };
enum {
  ST_OK = 0,
  ST_UNKNOWN = 2,
  ST_INVALID_ARGUMENT = 3,
  ST_RESOURCE_EXHAUSTED = 8,
  ST_OUT_OF_RANGE = 11,
  ST_INTERNAL = 13
};

/* dispatch record: [1]=fn [2..4]=counts [5]=indirect base (-1: static) [6]=indirect offset
 * [7]=constants ptr [8]=constant count [9]=first binding [10]=binding count [11..13]=size
 * [14]=function ordinal [15]=bindings the function needs
 * IREE dispatch: the same, except [14]=the export's hal_iree_export_t
 * fill: [1]=base [2]=offset [3]=length [4]=pattern [5]=pattern length
 * copy: [1]=src base [2]=src offset [3]=dst base [4]=dst offset [5]=length
 * update: [1]=host ptr [2]=dst base [3]=dst offset [4]=length */

static int in_range(const int64_t* base_lens, int64_t base, int64_t off, int64_t len) {
  return off >= 0 && len >= 0 && off <= base_lens[base] && len <= base_lens[base] - off;
}

static int status_of(int rc) { return (rc >= 1 && rc <= 18) ? rc : ST_UNKNOWN; }

int hal_replay_counts(const int64_t* rec, const int64_t* bases, const int64_t* base_lens,
                      uint32_t* counts) {
  if (rec[5] < 0) {
    counts[0] = (uint32_t)rec[2];
    counts[1] = (uint32_t)rec[3];
    counts[2] = (uint32_t)rec[4];
    return ST_OK;
  }
  if (!in_range(base_lens, rec[5], rec[6], 12)) return ST_OUT_OF_RANGE;
  memcpy(counts, (const char*)(intptr_t)bases[rec[5]] + rec[6], 12);
  return ST_OK;
}

static int prepare_state(const int64_t* rec, const int64_t* bases, const int64_t* base_lens,
                         const int64_t* bind_base, const int64_t* bind_off,
                         const int64_t* bind_len, const uint32_t* counts,
                         hal_cpu_dispatch_state_t* st, void** ptrs, uint64_t* lens) {
  int64_t first = rec[9], n = rec[10];
  if (n > (int64_t)HAL_CPU_MAX_BINDINGS || n < rec[15]) return ST_INVALID_ARGUMENT;
  for (int64_t i = 0; i < n; ++i) {
    int64_t b = bind_base[first + i], off = bind_off[first + i], len = bind_len[first + i];
    if (len < 0) len = base_lens[b] - off;
    if (!in_range(base_lens, b, off, len)) return ST_OUT_OF_RANGE;
    ptrs[i] = (char*)(intptr_t)bases[b] + off;
    lens[i] = (uint64_t)len;
  }
  st->workgroup_count[0] = counts[0];
  st->workgroup_count[1] = counts[1];
  st->workgroup_count[2] = counts[2];
  st->workgroup_size[0] = (uint32_t)rec[11];
  st->workgroup_size[1] = (uint32_t)rec[12];
  st->workgroup_size[2] = (uint32_t)rec[13];
  st->constant_count = (uint32_t)rec[8];
  st->binding_count = (uint32_t)n;
  st->constants = (const uint32_t*)(intptr_t)rec[7];
  st->binding_ptrs = ptrs;
  st->binding_lengths = lens;
  return ST_OK;
}

/* Calls workgroups [begin, end) of an IREE-ABI export. Bindings must be 64-byte
 * aligned (IREE's code uses aligned vector moves on them); the dimensions IREE declares
 * 16-bit must fit; local memory is one block per call, reused by its workgroups (they
 * run one after another on this thread). A non-zero return is INTERNAL: the IREE ABI
 * gives it no other meaning. */
static int iree_dispatch_range(const int64_t* rec, const int64_t* bases,
                               const int64_t* base_lens, const int64_t* bind_base,
                               const int64_t* bind_off, const int64_t* bind_len,
                               const uint32_t* counts, int64_t begin, int64_t end) {
  const hal_iree_export_t* ex = (const hal_iree_export_t*)(intptr_t)rec[14];
  int64_t first = rec[9], n = rec[10];
  void* ptrs[HAL_IREE_MAX_BINDINGS];
  size_t lens[HAL_IREE_MAX_BINDINGS];
  if (n > (int64_t)HAL_IREE_MAX_BINDINGS || n < rec[15]) return ST_INVALID_ARGUMENT;
  if (counts[2] > 0xFFFF || rec[13] > 0xFFFF || rec[8] > 0xFFFF) return ST_INVALID_ARGUMENT;
  for (int64_t i = 0; i < n; ++i) {
    int64_t b = bind_base[first + i], off = bind_off[first + i], len = bind_len[first + i];
    if (len < 0) len = base_lens[b] - off;
    if (!in_range(base_lens, b, off, len)) return ST_OUT_OF_RANGE;
    ptrs[i] = (char*)(intptr_t)bases[b] + off;
    if ((uintptr_t)ptrs[i] % HAL_IREE_BINDING_ALIGNMENT) return ST_INVALID_ARGUMENT;
    lens[i] = (size_t)len;
  }
  hal_iree_dispatch_state_t ds;
  memset(&ds, 0, sizeof(ds));
  ds.workgroup_size_x = (uint32_t)rec[11];
  ds.workgroup_size_y = (uint32_t)rec[12];
  ds.workgroup_size_z = (uint16_t)rec[13];
  ds.constant_count = (uint16_t)rec[8];
  ds.workgroup_count_x = counts[0];
  ds.workgroup_count_y = counts[1];
  ds.workgroup_count_z = (uint16_t)counts[2];
  ds.max_concurrency = (uint8_t)ex->max_concurrency;
  ds.binding_count = (uint8_t)n;
  ds.constants = (const uint32_t*)(intptr_t)rec[7];
  ds.binding_ptrs = ptrs;
  ds.binding_lengths = lens;
  hal_iree_workgroup_state_t ws;
  memset(&ws, 0, sizeof(ws));
  if (ex->local_memory_size) {
    ws.local_memory = aligned_alloc(64, ex->local_memory_size);
    if (!ws.local_memory) return ST_RESOURCE_EXHAUSTED;
    ws.local_memory_size = ex->local_memory_size;
  }
  hal_iree_dispatch_fn_t fn = (hal_iree_dispatch_fn_t)(intptr_t)rec[1];
  uint64_t cx = counts[0], cxy = (uint64_t)counts[0] * counts[1];
  int rc = ST_OK;
  for (int64_t i = begin; i < end; ++i) {
    uint64_t u = (uint64_t)i;
    uint64_t r = u % cxy;
    ws.workgroup_id_x = (uint32_t)(r % cx);
    ws.workgroup_id_y = (uint32_t)(r / cx);
    ws.workgroup_id_z = (uint16_t)(u / cxy);
    if (fn(ex->environment, &ds, &ws)) {
      rc = ST_INTERNAL;
      break;
    }
  }
  free(ws.local_memory);
  return rc;
}

int hal_iree_import_thunk(hal_iree_import_fn_t fn, void* params, void* context,
                          void* reserved) {
  return fn(params, context, reserved);
}

/* Runs linear workgroup indices [begin, end) of one dispatch whose counts are known. */
int hal_replay_dispatch_range(const int64_t* rec, const int64_t* bases,
                              const int64_t* base_lens, const int64_t* bind_base,
                              const int64_t* bind_off, const int64_t* bind_len,
                              const uint32_t* counts, int64_t begin, int64_t end) {
  if (rec[0] == OP_IREE_DISPATCH)
    return iree_dispatch_range(rec, bases, base_lens, bind_base, bind_off, bind_len, counts,
                               begin, end);
  hal_cpu_dispatch_state_t st;
  void* ptrs[HAL_CPU_MAX_BINDINGS];
  uint64_t lens[HAL_CPU_MAX_BINDINGS];
  int rc = prepare_state(rec, bases, base_lens, bind_base, bind_off, bind_len, counts, &st,
                         ptrs, lens);
  if (rc) return rc;
  hal_cpu_workgroup_fn_t fn = (hal_cpu_workgroup_fn_t)(intptr_t)rec[1];
  uint64_t cx = counts[0], cxy = (uint64_t)counts[0] * counts[1];
  for (int64_t i = begin; i < end; ++i) {
    uint64_t u = (uint64_t)i;
    uint32_t z = (uint32_t)(u / cxy);
    uint64_t r = u % cxy;
    rc = fn(&st, (uint32_t)(r % cx), (uint32_t)(r / cx), z);
    if (rc) return status_of(rc);
  }
  return ST_OK;
}

static int run_fill(const int64_t* rec, const int64_t* bases, const int64_t* base_lens) {
  int64_t len = rec[3], plen = rec[5];
  if (!in_range(base_lens, rec[1], rec[2], len)) return ST_OUT_OF_RANGE;
  char* dst = (char*)(intptr_t)bases[rec[1]] + rec[2];
  uint32_t pattern = (uint32_t)rec[4];
  if (plen == 1) {
    memset(dst, (int)(pattern & 0xFF), (size_t)len);
    return ST_OK;
  }
  if (plen != 2 && plen != 4) return ST_INVALID_ARGUMENT;
  int64_t i = 0;
  for (; i + plen <= len; i += plen) memcpy(dst + i, &pattern, (size_t)plen);
  if (i < len) memcpy(dst + i, &pattern, (size_t)(len - i));
  return ST_OK;
}

/* Executes records [begin, end). Returns 0, or a status with err[0] = failing record. */
int hal_replay_run(const int64_t* recs, int64_t begin, int64_t end, const int64_t* bases,
                   const int64_t* base_lens, const int64_t* bind_base,
                   const int64_t* bind_off, const int64_t* bind_len, int64_t* err) {
  for (int64_t c = begin; c < end; ++c) {
    const int64_t* rec = recs + c * REC;
    int rc = ST_OK;
    switch (rec[0]) {
      case OP_DISPATCH:
      case OP_IREE_DISPATCH: {
        uint32_t counts[3];
        rc = hal_replay_counts(rec, bases, base_lens, counts);
        if (rc) break;
        int64_t total = (int64_t)counts[0] * counts[1] * counts[2];
        if (total == 0) break;
        rc = hal_replay_dispatch_range(rec, bases, base_lens, bind_base, bind_off, bind_len,
                                       counts, 0, total);
        break;
      }
      case OP_FILL:
        rc = run_fill(rec, bases, base_lens);
        break;
      case OP_COPY:
        if (!in_range(base_lens, rec[1], rec[2], rec[5]) ||
            !in_range(base_lens, rec[3], rec[4], rec[5])) {
          rc = ST_OUT_OF_RANGE;
          break;
        }
        memmove((char*)(intptr_t)bases[rec[3]] + rec[4],
                (const char*)(intptr_t)bases[rec[1]] + rec[2], (size_t)rec[5]);
        break;
      case OP_UPDATE:
        if (!in_range(base_lens, rec[2], rec[3], rec[4])) {
          rc = ST_OUT_OF_RANGE;
          break;
        }
        memcpy((char*)(intptr_t)bases[rec[2]] + rec[3], (const void*)(intptr_t)rec[1],
               (size_t)rec[4]);
        break;
      default:
        break;
    }
    if (rc) {
      err[0] = c;
      return rc;
    }
  }
  return ST_OK;
}
