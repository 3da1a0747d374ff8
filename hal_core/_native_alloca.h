/* Shared declarations of _native_alloca.c (alloca_op / dealloca_op) and
   _native_alloca_lane.c (finding a device's alloca lane and what the straight path keeps
   on it), two sources of hal_core._native_queue. The state below is set by init_alloca
   (in _native_alloca.c) and read by both. */
#ifndef HAL_CORE_NATIVE_ALLOCA_H
#define HAL_CORE_NATIVE_ALLOCA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "pool/_native.h" /* the Reservation layout (hal_core.pool._native) */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))
#define STORAGE_CACHE_LIMIT 64

/* CPython < 3.12 exposes dict versions: globally unique, changed by every modification. */
#if PY_VERSION_HEX < 0x030C0000
#define GATE_VERSION(d) (((PyDictObject *)(d))->ma_version_tag)
#endif

/* Store ``value`` (a new reference is taken) in an object slot, dropping the old one. */
static inline void
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    Py_INCREF(value);
    Py_XSETREF(SLOT(obj, off), value);
}

/* Bound by init_alloca: the types, objects and slot offsets the lane code reads. */
extern PyTypeObject *LaneType, *TransientType, *FrontierType, *TimelineType, *ReservationT;
extern PyObject *state_committed, *capacity;
extern Py_ssize_t b_state, b_pool_state;
extern Py_ssize_t l_valid, l_key_params, l_key_size, l_pool, l_wrap, l_pool_set, l_entries,
    l_timelines, l_axes, l_gate, l_slabs, l_storage_cache, l_requesters, l_death;
extern Py_ssize_t t_pool, t_finalizer, f_axes, f_epochs, f_capacity;
extern PyObject *s_lane, *s_entries, *s_submit, *s_closing, *s_profiler, *s_storage;

/* An attribute read remembered between calls (see nq_cached_attr). */
typedef struct {
    PyTypeObject *type;
    unsigned int type_version;
    Py_ssize_t offset; /* an object slot's offset, or 0: the instance dict's entry */
    PyObject *dict;
    uint64_t dict_version;
    PyObject *value;
} AttrCache;

/* Defined in _native_queue.c. */
int nq_as_ll(PyObject *v, long long *out);

/* Defined in _native_alloca_lane.c. */
PyObject *nq_cached_attr(PyObject *obj, PyObject *name, AttrCache *cache);
PyObject *nq_alloca_lane(PyObject *device, PyObject *params, PyObject *size);
PyObject *nq_dealloca_lane(PyObject *device, PyObject *buffer);
int nq_gate_open(PyObject *lane);
int nq_lane_open(PyObject *lane, long q);
PyObject *nq_death_frontier(PyObject *lane, PyObject *axis, PyObject *epoch);
PyObject *nq_wrap(PyObject *lane, PyObject *reservation);
PyObject *nq_borrow_requester(PyObject *lane, long q, PyObject *retired);
void nq_return_requester(PyObject *lane, long q, PyObject *requester);
PyObject *nq_releasable(PyObject *lane, PyObject *buffer);

#endif
