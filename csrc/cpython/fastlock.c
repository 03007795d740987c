/* osvirt._fastlock: `with mutex:` and `with semaphore:` without leaving C.
 *
 * The one C file in osvirt that uses the Python API, and why: a `with` on
 * Python __enter__/__exit__ costs an interpreter frame each way, and each
 * cffi call releases and retakes the GIL and saves errno (~60 ns), so over
 * cffi `with Mutex():` cost 1.35x `with multiprocessing.Lock():`, whose
 * methods are C that keep the GIL. These base types give osvirt.sync's Mutex
 * and Semaphore __enter__/__exit__ (and the semaphore's acquire/release)
 * in C that make the one call that cannot block (pthread_mutex_trylock/unlock,
 * sem_trywait/post) with the GIL held.
 *
 * No policy here: anything but success (busy, owner died, an error, used
 * after close) calls the Python method _enter_slow(err) or _exit_slow(err)
 * with the error number (None when unbound), or _acquire(...) and _release(...)
 * with the semaphore's arguments, which wait with the GIL
 * released, raises OwnerDead, names the failing call. The object's address
 * comes from osvirt.sync through _bind(keeper, address), checked there for
 * size and alignment; `keeper` (the cffi pointer, a buffer export of the
 * mapping) keeps the memory mapped while bound, and _unbind() (close) drops
 * both. The GIL is held from check to call, so no thread unbinds in between.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    void *object;      /* the pthread_mutex_t or sem_t; NULL while unbound */
    PyObject *keeper;  /* keeps the mapping `object` lives in alive while bound */
} FastPath;

typedef int (*op_fn)(void *object);  /* 0, or an error number */

static int mutex_acquire(void *m) { return pthread_mutex_trylock(m); }
static int mutex_release(void *m) { return pthread_mutex_unlock(m); }
static int sem_acquire(void *s) { return sem_trywait(s) == 0 ? 0 : errno; }
static int sem_release(void *s) { return sem_post(s) == 0 ? 0 : errno; }

/* self._<name>(err): err an int, or None when unbound. */
static PyObject *slow_path(FastPath *self, const char *name, int err)
{
    PyObject *arg = self->object ? PyLong_FromLong(err) : Py_NewRef(Py_None);
    if (arg == NULL)
        return NULL;
    PyObject *result = PyObject_CallMethod((PyObject *)self, name, "O", arg);
    Py_DECREF(arg);
    return result;
}

static PyObject *enter(FastPath *self, op_fn acquire)
{
    int err = self->object ? acquire(self->object) : -1;
    if (err == 0)
        return Py_NewRef(self);
    PyObject *result = slow_path(self, "_enter_slow", err);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);
    return Py_NewRef(self);
}

static PyObject *exit_(FastPath *self, op_fn release)
{
    int err = self->object ? release(self->object) : -1;
    if (err == 0)
        Py_RETURN_NONE;  /* a false value: an exception in the block propagates */
    PyObject *result = slow_path(self, "_exit_slow", err);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *mutex_enter(PyObject *self, PyObject *unused) { return enter((FastPath *)self, mutex_acquire); }
static PyObject *sem_enter(PyObject *self, PyObject *unused) { return enter((FastPath *)self, sem_acquire); }
/* METH_FASTCALL: __exit__'s three arguments are not looked at (nor packed in a tuple). */
static PyObject *mutex_exit(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    return exit_((FastPath *)self, mutex_release);
}

static PyObject *sem_exit(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    return exit_((FastPath *)self, sem_release);
}

/* Semaphore.acquire(): acquire() that finds the count above 0 is a sem_trywait;
 * any other call (arguments, a wait) is the Python _acquire(...). */
static PyObject *sem_acquire_method(PyObject *op, PyObject *args, PyObject *kwargs)
{
    FastPath *self = (FastPath *)op;
    if (PyTuple_GET_SIZE(args) == 0 && kwargs == NULL && self->object && sem_trywait(self->object) == 0)
        Py_RETURN_TRUE;
    PyObject *acquire = PyObject_GetAttrString(op, "_acquire");
    if (acquire == NULL)
        return NULL;
    PyObject *result = PyObject_Call(acquire, args, kwargs);
    Py_DECREF(acquire);
    return result;
}

/* Semaphore.release(): release() is a sem_post; release(n) is the Python _release(n). */
static PyObject *sem_release_method(PyObject *op, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) == 0 && kwargs == NULL)
        return exit_((FastPath *)op, sem_release);
    PyObject *release = PyObject_GetAttrString(op, "_release");
    if (release == NULL)
        return NULL;
    PyObject *result = PyObject_Call(release, args, kwargs);
    Py_DECREF(release);
    return result;
}

static PyObject *bind(PyObject *op, PyObject *args)
{
    FastPath *self = (FastPath *)op;
    PyObject *keeper;
    uintptr_t address;
    if (!PyArg_ParseTuple(args, "OK:_bind", &keeper, &address))
        return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "_bind: address 0");
        return NULL;
    }
    PyObject *old = self->keeper;
    self->keeper = Py_NewRef(keeper);
    self->object = (void *)address;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyObject *unbind(PyObject *op, PyObject *unused)
{
    FastPath *self = (FastPath *)op;
    self->object = NULL;
    Py_CLEAR(self->keeper);
    Py_RETURN_NONE;
}

static int traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((FastPath *)op)->keeper);
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static int clear(PyObject *op)
{
    ((FastPath *)op)->object = NULL;
    Py_CLEAR(((FastPath *)op)->keeper);
    return 0;
}

static void dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

#define BIND_METHODS \
    {"_bind", bind, METH_VARARGS, "_bind(keeper, address): use the object at `address`, keeping `keeper` alive."}, \
    {"_unbind", unbind, METH_NOARGS, "_unbind(): stop using it (every later call takes the slow path)."}

static PyMethodDef mutex_methods[] = {
    {"__enter__", mutex_enter, METH_NOARGS, "pthread_mutex_trylock; anything but 0 goes to _enter_slow(err)."},
    {"__exit__", (PyCFunction)(void (*)(void))mutex_exit, METH_FASTCALL,
     "pthread_mutex_unlock; anything but 0 goes to _exit_slow(err)."},
    BIND_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyMethodDef sem_methods[] = {
    {"__enter__", sem_enter, METH_NOARGS, "sem_trywait; anything but 0 goes to _enter_slow(errno)."},
    {"__exit__", (PyCFunction)(void (*)(void))sem_exit, METH_FASTCALL,
     "sem_post; anything but 0 goes to _exit_slow(errno)."},
    {"acquire", (PyCFunction)(void (*)(void))sem_acquire_method, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=None)\n--\n\n"
     "Decrement, waiting while the count is 0 (threading's arguments); True, or False\n"
     "when not blocking or when `timeout` passed first."},
    {"release", (PyCFunction)(void (*)(void))sem_release_method, METH_VARARGS | METH_KEYWORDS,
     "release(n=1)\n--\n\n"
     "Increment by n, waking as many waiters (sem_post); OSError(EOVERFLOW) past SEM_VALUE_MAX."},
    BIND_METHODS,
    {NULL, NULL, 0, NULL},
};

#define FASTPATH_SLOTS(methods) \
    {Py_tp_methods, methods}, {Py_tp_traverse, traverse}, {Py_tp_clear, clear}, \
    {Py_tp_dealloc, dealloc}, {Py_tp_new, PyType_GenericNew}, {0, NULL}

static PyType_Slot mutex_slots[] = {FASTPATH_SLOTS(mutex_methods)};
static PyType_Slot sem_slots[] = {FASTPATH_SLOTS(sem_methods)};

#define FASTPATH_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC)

static PyType_Spec mutex_spec = {"osvirt._fastlock.MutexFastPath", sizeof(FastPath), 0, FASTPATH_FLAGS, mutex_slots};
static PyType_Spec sem_spec = {"osvirt._fastlock.SemaphoreFastPath", sizeof(FastPath), 0, FASTPATH_FLAGS, sem_slots};

static int exec_module(PyObject *module)
{
    PyObject *mutex = PyType_FromModuleAndSpec(module, &mutex_spec, NULL);
    if (mutex == NULL || PyModule_AddObject(module, "MutexFastPath", mutex) < 0) {
        Py_XDECREF(mutex);
        return -1;
    }
    PyObject *sem = PyType_FromModuleAndSpec(module, &sem_spec, NULL);
    if (sem == NULL || PyModule_AddObject(module, "SemaphoreFastPath", sem) < 0) {
        Py_XDECREF(sem);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "osvirt._fastlock",
    "C __enter__/__exit__ for osvirt.sync.Mutex and Semaphore (see csrc/cpython/fastlock.c).",
    0, NULL, module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastlock(void)
{
    return PyModuleDef_Init(&module_def);
}
