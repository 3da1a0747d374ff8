/* The committed part of hal_cuda._native_lane's ``Lane.submit``: once the lane has
   decided an op is its own, take its epoch, put its work on its stream after its
   device-side waits, take an event and hand it to the completion thread, exactly as
   ``_enqueue`` and ``CompletionThread.hand_over`` do (see _native_lane.c's module
   comment for the invariants). Called with the GIL held. */

#include "_native_lane.h"

int
lane_truthy_attr(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) {
        return -1;
    }
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* Complete an op the lane committed to but could not hand over:
   ``_complete_waited(op, error, waited)``. Steals ``error``. */
static int
complete_waited(Lane *self, PyObject *op, PyObject *error, PyObject *waited)
{
    PyObject *r = PyObject_CallFunctionObjArgs(self->complete_waited, op, error,
                                               waited ? waited : Py_None, NULL);
    Py_DECREF(error);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The committed part of ``submit``: everything after the decision. Returns 0, or -1
   with a Python error set when even failing the op could not be done. */
int
lane_run_op(Lane *self, PyObject *op, int kind, Py_ssize_t q, PyObject *queue_obj, PyObject *program,
       PyObject *single, PyObject *table, PyObject *waits, Py_ssize_t nwaits, PyObject **device,
       Py_ssize_t ndevice, PyObject **events, Py_ssize_t nevents)
{
    PyObject *error = NULL, *waited = NULL, *event = NULL, *entries = NULL, *item = NULL;
    int status = -1;
    PyObject *epoch = PyObject_CallNoArgs(PyTuple_GET_ITEM(self->next_epochs, q));
    if (epoch == NULL) {
        return -1;
    }
    int r = PyObject_SetAttr(op, lane_names.epoch, epoch);
    Py_DECREF(epoch);
    if (r < 0) {
        return -1;
    }
    if (ndevice) {
        PyObject *count = PyObject_GetAttr(self->stream_waits, lane_names.event);
        PyObject *more = count == NULL ? NULL : PyLong_FromSsize_t(ndevice);
        PyObject *sum = more == NULL ? NULL : PyNumber_Add(count, more);
        Py_XDECREF(count);
        Py_XDECREF(more);
        if (sum == NULL || PyObject_SetAttr(self->stream_waits, lane_names.event, sum) < 0) {
            Py_XDECREF(sum);
            return -1;
        }
        Py_DECREF(sum);
        if (ndevice == nwaits) {
            waited = Py_NewRef(waits);
        }
        else {
            waited = PyList_New(ndevice);
            if (waited == NULL) {
                return -1;
            }
            for (Py_ssize_t k = 0; k < ndevice; k++) {
                PyList_SET_ITEM(waited, k, Py_NewRef(device[k]));
            }
        }
    }
    void *stream = self->stream_handles[q];
    for (Py_ssize_t k = 0; k < nevents && error == NULL; k++) {
        void *handle;
        if (lane_handle(events[k], &handle) < 0) {
            r = lane_error_from_exception(&error);
        }
        else {
            int err = self->drv.stream_wait_event(stream, handle, 0);
            r = err ? lane_driver_error(err, "cuStreamWaitEvent", &error) : 0;
        }
        if (r < 0) {
            goto done;
        }
    }
    if (error == NULL) {
        switch (kind) {
        case 0:
            r = lane_fill(&self->drv, self->api, op, stream, PyTuple_GET_ITEM(self->streams, q),
                          &error);
            break;
        case 1:
            r = lane_update(&self->drv, op, stream, &error);
            break;
        case 2:
            r = lane_copy(&self->drv, op, stream, &error);
            break;
        default:
            r = lane_launch(&self->drv, program, single, table, stream, &error);
            break;
        }
        if (r < 0) {
            goto done;
        }
    }
    /* An event from the free list (``EventPool.free``), else a new one. */
    Py_ssize_t free_count = PyList_GET_SIZE(self->free_events);
    if (free_count) {
        event = Py_NewRef(PyList_GET_ITEM(self->free_events, free_count - 1));
        if (PyList_SetSlice(self->free_events, free_count - 1, free_count, NULL) < 0) {
            goto done;
        }
    }
    else {
        event = PyObject_CallNoArgs(self->event_get);
        if (event == NULL) {
            PyObject *failure = error;
            if (failure == NULL && lane_error_from_exception(&failure) < 0) {
                goto done;
            }
            error = NULL;
            status = complete_waited(self, op, failure, waited);
            goto done;
        }
    }
    void *event_handle;
    if (lane_handle(event, &event_handle) < 0) {
        goto done;
    }
    PyObject *signals = PyObject_GetAttr(op, lane_names.signals);
    if (signals == NULL) {
        goto done;
    }
    Py_ssize_t nsignals = PyTuple_Check(signals) ? PyTuple_GET_SIZE(signals) : -1;
    if (nsignals < 0) {
        Py_DECREF(signals);
        PyErr_SetString(PyExc_TypeError, "an op's signals are a tuple");
        goto done;
    }
    if (nsignals) {
        entries = nsignals == 1 ? NULL : PyList_New(nsignals);
        for (Py_ssize_t k = 0; k < nsignals; k++) {
            PyObject *pair = PyTuple_GET_ITEM(signals, k);
            PyObject *entry = NULL;
            if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
                entry = PyTuple_Pack(4, PyTuple_GET_ITEM(pair, 1), event, queue_obj,
                                     PyTuple_GET_ITEM(pair, 0));
            }
            else {
                PyErr_SetString(PyExc_TypeError, "a signal is (semaphore, value)");
            }
            if (entry == NULL) {
                Py_DECREF(signals);
                goto done;
            }
            if (nsignals == 1) {
                entries = entry;
            }
            else if (entries == NULL) {
                Py_DECREF(entry);
                Py_DECREF(signals);
                goto done;
            }
            else {
                PyList_SET_ITEM(entries, k, entry);
            }
        }
    }
    Py_DECREF(signals);
    item = PyTuple_Pack(7, event, queue_obj, entries ? entries : Py_None, op,
                        error ? error : Py_None, waited ? waited : Py_None, Py_None);
    if (item == NULL) {
        goto done;
    }
    /* CompletionThread.hand_over, inline. */
    PyObject *held = PyObject_CallMethodNoArgs(self->lock, lane_names.acquire);
    if (held == NULL) {
        goto done;
    }
    Py_DECREF(held);
    int stopped = lane_truthy_attr(self->completion, lane_names._stopped);
    int err = 0;
    int published = 0;
    if (stopped == 0) {
        err = self->drv.event_record(event_handle, stream);
        if (!err) {
            int failed = 0;
            if (entries != NULL) {
                if (nsignals == 1) {
                    failed = PyDict_SetItem(self->inflight, PyTuple_GET_ITEM(entries, 3), entries);
                }
                else {
                    for (Py_ssize_t k = 0; k < nsignals && !failed; k++) {
                        PyObject *entry = PyList_GET_ITEM(entries, k);
                        failed = PyDict_SetItem(self->inflight, PyTuple_GET_ITEM(entry, 3), entry);
                    }
                }
            }
            PyObject *put = failed ? NULL : PyObject_CallOneArg(self->put, item);
            Py_XDECREF(put);
            published = put != NULL;
        }
    }
    PyObject *released = PyObject_CallMethodNoArgs(self->lock, lane_names.release);
    if (released == NULL) {
        goto done;
    }
    Py_DECREF(released);
    if (stopped < 0 || (stopped == 0 && !err && !published)) {
        goto done; /* a Python error while handing over (memory): the caller fails the op */
    }
    if (stopped) {
        PyObject *cancel = PyObject_CallFunction(lane_refs.cancelled, "s", "the cuda device closed");
        if (cancel == NULL) {
            goto done;
        }
        PyObject *res = PyObject_CallFunctionObjArgs(self->finish_stream, item, cancel, NULL);
        Py_DECREF(cancel);
        if (res == NULL) {
            goto done;
        }
        Py_DECREF(res);
    }
    else if (err) {
        PyObject *failure = error;
        if (failure == NULL && lane_driver_error(err, "cuEventRecord", &failure) < 0) {
            goto done;
        }
        error = NULL;
        if (complete_waited(self, op, failure, waited) < 0) {
            goto done;
        }
    }
    status = 0;
done:
    Py_XDECREF(error);
    Py_XDECREF(waited);
    Py_XDECREF(event);
    Py_XDECREF(entries);
    Py_XDECREF(item);
    return status;
}

