/* Native fast paths for the allocation pools (hal_core.pool._native).
 *
 * The module has three sources: this one holds the Reservation value type, FenceLock (the
 * pools' lock, which publishes whether it is held) and the module; _native_fixed_block.c
 * holds the reserve/release fast paths of the fixed-block pool (its free stack) and
 * _native_tlsf.c those of the TLSF pool (its quick and recycle lists); _native.h what all
 * three share, _native_core.h what the two cores share. Everything else - bad
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
#include "_native.h"

PyObject *g_ok_fresh; /* AcquireResult.OK_FRESH */
PyObject *g_no_info;  /* NO_INFO */
PyObject *s_observers, *s_signal_if_observed, *s_acquire_slow, *s_release_slow;

/* ------------------------------------------------------------------------------------ */
/* Reservation                                                                          */

Reservation *
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

PyTypeObject ReservationType = {
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

PyTypeObject FenceLockType = {
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
    {"configure_recycle", native_configure_recycle, METH_VARARGS,
     "configure_recycle(ok, frontier_type): what a recycle-list reserve returns and the\n"
     "Frontier type whose dominance it checks; enables the TLSF recycle fast paths."},
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
