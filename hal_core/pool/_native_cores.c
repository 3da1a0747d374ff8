/* The pool cores of hal_core.pool._native: the state they share with the Python pools
 * (CoreHead), the fixed-block and TLSF fast paths, and folding their pending counts.
 * See _native.c for the design (why no lock is taken, when the Python path runs). */
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

PyTypeObject FixedBlockCoreType = {
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

PyTypeObject TlsfCoreType = {
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
int
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
