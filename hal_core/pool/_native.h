/* Shared declarations of hal_core.pool._native's sources: _native.c (the Reservation value
 * type, FenceLock and the module), _native_fixed_block.c and _native_tlsf.c (the pool
 * cores' fast paths, which also share _native_core.h). See _native.c's opening comment for
 * the design. */
#ifndef HAL_CORE_POOL_NATIVE_H
#define HAL_CORE_POOL_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pythread.h>

#ifdef Py_GIL_DISABLED
#error "the pool fast paths rely on the GIL for atomicity; do not build them free-threaded"
#endif

typedef struct {
    PyObject_HEAD
    PyObject *pool;         /* the owning pool; None once released */
    PyObject *block_handle; /* the policy's handle (block index, slab, ...) */
    Py_ssize_t offset;
    Py_ssize_t length;
    Py_ssize_t slab_index;
} Reservation;

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char held;       /* written only by the holder, with the GIL */
    PyObject *owner; /* weak reference to the pool whose counters it folds, or NULL */
} FenceLock;

extern PyTypeObject ReservationType, FenceLockType, FixedBlockCoreType, TlsfCoreType;

extern PyObject *g_ok_fresh; /* AcquireResult.OK_FRESH */
extern PyObject *g_no_info;  /* NO_INFO */
extern PyObject *s_observers, *s_signal_if_observed, *s_acquire_slow, *s_release_slow;

/* A new Reservation (in _native.c); ``handle`` is borrowed. */
Reservation *reservation_make(PyObject *pool, Py_ssize_t offset, Py_ssize_t length,
                              PyObject *handle, Py_ssize_t slab_index);

/* configure_recycle(OK, Frontier): enables the TLSF recycle-list fast paths (in
 * _native_tlsf.c). */
PyObject *native_configure_recycle(PyObject *module, PyObject *args);

/* Fold a core's pending fast-path counts into its counter ints (in _native_tlsf.c). */
int core_fold(PyObject *owner);

#endif
