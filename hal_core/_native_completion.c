/* Completing and parking in C, for hal_core._native_queue (see _native_queue.c's module
   comment for what each function does and why the GIL makes it safe). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Defined in _native_queue.c (the other source of this module). */
int nq_slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out);
long long nq_nonneg(PyObject *v, int exact);
int nq_as_ll(PyObject *v, long long *out);

static PyTypeObject *QueueOpType, *SemaphoreType, *TimelineType, *AxisStateType;
static PyObject *signal_ref;
static Py_ssize_t off_signals, off_retained, off_sem_value, off_epoch, off_sem_failure,
    off_sem_min_pending, off_sem_lock, off_tl_retired, off_tl_done, off_tl_lock,
    off_tl_on_retire, off_tl_pub, off_tl_axis, off_tl_axis_state, off_tl_tracker, off_tl_more,
    off_as_min_pending;
static PyObject *str_locked, *str_retire, *str_advance, *wait_reached_ref;

/* add_timepoint: bound by init_timepoints. */
static PyObject *timepoint_ref, *heappush_fn, *next_seq_fn;
static Py_ssize_t off_sem_timepoints;

int
nq_completion_strings(void)
{
    str_locked = PyUnicode_InternFromString("locked");
    str_retire = PyUnicode_InternFromString("retire");
    str_advance = PyUnicode_InternFromString("advance");
    return str_locked == NULL || str_retire == NULL || str_advance == NULL ? -1 : 0;
}

/* init_completion(QueueOp, Semaphore, QueueTimeline, axis state type, signal_all) */
PyObject *
nq_init_completion(PyObject *mod, PyObject *args)
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
    if (nq_slot_offset(o, "epoch", &e) < 0 || nq_slot_offset(o, "signals", &off_signals) < 0 ||
        nq_slot_offset(o, "retained", &off_retained) < 0 ||
        nq_slot_offset(s, "_value", &off_sem_value) < 0 || nq_slot_offset(s, "_failure", &sf) < 0 ||
        nq_slot_offset(s, "_min_pending", &smp) < 0 || nq_slot_offset(s, "_lock", &sl) < 0 ||
        nq_slot_offset(t, "retired", &tr) < 0 || nq_slot_offset(t, "_done", &td) < 0 ||
        nq_slot_offset(t, "_lock", &tlk) < 0 || nq_slot_offset(t, "on_retire", &tor) < 0 ||
        nq_slot_offset(t, "_pub", &tp) < 0 || nq_slot_offset(t, "_axis", &ta) < 0 ||
        nq_slot_offset(t, "_axis_state", &tas) < 0 || nq_slot_offset(t, "_tracker", &tt) < 0 ||
        nq_slot_offset(t, "_more", &tm) < 0 ||
        nq_slot_offset((PyTypeObject *)as_type, "min_pending", &amp) < 0) {
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

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
/* ``_thread.lock``'s layout in CPython 3.11 and 3.12 (Modules/_threadmodule.c): its
   ``locked()`` returns ``locked``, which acquire sets and release clears with the GIL
   held. Read directly only after ``lock_layout_ok`` saw it behave so on a fresh lock. */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock_lock;
    PyObject *in_weakreflist;
    char locked;
} ThreadLock;
#define LOCK_HELD(lock) (((ThreadLock *)(lock))->locked)

/* 1 when locks of ``type`` have the layout above: the size matches, and a fresh lock's
   flag follows its ``locked()`` through an acquire and a release. 0 otherwise. */
static int
lock_layout_ok(PyTypeObject *type, PyObject *locked_descr)
{
    if (strcmp(type->tp_name, "_thread.lock") != 0 ||
        type->tp_basicsize != (Py_ssize_t)sizeof(ThreadLock)) {
        return 0;
    }
    /* A fresh lock of that type (``_thread.lock`` cannot be instantiated directly). */
    PyObject *module = PyImport_ImportModule("_thread");
    PyObject *lock = module != NULL ? PyObject_CallMethod(module, "allocate_lock", NULL) : NULL;
    Py_XDECREF(module);
    if (lock == NULL || Py_TYPE(lock) != type) {
        PyErr_Clear();
        Py_XDECREF(lock);
        return 0;
    }
    int ok = 1;
    for (int step = 0; step < 3 && ok; step++) {
        if (step == 1 || step == 2) {
            PyObject *r = PyObject_CallMethod(lock, step == 1 ? "acquire" : "release", NULL);
            if (r == NULL) {
                PyErr_Clear();
                ok = 0;
                break;
            }
            Py_DECREF(r);
        }
        PyObject *held = PyObject_Vectorcall(locked_descr, &lock, 1, NULL);
        if (held == NULL) {
            PyErr_Clear();
            ok = 0;
            break;
        }
        ok = (held == Py_True) == (LOCK_HELD(lock) == 1) && (LOCK_HELD(lock) == (step == 1));
        Py_DECREF(held);
    }
    Py_DECREF(lock);
    return ok;
}
#endif

/* 1 when ``lock`` (a threading.Lock) is free, 0 when held, -1 on error. */
static int
lock_free(PyObject *lock)
{
    if (lock == NULL) {
        return 0;
    }
    /* The lock type's ``locked`` descriptor, found once: calling it skips the attribute
       lookup on every lock (and, where the layout is known, the flag is read directly).
       Another lock type takes the generic method call. */
    static PyTypeObject *lock_type;
    static PyObject *locked_descr;
#ifdef LOCK_HELD
    static int direct;
    if (direct && Py_TYPE(lock) == lock_type) {
        return !LOCK_HELD(lock);
    }
#endif
    PyObject *held;
    if (Py_TYPE(lock) != lock_type) {
        if (lock_type == NULL) {
            PyObject *d = PyObject_GetAttr((PyObject *)Py_TYPE(lock), str_locked);
            if (d == NULL) {
                return -1;
            }
            locked_descr = d;
            Py_INCREF(Py_TYPE(lock));
            lock_type = Py_TYPE(lock);
#ifdef LOCK_HELD
            direct = lock_layout_ok(lock_type, locked_descr);
#endif
            held = PyObject_Vectorcall(locked_descr, &lock, 1, NULL);
        }
        else {
            held = PyObject_CallMethodNoArgs(lock, str_locked);
        }
    }
    else {
        held = PyObject_Vectorcall(locked_descr, &lock, 1, NULL);
    }
    if (held == NULL) {
        return -1;
    }
    Py_DECREF(held);
    return held == Py_False;
}

/* ``x < b`` for an exact int ``b`` (which may be huge: a "no timepoint" sentinel). Ints of
   63 bits or more are beyond every long long on the side of their sign, so neither a
   conversion that walks their digits nor a rich comparison is needed. */
static int
ll_below(long long x, PyObject *b)
{
    size_t bits = _PyLong_NumBits(b);
    if (bits == (size_t)-1) { /* too many bits to count: huge */
        PyErr_Clear();
    }
    if (bits >= 63) {
        return _PyLong_Sign(b) > 0;
    }
    return x < PyLong_AsLongLong(b);
}

/* ``a < b`` for exact ints (either may be huge); -1 when either is not an exact int. */
static int
int_below(PyObject *a, PyObject *b)
{
    if (!PyLong_CheckExact(a) || !PyLong_CheckExact(b)) {
        return -1;
    }
    long long x;
    if (_PyLong_NumBits(a) < 63 && nq_as_ll(a, &x)) {
        return ll_below(x, b);
    }
    PyErr_Clear();
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* Signal ``value`` on ``sem`` here: 1 done, 0 the reference must, -1 error. */
static int
fast_signal(PyObject *sem, PyObject *value)
{
    if (Py_TYPE(sem) != SemaphoreType || SLOT(sem, off_sem_failure) != Py_None) {
        return 0;
    }
    long long v = nq_nonneg(value, 1);
    PyObject *current = SLOT(sem, off_sem_value), *min_pending = SLOT(sem, off_sem_min_pending);
    if (v < 0 || current == NULL || min_pending == NULL) {
        return 0;
    }
    long long c = nq_nonneg(current, 1);
    if (c < 0 || c >= v || !PyLong_CheckExact(min_pending) || !ll_below(v, min_pending)) {
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
    long long r, e;
    if (!nq_as_ll(retired, &r) || r < 0 || r == LLONG_MAX || !nq_as_ll(epoch, &e) ||
        e != r + 1) {
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
        PyObject *min_pending = SLOT(state, off_as_min_pending);
        int below = failed                            ? -1
                    : PyLong_CheckExact(min_pending) ? ll_below(e, min_pending)
                                                      : int_below(epoch, min_pending);
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

/* Signal each of ``signals`` (a tuple of pairs) as ``complete_op`` does: 0, or -1 with
   the error set. */
static int
signal_each(PyObject *signals)
{
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
            return -1;
        }
    }
    return 0;
}

/* Retire ``epoch`` on ``tl`` as ``complete_op`` does: 0, or -1 with the error set. */
static int
retire(PyObject *tl, PyObject *epoch)
{
    int done = fast_retire(tl, epoch);
    if (done == 0) {
        PyObject *res = PyObject_CallMethodOneArg(tl, str_retire, epoch);
        done = res == NULL ? -1 : 1;
        Py_XDECREF(res);
    }
    return done < 0 ? -1 : 0;
}

/* Signal ``signals`` (a tuple of pairs) and retire ``epoch`` on ``tl``: ``complete_op``
   for an op that retains nothing, which _native_alloca.c completes without building a
   QueueOp. 0, or -1 with the error set. */
int
nq_complete(PyObject *signals, PyObject *epoch, PyObject *tl)
{
    if (signal_ref == NULL || !PyTuple_CheckExact(signals)) {
        PyErr_SetString(PyExc_TypeError, "complete: signals must be a tuple (after init_completion)");
        return -1;
    }
    Py_INCREF(signals);
    Py_INCREF(epoch);
    int rc = signal_each(signals);
    if (rc == 0) {
        rc = retire(tl, epoch);
    }
    Py_DECREF(signals);
    Py_DECREF(epoch);
    return rc;
}

PyObject *
nq_complete_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
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
    int rc = signal_each(signals);
    Py_DECREF(signals);
    if (rc == 0) {
        Py_INCREF(Py_None);
        Py_XSETREF(SLOT(op, off_retained), Py_None);
        rc = retire(tl, epoch);
    }
    Py_DECREF(epoch);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* init_timepoints(reference, heappush, next_seq): the Python add_timepoint, heapq's push and
   the registration-order counter. Needs init_completion first (the Semaphore slots). */
PyObject *
nq_init_timepoints(PyObject *mod, PyObject *args)
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
    if (nq_slot_offset(SemaphoreType, "_timepoints", &tp) < 0) {
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

PyObject *
nq_add_timepoint(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
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


/* wait_reached(sem, value): ``_completion.wait_reached`` (its reference, bound by
   init_completion's caller through init_wait_reached) for a Semaphore and an exact int. */
PyObject *
nq_init_wait_reached(PyObject *mod, PyObject *ref)
{
    Py_INCREF(ref);
    Py_XSETREF(wait_reached_ref, ref);
    Py_RETURN_NONE;
}

/* ``wait_reached(sem, value)`` as a C truth value: 1, 0, or -1 with the error set. */
int
nq_reached(PyObject *sem, PyObject *value)
{
    if (wait_reached_ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_core._native_queue.init_wait_reached was not called");
        return -1;
    }
    if (SemaphoreType != NULL && Py_TYPE(sem) == SemaphoreType && PyLong_CheckExact(value)) {
        PyObject *failure = SLOT(sem, off_sem_failure), *current = SLOT(sem, off_sem_value);
        if (failure != NULL && current != NULL && PyLong_CheckExact(current)) {
            if (failure != Py_None) {
                return 0;
            }
            int below = int_below(current, value);
            return below < 0 ? -1 : !below;
        }
    }
    PyObject *args[2] = {sem, value};
    PyObject *r = PyObject_Vectorcall(wait_reached_ref, args, 2, NULL);
    if (r == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

PyObject *
nq_wait_reached(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (wait_reached_ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_core._native_queue.init_wait_reached was not called");
        return NULL;
    }
    if (nargs == 2 && SemaphoreType != NULL && Py_TYPE(args[0]) == SemaphoreType &&
        PyLong_CheckExact(args[1])) {
        PyObject *failure = SLOT(args[0], off_sem_failure), *value = SLOT(args[0], off_sem_value);
        if (failure != NULL && value != NULL && PyLong_CheckExact(value)) {
            if (failure != Py_None) {
                Py_RETURN_FALSE;
            }
            int below = int_below(value, args[1]);
            if (below < 0) {
                return NULL;
            }
            return PyBool_FromLong(!below);
        }
    }
    return PyObject_Vectorcall(wait_reached_ref, args, nargs, NULL);
}

/* EpochCounter(start=1): a queue timeline's ``begin`` (see ``QueueTimeline``). Calling it
   returns start, start + 1, ... as ``itertools.count(start).__next__`` does (one C call,
   atomic under the GIL: the increment and the int it returns happen with no Python code
   in between), and _native_alloca.c takes an epoch from it without a call at all
   (``nq_next_epoch``). Its reference is ``itertools.count``; a test checks they agree. */
typedef struct {
    PyObject_HEAD
    long long next;
    vectorcallfunc vectorcall;
} EpochCounter;

PyObject *
nq_next_epoch(PyObject *self)
{
    EpochCounter *c = (EpochCounter *)self;
    if (c->next == LLONG_MAX) {
        PyErr_SetString(PyExc_OverflowError, "EpochCounter: epochs exhausted");
        return NULL;
    }
    return PyLong_FromLongLong(c->next++);
}

static PyObject *
epoch_counter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "EpochCounter() takes no arguments");
        return NULL;
    }
    return nq_next_epoch(self);
}

static PyObject *
epoch_counter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"start", NULL};
    long long start = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|L:EpochCounter", names, &start)) {
        return NULL;
    }
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "EpochCounter: start must be >= 0");
        return NULL;
    }
    EpochCounter *c = (EpochCounter *)type->tp_alloc(type, 0);
    if (c != NULL) {
        c->next = start;
        c->vectorcall = epoch_counter_call;
    }
    return (PyObject *)c;
}

static PyObject *
epoch_counter_repr(PyObject *self)
{
    return PyUnicode_FromFormat("EpochCounter(%lld)", ((EpochCounter *)self)->next);
}

static PyMemberDef epoch_counter_members[] = {
    {"next_epoch", T_LONGLONG, offsetof(EpochCounter, next), READONLY,
     "The epoch the next call returns."},
    {NULL},
};

PyTypeObject NqEpochCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hal_core._native_queue.EpochCounter",
    .tp_basicsize = sizeof(EpochCounter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "EpochCounter(start=1): calling it returns start, start + 1, ... (a queue "
              "timeline's begin; itertools.count(start).__next__ is its reference).",
    .tp_new = epoch_counter_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(EpochCounter, vectorcall),
    .tp_repr = epoch_counter_repr,
    .tp_members = epoch_counter_members,
};

/* Add EpochCounter to the module: 0, or -1 with the error set. */
int
nq_add_epoch_counter(PyObject *mod)
{
    if (PyType_Ready(&NqEpochCounterType) < 0) {
        return -1;
    }
    Py_INCREF(&NqEpochCounterType);
    if (PyModule_AddObject(mod, "EpochCounter", (PyObject *)&NqEpochCounterType) < 0) {
        Py_DECREF(&NqEpochCounterType);
        return -1;
    }
    return 0;
}
