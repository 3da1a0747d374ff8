/* hal_cuda._native_lane: the per-op submit path of a CUDA device in C.

   ``Lane(backend, fallback, driver)`` is one device's submit lane: ``submit(op)`` does in
   one C call what ``CudaDeviceBackend.submit`` -> ``_enqueue`` -> the stream work ->
   ``CompletionThread.hand_over`` do in Python, for the hot cases (device.py's module
   docstring says which), and otherwise calls ``fallback(op)`` (the Python ``submit``)
   BEFORE doing anything, so a fallen-back op runs exactly as without the lane. The
   decision reads the op and the device; only then does the lane take the op's epoch and
   act.

   Invariants kept (those of completion.py and device.py): the event comes from the
   device's free list (``EventPool.free``) or ``EventPool.get``; it is recorded under the
   completion thread's hand-over lock (the SAME lock object as the Python hand-over, so
   mixed submissions keep each lane's record order), after checking that the thread has
   not stopped; in-flight entries are published after the record and before the inbox
   put; the epoch comes from the queue's ``RetireWatermark.next_epoch``; a failed driver
   call or a Python error while putting the work on the stream fails the op (its item
   still goes through the completion thread, after the work already queued, as in
   ``_enqueue``), with the same ``cuda_error`` / ``op_error`` statuses.

   The driver is called through function pointers given as integers (libcuda's symbols,
   or ctypes callbacks into a stand-in driver's Python functions), with integer handles.
   The GIL is held throughout: these calls only queue work (see cuda_api.py on why the
   hot calls keep the GIL), and holding it makes each step atomic for other threads as
   the Python path's individual steps are. ``discard(inflight, entries)`` is the
   completion side's atomic "delete if still the same entry". */

#include "_native_lane.h"

#include <structmember.h>

LaneRefs lane_refs;
LaneNames lane_names;

#define LANE_OBJECTS 19

static PyObject **
lane_objects(Lane *self)
{
    return &self->backend;
}

static int
Lane_traverse(Lane *self, visitproc visit, void *arg)
{
    PyObject **objects = lane_objects(self);
    for (int k = 0; k < LANE_OBJECTS; k++) {
        Py_VISIT(objects[k]);
    }
    return 0;
}

static int
Lane_clear(Lane *self)
{
    PyObject **objects = lane_objects(self);
    for (int k = 0; k < LANE_OBJECTS; k++) {
        Py_CLEAR(objects[k]);
    }
    return 0;
}

static void
Lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    PyMem_Free(self->stream_handles);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
get_into(PyObject *obj, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(obj, name);
    return *out == NULL ? -1 : 0;
}

/* Lane(backend, fallback, driver, keepalive): ``driver`` is a tuple of the addresses of
   cuEventRecord, cuStreamWaitEvent, cuMemsetD8Async, cuMemsetD16Async, cuMemsetD32Async,
   cuMemcpyAsync, cuMemcpyHtoDAsync_v2 and cuLaunchKernel; ``keepalive`` what keeps them
   valid (ctypes callbacks of a stand-in driver). */
static int
Lane_init(Lane *self, PyObject *args, PyObject *kwds)
{
    PyObject *backend, *fallback, *driver, *keepalive;
    if (!PyArg_ParseTuple(args, "OOO!O", &backend, &fallback, &PyTuple_Type, &driver,
                          &keepalive)) {
        return -1;
    }
    if (lane_refs.buffer_storage == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hal_cuda._native_lane.init was not called");
        return -1;
    }
    if (PyTuple_GET_SIZE(driver) != 8) {
        PyErr_SetString(PyExc_ValueError, "the driver table has 8 function addresses");
        return -1;
    }
    void *fns[8];
    for (int k = 0; k < 8; k++) {
        if (lane_handle(PyTuple_GET_ITEM(driver, k), &fns[k]) < 0) {
            return -1;
        }
        if (fns[k] == NULL) {
            PyErr_SetString(PyExc_ValueError, "a driver function address is 0");
            return -1;
        }
    }
    self->drv.event_record = (cu_event_record_t)fns[0];
    self->drv.stream_wait_event = (cu_stream_wait_event_t)fns[1];
    self->drv.memset_d8 = (cu_memset_d8_t)fns[2];
    self->drv.memset_d16 = (cu_memset_d16_t)fns[3];
    self->drv.memset_d32 = (cu_memset_d32_t)fns[4];
    self->drv.memcpy_async = (cu_memcpy_t)fns[5];
    self->drv.memcpy_htod = (cu_memcpy_htod_t)fns[6];
    self->drv.launch_kernel = (cu_launch_kernel_t)fns[7];
    Lane_clear(self);
    self->backend = Py_NewRef(backend);
    self->fallback = Py_NewRef(fallback);
    self->keepalive = Py_NewRef(keepalive);
    PyObject *events = NULL, *watermarks = NULL, *streams = NULL;
    int ok = -1;
    if (get_into(backend, "ctx", &self->ctx) < 0 ||
        get_into(backend, "_thread_context", &self->thread_context) < 0 ||
        get_into(backend, "streams", &streams) < 0 ||
        get_into(backend, "_inflight", &self->inflight) < 0 ||
        get_into(backend, "_free_events", &self->free_events) < 0 ||
        get_into(backend, "events", &events) < 0 || get_into(events, "get", &self->event_get) < 0 ||
        get_into(backend, "completion", &self->completion) < 0 ||
        get_into(self->completion, "_lock", &self->lock) < 0 ||
        get_into(self->completion, "_put", &self->put) < 0 ||
        get_into(backend, "_watermarks", &watermarks) < 0 ||
        get_into(backend, "stream_waits", &self->stream_waits) < 0 ||
        get_into(backend, "_finish_stream", &self->finish_stream) < 0 ||
        get_into(backend, "_complete_waited", &self->complete_waited) < 0 ||
        get_into(backend, "hot", &self->api) < 0 ||
        get_into(backend, "__dict__", &self->backend_dict) < 0) {
        goto done;
    }
    if (!PyDict_CheckExact(self->inflight) || !PyList_CheckExact(self->free_events)) {
        PyErr_SetString(PyExc_TypeError, "the in-flight table is a dict, free events a list");
        goto done;
    }
    self->streams = PySequence_Tuple(streams);
    if (self->streams == NULL) {
        goto done;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(self->streams);
    PyMem_Free(self->stream_handles);
    self->stream_handles = PyMem_Calloc(n ? n : 1, sizeof(void *));
    if (self->stream_handles == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    self->stream_count = n;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (lane_handle(PyTuple_GET_ITEM(self->streams, k), &self->stream_handles[k]) < 0) {
            goto done;
        }
    }
    PyObject *marks = PySequence_Fast(watermarks, "watermarks");
    if (marks == NULL) {
        goto done;
    }
    Py_ssize_t m = PySequence_Fast_GET_SIZE(marks);
    self->next_epochs = PyTuple_New(m);
    self->retires = PyTuple_New(m);
    for (Py_ssize_t k = 0; self->next_epochs != NULL && self->retires != NULL && k < m; k++) {
        PyObject *mark = PySequence_Fast_GET_ITEM(marks, k);
        PyObject *next = PyObject_GetAttrString(mark, "next_epoch");
        PyObject *retire = next == NULL ? NULL : PyObject_GetAttrString(mark, "retire");
        if (retire == NULL) {
            Py_XDECREF(next);
            Py_DECREF(marks);
            goto done;
        }
        PyTuple_SET_ITEM(self->next_epochs, k, next);
        PyTuple_SET_ITEM(self->retires, k, retire);
    }
    Py_DECREF(marks);
    if (self->next_epochs == NULL || self->retires == NULL || m < n) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "a watermark per stream");
        }
        goto done;
    }
    self->reason = "none yet";
    ok = 0;
done:
    Py_XDECREF(events);
    Py_XDECREF(watermarks);
    Py_XDECREF(streams);
    return ok;
}

/* Why an op falls back: 0 with ``self->reason`` set, or -1 on a Python error (which is
   cleared: the Python path then decides, as it would have). */
#define FALL(why)                                                                            \
    do {                                                                                     \
        self->reason = (why);                                                                \
        goto fallback;                                                                       \
    } while (0)

static PyObject *
Lane_submit(Lane *self, PyObject *op)
{
    PyObject *kind_obj = NULL, *queue_obj = NULL, *waits = NULL, *program = NULL,
             *single = NULL, *table = NULL;
    PyObject *device[MAX_WAITS], *events[MAX_WAITS];
    Py_ssize_t ndevice = 0, nevents = 0, nwaits = 0;
    int kind, r;
    r = lane_truthy_attr(self->backend, lane_names._closing);
    if (r) {
        FALL("closing");
    }
    PyObject *profiling = PyObject_GetAttr(self->backend, lane_names._profiling);
    if (profiling == NULL) {
        FALL("error");
    }
    Py_DECREF(profiling);
    if (profiling != Py_None) {
        FALL("profiling");
    }
    PyObject *current = PyObject_GetAttr(self->thread_context, lane_names.current);
    if (current == NULL) {
        FALL("error");
    }
    Py_DECREF(current);
    if (current != self->ctx) {
        FALL("context not current");
    }
    kind_obj = PyObject_GetAttr(op, lane_names.kind);
    if (kind_obj == NULL) {
        FALL("error");
    }
    if (kind_obj == lane_refs.kind_fill) {
        kind = 0;
    }
    else if (kind_obj == lane_refs.kind_update) {
        kind = 1;
    }
    else if (kind_obj == lane_refs.kind_copy) {
        kind = 2;
    }
    else if (kind_obj == lane_refs.kind_dispatch || kind_obj == lane_refs.kind_execute) {
        kind = 3;
    }
    else {
        FALL("kind");
    }
    queue_obj = PyObject_GetAttr(op, lane_names.queue);
    if (queue_obj == NULL) {
        FALL("error");
    }
    Py_ssize_t q = PyLong_AsSsize_t(queue_obj);
    if (q < 0 || q >= self->stream_count) {
        FALL("queue");
    }
    if (kind == 3) {
        program = PyObject_GetAttr(op, lane_names.program);
        if (program == NULL || (PyObject *)Py_TYPE(program) != lane_refs.program_type) {
            FALL("program");
        }
        PyObject *graph = PyObject_GetAttr(program, lane_names.graph);
        if (graph == NULL) {
            FALL("error");
        }
        Py_DECREF(graph);
        if (graph != Py_None) {
            FALL("graph");
        }
        single = PyObject_GetAttr(program, lane_names.single);
        if (single == NULL || single == Py_None) {
            FALL("program");
        }
        PyObject *bindings = PyObject_GetAttr(op, lane_names.bindings);
        if (bindings == NULL) {
            FALL("error");
        }
        r = PyObject_IsTrue(bindings);
        if (r < 0) {
            Py_DECREF(bindings);
            FALL("error");
        }
        table = r ? bindings : PyTuple_New(0);
        if (!r) {
            Py_DECREF(bindings);
        }
        if (table == NULL) {
            FALL("error");
        }
    }
    waits = PyObject_GetAttr(op, lane_names.waits);
    if (waits == NULL || !PyTuple_Check(waits)) {
        FALL("error");
    }
    nwaits = PyTuple_GET_SIZE(waits);
    if (nwaits > MAX_WAITS) {
        FALL("many waits");
    }
    for (Py_ssize_t k = 0; k < nwaits; k++) {
        PyObject *pair = PyTuple_GET_ITEM(waits, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            FALL("error");
        }
        PyObject *sem = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        PyObject *reached = PyObject_CallFunctionObjArgs(lane_refs.wait_reached, sem, value, NULL);
        if (reached == NULL) {
            FALL("error");
        }
        r = PyObject_IsTrue(reached);
        Py_DECREF(reached);
        if (r < 0) {
            FALL("error");
        }
        if (r) {
            continue;
        }
        /* Held, not borrowed: a later wait's check may run Python code, during which
           another thread may replace or drop this entry. */
        PyObject *entry = PyDict_GetItemWithError(self->inflight, sem);
        if (entry == NULL) {
            FALL(PyErr_Occurred() ? "error" : "host wait");
        }
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4) {
            FALL("error");
        }
        Py_INCREF(entry);
        r = PyObject_RichCompareBool(PyTuple_GET_ITEM(entry, 0), value, Py_GE);
        Py_ssize_t lane = r <= 0 ? -1 : PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        if (r > 0 && !(lane == -1 && PyErr_Occurred()) && lane != q) {
            events[nevents++] = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
        }
        Py_DECREF(entry);
        if (r <= 0) {
            FALL(r < 0 ? "error" : "host wait");
        }
        if (lane == -1 && PyErr_Occurred()) {
            FALL("error");
        }
        device[ndevice++] = pair;
    }
    /* Decided: the op is the lane's. */
    r = lane_run_op(self, op, kind, q, queue_obj, program, single, table, waits, nwaits, device,
               ndevice, events, nevents);
    for (Py_ssize_t k = 0; k < nevents; k++) {
        Py_DECREF(events[k]);
    }
    Py_XDECREF(kind_obj);
    Py_XDECREF(queue_obj);
    Py_XDECREF(waits);
    Py_XDECREF(program);
    Py_XDECREF(single);
    Py_XDECREF(table);
    if (r < 0) {
        return NULL;
    }
    self->handled++;
    Py_RETURN_NONE;
fallback:
    if (PyErr_Occurred()) {
        PyErr_Clear();
    }
    for (Py_ssize_t k = 0; k < nevents; k++) {
        Py_DECREF(events[k]);
    }
    Py_XDECREF(kind_obj);
    Py_XDECREF(queue_obj);
    Py_XDECREF(waits);
    Py_XDECREF(program);
    Py_XDECREF(single);
    Py_XDECREF(table);
    self->fallbacks++;
    return PyObject_CallOneArg(self->fallback, op);
}

static PyObject *
Lane_get_reason(Lane *self, void *closure)
{
    return PyUnicode_FromString(self->reason ? self->reason : "");
}

static PyMethodDef Lane_methods[] = {
    {"submit", (PyCFunction)Lane_submit, METH_O,
     "submit(op): queue op through the lane, or through the fallback (the Python path)."},
    {"finish", (PyCFunction)(void (*)(void))lane_finish, METH_FASTCALL,
     "finish(item, fault): complete a handed-over item (the completion thread's finish)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Lane_members[] = {
    {"handled", T_ULONGLONG, offsetof(Lane, handled), 0, "ops the lane queued itself"},
    {"fallbacks", T_ULONGLONG, offsetof(Lane, fallbacks), 0, "ops handed to the fallback"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Lane_getset[] = {
    {"reason", (getter)Lane_get_reason, NULL, "why the latest fallen-back op fell back", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hal_cuda._native_lane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One CUDA device's submit lane (module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_methods = Lane_methods,
    .tp_members = Lane_members,
    .tp_getset = Lane_getset,
};

/* discard(inflight, entries): remove each in-flight entry of ``entries`` (one entry
   tuple, or a list of them) whose semaphore still maps to that very entry. The look-up
   and the deletion are one step under the GIL: no other thread can publish a newer
   entry between them (no Python code runs here; a semaphore hashes and compares by
   identity). */
static int
discard_one(PyObject *inflight, PyObject *entry)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4) {
        PyErr_SetString(PyExc_TypeError, "an in-flight entry is a 4-tuple");
        return -1;
    }
    PyObject *sem = PyTuple_GET_ITEM(entry, 3);
    PyObject *found = PyDict_GetItemWithError(inflight, sem);
    if (found == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (found != entry) {
        return 0;
    }
    return PyDict_DelItem(inflight, sem);
}

int
lane_discard_entries(PyObject *inflight, PyObject *entries)
{
    if (entries == Py_None) {
        return 0;
    }
    if (PyTuple_Check(entries)) {
        return discard_one(inflight, entries);
    }
    PyObject *seq = PySequence_Fast(entries, "entries");
    if (seq == NULL) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
        if (discard_one(inflight, PySequence_Fast_GET_ITEM(seq, k)) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static PyObject *
lane_discard(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "discard(inflight: dict, entries)");
        return NULL;
    }
    if (lane_discard_entries(args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

#define REF(field) &lane_refs.field

/* init(buffer_storage, wait_reached, op_error, cuda_error, CancelledError,
        WeakBufferRef, resolve, fill, CudaProgram, signal_all, FILL, UPDATE, COPY,
        DISPATCH, EXECUTE) */
static PyObject *
lane_init_module(PyObject *mod, PyObject *args)
{
    PyObject *given[15];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOO", &given[0], &given[1], &given[2], &given[3],
                          &given[4], &given[5], &given[6], &given[7], &given[8], &given[9],
                          &given[10], &given[11], &given[12], &given[13], &given[14])) {
        return NULL;
    }
    PyObject **slots[15] = {
        REF(buffer_storage), REF(wait_reached),  REF(op_error),    REF(cuda_error),
        REF(cancelled),      REF(weak_ref_type), REF(resolve),     REF(fill),
        REF(program_type),   REF(signal_all),    REF(kind_fill),   REF(kind_update),
        REF(kind_copy),      REF(kind_dispatch), REF(kind_execute),
    };
    for (int k = 0; k < 15; k++) {
        Py_XSETREF(*slots[k], Py_NewRef(given[k]));
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"init", lane_init_module, METH_VARARGS, "Bind the Python objects the lanes call."},
    {"discard", (PyCFunction)(void (*)(void))lane_discard, METH_FASTCALL,
     "discard(inflight, entries): drop each entry still published, atomically."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hal_cuda._native_lane",
    .m_doc = "The per-op submit lane of a CUDA device (see hal_cuda/_native_lane.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
intern_names(void)
{
    static const char *const text[] = {
        "address", "byte_offset", "target",   "target_offset", "source",     "source_offset",
        "length",  "pattern",     "payload",  "program",       "bindings",   "graph",
        "single",  "count_ref",   "grid",     "block",         "shared",     "first",
        "direct",  "refs",        "params",   "function",      "parameters", "values",
        "_lock",   "acquire",     "release",  "_buffer",       "offset",     "get",
        "kind",    "queue",       "waits",    "signals",       "epoch",      "_closing",
        "_profiling", "current",  "_stopped", "event",         "nbytes",     "data",
        "ctypes",
    };
    PyObject **names = &lane_names.address;
    size_t count = sizeof(text) / sizeof(text[0]);
    if (count * sizeof(PyObject *) != sizeof(LaneNames)) {
        PyErr_SetString(PyExc_SystemError, "lane names out of step");
        return -1;
    }
    for (size_t k = 0; k < count; k++) {
        names[k] = PyUnicode_InternFromString(text[k]);
        if (names[k] == NULL) {
            return -1;
        }
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__native_lane(void)
{
    if (intern_names() < 0 || lane_finish_init() < 0 || PyType_Ready(&LaneType) < 0) {
        return NULL;
    }
    PyObject *mod = PyModule_Create(&module_def);
    if (mod == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(mod, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
