/* The stream work of hal_cuda._native_lane: fills, copies, updates and single kernel
   launches, each the C form of its Python reference in ``stream_ops.py`` (``fill``,
   ``copy``, ``update``, ``CudaProgram._launch``): the same driver calls with the same
   arguments in the same order, and the same errors. Called with the GIL held. */

#include "_native_lane.h"

int
lane_error_from_exception(PyObject **error)
{
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    if (type == NULL) {
        PyErr_SetString(PyExc_SystemError, "no exception to make an op error of");
        return -1;
    }
    PyErr_NormalizeException(&type, &exc, &tb);
    Py_DECREF(type);
    Py_XDECREF(tb);
    if (exc == NULL) {
        return -1;
    }
    PyObject *made = PyObject_CallOneArg(lane_refs.op_error, exc);
    Py_DECREF(exc);
    if (made == NULL) {
        return -1;
    }
    *error = made;
    return 1;
}

int
lane_driver_error(int err, const char *what, PyObject **error)
{
    PyObject *made = PyObject_CallFunction(lane_refs.cuda_error, "is", err, what);
    if (made == NULL) {
        return lane_error_from_exception(error);
    }
    *error = made;
    return 1;
}

int
lane_handle(PyObject *obj, void **out)
{
    PyObject *number = PyLong_Check(obj) ? Py_NewRef(obj) : PyNumber_Long(obj);
    if (number == NULL) {
        return -1;
    }
    unsigned long long value = PyLong_AsUnsignedLongLong(number);
    Py_DECREF(number);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (void *)(uintptr_t)value;
    return 0;
}

static int
as_u64(PyObject *obj, uint64_t *out)
{
    unsigned long long value = PyLong_AsUnsignedLongLong(obj);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (uint64_t)value;
    return 0;
}

static int
attr_u64(PyObject *obj, PyObject *name, uint64_t *out)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    int r = as_u64(value, out);
    Py_DECREF(value);
    return r;
}

/* ``buffer_storage(buffer).address + buffer.byte_offset`` (``address_of`` less its
   offset); -1 with the Python error set (FAILED_PRECONDITION for uncommitted memory). */
static int
buffer_base(PyObject *buffer, uint64_t *out)
{
    PyObject *storage = PyObject_CallOneArg(lane_refs.buffer_storage, buffer);
    if (storage == NULL) {
        return -1;
    }
    uint64_t address, byte_offset;
    int r = attr_u64(storage, lane_names.address, &address);
    Py_DECREF(storage);
    if (r < 0 || attr_u64(buffer, lane_names.byte_offset, &byte_offset) < 0) {
        return -1;
    }
    *out = address + byte_offset;
    return 0;
}

/* ``address_of(op.<buffer>, op.<offset>)``. */
static int
op_address(PyObject *op, PyObject *buffer_name, PyObject *offset_name, uint64_t *out)
{
    PyObject *buffer = PyObject_GetAttr(op, buffer_name);
    if (buffer == NULL) {
        return -1;
    }
    uint64_t base, offset;
    int r = buffer_base(buffer, &base);
    Py_DECREF(buffer);
    if (r < 0 || attr_u64(op, offset_name, &offset) < 0) {
        return -1;
    }
    *out = base + offset;
    return 0;
}

int
lane_fill(const LaneDriver *drv, PyObject *api, PyObject *op, void *stream, PyObject *stream_obj,
          PyObject **error)
{
    uint64_t address, length;
    if (op_address(op, lane_names.target, lane_names.target_offset, &address) < 0 ||
        attr_u64(op, lane_names.length, &length) < 0) {
        return lane_error_from_exception(error);
    }
    if (length == 0) {
        return 0;
    }
    PyObject *pattern = PyObject_GetAttr(op, lane_names.pattern);
    if (pattern == NULL) {
        return lane_error_from_exception(error);
    }
    if (!PyBytes_Check(pattern)) {
        Py_DECREF(pattern);
        PyErr_SetString(PyExc_TypeError, "a fill pattern is bytes");
        return lane_error_from_exception(error);
    }
    Py_ssize_t size = PyBytes_GET_SIZE(pattern);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(pattern);
    int err;
    const char *what;
    if (size == 1) {
        err = drv->memset_d8(address, p[0], (size_t)length, stream);
        what = "cuMemsetD8Async";
    }
    else if ((size == 2 || size == 4) && address % (uint64_t)size == 0) {
        if (size == 2) {
            unsigned short value = (unsigned short)(p[0] | (p[1] << 8));
            err = drv->memset_d16(address, value, (size_t)(length >> 1), stream);
            what = "cuMemsetD16Async";
        }
        else {
            unsigned int value = (unsigned int)p[0] | ((unsigned int)p[1] << 8) |
                                 ((unsigned int)p[2] << 16) | ((unsigned int)p[3] << 24);
            err = drv->memset_d32(address, value, (size_t)(length >> 2), stream);
            what = "cuMemsetD32Async";
        }
    }
    else {
        /* Unaligned (imported host memory): the Python reference's 2-D byte memsets. */
        PyObject *result = PyObject_CallFunction(lane_refs.fill, "OKKOO", api,
                                                 (unsigned long long)address,
                                                 (unsigned long long)length, pattern, stream_obj);
        Py_DECREF(pattern);
        if (result == NULL) {
            return lane_error_from_exception(error);
        }
        Py_DECREF(result);
        return 0;
    }
    Py_DECREF(pattern);
    return err ? lane_driver_error(err, what, error) : 0;
}

int
lane_copy(const LaneDriver *drv, PyObject *op, void *stream, PyObject **error)
{
    uint64_t source, target, length;
    if (op_address(op, lane_names.source, lane_names.source_offset, &source) < 0 ||
        op_address(op, lane_names.target, lane_names.target_offset, &target) < 0 ||
        attr_u64(op, lane_names.length, &length) < 0) {
        return lane_error_from_exception(error);
    }
    if (length == 0) {
        return 0;
    }
    int err = drv->memcpy_async(target, source, (size_t)length, stream);
    return err ? lane_driver_error(err, "cuMemcpyAsync", error) : 0;
}

int
lane_update(const LaneDriver *drv, PyObject *op, void *stream, PyObject **error)
{
    uint64_t target;
    if (op_address(op, lane_names.target, lane_names.target_offset, &target) < 0) {
        return lane_error_from_exception(error);
    }
    PyObject *payload = PyObject_GetAttr(op, lane_names.payload);
    if (payload == NULL) {
        return lane_error_from_exception(error);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(payload);
        return lane_error_from_exception(error);
    }
    int err = 0;
    if (view.len) {
        err = drv->memcpy_htod(target, view.buf, (size_t)view.len, stream);
    }
    PyBuffer_Release(&view);
    Py_DECREF(payload);
    return err ? lane_driver_error(err, "cuMemcpyHtoDAsync", error) : 0;
}

static int
triple(PyObject *obj, PyObject *name, unsigned int out[3])
{
    PyObject *t = PyObject_GetAttr(obj, name);
    if (t == NULL) {
        return -1;
    }
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_TypeError, "a grid or block is a tuple of three ints");
        return -1;
    }
    for (int k = 0; k < 3; k++) {
        unsigned long v = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, k));
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(t);
            return -1;
        }
        out[k] = (unsigned int)v;
    }
    Py_DECREF(t);
    return 0;
}

/* The binding words of ``launch`` written into ``words`` from index ``first``, as
   ``_launch`` writes ``parameters.values``. -1 with the Python error set (a dropped
   weak buffer: ``WeakBufferRef.get``'s FAILED_PRECONDITION). */
static int
write_bindings(PyObject *launch, PyObject *table, uint64_t *words, Py_ssize_t count,
               Py_ssize_t first)
{
    PyObject *direct = PyObject_GetAttr(launch, lane_names.direct);
    if (direct == NULL) {
        return -1;
    }
    Py_ssize_t i = first;
    if (direct != Py_None) {
        PyObject *seq = PySequence_Fast(direct, "direct references");
        Py_DECREF(direct);
        if (seq == NULL) {
            return -1;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t k = 0; k < n; k++, i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(seq, k);
            uint64_t base, offset;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || i >= count) {
                Py_DECREF(seq);
                PyErr_SetString(PyExc_ValueError, "a direct reference out of its block");
                return -1;
            }
            if (buffer_base(PyTuple_GET_ITEM(pair, 0), &base) < 0 ||
                as_u64(PyTuple_GET_ITEM(pair, 1), &offset) < 0) {
                Py_DECREF(seq);
                return -1;
            }
            words[i] = base + offset;
        }
        Py_DECREF(seq);
        return 0;
    }
    Py_DECREF(direct);
    PyObject *refs = PyObject_GetAttr(launch, lane_names.refs);
    if (refs == NULL) {
        return -1;
    }
    PyObject *seq = PySequence_Fast(refs, "references");
    Py_DECREF(refs);
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t k = 0; k < n; k++, i++) {
        PyObject *ref = PySequence_Fast_GET_ITEM(seq, k);
        uint64_t value;
        if (i >= count) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "a reference out of its block");
            return -1;
        }
        if ((PyObject *)Py_TYPE(ref) == lane_refs.weak_ref_type) {
            PyObject *weak = PyObject_GetAttr(ref, lane_names._buffer);
            PyObject *held = weak == NULL ? NULL : PyObject_CallNoArgs(weak);
            Py_XDECREF(weak);
            if (held == Py_None) {
                Py_DECREF(held);
                held = PyObject_CallMethodNoArgs(ref, lane_names.get); /* raises */
            }
            uint64_t base, offset;
            int r = held == NULL ? -1 : buffer_base(held, &base);
            Py_XDECREF(held);
            if (r < 0 || attr_u64(ref, lane_names.offset, &offset) < 0) {
                Py_DECREF(seq);
                return -1;
            }
            value = base + offset;
        }
        else {
            PyObject *pair = PyObject_CallFunctionObjArgs(lane_refs.resolve, ref, table, NULL);
            int r = pair == NULL ? -1 : 0;
            if (r == 0) {
                if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) < 1) {
                    PyErr_SetString(PyExc_TypeError, "resolve returns (address, length)");
                    r = -1;
                }
                else {
                    r = as_u64(PyTuple_GET_ITEM(pair, 0), &value);
                }
            }
            Py_XDECREF(pair);
            if (r < 0) {
                Py_DECREF(seq);
                return -1;
            }
        }
        words[i] = value;
    }
    Py_DECREF(seq);
    return 0;
}

int
lane_launch(const LaneDriver *drv, PyObject *program, PyObject *launch, PyObject *table,
            void *stream, PyObject **error)
{
    unsigned int grid[3], block[3];
    uint64_t shared, first, params;
    void *function;
    if (triple(launch, lane_names.grid, grid) < 0) {
        return lane_error_from_exception(error);
    }
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0) {
        return 0; /* an empty grid dispatches nothing (CUDA refuses a zero dimension) */
    }
    PyObject *fn = PyObject_GetAttr(launch, lane_names.function);
    int r = fn == NULL ? -1 : lane_handle(fn, &function);
    Py_XDECREF(fn);
    if (r < 0 || triple(launch, lane_names.block, block) < 0 ||
        attr_u64(launch, lane_names.shared, &shared) < 0 ||
        attr_u64(launch, lane_names.first, &first) < 0 ||
        attr_u64(launch, lane_names.params, &params) < 0) {
        return lane_error_from_exception(error);
    }
    PyObject *parameters = PyObject_GetAttr(program, lane_names.parameters);
    PyObject *values = parameters == NULL ? NULL : PyObject_GetAttr(parameters, lane_names.values);
    Py_XDECREF(parameters);
    PyObject *lock = values == NULL ? NULL : PyObject_GetAttr(program, lane_names._lock);
    if (lock == NULL) {
        Py_XDECREF(values);
        return lane_error_from_exception(error);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(values, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(values);
        Py_DECREF(lock);
        return lane_error_from_exception(error);
    }
    PyObject *held = PyObject_CallMethodNoArgs(lock, lane_names.acquire);
    if (held == NULL) {
        PyBuffer_Release(&view);
        Py_DECREF(values);
        Py_DECREF(lock);
        return lane_error_from_exception(error);
    }
    Py_DECREF(held);
    int result = 0;
    if (write_bindings(launch, table, (uint64_t *)view.buf, view.len / 8, (Py_ssize_t)first) <
        0) {
        result = lane_error_from_exception(error);
    }
    else {
        int err = drv->launch_kernel(function, grid[0], grid[1], grid[2], block[0], block[1],
                                     block[2], (unsigned int)shared, stream,
                                     (void **)(uintptr_t)params, NULL);
        if (err) {
            result = lane_driver_error(err, "cuLaunchKernel", error);
        }
    }
    PyObject *released = PyObject_CallMethodNoArgs(lock, lane_names.release);
    if (released == NULL) {
        /* An unheld lock cannot be: keep the op's outcome, drop this error. */
        PyErr_WriteUnraisable(lock);
    }
    Py_XDECREF(released);
    PyBuffer_Release(&view);
    Py_DECREF(values);
    Py_DECREF(lock);
    return result;
}
