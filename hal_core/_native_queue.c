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
   builds do not build this module. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyTypeObject *QueueOpType;
static PyTypeObject *SemaphoreType;
static PyTypeObject *KindType;
static PyObject *fallback;
static long long max_value;

static Py_ssize_t off_kind, off_queue, off_waits, off_signals, off_flags, off_retained,
    off_sem_value;

static PyObject *str_closed, *str_single_queue, *zero;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out)
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
    if (slot_offset((PyTypeObject *)op_type, "kind", &k) < 0 ||
        slot_offset((PyTypeObject *)op_type, "queue", &q) < 0 ||
        slot_offset((PyTypeObject *)op_type, "waits", &w) < 0 ||
        slot_offset((PyTypeObject *)op_type, "signals", &s) < 0 ||
        slot_offset((PyTypeObject *)op_type, "flags", &f) < 0 ||
        slot_offset((PyTypeObject *)op_type, "retained", &r) < 0 ||
        slot_offset((PyTypeObject *)sem_type, "_value", &v) < 0) {
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

static PyObject *
queue_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || fallback == NULL) {
        return slow(args, nargs);
    }
    PyObject *device = args[0], *kind = args[1], *affinity = args[2];
    if (Py_TYPE(kind) != KindType || !PyLong_CheckExact(affinity)) {
        return slow(args, nargs);
    }
    PyObject *closed = PyObject_GetAttr(device, str_closed);
    if (closed == NULL) {
        PyErr_Clear();
        return slow(args, nargs);
    }
    Py_DECREF(closed);
    if (closed != Py_False) {
        return slow(args, nargs);
    }
    PyObject *waits = as_tuple(args[3]);
    if (waits == NULL) {
        return slow(args, nargs);
    }
    PyObject *signals = as_tuple(args[4]);
    if (signals == NULL) {
        Py_DECREF(waits);
        return slow(args, nargs);
    }
    PyObject *single = NULL, *q = NULL;
    if (!common_shape(waits, 0) || !common_shape(signals, 1)) {
        goto fall_back;
    }
    single = PyObject_GetAttr(device, str_single_queue);
    if (single == NULL || !PyDict_CheckExact(single)) {
        PyErr_Clear();
        goto fall_back;
    }
    q = PyDict_GetItemWithError(single, affinity); /* borrowed */
    if (q == NULL) {
        PyErr_Clear();
        goto fall_back;
    }
    PyObject *op = QueueOpType->tp_alloc(QueueOpType, 0);
    if (op == NULL) {
        Py_DECREF(single);
        Py_DECREF(waits);
        Py_DECREF(signals);
        return NULL;
    }
    Py_INCREF(kind);
    SLOT(op, off_kind) = kind;
    Py_INCREF(q);
    SLOT(op, off_queue) = q;
    Py_DECREF(single);
    /* An empty list gives the reference's empty tuple, as ``()`` does. */
    SLOT(op, off_waits) = waits;
    SLOT(op, off_signals) = signals;
    Py_INCREF(zero);
    SLOT(op, off_flags) = zero;
    Py_INCREF(Py_None);
    SLOT(op, off_retained) = Py_None;
    return op;

fall_back:
    Py_XDECREF(single);
    Py_DECREF(waits);
    Py_DECREF(signals);
    return slow(args, nargs);
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
    if (str_closed == NULL || str_single_queue == NULL || zero == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
