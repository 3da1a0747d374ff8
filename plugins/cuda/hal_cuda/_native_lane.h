/* Shared declarations of hal_cuda._native_lane (see _native_lane.c's module comment). */

#ifndef HAL_CUDA_NATIVE_LANE_H
#define HAL_CUDA_NATIVE_LANE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The driver entry points, exactly as libcuda declares them (handles are pointers,
   CUdeviceptr a 64-bit unsigned, CUresult an int). */
typedef int (*cu_event_record_t)(void *event, void *stream);
typedef int (*cu_stream_wait_event_t)(void *stream, void *event, unsigned int flags);
typedef int (*cu_memset_d8_t)(uint64_t dst, unsigned char value, size_t n, void *stream);
typedef int (*cu_memset_d16_t)(uint64_t dst, unsigned short value, size_t n, void *stream);
typedef int (*cu_memset_d32_t)(uint64_t dst, unsigned int value, size_t n, void *stream);
typedef int (*cu_memcpy_t)(uint64_t dst, uint64_t src, size_t n, void *stream);
typedef int (*cu_memcpy_htod_t)(uint64_t dst, const void *src, size_t n, void *stream);
typedef int (*cu_launch_kernel_t)(void *f, unsigned int gx, unsigned int gy, unsigned int gz,
                                  unsigned int bx, unsigned int by, unsigned int bz,
                                  unsigned int shared, void *stream, void **params,
                                  void **extra);

typedef struct {
    cu_event_record_t event_record;
    cu_stream_wait_event_t stream_wait_event;
    cu_memset_d8_t memset_d8;
    cu_memset_d16_t memset_d16;
    cu_memset_d32_t memset_d32;
    cu_memcpy_t memcpy_async;
    cu_memcpy_htod_t memcpy_htod;
    cu_launch_kernel_t launch_kernel;
} LaneDriver;

/* Python objects the lane calls, bound once by ``init`` (module state: one set per
   process, as hal_cuda itself is). */
typedef struct {
    PyObject *buffer_storage; /* hal_core.backend.buffer_storage */
    PyObject *wait_reached;   /* hal_core.backend.wait_reached */
    PyObject *op_error;       /* hal_core.backend.op_error */
    PyObject *cuda_error;     /* cuda_api.cuda_error */
    PyObject *cancelled;      /* hal_core.CancelledError */
    PyObject *weak_ref_type;  /* stream_ops.WeakBufferRef */
    PyObject *resolve;        /* stream_ops.resolve */
    PyObject *fill;           /* stream_ops.fill (the unaligned 2-D path) */
    PyObject *program_type;   /* stream_ops.CudaProgram */
    PyObject *signal_all;     /* hal_core.backend.signal_all */
    PyObject *kind_fill, *kind_update, *kind_copy, *kind_dispatch, *kind_execute;
} LaneRefs;

extern LaneRefs lane_refs;

/* Interned attribute names. */
typedef struct {
    PyObject *address, *byte_offset, *target, *target_offset, *source, *source_offset,
        *length, *pattern, *payload, *program, *bindings, *graph, *single, *count_ref, *grid,
        *block, *shared, *first, *direct, *refs, *params, *function, *parameters, *values,
        *_lock, *acquire, *release, *_buffer, *offset, *get, *kind, *queue, *waits,
        *signals, *epoch, *_closing, *_profiling, *current, *_stopped, *event, *nbytes,
        *data, *ctypes;
} LaneNames;

extern LaneNames lane_names;

/* The stream work of one op (``_native_lane_work.c``). Each returns 0 when the work
   was queued (or needed no call), 1 when it failed with ``*error`` set to the op's
   HalError (a new reference), and -1 only when even that could not be made (a Python
   error is set). ``api`` is the device's hot-call API, for the 2-D fill fallback. */
int lane_fill(const LaneDriver *drv, PyObject *api, PyObject *op, void *stream,
              PyObject *stream_obj, PyObject **error);
int lane_copy(const LaneDriver *drv, PyObject *op, void *stream, PyObject **error);
int lane_update(const LaneDriver *drv, PyObject *op, void *stream, PyObject **error);
int lane_launch(const LaneDriver *drv, PyObject *program, PyObject *launch, PyObject *table,
                void *stream, PyObject **error);

/* The op's error for the Python exception now set (``op_error``): 1 with ``*error``
   set, or -1 when that failed too. */
int lane_error_from_exception(PyObject **error);
/* ``cuda_error(err, what)`` as the op's error: 1 with ``*error`` set, or -1. */
int lane_driver_error(int err, const char *what, PyObject **error);
/* An object's integer handle (``int(obj)``) as a pointer; -1 with an error set. */
int lane_handle(PyObject *obj, void **out);

#define MAX_WAITS 16

typedef struct {
    PyObject_HEAD
    /* Python objects (traversed by the GC: the lane and its backend form a cycle). */
    PyObject *backend, *fallback, *keepalive, *ctx, *thread_context, *streams, *inflight,
        *free_events, *event_get, *completion, *lock, *put, *next_epochs, *stream_waits,
        *finish_stream, *complete_waited, *api, *backend_dict, *retires;
    /* C state */
    void **stream_handles;
    Py_ssize_t stream_count;
    LaneDriver drv;
    unsigned long long handled, fallbacks;
    const char *reason;
} Lane;

/* The committed part of ``Lane.submit`` (``_native_lane_run.c``): take the epoch, queue
   the work after its device-side waits, take an event and hand the op over. Returns 0,
   or -1 with a Python error set when even failing the op could not be done. */
int lane_run_op(Lane *self, PyObject *op, int kind, Py_ssize_t q, PyObject *queue_obj,
                PyObject *program, PyObject *single, PyObject *table, PyObject *waits,
                Py_ssize_t nwaits, PyObject **device, Py_ssize_t ndevice, PyObject **events,
                Py_ssize_t nevents);
/* ``bool(getattr(obj, name))``: 1, 0, or -1 with an error set. */
int lane_truthy_attr(PyObject *obj, PyObject *name);

/* ``Lane.finish`` (``_native_lane_finish.c``) and its interned names. */
PyObject *lane_finish(Lane *self, PyObject *const *args, Py_ssize_t nargs);
int lane_finish_init(void);
/* Drop each of ``entries`` (an entry tuple, a list of them, or None) still published. */
int lane_discard_entries(PyObject *inflight, PyObject *entries);

#endif
