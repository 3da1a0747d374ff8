/* Native fast paths for the allocation pools (hal_core.pool._native).
 *
 * What lives here: the Reservation value type, FenceLock (the pools' lock, which
 * publishes whether it is held), and the reserve/release fast paths of the fixed-block
 * pool (its free stack) and of the TLSF pool (its quick lists). Everything else - bad
 * input, frontiers, budgets, growth, coalescing - stays in Python: a fast path that
 * meets anything it does not handle calls the Python implementation of the same method
 * (``_acquire_slow`` / ``_release_slow``), which is the reference for behaviour.
 *
 * Why this is safe without taking the lock: a fast path runs entirely while holding the
 * GIL and never runs Python code (or frees an object that could) between reading and
 * writing pool state, so to every other thread it is one atomic step. The pools' Python
 * code mutates that same state only while holding ``_lock``; a FenceLock records that it
 * is held, and a fast path that finds it held takes the slow path, which queues on the
 * lock. The lists a fast path pops and pushes are the Python code's own; its counts are
 * kept in C and folded into the pool's counters when the lock is acquired (see CoreHead),
 * so both implementations keep one set of books.
 *
 * The GIL is the premise: free-threaded builds must not compile this file (setup.py
 * skips it there, and the pools then use their Python paths).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pythread.h>

#ifdef Py_GIL_DISABLED
#error "the pool fast paths rely on the GIL for atomicity; do not build them free-threaded"
#endif

static PyObject *g_ok_fresh;   /* AcquireResult.OK_FRESH */
static PyObject *g_no_info;    /* NO_INFO */
static PyObject *s_observers, *s_signal_if_observed, *s_acquire_slow, *s_release_slow;

/* ------------------------------------------------------------------------------------ */
/* Reservation                                                                          */

typedef struct {
    PyObject_HEAD
    PyObject *pool;         /* the owning pool; None once released */
    PyObject *block_handle; /* the policy's handle (block index, slab, ...) */
    Py_ssize_t offset;
    Py_ssize_t length;
    Py_ssize_t slab_index;
} Reservation;

static PyTypeObject ReservationType;

static Reservation *
reservation_make(PyObject *pool, Py_ssize_t offset, Py_ssize_t length, PyObject *handle,
                 Py_ssize_t slab_index)
{
    Reservation *r = PyObject_GC_New(Reservation, &ReservationType);
    if (r == NULL)
        return NULL;
    Py_INCREF(pool);
    r->pool = pool;
    Py_INCREF(handle);
    r->block_handle = handle;
    r->offset = offset;
    r->length = length;
    r->slab_index = slab_index;
    PyObject_GC_Track(r);
    return r;
}

static PyObject *
reservation_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pool", "offset", "length", "block_handle", "slab_index", NULL};
    PyObject *pool, *handle;
    Py_ssize_t offset, length, slab_index;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnnOn:Reservation", kwlist, &pool, &offset,
                                     &length, &handle, &slab_index))
        return NULL;
    return (PyObject *)reservation_make(pool, offset, length, handle, slab_index);
}

/* Calling the type from Python (the TLSF and passthrough pools do, per reservation):
 * positional calls skip building an argument tuple. */
static PyObject *
reservation_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == 5) {
        Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
        if (offset == -1 && PyErr_Occurred())
            return NULL;
        Py_ssize_t length = PyLong_AsSsize_t(args[2]);
        if (length == -1 && PyErr_Occurred())
            return NULL;
        Py_ssize_t slab_index = PyLong_AsSsize_t(args[4]);
        if (slab_index == -1 && PyErr_Occurred())
            return NULL;
        return (PyObject *)reservation_make(args[0], offset, length, args[3], slab_index);
    }
    PyObject *tuple = PyTuple_New(nargs);
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(tuple, i, args[i]);
    }
    PyObject *kwds = NULL;
    if (kwnames != NULL) {
        kwds = PyDict_New();
        for (Py_ssize_t i = 0; kwds != NULL && i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kwds, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                Py_CLEAR(kwds);
        }
        if (kwds == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
    }
    PyObject *result = reservation_new((PyTypeObject *)type, tuple, kwds);
    Py_DECREF(tuple);
    Py_XDECREF(kwds);
    return result;
}

static int
reservation_traverse(Reservation *r, visitproc visit, void *arg)
{
    Py_VISIT(r->pool);
    Py_VISIT(r->block_handle);
    return 0;
}

static int
reservation_clear(Reservation *r)
{
    Py_CLEAR(r->pool);
    Py_CLEAR(r->block_handle);
    return 0;
}

static void
reservation_dealloc(Reservation *r)
{
    PyObject_GC_UnTrack(r);
    reservation_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int
reservation_is_live(Reservation *r)
{
    return r->pool != NULL && r->pool != Py_None;
}

static PyObject *
reservation_get_pool(Reservation *r, void *closure)
{
    PyObject *pool = reservation_is_live(r) ? r->pool : Py_None;
    Py_INCREF(pool);
    return pool;
}

static PyObject *
reservation_get_is_live(Reservation *r, void *closure)
{
    return PyBool_FromLong(reservation_is_live(r));
}

static PyObject *
reservation_repr(Reservation *r)
{
    return PyUnicode_FromFormat("<Reservation slab=%zd [%zd, %zd) %s>", r->slab_index,
                                r->offset, r->offset + r->length,
                                reservation_is_live(r) ? "live" : "released");
}

static PyMemberDef reservation_members[] = {
    {"offset", T_PYSSIZET, offsetof(Reservation, offset), READONLY, NULL},
    {"length", T_PYSSIZET, offsetof(Reservation, length), READONLY, NULL},
    {"slab_index", T_PYSSIZET, offsetof(Reservation, slab_index), READONLY, NULL},
    {"block_handle", T_OBJECT, offsetof(Reservation, block_handle), READONLY, NULL},
    /* Written by the pools' Python code: None marks the reservation released. */
    {"_pool", T_OBJECT, offsetof(Reservation, pool), 0, NULL},
    {NULL},
};

static PyGetSetDef reservation_getset[] = {
    {"pool", (getter)reservation_get_pool, NULL, "The owning pool, or None once released.",
     NULL},
    {"is_live", (getter)reservation_get_is_live, NULL, "False once released.", NULL},
    {NULL},
};

static PyTypeObject ReservationType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hal_core.pool.Reservation",
    .tp_basicsize = sizeof(Reservation),
    .tp_dealloc = (destructor)reservation_dealloc,
    .tp_repr = (reprfunc)reservation_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A range of pool memory: [offset, offset + length) of slab slab_index.\n\n"
              "Created by Pool.acquire_reservation; length >= the requested size. The\n"
              "reservation borrows its pool: keep the pool alive until it is released.\n"
              "After release_reservation it is dead and releasing it again is\n"
              "FAILED_PRECONDITION.",
    .tp_traverse = (traverseproc)reservation_traverse,
    .tp_clear = (inquiry)reservation_clear,
    .tp_members = reservation_members,
    .tp_getset = reservation_getset,
    .tp_new = reservation_new,
    .tp_vectorcall = reservation_vectorcall,
};

/* ------------------------------------------------------------------------------------ */
/* FenceLock: a mutex whose held state the fast paths can read                          */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char held;       /* written only by the holder, with the GIL */
    PyObject *owner; /* weak reference to the pool whose counters it folds, or NULL */
} FenceLock;

static PyTypeObject FenceLockType, FixedBlockCoreType, TlsfCoreType;
static int core_fold(PyObject *owner);

static PyObject *
fence_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"owner", NULL};
    PyObject *owner = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:FenceLock", kwlist, &owner))
        return NULL;
    if (owner == Py_None)
        owner = NULL;
    if (owner != NULL && !PyObject_TypeCheck(owner, &FixedBlockCoreType) &&
        !PyObject_TypeCheck(owner, &TlsfCoreType)) {
        PyErr_Format(PyExc_TypeError, "FenceLock owner must be a pool with native fast paths, "
                     "not %.100s", Py_TYPE(owner)->tp_name);
        return NULL;
    }
    FenceLock *self = (FenceLock *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return NULL;
    }
    if (owner != NULL && (self->owner = PyWeakref_NewRef(owner, NULL)) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
fence_dealloc(FenceLock *self)
{
    if (self->lock != NULL) {
        if (self->held)
            PyThread_release_lock(self->lock);
        PyThread_free_lock(self->lock);
    }
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* 1 acquired, 0 not (timeout or non-blocking), -1 error (not held). The GIL is dropped
 * only while waiting, so ``held`` becomes 1 before the holder runs any Python code; then
 * the owner's pending fast-path counts are folded into its counters, so code under the
 * lock reads exact values. */
static int
fence_acquire_impl(FenceLock *self, int blocking, PY_TIMEOUT_T timeout_us)
{
    if (PyThread_acquire_lock_timed(self->lock, 0, 0) != PY_LOCK_ACQUIRED) {
        if (!blocking)
            return 0;
        PyLockStatus status;
        Py_BEGIN_ALLOW_THREADS
        status = PyThread_acquire_lock_timed(self->lock, timeout_us, 0);
        Py_END_ALLOW_THREADS
        if (status != PY_LOCK_ACQUIRED)
            return 0;
    }
    self->held = 1;
    /* A weak reference: a lock that outlives its pool folds nothing. */
    PyObject *owner = self->owner != NULL ? PyWeakref_GetObject(self->owner) : NULL;
    if (owner != NULL && owner != Py_None && core_fold(owner) < 0) {
        self->held = 0;
        PyThread_release_lock(self->lock);
        return -1;
    }
    return 1;
}

static PyObject *
fence_acquire(FenceLock *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pd:acquire", kwlist, &blocking, &timeout))
        return NULL;
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout > (double)PY_TIMEOUT_MAX / 1e6) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return NULL;
    }
    PY_TIMEOUT_T us = timeout < 0 ? -1 : (PY_TIMEOUT_T)(timeout * 1e6);
    int acquired = fence_acquire_impl(self, blocking, us);
    return acquired < 0 ? NULL : PyBool_FromLong(acquired);
}

static PyObject *
fence_enter(FenceLock *self, PyObject *unused)
{
    if (fence_acquire_impl(self, 1, -1) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *
fence_release(FenceLock *self, PyObject *unused)
{
    if (!self->held) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    self->held = 0;
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

static PyObject *
fence_exit(FenceLock *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fence_release(self, NULL);
}

static PyObject *
fence_locked(FenceLock *self, PyObject *unused)
{
    return PyBool_FromLong(self->held);
}

static PyMethodDef fence_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))fence_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool, as threading.Lock.acquire."},
    {"release", (PyCFunction)fence_release, METH_NOARGS, "Release the lock."},
    {"locked", (PyCFunction)fence_locked, METH_NOARGS, "Whether the lock is held."},
    {"__enter__", (PyCFunction)fence_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))fence_exit, METH_FASTCALL, NULL},
    {NULL},
};

static PyTypeObject FenceLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hal_core.pool._native.FenceLock",
    .tp_basicsize = sizeof(FenceLock),
    .tp_dealloc = (destructor)fence_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A non-reentrant lock (the threading.Lock API) whose held state the pool\n"
              "fast paths read: while any thread holds it they defer to the locked path.",
    .tp_methods = fence_methods,
    .tp_new = fence_new,
};

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
    Py_ssize_t d_bytes, d_fresh, d_release; /* counted by fast paths, not yet folded */
} CoreHead;

#define SLOT(name, T, field) {name, T_OBJECT_EX, offsetof(T, field), 0, NULL}
#define HEAD_MEMBERS(T)                                                                     \
    SLOT("_lock", T, h.lock), SLOT("notification", T, h.notification),                      \
    SLOT("budget_limit", T, h.budget_limit), SLOT("_closed", T, h.closed),                  \
    SLOT("_bytes_reserved", T, h.bytes_reserved), SLOT("_fresh_count", T, h.fresh_count),   \
    SLOT("_release_count", T, h.release_count)

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

/* May a fast path run? Only while no thread holds the pool's lock, with no budget (the
 * Python path counts OVER_BUDGET) on an open pool. */
static inline int
head_ready(CoreHead *h)
{
    return h->lock != NULL && Py_IS_TYPE(h->lock, &FenceLockType) &&
           !((FenceLock *)h->lock)->held && ival(h->budget_limit) == 0 &&
           h->closed == Py_False && g_ok_fresh != NULL;
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
        !Py_IS_TYPE(h->lock, &FenceLockType) || ((FenceLock *)h->lock)->held)
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

/* (OK_FRESH, reservation, NO_INFO). Steals ``handle``. */
static PyObject *
result_fill(Reservation *r, PyObject *t, PyObject *pool, Py_ssize_t offset, Py_ssize_t length,
            PyObject *handle, Py_ssize_t slab_index)
{
    Py_INCREF(pool);
    r->pool = pool;
    r->block_handle = handle;
    r->offset = offset;
    r->length = length;
    r->slab_index = slab_index;
    PyObject_GC_Track(r);
    Py_INCREF(g_ok_fresh);
    PyTuple_SET_ITEM(t, 0, g_ok_fresh);
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

/* After a release: wake observers, as the Python paths do. Unobserved releases skip the
 * notification entirely (see hal_core._notification). */
static PyObject *
notify_release(CoreHead *h)
{
    if (h->notification != NULL) {
        PyObject *observers = PyObject_GetAttr(h->notification, s_observers);
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

/* ------------------------------------------------------------------------------------ */
/* FixedBlockCore: the fixed-block pool's free stack                                    */

typedef struct {
    CoreHead h;
    PyObject *free;       /* _free: stack of free block indices (ints) with no frontier */
    PyObject *block_size; /* block_size */
} FixedBlockCore;

/* The block a fast reserve takes (the top of the free stack), or -1 when the Python path
 * must decide. Reads only. */
static Py_ssize_t
fixed_pick(FixedBlockCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *free = self->free;
    Py_ssize_t size = ival(self->block_size);
    if (!head_ready(&self->h) || size <= 0 || !fast_size(args, nargs, kwnames, size) ||
        free == NULL || !PyList_CheckExact(free) || PyList_GET_SIZE(free) == 0)
        return -1;
    return list_ival(free, PyList_GET_SIZE(free) - 1);
}

static PyObject *
fixed_acquire(FixedBlockCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Reservation *r;
    PyObject *t;
    if (fixed_pick(self, args, nargs, kwnames) < 0 || result_alloc(&r, &t) < 0)
        goto slow;
    Py_ssize_t index = fixed_pick(self, args, nargs, kwnames); /* again: see result_alloc */
    if (index < 0) {
        result_drop(r, t);
        goto slow;
    }
    Py_ssize_t size = ival(self->block_size);
    self->h.d_fresh++;
    self->h.d_bytes += size;
    PyObject *handle = list_pop_top(self->free);
    return result_fill(r, t, (PyObject *)self, index * size, size, handle, 0);
slow:
    if (PyErr_Occurred())
        return NULL;
    return call_slow((PyObject *)self, s_acquire_slow, args, nargs, kwnames);
}

static PyObject *
fixed_release(FixedBlockCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Reservation *r = fast_release_arg(&self->h, args, nargs, kwnames);
    if (r != NULL && self->free != NULL && PyList_CheckExact(self->free)) {
        if (PyList_Append(self->free, r->block_handle) < 0)
            return NULL;
        detach(r);
        self->h.d_release++;
        self->h.d_bytes -= r->length;
        return notify_release(&self->h);
    }
    return call_slow((PyObject *)self, s_release_slow, args, nargs, kwnames);
}

static int
fixed_traverse(FixedBlockCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->free);
    return head_traverse(&self->h, visit, arg);
}

static int
fixed_clear(FixedBlockCore *self)
{
    Py_CLEAR(self->free);
    Py_CLEAR(self->block_size);
    head_clear(&self->h);
    return 0;
}

static void
fixed_dealloc(FixedBlockCore *self)
{
    PyObject_GC_UnTrack(self);
    fixed_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef fixed_members[] = {
    HEAD_MEMBERS(FixedBlockCore),
    SLOT("_free", FixedBlockCore, free),
    SLOT("block_size", FixedBlockCore, block_size),
    {NULL},
};

static PyMethodDef fixed_methods[] = {
    {"acquire_reservation", (PyCFunction)(void (*)(void))fixed_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire_reservation($self, /, size, alignment=0, requester_frontier=None, flags=0)\n--\n\n"
     "Reserve a block (native fast path; see Pool.acquire_reservation)."},
    {"release_reservation", (PyCFunction)(void (*)(void))fixed_release,
     METH_FASTCALL | METH_KEYWORDS,
     "release_reservation($self, /, reservation, death_frontier=None)\n--\n\n"
     "Give a block back (native fast path; see Pool.release_reservation)."},
    {NULL},
};

static PyTypeObject FixedBlockCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hal_core.pool._native.FixedBlockCore",
    .tp_basicsize = sizeof(FixedBlockCore),
    .tp_dealloc = (destructor)fixed_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Fast paths of FixedBlockPool: pop and push its free stack.",
    .tp_traverse = (traverseproc)fixed_traverse,
    .tp_clear = (inquiry)fixed_clear,
    .tp_methods = fixed_methods,
    .tp_members = fixed_members,
    .tp_getset = core_getset,
    .tp_new = core_new,
};

/* ------------------------------------------------------------------------------------ */
/* TlsfCore: the TLSF pool's quick lists                                                */

typedef struct {
    CoreHead h;
    PyObject *quick;        /* _quick: list of lists of block indices, by granule count */
    PyObject *off;          /* _off: block offsets in granules */
    PyObject *size;         /* _size: block sizes in granules */
    PyObject *slab_of;      /* _slab_of: block slab indices */
    PyObject *quick_bytes;  /* _quick_bytes */
    PyObject *quick_depth;  /* _quick_depth: blocks each quick list may hold */
    PyObject *shift;        /* _shift: log2 of the granule */
    PyObject *range_length; /* range_length */
    Py_ssize_t d_quick;     /* quick-list bytes counted by fast paths, not yet folded */
} TlsfCore;

/* The quick-listed block a fast reserve takes, or -1 when the Python path must decide.
 * Sets ``*g`` to the request in granules. Reads only. */
static Py_ssize_t
tlsf_pick(TlsfCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
          Py_ssize_t *g)
{
    PyObject *quick = self->quick;
    Py_ssize_t shift = ival(self->shift);
    if (!head_ready(&self->h) || shift < 0 || shift > 32 || quick == NULL ||
        !PyList_CheckExact(quick))
        return -1;
    Py_ssize_t size = fast_size(args, nargs, kwnames, ival(self->range_length));
    if (!size)
        return -1;
    *g = (size + ((Py_ssize_t)1 << shift) - 1) >> shift;
    if (*g >= PyList_GET_SIZE(quick))
        return -1;
    PyObject *list = PyList_GET_ITEM(quick, *g);
    if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) == 0)
        return -1;
    return list_ival(list, PyList_GET_SIZE(list) - 1);
}

static PyObject *
tlsf_acquire(TlsfCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t g;
    Reservation *r;
    PyObject *t;
    if (tlsf_pick(self, args, nargs, kwnames, &g) < 0 || result_alloc(&r, &t) < 0)
        goto slow;
    Py_ssize_t b = tlsf_pick(self, args, nargs, kwnames, &g); /* again: see result_alloc */
    Py_ssize_t off = list_ival(self->off, b), slab = list_ival(self->slab_of, b);
    if (b < 0 || off < 0 || slab < 0) {
        result_drop(r, t);
        goto slow;
    }
    Py_ssize_t shift = ival(self->shift), length = g << shift;
    self->d_quick -= length;
    self->h.d_fresh++;
    self->h.d_bytes += length;
    PyObject *handle = list_pop_top(PyList_GET_ITEM(self->quick, g));
    return result_fill(r, t, (PyObject *)self, off << shift, length, handle, slab);
slow:
    if (PyErr_Occurred())
        return NULL;
    return call_slow((PyObject *)self, s_acquire_slow, args, nargs, kwnames);
}

static PyObject *
tlsf_release(TlsfCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Reservation *r = fast_release_arg(&self->h, args, nargs, kwnames);
    PyObject *quick = self->quick;
    if (r != NULL && quick != NULL && PyList_CheckExact(quick)) {
        Py_ssize_t g = list_ival(self->size, ival(r->block_handle));
        PyObject *list = g >= 0 && g < PyList_GET_SIZE(quick) ? PyList_GET_ITEM(quick, g) : NULL;
        if (list != NULL && PyList_CheckExact(list) &&
            PyList_GET_SIZE(list) < ival(self->quick_depth)) {
            if (PyList_Append(list, r->block_handle) < 0)
                return NULL;
            detach(r);
            self->d_quick += r->length;
            self->h.d_bytes -= r->length;
            self->h.d_release++;
            return notify_release(&self->h);
        }
    }
    return call_slow((PyObject *)self, s_release_slow, args, nargs, kwnames);
}

static int
tlsf_traverse(TlsfCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->quick);
    Py_VISIT(self->off);
    Py_VISIT(self->size);
    Py_VISIT(self->slab_of);
    return head_traverse(&self->h, visit, arg);
}

static int
tlsf_clear(TlsfCore *self)
{
    Py_CLEAR(self->quick);
    Py_CLEAR(self->off);
    Py_CLEAR(self->size);
    Py_CLEAR(self->slab_of);
    Py_CLEAR(self->quick_depth);
    Py_CLEAR(self->shift);
    Py_CLEAR(self->range_length);
    Py_CLEAR(self->quick_bytes);
    head_clear(&self->h);
    return 0;
}

static void
tlsf_dealloc(TlsfCore *self)
{
    PyObject_GC_UnTrack(self);
    tlsf_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef tlsf_members[] = {
    HEAD_MEMBERS(TlsfCore),
    SLOT("_quick", TlsfCore, quick),
    SLOT("_off", TlsfCore, off),
    SLOT("_size", TlsfCore, size),
    SLOT("_slab_of", TlsfCore, slab_of),
    SLOT("_quick_bytes", TlsfCore, quick_bytes),
    SLOT("_quick_depth", TlsfCore, quick_depth),
    SLOT("_shift", TlsfCore, shift),
    SLOT("range_length", TlsfCore, range_length),
    {NULL},
};

static PyMethodDef tlsf_methods[] = {
    {"acquire_reservation", (PyCFunction)(void (*)(void))tlsf_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire_reservation($self, /, size, alignment=0, requester_frontier=None, flags=0)\n--\n\n"
     "Reserve (native fast path from the quick lists; see Pool.acquire_reservation)."},
    {"release_reservation", (PyCFunction)(void (*)(void))tlsf_release,
     METH_FASTCALL | METH_KEYWORDS,
     "release_reservation($self, /, reservation, death_frontier=None)\n--\n\n"
     "Give back (native fast path into the quick lists; see Pool.release_reservation)."},
    {NULL},
};

static PyTypeObject TlsfCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hal_core.pool._native.TlsfCore",
    .tp_basicsize = sizeof(TlsfCore),
    .tp_dealloc = (destructor)tlsf_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Fast paths of TlsfPool: exact-size reserve and release through its quick lists.",
    .tp_traverse = (traverseproc)tlsf_traverse,
    .tp_clear = (inquiry)tlsf_clear,
    .tp_methods = tlsf_methods,
    .tp_members = tlsf_members,
    .tp_getset = core_getset,
    .tp_new = core_new,
};

/* ------------------------------------------------------------------------------------ */
/* Folding fast-path counts (FenceLock acquire)                                          */

/* Fold the pending fast-path counts of ``owner`` into its counter ints: all or nothing
 * (the new ints are made first; an allocation failure leaves everything as it was). */
static int
core_fold(PyObject *owner)
{
    CoreHead *h = (CoreHead *)owner;
    PyObject **slots[4] = {&h->bytes_reserved, &h->fresh_count, &h->release_count, NULL};
    Py_ssize_t *deltas[4] = {&h->d_bytes, &h->d_fresh, &h->d_release, NULL};
    int n = 3;
    if (PyObject_TypeCheck(owner, &TlsfCoreType)) {
        slots[3] = &((TlsfCore *)owner)->quick_bytes;
        deltas[3] = &((TlsfCore *)owner)->d_quick;
        n = 4;
    }
    PyObject *values[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < n; i++) {
        if (*deltas[i] == 0)
            continue;
        PyObject *old = *slots[i];
        Py_ssize_t v = old != NULL && PyLong_CheckExact(old) ? PyLong_AsSsize_t(old) : -1;
        if (v == -1 && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "pool counters must be ints");
        if (PyErr_Occurred() || (values[i] = PyLong_FromSsize_t(v + *deltas[i])) == NULL) {
            for (int j = 0; j < i; j++)
                Py_XDECREF(values[j]);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (values[i] != NULL) {
            Py_SETREF(*slots[i], values[i]); /* the old value is an int: no code runs */
            *deltas[i] = 0;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Module                                                                               */

static PyObject *
native_configure(PyObject *module, PyObject *args)
{
    PyObject *ok_fresh, *no_info;
    if (!PyArg_ParseTuple(args, "OO:configure", &ok_fresh, &no_info))
        return NULL;
    Py_INCREF(ok_fresh);
    Py_XSETREF(g_ok_fresh, ok_fresh);
    Py_INCREF(no_info);
    Py_XSETREF(g_no_info, no_info);
    Py_RETURN_NONE;
}

static PyMethodDef native_methods[] = {
    {"configure", native_configure, METH_VARARGS,
     "configure(ok_fresh, no_info): the result objects a fast reserve returns."},
    {NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "Native fast paths for hal_core.pool (see _native.c for the design).", -1, native_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    s_observers = PyUnicode_InternFromString("_observers");
    s_signal_if_observed = PyUnicode_InternFromString("signal_if_observed");
    s_acquire_slow = PyUnicode_InternFromString("_acquire_slow");
    s_release_slow = PyUnicode_InternFromString("_release_slow");
    if (!s_observers || !s_signal_if_observed || !s_acquire_slow || !s_release_slow)
        return NULL;
    if (PyType_Ready(&ReservationType) < 0 || PyType_Ready(&FenceLockType) < 0 ||
        PyType_Ready(&FixedBlockCoreType) < 0 || PyType_Ready(&TlsfCoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Reservation", (PyObject *)&ReservationType) < 0 ||
        PyModule_AddObjectRef(m, "FenceLock", (PyObject *)&FenceLockType) < 0 ||
        PyModule_AddObjectRef(m, "FixedBlockCore", (PyObject *)&FixedBlockCoreType) < 0 ||
        PyModule_AddObjectRef(m, "TlsfCore", (PyObject *)&TlsfCoreType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
