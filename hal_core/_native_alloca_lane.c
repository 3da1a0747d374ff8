/* Finding a device's alloca lane, and what the straight path keeps on it, for
   hal_core._native_queue (a source of the module beside _native_alloca.c, whose opening
   comment describes the lane and the straight path; shared state in _native_alloca.h).

   A call finds its lane through the device's ``_alloca_lanes`` (``nq_alloca_lane``: by
   params and size; ``nq_dealloca_lane``: by the buffer's pool), tells whether the lane's
   straight path is open (``nq_gate_open``, ``nq_lane_open``), and takes from the lane what
   it reuses between calls: the requester frontier per queue, the death frontier, the
   wrapped storage of recently committed blocks. Attribute reads that would otherwise run
   on every call are remembered while what decides them is unchanged (``nq_cached_attr``).
   The GIL is held throughout. */

#include "_native_alloca.h"

/* ``obj.name`` (a new reference; NULL with the error set), remembered in ``cache`` while
   the answer cannot have changed: the type's getattr is the generic one and the type is
   unchanged (its version tag, valid, changes with every change of the type or its bases),
   and the name is either an object slot of the type (a member descriptor, which wins over
   any instance dict: read at its offset) or absent from the type, so the instance dict
   decides, and that dict is unchanged since (CPython < 3.12: dict versions are globally
   unique and change with every modification; its value is then borrowed from that dict).
   ``cache`` only compares the dict and type it saw, never reads through them. One entry
   per call site: a program using several devices or pools alternately looks up again. */

PyObject *
nq_cached_attr(PyObject *obj, PyObject *name, AttrCache *cache)
{
#ifdef GATE_VERSION
    PyTypeObject *type = Py_TYPE(obj);
    if (type == cache->type && (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) &&
        type->tp_version_tag == cache->type_version) {
        if (cache->offset > 0) {
            PyObject *v = SLOT(obj, cache->offset);
            if (v != NULL) {
                return Py_NewRef(v);
            }
        }
        else {
            PyObject **dp = _PyObject_GetDictPtr(obj);
            if (dp != NULL && *dp == cache->dict && cache->dict != NULL &&
                GATE_VERSION(cache->dict) == cache->dict_version) {
                return Py_NewRef(cache->value);
            }
        }
    }
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL || type->tp_getattro != PyObject_GenericGetAttr) {
        return value;
    }
    PyObject *descr = _PyType_Lookup(type, name); /* borrowed; gives the type a version tag */
    if (!(type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        return value;
    }
    if (descr == NULL) {
        PyObject **dp = _PyObject_GetDictPtr(obj);
        PyObject *dict = dp != NULL ? *dp : NULL;
        if (dict != NULL && PyDict_CheckExact(dict) &&
            PyDict_GetItemWithError(dict, name) == value) { /* a str key: runs no code */
            cache->offset = 0;
            cache->dict = dict;
            cache->dict_version = GATE_VERSION(dict);
            cache->value = value;
            cache->type = type;
            cache->type_version = type->tp_version_tag;
        }
        PyErr_Clear();
    }
    else if (Py_TYPE(descr) == &PyMemberDescr_Type &&
             ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX &&
             ((PyMemberDescrObject *)descr)->d_member->offset > 0 &&
             SLOT(obj, ((PyMemberDescrObject *)descr)->d_member->offset) == value) {
        cache->offset = ((PyMemberDescrObject *)descr)->d_member->offset;
        cache->dict = NULL;
        cache->type = type;
        cache->type_version = type->tp_version_tag;
    }
    return value;
#else
    (void)cache;
    return PyObject_GetAttr(obj, name);
#endif
}

/* The device's lane list (``_alloca_lanes``: newest first, replaced but never mutated, so
   its items stay put while it is held; a new reference), else NULL with no error. */
static PyObject *
device_lanes(PyObject *device)
{
    static AttrCache cache;
    PyObject *lanes = nq_cached_attr(device, s_lane, &cache);
    if (lanes == NULL || !PyList_CheckExact(lanes)) {
        PyErr_Clear();
        Py_XDECREF(lanes);
        return NULL;
    }
    return lanes;
}

/* 1 when ``lane`` (an item of a lane list) is an AllocaLane marked valid. */
static int
lane_valid(PyObject *lane)
{
    return Py_TYPE(lane) == LaneType && SLOT(lane, l_valid) == Py_True;
}

/* The device's valid lane built for ``params`` (the same object, or an equal one of the
   same type: a frozen ``BufferParams``, or None) and ``size`` (a new reference), else NULL
   with no error. */
PyObject *
nq_alloca_lane(PyObject *device, PyObject *params, PyObject *size)
{
    PyObject *lanes = device_lanes(device);
    if (lanes == NULL) {
        return NULL;
    }
    PyObject *found = NULL;
    for (Py_ssize_t i = 0; found == NULL && i < PyList_GET_SIZE(lanes); i++) {
        PyObject *lane = PyList_GET_ITEM(lanes, i);
        if (!lane_valid(lane)) {
            continue;
        }
        PyObject *key = SLOT(lane, l_key_params), *key_size = SLOT(lane, l_key_size);
        /* Sizes first: cheap, and what tells the shapes of one params apart. */
        if (key_size != size && (!PyLong_CheckExact(key_size) ||
                                 PyObject_RichCompareBool(key_size, size, Py_EQ) != 1)) {
            PyErr_Clear();
            continue;
        }
        Py_INCREF(lane);
        if (key == params) {
            found = lane;
        }
        else if (key != Py_None && Py_TYPE(params) == Py_TYPE(key) &&
                 PyObject_RichCompareBool(key, params, Py_EQ) == 1) {
            /* An equal params (a caller's fresh ``BufferParams()`` per loop): it becomes the
               key, so the caller's next calls match by identity rather than by running the
               params' ``__eq__`` (a Python frame). Equal frozen params resolve alike, and
               the old key is a frozen value object, so dropping it runs no user code. */
            set_slot(lane, l_key_params, params);
            found = lane;
        }
        else {
            PyErr_Clear();
            Py_DECREF(lane);
        }
    }
    Py_DECREF(lanes);
    return found;
}

/* The last gate dict found open and its version, so an unchanged gate is not looked up
   again; the dict itself is only compared, never read through this pointer. */
#ifdef GATE_VERSION
static PyObject *gate_seen;
static uint64_t gate_seen_version;
#endif

/* 1 when the backend may run an op straight now (see the module comment). The machine
   clears ``valid`` before it marks itself closed, so a valid lane means an open machine. */
int
nq_gate_open(PyObject *lane)
{
    PyObject *gate = SLOT(lane, l_gate);
    if (SLOT(lane, l_valid) != Py_True || !PyDict_CheckExact(gate)) {
        return 0;
    }
#ifdef GATE_VERSION
    if (gate == gate_seen && GATE_VERSION(gate) == gate_seen_version) {
        return 1;
    }
#endif
    PyObject *profiler = PyDict_GetItemWithError(gate, s_profiler);
    int open = PyDict_GetItemWithError(gate, s_submit) == NULL &&
               PyDict_GetItemWithError(gate, s_closing) == Py_False &&
               (profiler == NULL || profiler == Py_None) && !PyErr_Occurred();
    PyErr_Clear();
#ifdef GATE_VERSION
    if (open) {
        gate_seen = gate;
        gate_seen_version = GATE_VERSION(gate);
    }
#endif
    return open;
}

/* 1 when the lane has a straight path for queue ``q`` and it is open now. */
int
nq_lane_open(PyObject *lane, long q)
{
    PyObject *timelines = SLOT(lane, l_timelines);
    if (!PyTuple_CheckExact(timelines) || q < 0 || q >= PyTuple_GET_SIZE(timelines) ||
        Py_TYPE(PyTuple_GET_ITEM(timelines, q)) != TimelineType || !nq_gate_open(lane)) {
        return 0;
    }
    static AttrCache cache;
    PyObject *entries = nq_cached_attr(SLOT(lane, l_pool_set), s_entries, &cache);
    if (entries == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(entries);
    return entries == SLOT(lane, l_entries);
}

/* The one-entry frontier {axis: epoch} (``Frontier.single``'s trusted case). */
static PyObject *
single_frontier(PyObject *axis, PyObject *epoch)
{
    PyObject *axes = PyList_New(1);
    PyObject *epochs = PyList_New(1);
    PyObject *f = axes && epochs ? FrontierType->tp_alloc(FrontierType, 0) : NULL;
    if (f == NULL) {
        Py_XDECREF(axes);
        Py_XDECREF(epochs);
        return NULL;
    }
    Py_INCREF(axis);
    PyList_SET_ITEM(axes, 0, axis);
    Py_INCREF(epoch);
    PyList_SET_ITEM(epochs, 0, epoch);
    SLOT(f, f_axes) = axes;
    SLOT(f, f_epochs) = epochs;
    Py_INCREF(capacity);
    SLOT(f, f_capacity) = capacity;
    return f;
}

/* The death frontier {axis: epoch} of a straight dealloca (a new reference): the lane's
   last one when nothing else holds it or its lists any more (the pool dropped it when it
   handed the block out again), its epoch set in place; else a new one, which the lane
   keeps for next time. */
PyObject *
nq_death_frontier(PyObject *lane, PyObject *axis, PyObject *epoch)
{
    PyObject *f = SLOT(lane, l_death);
    if (f != Py_None && Py_TYPE(f) == FrontierType && Py_REFCNT(f) == 1 &&
        SLOT(f, f_capacity) == capacity) {
        PyObject *axes = SLOT(f, f_axes), *epochs = SLOT(f, f_epochs);
        if (axes != NULL && epochs != NULL && PyList_CheckExact(axes) &&
            PyList_CheckExact(epochs) && Py_REFCNT(axes) == 1 && Py_REFCNT(epochs) == 1 &&
            PyList_GET_SIZE(axes) == 1 && PyList_GET_SIZE(epochs) == 1 &&
            PyList_GET_ITEM(axes, 0) == axis) {
            Py_INCREF(epoch);
            Py_SETREF(PyList_GET_ITEM(epochs, 0), epoch); /* an int: freeing it runs no code */
            return Py_NewRef(f);
        }
    }
    PyObject *made = single_frontier(axis, epoch);
    if (made != NULL) {
        set_slot(lane, l_death, made);
    }
    return made;
}

/* The slab ``reservation`` lies in and that slab's storage (borrowed), when the lane keeps
   reusable wraps and the reservation is the native type; 0 when not, -1 on error. */
static int
slab_of(PyObject *lane, PyObject *reservation, PyObject **slab, PyObject **slab_storage)
{
    PyObject *slabs = SLOT(lane, l_slabs);
    if (!PyList_CheckExact(slabs) || ReservationT == NULL || Py_TYPE(reservation) != ReservationT) {
        return 0;
    }
    Py_ssize_t i = ((Reservation *)reservation)->slab_index;
    if (i < 0 || i >= PyList_GET_SIZE(slabs)) {
        return 0;
    }
    *slab = PyList_GET_ITEM(slabs, i);
    static AttrCache cache;
    PyObject *st = nq_cached_attr(*slab, s_storage, &cache);
    if (st == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(st); /* the slab holds it */
    *slab_storage = st;
    return st != Py_None;
}

/* Item ``i`` of a storage cache entry (an exact int the cache stored), or -1. */
static Py_ssize_t
entry_int(PyObject *entry, Py_ssize_t i)
{
    PyObject *v = PyTuple_GET_ITEM(entry, i);
    long long x;
    return PyLong_CheckExact(v) && nq_as_ll(v, &x) ? (Py_ssize_t)x : -1;
}

/* The lane pool's ``wrap_reservation(reservation)`` (a new reference, NULL on error), taken
   from the lane's storage cache when the same range of the same slab (and slab storage)
   was wrapped before; stored there otherwise. Keyed by the block handle (an int for TLSF
   blocks); an entry is (offset, length, slab index, slab, slab storage, storage). */
PyObject *
nq_wrap(PyObject *lane, PyObject *reservation)
{
    PyObject *cache = SLOT(lane, l_storage_cache), *slab = NULL, *slab_storage = NULL;
    if (!PyDict_CheckExact(cache) || slab_of(lane, reservation, &slab, &slab_storage) != 1 ||
        !PyLong_CheckExact(((Reservation *)reservation)->block_handle)) {
        return PyObject_CallOneArg(SLOT(lane, l_wrap), reservation);
    }
    Reservation *r = (Reservation *)reservation;
    PyObject *key = r->block_handle;
    PyObject *entry = PyDict_GetItemWithError(cache, key); /* borrowed; int keys run no code */
    if (entry != NULL && PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 6 &&
        entry_int(entry, 0) == r->offset && entry_int(entry, 1) == r->length &&
        entry_int(entry, 2) == r->slab_index &&
        PyTuple_GET_ITEM(entry, 3) == slab && PyTuple_GET_ITEM(entry, 4) == slab_storage) {
        PyObject *storage = PyTuple_GET_ITEM(entry, 5);
        Py_INCREF(storage);
        return storage;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *storage = PyObject_CallOneArg(SLOT(lane, l_wrap), reservation);
    if (storage == NULL) {
        return NULL;
    }
    if (PyDict_GET_SIZE(cache) >= STORAGE_CACHE_LIMIT) {
        PyDict_Clear(cache);
    }
    entry = Py_BuildValue("(nnnOOO)", r->offset, r->length, r->slab_index, slab, slab_storage,
                          storage);
    if (entry == NULL || PyDict_SetItem(cache, key, entry) < 0) {
        Py_XDECREF(entry);
        Py_DECREF(storage);
        return NULL;
    }
    Py_DECREF(entry);
    return storage;
}

/* The requester frontier {axis of queue ``q``: ``retired``} (a new reference). With the
   lane's ``requesters`` list (pools that only read the requester during the call), the
   queue's frontier is taken from it and updated in place instead of allocated: its slot
   holds None while a call has it, so a concurrent call makes its own. */
PyObject *
nq_borrow_requester(PyObject *lane, long q, PyObject *retired)
{
    PyObject *axis = PyTuple_GET_ITEM(SLOT(lane, l_axes), q);
    PyObject *list = SLOT(lane, l_requesters);
    if (!PyList_CheckExact(list) || q >= PyList_GET_SIZE(list)) {
        return single_frontier(axis, retired);
    }
    PyObject *f = PyList_GET_ITEM(list, q);
    PyObject *axes = Py_TYPE(f) == FrontierType ? SLOT(f, f_axes) : NULL;
    PyObject *epochs = axes != NULL ? SLOT(f, f_epochs) : NULL;
    if (epochs == NULL || !PyList_CheckExact(axes) || !PyList_CheckExact(epochs) ||
        PyList_GET_SIZE(axes) != 1 || PyList_GET_SIZE(epochs) != 1 ||
        PyList_GET_ITEM(axes, 0) != axis) {
        return single_frontier(axis, retired);
    }
    /* Take it out of the list (the list's reference becomes ours), then set its epoch. */
    Py_INCREF(Py_None);
    PyList_SET_ITEM(list, q, Py_None);
    Py_INCREF(retired);
    Py_SETREF(PyList_GET_ITEM(epochs, 0), retired); /* an int: freeing it runs no code */
    return f;
}

/* Give ``requester`` (a reference the caller owns; None is dropped) back to the lane's
   list when the queue's slot is free, else drop it. */
void
nq_return_requester(PyObject *lane, long q, PyObject *requester)
{
    PyObject *list = SLOT(lane, l_requesters);
    if (requester != Py_None && PyList_CheckExact(list) && q < PyList_GET_SIZE(list) &&
        PyList_GET_ITEM(list, q) == Py_None) {
        PyList_SET_ITEM(list, q, requester);
        Py_DECREF(Py_None);
        return;
    }
    Py_DECREF(requester);
}

/* The buffer's TransientAllocation when the straight dealloca may release it (committed,
   from the lane's pool, no finalizer; borrowed), else NULL. */
PyObject *
nq_releasable(PyObject *lane, PyObject *buffer)
{
    PyObject *transient = SLOT(buffer, b_pool_state);
    if (SLOT(buffer, b_state) != state_committed || transient == NULL ||
        Py_TYPE(transient) != TransientType || SLOT(transient, t_pool) != SLOT(lane, l_pool) ||
        SLOT(transient, t_finalizer) != Py_None) {
        return NULL;
    }
    return transient;
}

/* The device's valid lane for a dealloca of ``buffer`` (a new reference): the first whose
   pool the buffer's block came from, else the newest valid one (its straight path is then
   not taken); NULL with no error when there is none. */
PyObject *
nq_dealloca_lane(PyObject *device, PyObject *buffer)
{
    PyObject *lanes = device_lanes(device);
    if (lanes == NULL) {
        return NULL;
    }
    PyObject *found = NULL, *first = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lanes); i++) {
        PyObject *lane = PyList_GET_ITEM(lanes, i);
        if (!lane_valid(lane)) {
            continue;
        }
        if (first == NULL) {
            first = lane;
        }
        if (nq_releasable(lane, buffer) != NULL) {
            found = lane;
            break;
        }
    }
    found = found != NULL ? found : first;
    Py_XINCREF(found);
    Py_DECREF(lanes);
    return found;
}
