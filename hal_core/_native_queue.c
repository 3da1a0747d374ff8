/* The queue front door's common case in C: hal_core._native_queue.

   ``queue_op(device, kind, affinity, wait, signal)`` builds the ``QueueOp`` of one
   ``Device.queue_*`` call when the call has the common shape: an open device, a
   ``QueueOpKind`` member, an int affinity that names one queue (``device._single_queue``),
   and wait/signal lists that are tuples or lists of ``(Semaphore, int)`` tuples with values
   in range (waits ``0..MAX_VALUE``, signals above the semaphore's payload) and at most two
   distinct signalled semaphores. Anything else calls the Python reference
   (``hal_core._queue_checks.queue_op``), which normalises or raises the same errors; so the
   behaviour is the reference's whatever the input (a differential property test checks
   that). The GIL makes each call atomic, as the Python path relies on too: free-threaded
   builds do not build this module.

   This file holds the module, ``queue_op`` and ``fill_op``; ``complete_op``,
   ``add_timepoint`` and ``EpochCounter`` (a queue timeline's ``begin``) are in
   _native_completion.c, ``alloca_op`` and ``dealloca_op`` in
   _native_alloca.c, their lanes in _native_alloca_lane.c (one extension, four sources).

   ``complete_op(op, timeline)`` finishes a successful op as ``_completion.complete_op``
   does (its reference): signal each semaphore, drop ``op.retained``, retire ``op.epoch`` on
   the queue's ``QueueTimeline``. A semaphore is signalled here when the value advances it,
   it has not failed, no timepoint is released (``value < _min_pending``) and its lock is
   free; the epoch is retired here when it is the next one, nothing retired out of order
   waits, the timeline publishes to at most one tracker and its lock is free. The GIL is
   never released between those checks and the stores, and a free lock means no Python
   critical section over that state is in progress, so the stores are what the locked
   Python code would do. Anything else calls the reference for that semaphore
   (``signal_all``) or the timeline (``retire``).

   ``add_timepoint(sem, value, fn, arg)`` is ``Semaphore.add_timepoint`` (bound to the class
   by ``_semaphore.bind_native``): when ``value`` is an int above the payload, the semaphore
   has not failed and its lock is free, it parks the timepoint here (the reference's heap
   entry, pushed with ``heapq.heappush``); anything else calls the reference
   (``Semaphore._add_timepoint``). Its entry is allocated before the state is read: an
   allocation may collect garbage and run finalizers, which may let other threads run.

   ``fill_op(device, affinity, wait, signal, target, target_offset, length, pattern,
   pattern_length, flags)`` is ``Device.queue_fill``'s checks and op: when the pattern is
   ``bytes`` of 1, 2 or 4 with no ``pattern_length``, the target an exact ``Buffer`` with
   TRANSFER_TARGET usage and WRITE access, offset and length ints inside it and aligned to
   the pattern, and ``flags`` 0, it builds the op with ``queue_op`` and sets the fill
   fields; anything else calls the reference (``_queue_checks.fill_op``), which raises. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Defined in _native_completion.c (the other source of this module). */
int nq_completion_strings(void);
PyObject *nq_init_completion(PyObject *mod, PyObject *args);
PyObject *nq_complete_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *nq_init_timepoints(PyObject *mod, PyObject *args);
PyObject *nq_add_timepoint(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *nq_init_wait_reached(PyObject *mod, PyObject *ref);
PyObject *nq_wait_reached(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
int nq_add_epoch_counter(PyObject *mod);
/* Defined in _native_alloca.c. */
int nq_alloca_strings(void);
PyObject *nq_init_alloca(PyObject *mod, PyObject *args);
PyObject *nq_alloca_op(PyObject *mod, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *nq_dealloca_op(PyObject *mod, PyObject *const *args, size_t nargsf,
                         PyObject *kwnames);

static PyTypeObject *QueueOpType;
static PyTypeObject *SemaphoreType;
static PyTypeObject *KindType;
static PyObject *fallback;
static long long max_value;

static Py_ssize_t off_kind, off_queue, off_waits, off_signals, off_flags, off_retained,
    off_sem_value;

static PyObject *str_closed, *str_single_queue, *zero;

/* fill_op: bound by init_fill. */
static PyTypeObject *BufferType;
static PyObject *fill_ref, *fill_kind;
static long long usage_target, access_any, access_write;
static Py_ssize_t off_target, off_target_offset, off_length, off_pattern, off_buf_usage,
    off_buf_access, off_buf_length;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

int
nq_slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    if (d == NULL) {
        return -1;
    }
    if (Py_TYPE(d) != &PyMemberDescr_Type) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *out = m->offset;
    Py_DECREF(d);
    return 0;
}

/* The value of ``v`` (an int or int subclass) into ``*out``: 1, or 0 when it does not fit
   a long long (no error set). */
int
nq_as_ll(PyObject *v, long long *out)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = x;
    return 1;
}

/* An int (or int subclass: flag enums) as a non-negative C integer, or -1. */
long long
nq_nonneg(PyObject *v, int exact)
{
    if (v == NULL || (exact ? !PyLong_CheckExact(v) : !PyLong_Check(v))) {
        return -1;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0) {
        PyErr_Clear();
        return -1;
    }
    return x;
}

/* init(QueueOp, Semaphore, QueueOpKind, reference, max_value) */
static PyObject *
init(PyObject *mod, PyObject *args)
{
    PyObject *op_type, *sem_type, *kind_type, *ref;
    long long maxv;
    if (!PyArg_ParseTuple(args, "O!O!O!OL", &PyType_Type, &op_type, &PyType_Type, &sem_type,
                          &PyType_Type, &kind_type, &ref, &maxv)) {
        return NULL;
    }
    if (!PyCallable_Check(ref)) {
        PyErr_SetString(PyExc_TypeError, "reference must be callable");
        return NULL;
    }
    Py_ssize_t k, q, w, s, f, r, v;
    if (nq_slot_offset((PyTypeObject *)op_type, "kind", &k) < 0 ||
        nq_slot_offset((PyTypeObject *)op_type, "queue", &q) < 0 ||
        nq_slot_offset((PyTypeObject *)op_type, "waits", &w) < 0 ||
        nq_slot_offset((PyTypeObject *)op_type, "signals", &s) < 0 ||
        nq_slot_offset((PyTypeObject *)op_type, "flags", &f) < 0 ||
        nq_slot_offset((PyTypeObject *)op_type, "retained", &r) < 0 ||
        nq_slot_offset((PyTypeObject *)sem_type, "_value", &v) < 0) {
        return NULL;
    }
    Py_INCREF(op_type);
    Py_INCREF(sem_type);
    Py_INCREF(kind_type);
    Py_INCREF(ref);
    Py_XSETREF(QueueOpType, (PyTypeObject *)op_type);
    Py_XSETREF(SemaphoreType, (PyTypeObject *)sem_type);
    Py_XSETREF(KindType, (PyTypeObject *)kind_type);
    Py_XSETREF(fallback, ref);
    max_value = maxv;
    off_kind = k;
    off_queue = q;
    off_waits = w;
    off_signals = s;
    off_flags = f;
    off_retained = r;
    off_sem_value = v;
    Py_RETURN_NONE;
}

/* A value in 0..max_value as a C integer, or -1 when it is not an exact int in range. */
static long long
payload(PyObject *value)
{
    if (!PyLong_CheckExact(value)) {
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || v < 0 || v > max_value) {
        PyErr_Clear();
        return -1;
    }
    return v;
}

/* The list as a new tuple reference (the tuple itself when it is one), or NULL when it is
   neither a tuple nor a list. */
static PyObject *
as_tuple(PyObject *list)
{
    if (PyTuple_CheckExact(list)) {
        Py_INCREF(list);
        return list;
    }
    if (PyList_CheckExact(list)) {
        return PyList_AsTuple(list);
    }
    return NULL;
}

/* 1 when every entry is an exact (Semaphore, int) tuple with a value in range (and, for
   signals, above the payload; at most two entries, distinct); 0 otherwise. */
static int
common_shape(PyObject *pairs, int signal)
{
    Py_ssize_t n = PyTuple_GET_SIZE(pairs);
    if (signal && n > 2) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            return 0;
        }
        PyObject *sem = PyTuple_GET_ITEM(pair, 0);
        if (Py_TYPE(sem) != SemaphoreType) {
            return 0;
        }
        long long v = payload(PyTuple_GET_ITEM(pair, 1));
        if (v < 0) {
            return 0;
        }
        if (signal) {
            PyObject *current = SLOT(sem, off_sem_value);
            if (current == NULL) {
                return 0;
            }
            long long c = payload(current);
            if (c < 0 || c >= v) {
                return 0;
            }
        }
    }
    if (signal && n == 2 &&
        PyTuple_GET_ITEM(PyTuple_GET_ITEM(pairs, 0), 0) ==
            PyTuple_GET_ITEM(PyTuple_GET_ITEM(pairs, 1), 0)) {
        return 0;
    }
    return 1;
}

static PyObject *
slow(PyObject *const *args, Py_ssize_t nargs)
{
    if (fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_core._native_queue.init was not called");
        return NULL;
    }
    return PyObject_Vectorcall(fallback, args, nargs, NULL);
}

/* The common shape of a call's arguments given the device's ``_single_queue`` dict: on 1,
   ``*waits`` and ``*signals`` are new tuple references and ``*q`` the queue index object
   (borrowed from the dict); 0 when the call has another shape; -1 on error. Used by
   ``nq_common_op`` and by _native_alloca.c (which checks the device is open itself). */
int
nq_common_args(PyObject *single, PyObject *kind, PyObject *affinity, PyObject *wait,
               PyObject *signal, PyObject **waits, PyObject **signals, PyObject **q)
{
    if (fallback == NULL || Py_TYPE(kind) != KindType || !PyLong_CheckExact(affinity) ||
        !PyDict_CheckExact(single)) {
        return 0;
    }
    PyObject *w = as_tuple(wait);
    if (w == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *s = as_tuple(signal);
    if (s == NULL) {
        Py_DECREF(w);
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *queue = NULL;
    if (common_shape(w, 0) && common_shape(s, 1)) {
        queue = PyDict_GetItemWithError(single, affinity); /* borrowed */
        if (queue == NULL) {
            PyErr_Clear();
        }
    }
    if (queue == NULL) {
        Py_DECREF(w);
        Py_DECREF(s);
        return 0;
    }
    *waits = w;
    *signals = s;
    *q = queue;
    return 1;
}

/* A new QueueOp of ``kind`` on queue ``q`` over ``waits`` and ``signals`` (both references
   stolen, also on failure). */
PyObject *
nq_make_op(PyObject *kind, PyObject *q, PyObject *waits, PyObject *signals)
{
    PyObject *op = QueueOpType->tp_alloc(QueueOpType, 0);
    if (op == NULL) {
        Py_DECREF(waits);
        Py_DECREF(signals);
        return NULL;
    }
    Py_INCREF(kind);
    SLOT(op, off_kind) = kind;
    Py_INCREF(q);
    SLOT(op, off_queue) = q;
    /* An empty list gives the reference's empty tuple, as ``()`` does. */
    SLOT(op, off_waits) = waits;
    SLOT(op, off_signals) = signals;
    Py_INCREF(zero);
    SLOT(op, off_flags) = zero;
    Py_INCREF(Py_None);
    SLOT(op, off_retained) = Py_None;
    return op;
}

/* The op of a call of the common shape, as a new reference; NULL with no error set when the
   call has another shape (the caller then runs its reference), NULL with an error when
   building it failed. */
PyObject *
nq_common_op(PyObject *device, PyObject *kind, PyObject *affinity, PyObject *wait,
             PyObject *signal)
{
    if (fallback == NULL) {
        return NULL;
    }
    PyObject *closed = PyObject_GetAttr(device, str_closed);
    if (closed == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(closed);
    if (closed != Py_False) {
        return NULL;
    }
    PyObject *single = PyObject_GetAttr(device, str_single_queue);
    if (single == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *waits, *signals, *q;
    int common = nq_common_args(single, kind, affinity, wait, signal, &waits, &signals, &q);
    PyObject *op = common == 1 ? nq_make_op(kind, q, waits, signals) : NULL;
    Py_DECREF(single); /* the dict keeps q */
    return op;
}

static PyObject *
queue_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        return slow(args, nargs);
    }
    PyObject *op = nq_common_op(args[0], args[1], args[2], args[3], args[4]);
    if (op == NULL && !PyErr_Occurred()) {
        return slow(args, nargs);
    }
    return op;
}

/* init_fill(Buffer, reference, FILL kind, TRANSFER_TARGET, access ANY, access WRITE). Needs
   init (the QueueOp type) first. */
static PyObject *
init_fill(PyObject *mod, PyObject *args)
{
    PyObject *buf_type, *ref, *kind;
    long long target, any, write;
    if (!PyArg_ParseTuple(args, "O!OOLLL", &PyType_Type, &buf_type, &ref, &kind, &target, &any,
                          &write)) {
        return NULL;
    }
    if (QueueOpType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "init must be called first");
        return NULL;
    }
    PyTypeObject *b = (PyTypeObject *)buf_type;
    Py_ssize_t t, to, l, p, bu, ba, bl;
    if (nq_slot_offset(QueueOpType, "target", &t) < 0 ||
        nq_slot_offset(QueueOpType, "target_offset", &to) < 0 ||
        nq_slot_offset(QueueOpType, "length", &l) < 0 ||
        nq_slot_offset(QueueOpType, "pattern", &p) < 0 ||
        nq_slot_offset(b, "allowed_usage", &bu) < 0 || nq_slot_offset(b, "allowed_access", &ba) < 0 ||
        nq_slot_offset(b, "byte_length", &bl) < 0) {
        return NULL;
    }
    Py_INCREF(buf_type);
    Py_INCREF(ref);
    Py_INCREF(kind);
    Py_XSETREF(BufferType, b);
    Py_XSETREF(fill_ref, ref);
    Py_XSETREF(fill_kind, kind);
    usage_target = target;
    access_any = any;
    access_write = write;
    off_target = t;
    off_target_offset = to;
    off_length = l;
    off_pattern = p;
    off_buf_usage = bu;
    off_buf_access = ba;
    off_buf_length = bl;
    Py_RETURN_NONE;
}

/* 1 when the fill arguments have the common shape and pass every check. */
static int
fill_common(PyObject *const *args)
{
    PyObject *target = args[4], *pattern = args[7];
    if (!PyBytes_CheckExact(pattern) || args[8] != Py_None || Py_TYPE(target) != BufferType ||
        !PyLong_CheckExact(args[9]) || PyLong_AsLong(args[9]) != 0) {
        return 0;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(pattern);
    if (n != 1 && n != 2 && n != 4) {
        return 0;
    }
    long long usage = nq_nonneg(SLOT(target, off_buf_usage), 0);
    long long access = nq_nonneg(SLOT(target, off_buf_access), 0);
    long long size = nq_nonneg(SLOT(target, off_buf_length), 1);
    long long offset = nq_nonneg(args[5], 1), length = nq_nonneg(args[6], 1);
    if (usage < 0 || access < 0 || size < 0 || offset < 0 || length < 0) {
        return 0;
    }
    if ((usage & usage_target) != usage_target ||
        (!(access & access_any) && (access & access_write) != access_write)) {
        return 0;
    }
    if (offset > size || length > size - offset || offset % n || length % n) {
        return 0;
    }
    return 1;
}

static PyObject *
fill_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (fill_ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_core._native_queue.init_fill was not called");
        return NULL;
    }
    if (nargs != 10 || !fill_common(args)) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        return PyObject_Vectorcall(fill_ref, args, nargs, NULL);
    }
    PyObject *op_args[5] = {args[0], fill_kind, args[1], args[2], args[3]};
    PyObject *op = queue_op(mod, op_args, 5);
    if (op == NULL) {
        return NULL;
    }
    if (Py_TYPE(op) != QueueOpType) {
        Py_DECREF(op);
        PyErr_SetString(PyExc_TypeError, "queue_op did not return a QueueOp");
        return NULL;
    }
    Py_INCREF(args[4]);
    Py_XSETREF(SLOT(op, off_target), args[4]);
    Py_INCREF(args[5]);
    Py_XSETREF(SLOT(op, off_target_offset), args[5]);
    Py_INCREF(args[6]);
    Py_XSETREF(SLOT(op, off_length), args[6]);
    Py_INCREF(args[7]);
    Py_XSETREF(SLOT(op, off_pattern), args[7]);
    Py_INCREF(zero);
    Py_XSETREF(SLOT(op, off_flags), zero);
    return op;
}

/* fill_host(host, start, length, pattern): store ``pattern`` repeated over
   ``host[start:start + length]`` (a writable contiguous byte buffer: a uint8 array); a range
   outside it, a length that is not a multiple of the pattern or anything else not of that
   shape calls the reference (``_queue_fast_paths.fill_host_reference``), which raises. */
static PyObject *fill_host_ref;

static PyObject *
init_fill_host(PyObject *mod, PyObject *ref)
{
    Py_INCREF(ref);
    Py_XSETREF(fill_host_ref, ref);
    Py_RETURN_NONE;
}

static PyObject *
fill_host(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (fill_host_ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_core._native_queue.init_fill_host was not called");
        return NULL;
    }
    if (nargs != 4 || !PyBytes_CheckExact(args[3])) {
        return PyObject_Vectorcall(fill_host_ref, args, nargs, NULL);
    }
    long long start = nq_nonneg(args[1], 1), length = nq_nonneg(args[2], 1);
    Py_ssize_t n = PyBytes_GET_SIZE(args[3]);
    if (start < 0 || length < 0 || (n != 1 && n != 2 && n != 4) || length % n) {
        return PyObject_Vectorcall(fill_host_ref, args, nargs, NULL);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        return PyObject_Vectorcall(fill_host_ref, args, nargs, NULL);
    }
    if (start > view.len || length > view.len - start) {
        PyBuffer_Release(&view);
        return PyObject_Vectorcall(fill_host_ref, args, nargs, NULL);
    }
    char *dst = (char *)view.buf + start;
    const char *pat = PyBytes_AS_STRING(args[3]);
    if (n == 1) {
        memset(dst, pat[0], (size_t)length);
    }
    else {
        for (long long i = 0; i < length; i += n) {
            memcpy(dst + i, pat, (size_t)n);
        }
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *
instance_method(PyObject *mod, PyObject *fn)
{
    return PyInstanceMethod_New(fn);
}

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS,
     "init(QueueOp, Semaphore, QueueOpKind, reference, max_value): bind the types and "
     "the Python reference the fast path falls back to."},
    {"queue_op", (PyCFunction)(void (*)(void))queue_op, METH_FASTCALL,
     "queue_op(device, kind, affinity, wait, signal) -> QueueOp (see the module "
     "docstring)."},
    {"init_completion", nq_init_completion, METH_VARARGS,
     "init_completion(QueueOp, Semaphore, QueueTimeline, axis state type, signal_all): bind "
     "complete_op's types and the signal reference it falls back to."},
    {"complete_op", (PyCFunction)(void (*)(void))nq_complete_op, METH_FASTCALL,
     "complete_op(op, timeline): signal op's semaphores, drop op.retained, retire op.epoch "
     "(see the module docstring)."},
    {"init_timepoints", nq_init_timepoints, METH_VARARGS,
     "init_timepoints(reference, heappush, next_seq): bind add_timepoint's reference."},
    {"add_timepoint", (PyCFunction)(void (*)(void))nq_add_timepoint, METH_FASTCALL,
     "add_timepoint(sem, value, fn, arg): Semaphore.add_timepoint (see the module "
     "docstring)."},
    {"init_fill", init_fill, METH_VARARGS,
     "init_fill(Buffer, reference, FILL kind, TRANSFER_TARGET, access ANY, access WRITE): "
     "bind fill_op's types and reference."},
    {"fill_op", (PyCFunction)(void (*)(void))fill_op, METH_FASTCALL,
     "fill_op(device, affinity, wait, signal, target, target_offset, length, pattern, "
     "pattern_length, flags) -> QueueOp (see the module docstring)."},
    {"init_fill_host", init_fill_host, METH_O,
     "init_fill_host(reference): bind fill_host's reference."},
    {"fill_host", (PyCFunction)(void (*)(void))fill_host, METH_FASTCALL,
     "fill_host(host, start, length, pattern): store the repeated pattern (see above)."},
    {"init_wait_reached", nq_init_wait_reached, METH_O,
     "init_wait_reached(reference): bind wait_reached's reference."},
    {"wait_reached", (PyCFunction)(void (*)(void))nq_wait_reached, METH_FASTCALL,
     "wait_reached(sem, value): whether sem reached value without failing (see "
     "_completion.wait_reached)."},
    {"init_alloca", nq_init_alloca, METH_VARARGS,
     "init_alloca(Buffer, AllocaLane, TransientAllocation, Frontier, QueueOp, QueueTimeline, "
     "alloca_reference, dealloca_reference, ALLOCA, DEALLOCA, buffer states, frontier "
     "capacity, ALLOW_WAIT_FRONTIER, ASYNCHRONOUS, placement mask): bind alloca_op and "
     "dealloca_op."},
    {"alloca_op", (PyCFunction)(void (*)(void))nq_alloca_op, METH_FASTCALL | METH_KEYWORDS,
     "alloca_op(device, affinity, wait, signal, params, allocation_size, *, pool=None, "
     "flags=0) -> Buffer: Device.queue_alloca (see _native_alloca.c)."},
    {"dealloca_op", (PyCFunction)(void (*)(void))nq_dealloca_op, METH_FASTCALL | METH_KEYWORDS,
     "dealloca_op(device, affinity, wait, signal, buffer, *, flags=0): "
     "Device.queue_dealloca (see _native_alloca.c)."},
    {"instance_method", instance_method, METH_O,
     "instance_method(fn): fn bound as a method when read from an instance."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "hal_core._native_queue",
    "The queue front door's common case in C; the Python reference is "
    "hal_core._queue_checks.queue_op.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__native_queue(void)
{
    str_closed = PyUnicode_InternFromString("_closed");
    str_single_queue = PyUnicode_InternFromString("_single_queue");
    zero = PyLong_FromLong(0);
    if (str_closed == NULL || str_single_queue == NULL || zero == NULL ||
        nq_completion_strings() < 0 || nq_alloca_strings() < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && nq_add_epoch_counter(m) < 0) {
        Py_CLEAR(m);
    }
    return m;
}
