/* What every garbage-collected heap type of osvirt's C modules (fastlock.c,
 * quickcalls.c) does when an instance dies: untrack it, clear its references
 * (its tp_clear), free it, and drop the reference each instance holds on its
 * heap type. */
#ifndef OSV_CPYTHON_HEAPTYPE_H
#define OSV_CPYTHON_HEAPTYPE_H
#include <Python.h>

static inline void osv_heap_dealloc(PyObject *op, inquiry clear)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

#endif
