/* The fixed-block pool's core of hal_core.pool._native: the reserve/release fast paths
 * over its free stack. See _native.c for the design (why no lock is taken, when the Python
 * path runs). */
#include "_native_core.h"

/* FixedBlockCore: the fixed-block pool's free stack                                    */

typedef struct {
    CoreHead h;
    PyObject *free;       /* _free: stack of free block indices (ints) with no frontier */
    PyObject *block_size; /* block_size */
} FixedBlockCore;

/* The block a fast reserve takes (the top of the free stack), or -1 when the Python path
 * must decide. Reads only. */
static Py_ssize_t
fixed_pick(FixedBlockCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *free = self->free;
    Py_ssize_t size = ival(self->block_size);
    if (!head_ready(&self->h) || size <= 0 || !fast_size(args, nargs, kwnames, size) ||
        free == NULL || !PyList_CheckExact(free) || PyList_GET_SIZE(free) == 0)
        return -1;
    return list_ival(free, PyList_GET_SIZE(free) - 1);
}

static PyObject *
fixed_acquire(FixedBlockCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Reservation *r;
    PyObject *t;
    /* The result first (see result_alloc), then one look; a miss drops the unused result. */
    if (result_alloc(&r, &t) < 0)
        goto slow;
    Py_ssize_t index = fixed_pick(self, args, nargs, kwnames);
    if (index < 0) {
        result_drop(r, t);
        goto slow;
    }
    Py_ssize_t size = ival(self->block_size);
    self->h.d_fresh++;
    self->h.d_bytes += size;
    PyObject *handle = list_pop_top(self->free);
    return result_fill(r, t, g_ok_fresh, (PyObject *)self, index * size, size, handle, 0);
slow:
    if (PyErr_Occurred())
        return NULL;
    return call_slow((PyObject *)self, s_acquire_slow, args, nargs, kwnames);
}

static PyObject *
fixed_release(FixedBlockCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Reservation *r = fast_release_arg(&self->h, args, nargs, kwnames);
    if (r != NULL && self->free != NULL && PyList_CheckExact(self->free)) {
        if (PyList_Append(self->free, r->block_handle) < 0)
            return NULL;
        detach(r);
        self->h.d_release++;
        self->h.d_bytes -= r->length;
        return notify_release(&self->h);
    }
    return call_slow((PyObject *)self, s_release_slow, args, nargs, kwnames);
}

static int
fixed_traverse(FixedBlockCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->free);
    return head_traverse(&self->h, visit, arg);
}

static int
fixed_clear(FixedBlockCore *self)
{
    Py_CLEAR(self->free);
    Py_CLEAR(self->block_size);
    head_clear(&self->h);
    return 0;
}

static void
fixed_dealloc(FixedBlockCore *self)
{
    PyObject_GC_UnTrack(self);
    fixed_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef fixed_members[] = {
    HEAD_MEMBERS(FixedBlockCore),
    SLOT("_free", FixedBlockCore, free),
    SLOT("block_size", FixedBlockCore, block_size),
    {NULL},
};

static PyMethodDef fixed_methods[] = {
    {"acquire_reservation", (PyCFunction)(void (*)(void))fixed_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire_reservation($self, /, size, alignment=0, requester_frontier=None, flags=0)\n--\n\n"
     "Reserve a block (native fast path; see Pool.acquire_reservation)."},
    {"release_reservation", (PyCFunction)(void (*)(void))fixed_release,
     METH_FASTCALL | METH_KEYWORDS,
     "release_reservation($self, /, reservation, death_frontier=None)\n--\n\n"
     "Give a block back (native fast path; see Pool.release_reservation)."},
    {NULL},
};

PyTypeObject FixedBlockCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hal_core.pool._native.FixedBlockCore",
    .tp_basicsize = sizeof(FixedBlockCore),
    .tp_dealloc = (destructor)fixed_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Fast paths of FixedBlockPool: pop and push its free stack.",
    .tp_traverse = (traverseproc)fixed_traverse,
    .tp_clear = (inquiry)fixed_clear,
    .tp_methods = fixed_methods,
    .tp_members = fixed_members,
    .tp_getset = core_getset,
    .tp_new = core_new,
};
