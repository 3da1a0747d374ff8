/* The completion side of hal_cuda._native_lane: ``Lane.finish(item, fault)``, the
   completion thread's ``finish`` for a device with a lane. An item with nothing special
   (no fault, no error, no profiling timer, no failed device-side wait, ``_complete`` not
   shadowed by a profiling tap) completes here as ``_finish_stream`` and ``_complete`` do
   it: the op's fields cleared, its epoch retired (``RetireWatermark.retire``), its
   signals signalled through ``hal_core.backend.signal_all`` (which never raises and
   reports a callback's error itself), then its in-flight entries dropped where still
   published (atomically: no Python code runs between the look-up and the deletion).
   Every other item goes to the Python ``_finish_stream``. Called with the GIL held, on
   the completion thread (or a submitter that found the thread stopped). */

#include "_native_lane.h"

static PyObject *str_failure, *str_retained, *str_callback, *str_args, *str_complete,
    *empty_tuple;

int
lane_finish_init(void)
{
    str_failure = PyUnicode_InternFromString("failure");
    str_retained = PyUnicode_InternFromString("retained");
    str_callback = PyUnicode_InternFromString("callback");
    str_args = PyUnicode_InternFromString("args");
    str_complete = PyUnicode_InternFromString("_complete");
    empty_tuple = PyTuple_New(0);
    return str_failure && str_retained && str_callback && str_args && str_complete &&
                   empty_tuple
               ? 0
               : -1;
}

/* 1 when a device-side wait of ``waited`` failed (the Python path then fails the op
   with it), 0 if none did, -1 on an error. */
static int
a_wait_failed(PyObject *waited)
{
    PyObject *seq = PySequence_Fast(waited, "waited");
    if (seq == NULL) {
        return -1;
    }
    int failed = 0;
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq) && !failed; k++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            failed = 1; /* not a (semaphore, value): let the Python path say so */
            break;
        }
        PyObject *failure = PyObject_GetAttr(PyTuple_GET_ITEM(pair, 0), str_failure);
        if (failure == NULL) {
            failed = -1;
            break;
        }
        failed = failure != Py_None;
        Py_DECREF(failure);
    }
    Py_DECREF(seq);
    return failed;
}

int lane_discard_entries(PyObject *inflight, PyObject *entries);

PyObject *
lane_finish(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "finish(item, fault)");
        return NULL;
    }
    PyObject *item = args[0], *fault = args[1];
    if (fault != Py_None || !PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 7 ||
        PyTuple_GET_ITEM(item, 4) != Py_None || PyTuple_GET_ITEM(item, 6) != Py_None ||
        self->backend_dict == NULL) {
        return PyObject_Vectorcall(self->finish_stream, args, 2, NULL);
    }
    PyObject *tapped = PyDict_GetItemWithError(self->backend_dict, str_complete);
    if (tapped != NULL || PyErr_Occurred()) {
        return PyErr_Occurred() ? NULL : PyObject_Vectorcall(self->finish_stream, args, 2, NULL);
    }
    PyObject *waited = PyTuple_GET_ITEM(item, 5);
    if (waited != Py_None) {
        int failed = a_wait_failed(waited);
        if (failed < 0) {
            return NULL;
        }
        if (failed) {
            return PyObject_Vectorcall(self->finish_stream, args, 2, NULL);
        }
    }
    PyObject *op = PyTuple_GET_ITEM(item, 3);
    /* _complete: release what the op holds, retire its epoch, then publish. */
    if (PyObject_SetAttr(op, str_retained, Py_None) < 0 ||
        PyObject_SetAttr(op, lane_names.program, Py_None) < 0 ||
        PyObject_SetAttr(op, str_callback, Py_None) < 0 ||
        PyObject_SetAttr(op, str_args, Py_None) < 0 ||
        PyObject_SetAttr(op, lane_names.payload, Py_None) < 0 ||
        PyObject_SetAttr(op, lane_names.bindings, empty_tuple) < 0) {
        return NULL;
    }
    PyObject *queue = PyObject_GetAttr(op, lane_names.queue);
    if (queue == NULL) {
        return NULL;
    }
    Py_ssize_t q = PyLong_AsSsize_t(queue);
    Py_DECREF(queue);
    if (q < 0 || q >= PyTuple_GET_SIZE(self->retires)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_IndexError, "an op's queue out of range");
        }
        return NULL;
    }
    PyObject *epoch = PyObject_GetAttr(op, lane_names.epoch);
    if (epoch == NULL) {
        return NULL;
    }
    PyObject *done = PyObject_CallOneArg(PyTuple_GET_ITEM(self->retires, q), epoch);
    Py_DECREF(epoch);
    if (done == NULL) {
        return NULL;
    }
    Py_DECREF(done);
    PyObject *signals = PyObject_GetAttr(op, lane_names.signals);
    if (signals == NULL) {
        return NULL;
    }
    done = PyObject_CallOneArg(lane_refs.signal_all, signals);
    Py_DECREF(signals);
    if (done == NULL) {
        return NULL;
    }
    Py_DECREF(done);
    if (lane_discard_entries(self->inflight, PyTuple_GET_ITEM(item, 2)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}
