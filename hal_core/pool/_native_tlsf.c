/* The TLSF pool's core of hal_core.pool._native: the reserve/release fast paths over its
 * quick lists and recycle lists (frontier dominance in C), configure_recycle, and folding
 * either core's pending counts. See _native.c for the design (why no lock is taken, when
 * the Python path runs). */
#include "_native_core.h"

/* TlsfCore: the TLSF pool's quick lists                                                */

typedef struct {
    CoreHead h;
    PyObject *quick;        /* _quick: list of lists of block indices, by granule count */
    PyObject *off;          /* _off: block offsets in granules */
    PyObject *size;         /* _size: block sizes in granules */
    PyObject *slab_of;      /* _slab_of: block slab indices */
    PyObject *quick_bytes;  /* _quick_bytes */
    PyObject *quick_depth;  /* _quick_depth: blocks each quick list may hold */
    PyObject *shift;        /* _shift: log2 of the granule */
    PyObject *range_length; /* range_length */
    PyObject *recycle;       /* _recycle: dict, granule count -> list of recycled blocks */
    PyObject *recycle_count; /* _recycle_count: blocks in the recycle lists */
    PyObject *recycle_limit; /* _recycle_limit: blocks the recycle lists may hold */
    PyObject *front;         /* _front: block death frontiers (None when fresh) */
    PyObject *taint;         /* _taint: block taint flags */
    PyObject *frontier_capacity; /* frontier_capacity */
    PyObject *reuse_count;   /* _reuse_count */
    Py_ssize_t d_quick;     /* quick-list bytes counted by fast paths, not yet folded */
    Py_ssize_t d_reuse;     /* recycle hits counted by fast paths, not yet folded */
    /* The recycle list last found (see recycle_list): compared, never read through, until
     * the dict and its version match again. */
    PyObject *seen_dict, *seen_list;
    uint64_t seen_version;
    Py_ssize_t seen_g;
} TlsfCore;

/* Recycle lists (set by configure_recycle; until then only the quick lists are native):
 * AcquireResult.OK, the Frontier type and the offsets of its ``_axes``/``_epochs`` slots. */
static PyObject *g_ok;
static PyTypeObject *frontier_type;
static Py_ssize_t off_axes, off_epochs;

#define FSLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    if (d == NULL)
        return -1;
    if (Py_TYPE(d) != &PyMemberDescr_Type ||
        ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return 0;
}

PyObject *
native_configure_recycle(PyObject *module, PyObject *args)
{
    PyObject *ok, *ftype;
    Py_ssize_t axes, epochs;
    if (!PyArg_ParseTuple(args, "OO!:configure_recycle", &ok, &PyType_Type, &ftype))
        return NULL;
    if (slot_offset((PyTypeObject *)ftype, "_axes", &axes) < 0 ||
        slot_offset((PyTypeObject *)ftype, "_epochs", &epochs) < 0)
        return NULL;
    off_axes = axes;
    off_epochs = epochs;
    Py_INCREF(ftype);
    Py_XSETREF(frontier_type, (PyTypeObject *)ftype);
    Py_INCREF(ok);
    Py_XSETREF(g_ok, ok);
    Py_RETURN_NONE;
}

/* ``x`` (an exact int in 0..2**64-1) into ``*out``; 0 when it is anything else. */
static inline int
u64(PyObject *x, unsigned long long *out)
{
    if (!PyLong_CheckExact(x))
        return 0;
    *out = PyLong_AsUnsignedLongLong(x);
    if (*out == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* ``Frontier.dominates`` over two exact Frontiers: 1 when ``a`` covers every entry of
 * ``b``, 0 when it does not, -1 when an entry is not what a valid frontier holds (the
 * Python path then decides). Reads only; runs no Python code. */
static int
frontier_dominates(PyObject *a, PyObject *b)
{
    PyObject *aa = FSLOT(a, off_axes), *ae = FSLOT(a, off_epochs);
    PyObject *ba = FSLOT(b, off_axes), *be = FSLOT(b, off_epochs);
    if (aa == NULL || ae == NULL || ba == NULL || be == NULL || !PyList_CheckExact(aa) ||
        !PyList_CheckExact(ae) || !PyList_CheckExact(ba) || !PyList_CheckExact(be))
        return -1;
    Py_ssize_t na = PyList_GET_SIZE(aa), nb = PyList_GET_SIZE(ba);
    if (PyList_GET_SIZE(ae) != na || PyList_GET_SIZE(be) != nb)
        return -1;
    Py_ssize_t i = 0;
    unsigned long long x, y, ex, ey;
    for (Py_ssize_t j = 0; j < nb; j++) {
        PyObject *axis = PyList_GET_ITEM(ba, j);
        if (!u64(PyList_GET_ITEM(be, j), &ey))
            return -1;
        if (i < na && PyList_GET_ITEM(aa, i) == axis && PyLong_CheckExact(axis)) {
            /* The same axis object (a queue's frontiers share it): equal without converting
             * it (an axis is a large int, slow to convert). */
            x = y = 0;
        }
        else {
            if (!u64(axis, &y))
                return -1;
            for (;;) {
                if (i == na)
                    return 0;
                if (!u64(PyList_GET_ITEM(aa, i), &x))
                    return -1;
                if (x >= y)
                    break;
                i++;
            }
        }
        if (x != y)
            return 0;
        if (!u64(PyList_GET_ITEM(ae, i), &ex))
            return -1;
        if (ex < ey)
            return 0;
    }
    return 1;
}

/* The recycle list of ``g`` granules (borrowed from the recycle dict), or NULL with no
 * error when there is none. The last one found is remembered with the dict's version
 * (CPython < 3.12: globally unique, changed by every modification of the dict; appending
 * to one of its lists is not one), so a steady size skips the int key and the lookup. */
static PyObject *
recycle_list(TlsfCore *self, Py_ssize_t g)
{
    PyObject *recycle = self->recycle;
#if PY_VERSION_HEX < 0x030C0000
    if (recycle == self->seen_dict && g == self->seen_g &&
        ((PyDictObject *)recycle)->ma_version_tag == self->seen_version)
        return self->seen_list;
#endif
    PyObject *key = PyLong_FromSsize_t(g);
    if (key == NULL) {
        PyErr_Clear();
        return NULL;
    }
    /* An exact-int key: the lookup hashes and compares ints only, so runs no code. */
    PyObject *list = PyDict_GetItemWithError(recycle, key);
    Py_DECREF(key);
    if (list == NULL) {
        PyErr_Clear();
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    self->seen_dict = recycle;
    self->seen_version = ((PyDictObject *)recycle)->ma_version_tag;
    self->seen_g = g;
    self->seen_list = list;
#endif
    return list;
}

/* The quick-listed block a fast reserve takes, or -1 when the Python path must decide.
 * Sets ``*g`` to the request in granules. Reads only. */
static Py_ssize_t
tlsf_pick(TlsfCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
          Py_ssize_t *g)
{
    PyObject *quick = self->quick;
    Py_ssize_t shift = ival(self->shift);
    if (!head_ready(&self->h) || shift < 0 || shift > 32 || quick == NULL ||
        !PyList_CheckExact(quick))
        return -1;
    Py_ssize_t size = fast_size(args, nargs, kwnames, ival(self->range_length));
    if (!size)
        return -1;
    *g = (size + ((Py_ssize_t)1 << shift) - 1) >> shift;
    if (*g >= PyList_GET_SIZE(quick))
        return -1;
    PyObject *list = PyList_GET_ITEM(quick, *g);
    if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) == 0)
        return -1;
    return list_ival(list, PyList_GET_SIZE(list) - 1);
}

/* The recycled block of ``g`` granules a fast reserve takes back for ``requester`` (an
 * exact Frontier dominating its death frontier), or -1 when the Python path must decide.
 * Sets ``*recycled`` to its list (borrowed). Reads only. */
static Py_ssize_t
tlsf_recycle_pick(TlsfCore *self, PyObject *requester, Py_ssize_t g, PyObject **recycled)
{
    if (frontier_type == NULL || g_ok == NULL || !Py_IS_TYPE(requester, frontier_type) ||
        ival(self->recycle_count) <= 0 || self->recycle == NULL ||
        !PyDict_CheckExact(self->recycle) || self->front == NULL ||
        !PyList_CheckExact(self->front))
        return -1;
    PyObject *list = recycle_list(self, g);
    if (list == NULL || !PyList_CheckExact(list) || PyList_GET_SIZE(list) == 0)
        return -1;
    Py_ssize_t b = list_ival(list, PyList_GET_SIZE(list) - 1);
    if (b < 0 || b >= PyList_GET_SIZE(self->front))
        return -1;
    PyObject *death = PyList_GET_ITEM(self->front, b);
    if (!Py_IS_TYPE(death, frontier_type) || frontier_dominates(requester, death) != 1)
        return -1;
    *recycled = list;
    return b;
}

static PyObject *
tlsf_acquire(TlsfCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Reservation *r;
    PyObject *t, *recycled = NULL;
    PyObject *requester = nargs >= 3 ? args[2] : Py_None;
    /* The result first (see result_alloc), then one look: the quick lists first, then the
     * recycle lists, as the Python path looks. A miss drops the unused result. */
    if (result_alloc(&r, &t) < 0)
        goto slow;
    Py_ssize_t g = 0, b = tlsf_pick(self, args, nargs, kwnames, &g);
    if (b < 0 && g > 0 && requester != Py_None)
        b = tlsf_recycle_pick(self, requester, g, &recycled);
    Py_ssize_t off = list_ival(self->off, b), slab = list_ival(self->slab_of, b);
    Py_ssize_t count = recycled != NULL ? ival(self->recycle_count) : 1;
    PyObject *new_count = count > 0 ? PyLong_FromSsize_t(count - 1) : NULL;
    if (b < 0 || off < 0 || slab < 0 || (recycled != NULL && new_count == NULL)) {
        Py_XDECREF(new_count);
        PyErr_Clear();
        result_drop(r, t);
        goto slow;
    }
    Py_ssize_t shift = ival(self->shift), length = g << shift;
    self->d_quick -= length;
    self->h.d_bytes += length;
    if (recycled == NULL) {
        Py_DECREF(new_count);
        self->h.d_fresh++;
        PyObject *handle = list_pop_top(PyList_GET_ITEM(self->quick, g));
        return result_fill(r, t, g_ok_fresh, (PyObject *)self, off << shift, length, handle, slab);
    }
    self->d_reuse++;
    Py_SETREF(self->recycle_count, new_count); /* the old value is an int: no code runs */
    PyObject *handle = list_pop_top(recycled);
    PyObject *death = PyList_GET_ITEM(self->front, b);
    Py_INCREF(Py_None);
    PyList_SET_ITEM(self->front, b, Py_None);
    PyObject *result = result_fill(r, t, g_ok, (PyObject *)self, off << shift, length, handle,
                                   slab);
    /* Last, with every write done: a frontier holds only lists of ints, so freeing it runs
     * no code, but nothing of the pool is read after it either way. */
    Py_DECREF(death);
    return result;
slow:
    if (PyErr_Occurred())
        return NULL;
    return call_slow((PyObject *)self, s_acquire_slow, args, nargs, kwnames);
}

/* Release into the recycle lists: ``death`` is an exact Frontier with at least one entry
 * and no more than the pool's frontier capacity (so the block is not tainted), and the
 * lists have room. NULL with no error when the Python path must decide. */
static PyObject *
tlsf_recycle_release(TlsfCore *self, Reservation *r, PyObject *death)
{
    PyObject *axes = FSLOT(death, off_axes), *recycle = self->recycle;
    Py_ssize_t b = ival(r->block_handle), count = ival(self->recycle_count);
    if (axes == NULL || !PyList_CheckExact(axes) || PyList_GET_SIZE(axes) == 0 ||
        PyList_GET_SIZE(axes) > ival(self->frontier_capacity) || count < 0 ||
        count >= ival(self->recycle_limit) || recycle == NULL || !PyDict_CheckExact(recycle) ||
        self->front == NULL || !PyList_CheckExact(self->front) || self->taint == NULL ||
        !PyList_CheckExact(self->taint) || b < 0 || b >= PyList_GET_SIZE(self->front) ||
        b >= PyList_GET_SIZE(self->taint))
        return NULL;
    Py_ssize_t g = list_ival(self->size, b);
    if (g < 0)
        return NULL;
    /* Everything that can fail first (the ints, the append); then the writes. Ints are not
     * tracked by the cyclic GC, so making them collects no garbage and runs no code; a new
     * list would, so a size with no list yet is the Python path's (it makes the list once). */
    PyObject *new_count = PyLong_FromSsize_t(count + 1);
    PyObject *list = new_count != NULL ? recycle_list(self, g) : NULL;
    if (new_count == NULL || list == NULL || !PyList_CheckExact(list) ||
        PyList_Append(list, r->block_handle) < 0) {
        Py_XDECREF(new_count);
        PyErr_Clear();
        return NULL;
    }
    PyObject *old_front = PyList_GET_ITEM(self->front, b);
    Py_INCREF(death);
    PyList_SET_ITEM(self->front, b, death);
    PyObject *old_taint = PyList_GET_ITEM(self->taint, b);
    Py_INCREF(Py_False);
    PyList_SET_ITEM(self->taint, b, Py_False);
    Py_SETREF(self->recycle_count, new_count);
    detach(r);
    self->d_quick += r->length;
    self->h.d_bytes -= r->length;
    self->h.d_release++;
    /* A live block's frontier is None and its taint a bool: dropping them runs no code. */
    Py_XDECREF(old_front);
    Py_XDECREF(old_taint);
    return notify_release(&self->h);
}

static PyObject *
tlsf_release(TlsfCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *death = nargs == 2 ? args[1] : Py_None;
    if (death != Py_None && frontier_type != NULL && Py_IS_TYPE(death, frontier_type)) {
        Py_INCREF(death); /* the caller's reference may be its only one */
        PyObject *none[2] = {args[0], Py_None};
        Reservation *r = fast_release_arg(&self->h, none, nargs, kwnames);
        PyObject *done = r != NULL ? tlsf_recycle_release(self, r, death) : NULL;
        Py_DECREF(death);
        if (done != NULL || PyErr_Occurred())
            return done;
        return call_slow((PyObject *)self, s_release_slow, args, nargs, kwnames);
    }
    Reservation *r = fast_release_arg(&self->h, args, nargs, kwnames);
    PyObject *quick = self->quick;
    if (r != NULL && quick != NULL && PyList_CheckExact(quick)) {
        Py_ssize_t g = list_ival(self->size, ival(r->block_handle));
        PyObject *list = g >= 0 && g < PyList_GET_SIZE(quick) ? PyList_GET_ITEM(quick, g) : NULL;
        if (list != NULL && PyList_CheckExact(list) &&
            PyList_GET_SIZE(list) < ival(self->quick_depth)) {
            if (PyList_Append(list, r->block_handle) < 0)
                return NULL;
            detach(r);
            self->d_quick += r->length;
            self->h.d_bytes -= r->length;
            self->h.d_release++;
            return notify_release(&self->h);
        }
    }
    return call_slow((PyObject *)self, s_release_slow, args, nargs, kwnames);
}

static int
tlsf_traverse(TlsfCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->quick);
    Py_VISIT(self->off);
    Py_VISIT(self->size);
    Py_VISIT(self->slab_of);
    Py_VISIT(self->recycle);
    Py_VISIT(self->front);
    return head_traverse(&self->h, visit, arg);
}

static int
tlsf_clear(TlsfCore *self)
{
    Py_CLEAR(self->quick);
    Py_CLEAR(self->off);
    Py_CLEAR(self->size);
    Py_CLEAR(self->slab_of);
    Py_CLEAR(self->quick_depth);
    Py_CLEAR(self->shift);
    Py_CLEAR(self->range_length);
    Py_CLEAR(self->quick_bytes);
    Py_CLEAR(self->recycle);
    Py_CLEAR(self->recycle_count);
    Py_CLEAR(self->recycle_limit);
    Py_CLEAR(self->front);
    Py_CLEAR(self->taint);
    Py_CLEAR(self->frontier_capacity);
    Py_CLEAR(self->reuse_count);
    head_clear(&self->h);
    return 0;
}

static void
tlsf_dealloc(TlsfCore *self)
{
    PyObject_GC_UnTrack(self);
    tlsf_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef tlsf_members[] = {
    HEAD_MEMBERS(TlsfCore),
    SLOT("_quick", TlsfCore, quick),
    SLOT("_off", TlsfCore, off),
    SLOT("_size", TlsfCore, size),
    SLOT("_slab_of", TlsfCore, slab_of),
    SLOT("_quick_bytes", TlsfCore, quick_bytes),
    SLOT("_quick_depth", TlsfCore, quick_depth),
    SLOT("_shift", TlsfCore, shift),
    SLOT("range_length", TlsfCore, range_length),
    SLOT("_recycle", TlsfCore, recycle),
    SLOT("_recycle_count", TlsfCore, recycle_count),
    SLOT("_recycle_limit", TlsfCore, recycle_limit),
    SLOT("_front", TlsfCore, front),
    SLOT("_taint", TlsfCore, taint),
    SLOT("frontier_capacity", TlsfCore, frontier_capacity),
    SLOT("_reuse_count", TlsfCore, reuse_count),
    {NULL},
};

static PyMethodDef tlsf_methods[] = {
    {"acquire_reservation", (PyCFunction)(void (*)(void))tlsf_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire_reservation($self, /, size, alignment=0, requester_frontier=None, flags=0)\n--\n\n"
     "Reserve (native fast path from the quick lists; see Pool.acquire_reservation)."},
    {"release_reservation", (PyCFunction)(void (*)(void))tlsf_release,
     METH_FASTCALL | METH_KEYWORDS,
     "release_reservation($self, /, reservation, death_frontier=None)\n--\n\n"
     "Give back (native fast path into the quick lists; see Pool.release_reservation)."},
    {NULL},
};

PyTypeObject TlsfCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hal_core.pool._native.TlsfCore",
    .tp_basicsize = sizeof(TlsfCore),
    .tp_dealloc = (destructor)tlsf_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Fast paths of TlsfPool: exact-size reserve and release through its quick and "
              "recycle lists.",
    .tp_traverse = (traverseproc)tlsf_traverse,
    .tp_clear = (inquiry)tlsf_clear,
    .tp_methods = tlsf_methods,
    .tp_members = tlsf_members,
    .tp_getset = core_getset,
    .tp_new = core_new,
};

/* ------------------------------------------------------------------------------------ */
/* Folding fast-path counts (FenceLock acquire)                                          */

/* Fold the pending fast-path counts of ``owner`` into its counter ints: all or nothing
 * (the new ints are made first; an allocation failure leaves everything as it was). */
int
core_fold(PyObject *owner)
{
    CoreHead *h = (CoreHead *)owner;
    PyObject **slots[5] = {&h->bytes_reserved, &h->fresh_count, &h->release_count, NULL, NULL};
    Py_ssize_t *deltas[5] = {&h->d_bytes, &h->d_fresh, &h->d_release, NULL, NULL};
    int n = 3;
    if (PyObject_TypeCheck(owner, &TlsfCoreType)) {
        slots[3] = &((TlsfCore *)owner)->quick_bytes;
        deltas[3] = &((TlsfCore *)owner)->d_quick;
        slots[4] = &((TlsfCore *)owner)->reuse_count;
        deltas[4] = &((TlsfCore *)owner)->d_reuse;
        n = 5;
    }
    PyObject *values[5] = {NULL, NULL, NULL, NULL, NULL};
    for (int i = 0; i < n; i++) {
        if (*deltas[i] == 0)
            continue;
        PyObject *old = *slots[i];
        Py_ssize_t v = old != NULL && PyLong_CheckExact(old) ? PyLong_AsSsize_t(old) : -1;
        if (v == -1 && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "pool counters must be ints");
        if (PyErr_Occurred() || (values[i] = PyLong_FromSsize_t(v + *deltas[i])) == NULL) {
            for (int j = 0; j < i; j++)
                Py_XDECREF(values[j]);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (values[i] != NULL) {
            Py_SETREF(*slots[i], values[i]); /* the old value is an int: no code runs */
            *deltas[i] = 0;
        }
    }
    return 0;
}
