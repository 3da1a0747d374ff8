/* queue_alloca / queue_dealloca in C, for hal_core._native_queue (a source of the
   module; see _native_queue.c for the front door these build on).

   ``alloca_op(device, affinity, wait, signal, params, size, pool, flags)`` is
   ``Device.queue_alloca`` (reference: ``_queue_alloca_paths.alloca_reference``) and
   ``dealloca_op(device, affinity, wait, signal, buffer, flags)`` is ``queue_dealloca``
   (reference: ``dealloca_reference``). Each handles one shape and calls its reference for
   everything else, before changing anything:

   * alloca: ``pool`` None, ``flags`` the int 0, ``size`` an exact int, and one of the
     device's ``_alloca_lanes`` (an ``AllocaLane``, valid) built for this ``params`` (the
     same object, or an equal ``BufferParams``: frozen, so equal params resolve alike) and
     size, so the reference's params, size and allocatability checks are known to pass
     with the lane's answers; the wait/signal lists of the common shape (``nq_common_op``).
   * dealloca: ``flags`` the int 0, an exact ``Buffer`` of this device that is a root with
     placement exactly ASYNCHRONOUS, a device lane (the one of the buffer's pool when there
     is one), and the common wait/signal shape.

   Having built the op (and, for alloca, the pending buffer: the reference's fields, set
   through the slots), it takes the lane's straight path when the lane has one and it is
   open (``lane_open``: valid, so the machine is open; pool set entries unchanged; the
   backend's instance dict without ``submit``, ``_closing`` False, no ``profiler``), the
   op's queue has a timeline and every wait is reached; otherwise it hands the op to the
   backend as the reference does (``device._submit_alloca`` / ``device._submit``).

   Straight alloca, as ``QueueAllocaMachine.prepare`` + ``commit_prepared``: reserve with
   the requester frontier ``{axis: retired}`` (none before the first retire) through the
   pool's ``acquire_reservation``; on OK / OK_FRESH take the epoch, wrap the reservation,
   commit the buffer, attach a ``TransientAllocation`` and complete the op
   (``complete_op``); any other result becomes an ``AllocaState`` handed to the lane's
   ``resume`` (the backend's ``acquired`` + submit), and a failing wrap goes to the
   machine's ``_commit`` (which fails the op as the reference does).

   Straight dealloca, as the backend's inline run of ``QueueAllocaMachine.dealloca``: when
   the buffer is committed from the lane's pool with no finalizer, take the epoch,
   decommit, release with the death frontier ``{axis: retired}`` and complete; an error
   after the epoch goes to the lane's ``on_error`` (fails the signals as the reference's
   inline execution does). Anything else (not committed, another pool) goes to
   ``device._submit``, whose reference run reports it.

   The GIL is held throughout; the Python calls made here (the pool's methods, which may
   run Python fallbacks, and completion) are the ones the reference makes, in its order.
   Finding the lane and what the straight path keeps on it (frontiers, wrapped storage,
   remembered attribute reads) are in _native_alloca_lane.c. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_native_alloca.h"


/* Defined in the other sources of this module. */
int nq_slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out);
long long nq_nonneg(PyObject *v, int exact);
int nq_common_args(PyObject *single, PyObject *kind, PyObject *affinity, PyObject *wait,
                   PyObject *signal, PyObject **waits, PyObject **signals, PyObject **q);
PyObject *nq_make_op(PyObject *kind, PyObject *q, PyObject *waits, PyObject *signals);
int nq_complete(PyObject *signals, PyObject *epoch, PyObject *tl);
int nq_reached(PyObject *sem, PyObject *value);
extern PyTypeObject NqEpochCounterType;
PyObject *nq_next_epoch(PyObject *self);

PyTypeObject *BufferType, *LaneType, *TransientType, *FrontierType, *OpType,
    *TimelineType, *ReservationT;
PyObject *alloca_ref, *dealloca_ref, *alloca_kind, *dealloca_kind, *state_pending,
    *state_committed, *state_decommitted, *capacity, *allow_flags, *zero;
long long place_async, place_mask;

Py_ssize_t b_parent, b_storage, b_state, b_offset, b_length, b_size, b_type, b_usage,
    b_access, b_device, b_affinity, b_placement, b_pool_state;
Py_ssize_t l_valid, l_key_params, l_key_size, l_params, l_size, l_type, l_usage,
    l_access, l_placement, l_alloca_flags, l_dealloca_flags, l_machine, l_pool, l_acquire,
    l_release, l_wrap, l_alignment, l_pool_set, l_entries, l_timelines, l_axes, l_gate,
    l_resume, l_on_error, l_state_type, l_slabs, l_storage_cache, l_single_queue,
    l_requesters, l_spare, l_death;
Py_ssize_t t_pool, t_reservation, t_finalizer, f_axes, f_epochs, f_capacity, o_queue,
    o_waits, o_target, o_length, o_pool, o_params, o_alloca_state, o_flags, o_epoch, tl_retired,
    tl_begin;

PyObject *s_lane, *s_entries, *s_budget, *s_submit, *s_closing, *s_profiler,
    *s_submit_alloca, *s_submit_attr, *s_commit, *s_result, *s_reservation, *s_info,
    *s_storage, *s_pool, *s_flags;


static int
bind(PyTypeObject *type, const char *const *names, Py_ssize_t *const *offsets)
{
    for (int i = 0; names[i] != NULL; i++) {
        if (nq_slot_offset(type, names[i], offsets[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* init_alloca(Buffer, AllocaLane, TransientAllocation, Frontier, QueueOp, QueueTimeline,
   alloca_reference, dealloca_reference, ALLOCA kind, DEALLOCA kind, (pending, committed,
   decommitted) buffer states, default frontier capacity, ALLOW_WAIT_FRONTIER, ASYNCHRONOUS,
   ASYNCHRONOUS | INDETERMINATE_LIFETIME, the native Reservation type or None) */
PyObject *
nq_init_alloca(PyObject *mod, PyObject *args)
{
    PyObject *bt, *lt, *tt, *ft, *ot, *tlt, *aref, *dref, *ak, *dk, *states, *cap, *allow,
        *rt;
    long long async, mask;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OOOOO!OOLLO", &PyType_Type, &bt, &PyType_Type,
                          &lt, &PyType_Type, &tt, &PyType_Type, &ft, &PyType_Type, &ot,
                          &PyType_Type, &tlt, &aref, &dref, &ak, &dk, &PyTuple_Type, &states,
                          &cap, &allow, &async, &mask, &rt)) {
        return NULL;
    }
    /* The native Reservation type (its layout is _native.h's), or None without it. */
    if (rt != Py_None && (!PyType_Check(rt) ||
                          ((PyTypeObject *)rt)->tp_basicsize != sizeof(Reservation))) {
        PyErr_SetString(PyExc_TypeError, "init_alloca: not the native Reservation type");
        return NULL;
    }
    if (PyTuple_GET_SIZE(states) != 3 || !PyCallable_Check(aref) || !PyCallable_Check(dref)) {
        PyErr_SetString(PyExc_TypeError, "init_alloca: bad buffer states or references");
        return NULL;
    }
    static const char *const buffer_names[] = {
        "_parent", "_storage", "_state", "byte_offset", "byte_length", "allocation_size",
        "memory_type", "allowed_usage", "allowed_access", "device", "queue_affinity",
        "placement_flags", "pool_state", NULL};
    Py_ssize_t *const buffer_offsets[] = {&b_parent, &b_storage, &b_state, &b_offset,
                                          &b_length, &b_size, &b_type, &b_usage,
                                          &b_access, &b_device, &b_affinity, &b_placement,
                                          &b_pool_state};
    static const char *const lane_names[] = {
        "valid", "key_params", "key_size", "params", "size", "memory_type", "usage", "access",
        "placement", "alloca_flags", "dealloca_flags", "machine", "pool", "acquire", "release",
        "wrap", "alignment", "pool_set", "entries", "timelines", "axes", "gate", "resume",
        "on_error", "state_type", "slabs", "storage_cache", "single_queue", "requesters", "spare", "death", NULL};
    Py_ssize_t *const lane_offsets[] = {
        &l_valid, &l_key_params, &l_key_size, &l_params, &l_size, &l_type, &l_usage,
        &l_access, &l_placement, &l_alloca_flags, &l_dealloca_flags, &l_machine, &l_pool,
        &l_acquire, &l_release, &l_wrap, &l_alignment, &l_pool_set, &l_entries,
        &l_timelines, &l_axes, &l_gate, &l_resume, &l_on_error, &l_state_type, &l_slabs,
        &l_storage_cache, &l_single_queue, &l_requesters, &l_spare, &l_death};
    static const char *const transient_names[] = {"pool", "reservation", "finalizer", NULL};
    Py_ssize_t *const transient_offsets[] = {&t_pool, &t_reservation, &t_finalizer};
    static const char *const frontier_names[] = {"_axes", "_epochs", "capacity", NULL};
    Py_ssize_t *const frontier_offsets[] = {&f_axes, &f_epochs, &f_capacity};
    static const char *const op_names[] = {"queue",  "waits",        "target", "length", "pool",
                                           "params", "alloca_state", "flags",  "epoch",  NULL};
    Py_ssize_t *const op_offsets[] = {&o_queue,  &o_waits,        &o_target, &o_length, &o_pool,
                                      &o_params, &o_alloca_state, &o_flags,  &o_epoch};
    static const char *const timeline_names[] = {"retired", "begin", NULL};
    Py_ssize_t *const timeline_offsets[] = {&tl_retired, &tl_begin};
    if (bind((PyTypeObject *)bt, buffer_names, buffer_offsets) < 0 ||
        bind((PyTypeObject *)lt, lane_names, lane_offsets) < 0 ||
        bind((PyTypeObject *)tt, transient_names, transient_offsets) < 0 ||
        bind((PyTypeObject *)ft, frontier_names, frontier_offsets) < 0 ||
        bind((PyTypeObject *)ot, op_names, op_offsets) < 0 ||
        bind((PyTypeObject *)tlt, timeline_names, timeline_offsets) < 0) {
        return NULL;
    }
    PyObject *keep[] = {bt, lt, tt, ft, ot, tlt, aref, dref, ak, dk, cap, allow,
                        PyTuple_GET_ITEM(states, 0), PyTuple_GET_ITEM(states, 1),
                        PyTuple_GET_ITEM(states, 2)};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        Py_INCREF(keep[i]);
    }
    Py_XSETREF(BufferType, (PyTypeObject *)bt);
    Py_XSETREF(LaneType, (PyTypeObject *)lt);
    Py_XSETREF(TransientType, (PyTypeObject *)tt);
    Py_XSETREF(FrontierType, (PyTypeObject *)ft);
    Py_XSETREF(OpType, (PyTypeObject *)ot);
    Py_XSETREF(TimelineType, (PyTypeObject *)tlt);
    Py_XSETREF(alloca_ref, aref);
    Py_XSETREF(dealloca_ref, dref);
    Py_XSETREF(alloca_kind, ak);
    Py_XSETREF(dealloca_kind, dk);
    Py_XSETREF(capacity, cap);
    Py_XSETREF(allow_flags, allow);
    Py_XSETREF(state_pending, PyTuple_GET_ITEM(states, 0));
    Py_XSETREF(state_committed, PyTuple_GET_ITEM(states, 1));
    Py_XSETREF(state_decommitted, PyTuple_GET_ITEM(states, 2));
    place_async = async;
    place_mask = mask;
    Py_XSETREF(ReservationT, rt == Py_None ? NULL : (PyTypeObject *)Py_NewRef(rt));
    Py_RETURN_NONE;
}

int
nq_alloca_strings(void)
{
    s_lane = PyUnicode_InternFromString("_alloca_lanes");
    s_entries = PyUnicode_InternFromString("_entries");
    s_budget = PyUnicode_InternFromString("budget_limit");
    s_submit = PyUnicode_InternFromString("submit");
    s_closing = PyUnicode_InternFromString("_closing");
    s_profiler = PyUnicode_InternFromString("profiler");
    s_submit_alloca = PyUnicode_InternFromString("_submit_alloca");
    s_submit_attr = PyUnicode_InternFromString("_submit");
    s_commit = PyUnicode_InternFromString("_commit");
    s_result = PyUnicode_InternFromString("result");
    s_reservation = PyUnicode_InternFromString("reservation");
    s_info = PyUnicode_InternFromString("info");
    s_storage = PyUnicode_InternFromString("storage");
    s_pool = PyUnicode_InternFromString("pool");
    s_flags = PyUnicode_InternFromString("flags");
    zero = PyLong_FromLong(0);
    return s_lane && s_entries && s_budget && s_submit && s_closing && s_profiler &&
                   s_submit_alloca && s_submit_attr && s_commit && s_result && s_reservation &&
                   s_info && s_storage && s_pool && s_flags && zero
               ? 0
               : -1;
}

/* 1 when every wait of the op is reached without failure, 0 when not, -1 on error. */
static int
waits_reached(PyObject *waits)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(waits); i++) {
        PyObject *pair = PyTuple_GET_ITEM(waits, i);
        int reached = nq_reached(PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1));
        if (reached <= 0) {
            return reached;
        }
    }
    return 1;
}

/* One call's common arguments (see ``nq_common_args``): the wait and signal tuples (owned),
   the queue index (the object borrowed from the device's dict, and as a C long) and, once
   taken, the epoch (owned). */
typedef struct {
    PyObject *waits, *signals, *q, *epoch;
    long qi;
} Call;

static void
call_clear(Call *c)
{
    Py_CLEAR(c->waits);
    Py_CLEAR(c->signals);
    Py_CLEAR(c->epoch);
}

/* The op the reference would have built for the call (kind, queue, waits, signals, flags,
   and the epoch when one was taken); the caller sets the kind's own fields. */
static PyObject *
call_op(Call *c, PyObject *kind, PyObject *flags)
{
    Py_INCREF(c->waits);
    Py_INCREF(c->signals);
    PyObject *op = nq_make_op(kind, c->q, c->waits, c->signals);
    if (op == NULL) {
        return NULL;
    }
    set_slot(op, o_flags, flags);
    if (c->epoch != NULL) {
        set_slot(op, o_epoch, c->epoch);
    }
    return op;
}

/* The alloca op of the call (``alloca_reference``'s fields) over ``buffer``. */
static PyObject *
alloca_call_op(Call *c, PyObject *lane, PyObject *buffer)
{
    PyObject *op = call_op(c, alloca_kind, SLOT(lane, l_alloca_flags));
    if (op != NULL) {
        set_slot(op, o_target, buffer);
        set_slot(op, o_length, SLOT(lane, l_size));
        set_slot(op, o_pool, Py_None);
        set_slot(op, o_params, SLOT(lane, l_params));
        set_slot(op, o_alloca_state, Py_None);
    }
    return op;
}

/* The dealloca op of the call over ``buffer``. */
static PyObject *
dealloca_call_op(Call *c, PyObject *lane, PyObject *buffer)
{
    PyObject *op = call_op(c, dealloca_kind, SLOT(lane, l_dealloca_flags));
    if (op != NULL) {
        set_slot(op, o_target, buffer);
    }
    return op;
}

/* Take the call's epoch from the timeline (``begin()``; an ``EpochCounter`` without a
   call): 0, or -1 on error. */
static int
take_epoch(Call *c, PyObject *timeline)
{
    PyObject *begin = SLOT(timeline, tl_begin);
    c->epoch = Py_TYPE(begin) == &NqEpochCounterType ? nq_next_epoch(begin)
                                                     : PyObject_CallNoArgs(begin);
    return c->epoch == NULL ? -1 : 0;
}

/* The call's arguments in the common shape for the lane's device: 1 (``c`` filled), 0 when
   the call has another shape, -1 on error. */
static int
call_args(Call *c, PyObject *lane, PyObject *kind, PyObject *const *args)
{
    c->waits = c->signals = c->epoch = NULL;
    int common = nq_common_args(SLOT(lane, l_single_queue), kind, args[1], args[2], args[3],
                                &c->waits, &c->signals, &c->q);
    if (common != 1) {
        return common;
    }
    c->qi = PyLong_AsLong(c->q);
    if (c->qi < 0 || c->qi >= 63) {
        PyErr_Clear();
        call_clear(c);
        return 0;
    }
    return 1;
}

/* The pending buffer of an alloca on queue ``q`` (``Buffer.__init__``'s fields). */
static PyObject *
pending_buffer(PyObject *device, PyObject *lane, long q)
{
    PyObject *affinity = PyLong_FromUnsignedLongLong(1ULL << q);
    PyObject *b = affinity ? BufferType->tp_alloc(BufferType, 0) : NULL;
    if (b == NULL) {
        Py_XDECREF(affinity);
        return NULL;
    }
    PyObject *size = SLOT(lane, l_size);
    set_slot(b, b_parent, Py_None);
    set_slot(b, b_storage, Py_None);
    set_slot(b, b_state, state_pending);
    set_slot(b, b_offset, zero);
    set_slot(b, b_length, size);
    set_slot(b, b_size, size);
    set_slot(b, b_type, SLOT(lane, l_type));
    set_slot(b, b_usage, SLOT(lane, l_usage));
    set_slot(b, b_access, SLOT(lane, l_access));
    set_slot(b, b_device, device);
    SLOT(b, b_affinity) = affinity;
    set_slot(b, b_placement, SLOT(lane, l_placement));
    set_slot(b, b_pool_state, Py_None);
    return b;
}

/* Hand a tried reservation to the backend as an AllocaState (the reference's ``prepare``
   state) through ``fn(op)`` or ``fn(op, state)``: the lane's ``resume`` or the machine's
   ``_commit``. Returns 0, or -1 with the error set. */
static int
hand_over(PyObject *lane, PyObject *op, PyObject *result, PyObject *reservation,
          PyObject *info, int commit)
{
    PyObject *state = PyObject_CallOneArg(SLOT(lane, l_state_type), SLOT(lane, l_pool));
    if (state == NULL || PyObject_SetAttr(state, s_result, result) < 0 ||
        PyObject_SetAttr(state, s_reservation, reservation) < 0 ||
        PyObject_SetAttr(state, s_info, info) < 0) {
        Py_XDECREF(state);
        return -1;
    }
    set_slot(op, o_alloca_state, state);
    PyObject *r;
    if (commit) {
        PyObject *args[3] = {SLOT(lane, l_machine), op, state};
        r = PyObject_VectorcallMethod(s_commit, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    else {
        r = PyObject_CallOneArg(SLOT(lane, l_resume), op);
    }
    Py_DECREF(state);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The straight alloca (see the module comment): 0, or -1 with the error set. The op is
   built only when the backend must see it. */
static int
straight_alloca(PyObject *lane, Call *c, PyObject *buffer)
{
    PyObject *timeline = PyTuple_GET_ITEM(SLOT(lane, l_timelines), c->qi);
    PyObject *retired = SLOT(timeline, tl_retired);
    long long r = nq_nonneg(retired, 1);
    PyObject *requester = Py_None;
    if (r > 0) {
        requester = nq_borrow_requester(lane, c->qi, retired);
        if (requester == NULL) {
            return -1;
        }
    }
    else if (r < 0) {
        PyErr_SetString(PyExc_TypeError, "a queue timeline's retired epoch is not an int");
        return -1;
    }
    else {
        Py_INCREF(requester);
    }
    PyObject *args[4] = {SLOT(lane, l_size), SLOT(lane, l_alignment), requester, allow_flags};
    PyObject *got = PyObject_Vectorcall(SLOT(lane, l_acquire), args, 4, NULL);
    nq_return_requester(lane, c->qi, requester);
    if (got == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(got) || PyTuple_GET_SIZE(got) != 3) {
        Py_DECREF(got);
        PyErr_SetString(PyExc_TypeError, "acquire_reservation did not return a 3-tuple");
        return -1;
    }
    PyObject *result = PyTuple_GET_ITEM(got, 0), *reservation = PyTuple_GET_ITEM(got, 1),
             *info = PyTuple_GET_ITEM(got, 2);
    long long code = nq_nonneg(result, 0); /* sets no error */
    PyObject *storage = NULL, *op;
    int rc = -1;
    if (code != 0 && code != 1) {
        goto hand_over_prepared; /* not OK / OK_FRESH: the reference's continuation decides */
    }
    if (!nq_gate_open(lane)) {
        goto hand_over_prepared; /* closed or shadowed meanwhile */
    }
    if (take_epoch(c, timeline) < 0) {
        goto done;
    }
    storage = nq_wrap(lane, reservation);
    if (storage == NULL) {
        /* The machine's commit wraps again and fails the op as the reference does. */
        PyErr_Clear();
        op = alloca_call_op(c, lane, buffer);
        rc = op == NULL ? -1 : hand_over(lane, op, result, reservation, info, 1);
        Py_XDECREF(op);
        goto done;
    }
    /* The lane's spare (a TransientAllocation its straight dealloca let go of, referenced
       by nothing else), else a new one. */
    PyObject *transient = SLOT(lane, l_spare);
    if (transient != Py_None && Py_TYPE(transient) == TransientType) {
        SLOT(lane, l_spare) = Py_NewRef(Py_None);
    }
    else {
        transient = TransientType->tp_alloc(TransientType, 0);
        if (transient == NULL) {
            Py_DECREF(storage);
            goto done;
        }
    }
    set_slot(transient, t_pool, SLOT(lane, l_pool));
    set_slot(transient, t_reservation, reservation);
    set_slot(transient, t_finalizer, Py_None);
    Py_XSETREF(SLOT(buffer, b_storage), storage);
    set_slot(buffer, b_state, state_committed);
    Py_XSETREF(SLOT(buffer, b_pool_state), transient);
    rc = nq_complete(c->signals, c->epoch, timeline);
    goto done;

hand_over_prepared:
    op = alloca_call_op(c, lane, buffer);
    rc = op == NULL ? -1 : hand_over(lane, op, result, reservation, info, 0);
    Py_XDECREF(op);
done:
    Py_DECREF(got);
    return rc;
}

static PyObject *
call_ref(PyObject *ref, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_core._native_queue.init_alloca was not called");
        return NULL;
    }
    return PyObject_Vectorcall(ref, args, nargs, kwnames);
}

/* The keyword arguments ``pool`` and ``flags`` (borrowed; None and 0 when absent): 0, or -1
   when there is another keyword (the reference then raises the TypeError). */
static int
keywords(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int allow_pool,
         PyObject **pool, PyObject **flags)
{
    *pool = Py_None;
    *flags = zero;
    Py_ssize_t n = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (allow_pool && PyUnicode_Check(name) && PyUnicode_Compare(name, s_pool) == 0) {
            *pool = args[nargs + i];
        }
        else if (PyUnicode_Check(name) && PyUnicode_Compare(name, s_flags) == 0) {
            *flags = args[nargs + i];
        }
        else {
            PyErr_Clear();
            return -1;
        }
    }
    return 0;
}

/* Submit the op as the reference does after its checks: ``device.<name>(op)``, falling
   back to ``device._submit`` when that attribute is None. 0, or -1 with the error set. */
static int
submit(PyObject *device, PyObject *name, PyObject *op)
{
    if (op == NULL) {
        return -1;
    }
    PyObject *fn = PyObject_GetAttr(device, name);
    if (fn == Py_None) {
        Py_DECREF(fn);
        fn = PyObject_GetAttr(device, s_submit_attr);
    }
    if (fn == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(fn, op);
    Py_DECREF(fn);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

PyObject *
nq_alloca_op(PyObject *mod, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *pool, *flags;
    if (alloca_kind == NULL || nargs != 6 ||
        keywords(args, nargs, kwnames, 1, &pool, &flags) < 0 || pool != Py_None ||
        !PyLong_CheckExact(flags) || nq_nonneg(flags, 1) != 0 || !PyLong_CheckExact(args[5])) {
        PyErr_Clear();
        return call_ref(alloca_ref, args, nargs, kwnames);
    }
    PyObject *device = args[0];
    PyObject *lane = nq_alloca_lane(device, args[4], args[5]);
    if (lane == NULL) {
        return call_ref(alloca_ref, args, nargs, kwnames);
    }
    Call c;
    int common = call_args(&c, lane, alloca_kind, args);
    if (common != 1) {
        Py_DECREF(lane);
        return common < 0 ? NULL : call_ref(alloca_ref, args, nargs, kwnames);
    }
    PyObject *buffer = pending_buffer(device, lane, c.qi);
    int rc = -1;
    if (buffer == NULL) {
        goto done;
    }
    int straight = nq_lane_open(lane, c.qi);
    if (straight) {
        /* The reference's prepare also refuses a size over the pool's whole budget. */
        static AttrCache cache;
        PyObject *limit = nq_cached_attr(SLOT(lane, l_pool), s_budget, &cache);
        long long l = nq_nonneg(limit, 1);
        Py_XDECREF(limit);
        if (limit == NULL) {
            PyErr_Clear();
        }
        straight = l == 0 || (l > 0 && nq_nonneg(SLOT(lane, l_size), 1) <= l);
    }
    if (straight) {
        straight = waits_reached(c.waits);
    }
    if (straight > 0) {
        rc = straight_alloca(lane, &c, buffer);
    }
    else if (straight == 0) {
        PyObject *op = alloca_call_op(&c, lane, buffer);
        rc = submit(device, s_submit_alloca, op);
        Py_XDECREF(op);
    }
done:
    call_clear(&c);
    Py_DECREF(lane);
    if (rc < 0) {
        Py_XDECREF(buffer);
        return NULL;
    }
    return buffer;
}

/* The straight dealloca (see the module comment): 0, or -1 with the error set. */
static int
straight_dealloca(PyObject *lane, Call *c, PyObject *buffer, PyObject *transient)
{
    PyObject *timeline = PyTuple_GET_ITEM(SLOT(lane, l_timelines), c->qi);
    if (take_epoch(c, timeline) < 0) {
        return -1;
    }
    /* Decommit: the storage goes; the reservation goes back to the pool below. */
    Py_INCREF(transient);
    set_slot(buffer, b_pool_state, Py_None);
    set_slot(buffer, b_storage, Py_None);
    set_slot(buffer, b_state, state_decommitted);
    PyObject *retired = SLOT(timeline, tl_retired);
    long long r = nq_nonneg(retired, 1);
    PyObject *frontier = Py_None, *released = NULL;
    if (r > 0) {
        frontier = nq_death_frontier(lane, PyTuple_GET_ITEM(SLOT(lane, l_axes), c->qi), retired);
    }
    else {
        Py_INCREF(frontier);
    }
    if (frontier != NULL) {
        PyObject *args[2] = {SLOT(transient, t_reservation), frontier};
        released = PyObject_Vectorcall(SLOT(lane, l_release), args, 2, NULL);
        Py_DECREF(frontier);
    }
    if (released != NULL) {
        Py_DECREF(released);
        if (Py_REFCNT(transient) == 1 && SLOT(lane, l_spare) == Py_None) {
            /* Nothing else sees it: the lane's next straight alloca reuses it (one object
               fewer per pair; its drop-release finds no reservation). */
            set_slot(transient, t_reservation, Py_None);
            Py_SETREF(SLOT(lane, l_spare), transient);
        }
        else {
            Py_DECREF(transient);
        }
        return nq_complete(c->signals, c->epoch, timeline);
    }
    Py_DECREF(transient);
    /* Failed after the epoch was taken: fail the signals as the reference's inline
       execution does (``on_error`` re-raises only an interrupt). */
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(exc, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *op = dealloca_call_op(c, lane, buffer);
    PyObject *handled = NULL;
    if (op != NULL) {
        PyObject *fargs[2] = {op, exc};
        handled = PyObject_Vectorcall(SLOT(lane, l_on_error), fargs, 2, NULL);
        Py_DECREF(op);
    }
    Py_XDECREF(exc);
    Py_XDECREF(handled);
    return handled == NULL ? -1 : 0;
}

PyObject *
nq_dealloca_op(PyObject *mod, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *pool, *flags;
    if (dealloca_kind == NULL || nargs != 5 ||
        keywords(args, nargs, kwnames, 0, &pool, &flags) < 0 || !PyLong_CheckExact(flags) ||
        nq_nonneg(flags, 1) != 0 || Py_TYPE(args[4]) != BufferType) {
        PyErr_Clear();
        return call_ref(dealloca_ref, args, nargs, kwnames);
    }
    PyObject *device = args[0], *buffer = args[4];
    long long placement = nq_nonneg(SLOT(buffer, b_placement), 0);
    if (SLOT(buffer, b_device) != device || SLOT(buffer, b_parent) != Py_None ||
        placement < 0 || (placement & place_mask) != place_async) {
        PyErr_Clear();
        return call_ref(dealloca_ref, args, nargs, kwnames);
    }
    PyObject *lane = nq_dealloca_lane(device, buffer);
    if (lane == NULL) {
        return call_ref(dealloca_ref, args, nargs, kwnames);
    }
    Call c;
    int common = call_args(&c, lane, dealloca_kind, args);
    if (common != 1) {
        Py_DECREF(lane);
        return common < 0 ? NULL : call_ref(dealloca_ref, args, nargs, kwnames);
    }
    PyObject *transient = nq_releasable(lane, buffer);
    int straight = transient != NULL && nq_lane_open(lane, c.qi);
    if (straight) {
        straight = waits_reached(c.waits);
    }
    int rc = -1;
    if (straight > 0) {
        rc = straight_dealloca(lane, &c, buffer, transient);
    }
    else if (straight == 0) {
        PyObject *op = dealloca_call_op(&c, lane, buffer);
        rc = submit(device, s_submit_attr, op);
        Py_XDECREF(op);
    }
    call_clear(&c);
    Py_DECREF(lane);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}
