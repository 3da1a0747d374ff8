/* The state the pool cores of hal_core.pool._native share with the Python pools (CoreHead)
 * and the helpers both cores' fast paths use; included by _native_fixed_block.c and
 * _native_tlsf.c only. The helpers are defined here as static functions, not declared and
 * defined once, so each core's fast paths keep inlining them without link-time
 * optimisation (each source gets its own copy, as when both cores were one source).
 * See _native.c for the design (why no lock is taken, when the Python path runs). */
#ifndef HAL_CORE_POOL_NATIVE_CORE_H
#define HAL_CORE_POOL_NATIVE_CORE_H

#include "_native.h"

/* ------------------------------------------------------------------------------------ */
/* State shared by the pool cores: the attributes of hal_core.pool.Pool they touch       */
/*
 * Every attribute is an object slot (T_OBJECT_EX), which CPython's attribute
 * specialisation handles as fast as an instance attribute, so the Python paths pay nothing
 * for the extension. The fast paths do not update the counter ints (that would allocate
 * an int per update); they count in C (``d_*``), and the pool's FenceLock folds those
 * counts into the ints whenever it is acquired, before any code under the lock reads them.
 * The one lock-free reader, ``bytes_reserved``, adds the pending count itself.
 */

typedef struct {
    PyObject_HEAD
    PyObject *lock;           /* _lock */
    PyObject *notification;   /* notification */
    PyObject *budget_limit;   /* budget_limit (0 = none) */
    PyObject *closed;         /* _closed */
    PyObject *bytes_reserved; /* _bytes_reserved */
    PyObject *fresh_count;    /* _fresh_count */
    PyObject *release_count;  /* _release_count */
    PyObject *deferred;       /* _deferred: dropped buffers' reservations not yet released */
    Py_ssize_t d_bytes, d_fresh, d_release; /* counted by fast paths, not yet folded */
} CoreHead;

#define SLOT(name, T, field) {name, T_OBJECT_EX, offsetof(T, field), 0, NULL}
#define HEAD_MEMBERS(T)                                                                     \
    SLOT("_lock", T, h.lock), SLOT("notification", T, h.notification),                      \
    SLOT("budget_limit", T, h.budget_limit), SLOT("_closed", T, h.closed),                  \
    SLOT("_bytes_reserved", T, h.bytes_reserved), SLOT("_fresh_count", T, h.fresh_count),   \
    SLOT("_release_count", T, h.release_count), SLOT("_deferred", T, h.deferred)

/* The value of an int slot, or -1 when it is unset, not an exact int, or out of range
 * (every slot read this way holds a non-negative count, size or shift). */
static inline Py_ssize_t
ival(PyObject *o)
{
    if (o == NULL || !PyLong_CheckExact(o))
        return -1;
    Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v == -1 && PyErr_Occurred())
        PyErr_Clear();
    return v;
}

/* Nothing deferred by a dropped buffer's finalizer (Pool.release_dropped)? While something
 * is, the fast paths take the Python path, which releases it first. */
static inline int
head_nothing_deferred(CoreHead *h)
{
    return h->deferred != NULL && PyList_CheckExact(h->deferred) &&
           PyList_GET_SIZE(h->deferred) == 0;
}

/* May a fast path run? Only while no thread holds the pool's lock, with no budget (the
 * Python path counts OVER_BUDGET) on an open pool that owes no deferred release. */
static inline int
head_ready(CoreHead *h)
{
    return h->lock != NULL && Py_IS_TYPE(h->lock, &FenceLockType) &&
           !((FenceLock *)h->lock)->held && ival(h->budget_limit) == 0 &&
           h->closed == Py_False && g_ok_fresh != NULL && head_nothing_deferred(h);
}

/* Size argument of a fast reserve: an exact int in (0, limit], no alignment given (or 0)
 * and no keywords. Anything else returns 0 and goes to the Python path, which also
 * produces every error. */
static inline Py_ssize_t
fast_size(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t limit)
{
    if (kwnames != NULL || nargs < 1 || nargs > 4 || !PyLong_CheckExact(args[0]))
        return 0;
    if (nargs >= 2 && ival(args[1]) != 0)
        return 0;
    Py_ssize_t size = ival(args[0]);
    return (size > 0 && size <= limit) ? size : 0;
}

/* Release fast path precondition: a live reservation of this pool, no death frontier. */
static inline Reservation *
fast_release_arg(CoreHead *h, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs < 1 || nargs > 2 || (nargs == 2 && args[1] != Py_None) ||
        !Py_IS_TYPE(args[0], &ReservationType) ||
        ((Reservation *)args[0])->pool != (PyObject *)h || h->lock == NULL ||
        !Py_IS_TYPE(h->lock, &FenceLockType) || ((FenceLock *)h->lock)->held ||
        !head_nothing_deferred(h))
        return NULL;
    return (Reservation *)args[0];
}

/* Mark ``r`` released. The pool outlives the call (the caller holds a reference), so
 * dropping the reservation's reference runs no code. */
static inline void
detach(Reservation *r)
{
    PyObject *pool = r->pool;
    Py_INCREF(Py_None);
    r->pool = Py_None;
    Py_DECREF(pool);
}

/* A fast reserve allocates its result first: allocation may collect garbage, and a
 * finalizer may run Python code (and let other threads run). Only after that does it read
 * the pool's state, so nothing can change between its reads and its writes. */
static int
result_alloc(Reservation **r, PyObject **t)
{
    *r = PyObject_GC_New(Reservation, &ReservationType);
    if (*r == NULL)
        return -1;
    (*r)->pool = NULL;
    (*r)->block_handle = NULL;
    *t = PyTuple_New(3);
    if (*t == NULL) {
        Py_CLEAR(*r);
        return -1;
    }
    return 0;
}

/* (code, reservation, NO_INFO). Steals ``handle``. */
static PyObject *
result_fill(Reservation *r, PyObject *t, PyObject *code, PyObject *pool, Py_ssize_t offset,
            Py_ssize_t length, PyObject *handle, Py_ssize_t slab_index)
{
    Py_INCREF(pool);
    r->pool = pool;
    r->block_handle = handle;
    r->offset = offset;
    r->length = length;
    r->slab_index = slab_index;
    PyObject_GC_Track(r);
    Py_INCREF(code);
    PyTuple_SET_ITEM(t, 0, code);
    PyTuple_SET_ITEM(t, 1, (PyObject *)r);
    Py_INCREF(g_no_info);
    PyTuple_SET_ITEM(t, 2, g_no_info);
    return t;
}

static void
result_drop(Reservation *r, PyObject *t)
{
    Py_DECREF(t);
    Py_DECREF(r);
}

/* An object slot's offset remembered for one type (see slot_attr). */
typedef struct {
    PyTypeObject *type;
    unsigned int version;
    Py_ssize_t offset;
} SlotCache;

/* ``obj.name`` (a new reference; NULL with the error set). When it is an object slot of
 * the type (a member descriptor: it wins over any instance dict) and the type's getattr is
 * the generic one, its offset is remembered with the type's version tag (valid, changed by
 * every change of the type or its bases) and read directly while that is unchanged. */
static PyObject *
slot_attr(PyObject *obj, PyObject *name, SlotCache *cache)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (type == cache->type && (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) &&
        type->tp_version_tag == cache->version) {
        PyObject *v = *(PyObject **)((char *)obj + cache->offset);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL || type->tp_getattro != PyObject_GenericGetAttr)
        return v;
    PyObject *d = _PyType_Lookup(type, name); /* borrowed; gives the type a version tag */
    if (d != NULL && Py_TYPE(d) == &PyMemberDescr_Type &&
        ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
        (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        Py_ssize_t offset = ((PyMemberDescrObject *)d)->d_member->offset;
        if (offset > 0 && *(PyObject **)((char *)obj + offset) == v) {
            cache->type = type;
            cache->version = type->tp_version_tag;
            cache->offset = offset;
        }
    }
    return v;
}

/* After a release: wake observers, as the Python paths do. Unobserved releases skip the
 * notification entirely (see hal_core._notification). */
static PyObject *
notify_release(CoreHead *h)
{
    if (h->notification != NULL) {
        static SlotCache cache;
        PyObject *observers = slot_attr(h->notification, s_observers, &cache);
        if (observers == NULL)
            return NULL;
        int any = PyObject_IsTrue(observers);
        Py_DECREF(observers);
        if (any < 0)
            return NULL;
        if (any) {
            PyObject *r = PyObject_CallMethodNoArgs(h->notification, s_signal_if_observed);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
}

/* The Python implementation of the same method (the slow path), called without building
 * a bound method when the arguments fit on the stack. */
static PyObject *
call_slow(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[8];
    if (total < 8) {
        stack[0] = self;
        memcpy(stack + 1, args, total * sizeof(PyObject *));
        return PyObject_VectorcallMethod(name, stack, 1 + nargs, kwnames);
    }
    PyObject *method = PyObject_GetAttr(self, name);
    if (method == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, nargs, kwnames);
    Py_DECREF(method);
    return result;
}

/* Pop the top of ``list`` (non-empty), taking over the list's reference. Shrinking the
 * size without reallocating keeps the list valid (allocated >= size). */
static inline PyObject *
list_pop_top(PyObject *list)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    PyObject *item = PyList_GET_ITEM(list, n - 1);
    Py_SET_SIZE(list, n - 1);
    return item;
}

/* The int at ``list[i]``, or -1 (not a list, out of range, not a non-negative int). */
static inline Py_ssize_t
list_ival(PyObject *list, Py_ssize_t i)
{
    if (list == NULL || !PyList_CheckExact(list) || i < 0 || i >= PyList_GET_SIZE(list))
        return -1;
    return ival(PyList_GET_ITEM(list, i));
}

static int
head_traverse(CoreHead *h, visitproc visit, void *arg)
{
    Py_VISIT(h->lock);
    Py_VISIT(h->notification);
    Py_VISIT(h->deferred);
    return 0;
}

static void
head_clear(CoreHead *h)
{
    Py_CLEAR(h->lock);
    Py_CLEAR(h->notification);
    Py_CLEAR(h->budget_limit);
    Py_CLEAR(h->closed);
    Py_CLEAR(h->bytes_reserved);
    Py_CLEAR(h->fresh_count);
    Py_CLEAR(h->release_count);
    Py_CLEAR(h->deferred);
}

/* ``bytes_reserved``: a lock-free snapshot, pending fast-path counts included. */
static PyObject *
core_get_bytes_reserved(CoreHead *h, void *closure)
{
    Py_ssize_t v = ival(h->bytes_reserved);
    if (v < 0) {
        PyErr_SetString(PyExc_AttributeError, "bytes_reserved is not set yet");
        return NULL;
    }
    return PyLong_FromSsize_t(v + h->d_bytes);
}

static PyGetSetDef core_getset[] = {
    {"bytes_reserved", (getter)core_get_bytes_reserved, NULL,
     "Bytes held by live reservations: a lock-free snapshot (query_stats gives a "
     "consistent set of counters).",
     NULL},
    {NULL},
};

/* Instances come from object.__new__ (with no arguments: the pool's __init__ takes them),
 * which also sets up the subclass's inline attribute values; PyType_GenericNew would leave
 * them out and every Python attribute access on the pool would take CPython's slow path. */
static PyObject *
core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *no_args = PyTuple_New(0);
    if (no_args == NULL)
        return NULL;
    PyObject *self = PyBaseObject_Type.tp_new(type, no_args, NULL);
    Py_DECREF(no_args);
    return self;
}

#endif
