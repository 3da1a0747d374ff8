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
   allocation may collect garbage and run finalizers, which may let other threads run. */

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

/* complete_op: bound by init_completion. */
static PyTypeObject *TimelineType, *AxisStateType;
static PyObject *signal_ref;
static Py_ssize_t off_epoch, off_sem_failure, off_sem_min_pending, off_sem_lock, off_tl_retired,
    off_tl_done, off_tl_lock, off_tl_on_retire, off_tl_pub, off_tl_axis, off_tl_axis_state,
    off_tl_tracker, off_tl_more, off_as_min_pending;

static PyObject *str_closed, *str_single_queue, *zero, *str_locked, *str_retire, *str_advance;

/* add_timepoint: bound by init_timepoints. */
static PyObject *timepoint_ref, *heappush_fn, *next_seq_fn;
static Py_ssize_t off_sem_timepoints;

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

/* init_completion(QueueOp, Semaphore, QueueTimeline, axis state type, signal_all) */
static PyObject *
init_completion(PyObject *mod, PyObject *args)
{
    PyObject *op_type, *sem_type, *tl_type, *as_type, *ref;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O", &PyType_Type, &op_type, &PyType_Type, &sem_type,
                          &PyType_Type, &tl_type, &PyType_Type, &as_type, &ref)) {
        return NULL;
    }
    if (!PyCallable_Check(ref)) {
        PyErr_SetString(PyExc_TypeError, "signal_all must be callable");
        return NULL;
    }
    PyTypeObject *o = (PyTypeObject *)op_type, *s = (PyTypeObject *)sem_type,
                 *t = (PyTypeObject *)tl_type;
    Py_ssize_t e, sf, smp, sl, tr, td, tlk, tor, tp, ta, tas, tt, tm, amp;
    if (slot_offset(o, "epoch", &e) < 0 || slot_offset(o, "signals", &off_signals) < 0 ||
        slot_offset(o, "retained", &off_retained) < 0 ||
        slot_offset(s, "_value", &off_sem_value) < 0 || slot_offset(s, "_failure", &sf) < 0 ||
        slot_offset(s, "_min_pending", &smp) < 0 || slot_offset(s, "_lock", &sl) < 0 ||
        slot_offset(t, "retired", &tr) < 0 || slot_offset(t, "_done", &td) < 0 ||
        slot_offset(t, "_lock", &tlk) < 0 || slot_offset(t, "on_retire", &tor) < 0 ||
        slot_offset(t, "_pub", &tp) < 0 || slot_offset(t, "_axis", &ta) < 0 ||
        slot_offset(t, "_axis_state", &tas) < 0 || slot_offset(t, "_tracker", &tt) < 0 ||
        slot_offset(t, "_more", &tm) < 0 ||
        slot_offset((PyTypeObject *)as_type, "min_pending", &amp) < 0) {
        return NULL;
    }
    Py_INCREF(op_type);
    Py_INCREF(sem_type);
    Py_INCREF(tl_type);
    Py_INCREF(as_type);
    Py_INCREF(ref);
    Py_XSETREF(QueueOpType, o);
    Py_XSETREF(SemaphoreType, s);
    Py_XSETREF(TimelineType, t);
    Py_XSETREF(AxisStateType, (PyTypeObject *)as_type);
    Py_XSETREF(signal_ref, ref);
    off_epoch = e;
    off_sem_failure = sf;
    off_sem_min_pending = smp;
    off_sem_lock = sl;
    off_tl_retired = tr;
    off_tl_done = td;
    off_tl_lock = tlk;
    off_tl_on_retire = tor;
    off_tl_pub = tp;
    off_tl_axis = ta;
    off_tl_axis_state = tas;
    off_tl_tracker = tt;
    off_tl_more = tm;
    off_as_min_pending = amp;
    Py_RETURN_NONE;
}

/* 1 when ``lock`` (a threading.Lock) is free, 0 when held, -1 on error. */
static int
lock_free(PyObject *lock)
{
    if (lock == NULL) {
        return 0;
    }
    PyObject *held = PyObject_CallMethodNoArgs(lock, str_locked);
    if (held == NULL) {
        return -1;
    }
    Py_DECREF(held);
    return held == Py_False;
}

/* ``a < b`` for exact ints (b may be huge: a semaphore's "no timepoint" sentinel); -1 when
   either is not an exact int. */
static int
int_below(PyObject *a, PyObject *b)
{
    if (!PyLong_CheckExact(a) || !PyLong_CheckExact(b)) {
        return -1;
    }
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* Signal ``value`` on ``sem`` here: 1 done, 0 the reference must, -1 error. */
static int
fast_signal(PyObject *sem, PyObject *value)
{
    if (Py_TYPE(sem) != SemaphoreType || SLOT(sem, off_sem_failure) != Py_None) {
        return 0;
    }
    long long v = payload(value);
    PyObject *current = SLOT(sem, off_sem_value), *min_pending = SLOT(sem, off_sem_min_pending);
    if (v < 0 || current == NULL || min_pending == NULL) {
        return 0;
    }
    long long c = payload(current);
    if (c < 0 || c >= v || int_below(value, min_pending) != 1) {
        return 0;
    }
    int free = lock_free(SLOT(sem, off_sem_lock));
    if (free <= 0) {
        return free;
    }
    Py_INCREF(value);
    Py_SETREF(SLOT(sem, off_sem_value), value);
    return 1;
}

/* Retire ``epoch`` on ``tl`` here: 1 done, 0 the reference must, -1 error. */
static int
fast_retire(PyObject *tl, PyObject *epoch)
{
    if (Py_TYPE(tl) != TimelineType) {
        return 0;
    }
    PyObject *retired = SLOT(tl, off_tl_retired), *done = SLOT(tl, off_tl_done),
             *more = SLOT(tl, off_tl_more), *pub = SLOT(tl, off_tl_pub);
    if (retired == NULL || done == NULL || more == NULL || pub == NULL ||
        !PyLong_CheckExact(retired) || !PyLong_CheckExact(epoch) || !PySet_CheckExact(done) ||
        PySet_GET_SIZE(done) != 0 || !PyTuple_CheckExact(more) || PyTuple_GET_SIZE(more) != 0 ||
        (pub != Py_None && !PyDict_CheckExact(pub))) {
        return 0;
    }
    int overflow = 0;
    long long r = PyLong_AsLongLongAndOverflow(retired, &overflow);
    if (overflow || r < 0 || r == LLONG_MAX) {
        PyErr_Clear();
        return 0;
    }
    long long e = PyLong_AsLongLongAndOverflow(epoch, &overflow);
    if (overflow || e != r + 1) {
        PyErr_Clear();
        return 0;
    }
    PyObject *axis = NULL, *state = NULL, *tracker = NULL;
    if (pub != Py_None) {
        axis = SLOT(tl, off_tl_axis);
        state = SLOT(tl, off_tl_axis_state);
        tracker = SLOT(tl, off_tl_tracker);
        if (axis == NULL || state == NULL || tracker == NULL || Py_TYPE(state) != AxisStateType ||
            SLOT(state, off_as_min_pending) == NULL) {
            return 0;
        }
    }
    int free = lock_free(SLOT(tl, off_tl_lock));
    if (free <= 0) {
        return free;
    }
    /* What ``retire`` does under the lock. */
    Py_INCREF(epoch);
    Py_SETREF(SLOT(tl, off_tl_retired), epoch);
    if (pub != Py_None) {
        Py_INCREF(pub);
        Py_INCREF(axis);
        Py_INCREF(state);
        Py_INCREF(tracker);
        int failed = PyDict_SetItem(pub, axis, epoch);
        /* ... and after it: advance the tracker only when a waiter needs this epoch. */
        int below = failed ? -1 : int_below(epoch, SLOT(state, off_as_min_pending));
        PyObject *res = NULL;
        if (below == 0) {
            res = PyObject_CallMethodObjArgs(tracker, str_advance, axis, epoch, NULL);
        }
        Py_DECREF(pub);
        Py_DECREF(axis);
        Py_DECREF(state);
        Py_DECREF(tracker);
        if (below < 0 || (below == 0 && res == NULL)) {
            return -1;
        }
        Py_XDECREF(res);
    }
    PyObject *notify = SLOT(tl, off_tl_on_retire);
    if (notify != NULL && notify != Py_None) {
        PyObject *res = PyObject_CallOneArg(notify, epoch);
        if (res == NULL) {
            return -1;
        }
        Py_DECREF(res);
    }
    return 1;
}

static PyObject *
complete_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "complete_op(op, timeline) takes 2 arguments");
        return NULL;
    }
    PyObject *op = args[0], *tl = args[1];
    if (signal_ref == NULL || Py_TYPE(op) != QueueOpType) {
        PyErr_SetString(PyExc_TypeError, "complete_op needs a QueueOp (after init_completion)");
        return NULL;
    }
    PyObject *signals = SLOT(op, off_signals), *epoch = SLOT(op, off_epoch);
    if (signals == NULL || epoch == NULL || !PyTuple_CheckExact(signals)) {
        PyErr_SetString(PyExc_AttributeError, "complete_op: the op has no signals or epoch");
        return NULL;
    }
    Py_INCREF(signals);
    Py_INCREF(epoch);
    Py_ssize_t n = PyTuple_GET_SIZE(signals);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(signals, i);
        int done = 0;
        if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
            done = fast_signal(PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1));
        }
        if (done == 0) {
            PyObject *one = PyTuple_Pack(1, pair);
            PyObject *res = one == NULL ? NULL : PyObject_CallOneArg(signal_ref, one);
            Py_XDECREF(one);
            if (res == NULL) {
                done = -1;
            }
            Py_XDECREF(res);
        }
        if (done < 0) {
            Py_DECREF(signals);
            Py_DECREF(epoch);
            return NULL;
        }
    }
    Py_DECREF(signals);
    Py_INCREF(Py_None);
    Py_XSETREF(SLOT(op, off_retained), Py_None);
    int done = fast_retire(tl, epoch);
    if (done == 0) {
        PyObject *res = PyObject_CallMethodOneArg(tl, str_retire, epoch);
        done = res == NULL ? -1 : 1;
        Py_XDECREF(res);
    }
    Py_DECREF(epoch);
    if (done < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* init_timepoints(reference, heappush, next_seq): the Python add_timepoint, heapq's push and
   the registration-order counter. Needs init_completion first (the Semaphore slots). */
static PyObject *
init_timepoints(PyObject *mod, PyObject *args)
{
    PyObject *ref, *push, *seq;
    if (!PyArg_ParseTuple(args, "OOO", &ref, &push, &seq)) {
        return NULL;
    }
    if (SemaphoreType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "init_completion must be called first");
        return NULL;
    }
    Py_ssize_t tp;
    if (slot_offset(SemaphoreType, "_timepoints", &tp) < 0) {
        return NULL;
    }
    Py_INCREF(ref);
    Py_INCREF(push);
    Py_INCREF(seq);
    Py_XSETREF(timepoint_ref, ref);
    Py_XSETREF(heappush_fn, push);
    Py_XSETREF(next_seq_fn, seq);
    off_sem_timepoints = tp;
    Py_RETURN_NONE;
}

static PyObject *
add_timepoint(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (timepoint_ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_core._native_queue.init_timepoints was not called");
        return NULL;
    }
    if (nargs != 4 || Py_TYPE(args[0]) != SemaphoreType || !PyLong_CheckExact(args[1]) ||
        !PyCallable_Check(args[2])) {
        return PyObject_Vectorcall(timepoint_ref, args, nargs, NULL);
    }
    PyObject *sem = args[0], *value = args[1];
    /* Allocate first (see the module docstring), then read and write with no allocation. */
    PyObject *seq = PyObject_CallNoArgs(next_seq_fn);
    if (seq == NULL) {
        return NULL;
    }
    PyObject *tp = PyList_New(4);
    if (tp == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_INCREF(value);
    PyList_SET_ITEM(tp, 0, value);
    PyList_SET_ITEM(tp, 1, seq);
    Py_INCREF(args[2]);
    PyList_SET_ITEM(tp, 2, args[2]);
    Py_INCREF(args[3]);
    PyList_SET_ITEM(tp, 3, args[3]);
    PyObject *current = SLOT(sem, off_sem_value), *heap = SLOT(sem, off_sem_timepoints),
             *min_pending = SLOT(sem, off_sem_min_pending);
    if (SLOT(sem, off_sem_failure) != Py_None || current == NULL || heap == NULL ||
        min_pending == NULL || !PyList_CheckExact(heap) || int_below(current, value) != 1) {
        goto reference;
    }
    int free = lock_free(SLOT(sem, off_sem_lock));
    if (free < 0) {
        Py_DECREF(tp);
        return NULL;
    }
    if (!free) {
        goto reference;
    }
    /* heappush compares entries by (value, seq): ints, and seq is unique. */
    PyObject *res = PyObject_CallFunctionObjArgs(heappush_fn, heap, tp, NULL);
    if (res == NULL) {
        Py_DECREF(tp);
        return NULL;
    }
    Py_DECREF(res);
    if (int_below(value, min_pending) == 1) {
        Py_INCREF(value);
        Py_SETREF(SLOT(sem, off_sem_min_pending), value);
    }
    return tp;

reference:
    Py_DECREF(tp);
    return PyObject_Vectorcall(timepoint_ref, args, nargs, NULL);
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
    {"init_completion", init_completion, METH_VARARGS,
     "init_completion(QueueOp, Semaphore, QueueTimeline, axis state type, signal_all): bind "
     "complete_op's types and the signal reference it falls back to."},
    {"complete_op", (PyCFunction)(void (*)(void))complete_op, METH_FASTCALL,
     "complete_op(op, timeline): signal op's semaphores, drop op.retained, retire op.epoch "
     "(see the module docstring)."},
    {"init_timepoints", init_timepoints, METH_VARARGS,
     "init_timepoints(reference, heappush, next_seq): bind add_timepoint's reference."},
    {"add_timepoint", (PyCFunction)(void (*)(void))add_timepoint, METH_FASTCALL,
     "add_timepoint(sem, value, fn, arg): Semaphore.add_timepoint (see the module "
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
    str_locked = PyUnicode_InternFromString("locked");
    str_retire = PyUnicode_InternFromString("retire");
    str_advance = PyUnicode_InternFromString("advance");
    if (str_closed == NULL || str_single_queue == NULL || zero == NULL || str_locked == NULL ||
        str_retire == NULL || str_advance == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
