/* osvirt._fastlock: `with mutex:` and `with semaphore:` without leaving C, and
 * the hot methods of osvirt.sync's Event and Condition.
 *
 * The one C file in osvirt that uses the Python API, and why: a `with` on
 * Python __enter__/__exit__ costs an interpreter frame each way, and each
 * cffi call releases and retakes the GIL and saves errno, so over cffi
 * `with Mutex():` cost more than `with multiprocessing.Lock():`, whose
 * methods are C that keep the GIL (`osvirt bench mutex` measures both). These
 * base types give osvirt.sync's Mutex, Lock, RLock and Semaphore
 * __enter__/__exit__ (and the semaphore's acquire/release) in C that make the
 * one call that cannot block (pthread_mutex_trylock/unlock, sem_trywait/post)
 * with the GIL held.
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
 *
 * Event and Condition (EventFastPath, ConditionFastPath) wait too, on futex
 * words (csrc/inline/event.h, condition.h): an untimed wait() sleeps whole in
 * C with the keepers held, so a close() meanwhile cannot unmap the memory, and
 * the GIL released (kept by a process with one thread: keep_gil_asleep); a
 * signal handler runs when the futex wait returns EINTR.
 * A timeout, and a dead holder to report, go on in Python: _wait(...),
 * _wait_on(err). The condition reads the holder of its lock's mutex where
 * glibc keeps it (the robust futex word's TID, or __owner for a non-robust
 * one), as osvirt.sync does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <time.h>
#include <unistd.h>

#include "../sync.h"
#include "heaptype.h"
#include "../inline/condition.h"
#include "../inline/event.h"

#define FUTEX_TID_MASK 0x3fffffff

typedef struct {
    PyObject_HEAD
    void *object;      /* the pthread_mutex_t, sem_t, osv_monitor or osv_condition; NULL while unbound */
    PyObject *keeper;  /* keeps the mapping `object` lives in alive while bound */
    pthread_mutex_t *mutex;    /* a Condition's lock, bound by _bind_lock */
    PyObject *mutex_keeper;
    int64_t *count;            /* the lock's count when it is an RLock, else NULL */
} FastPath;

typedef int (*op_fn)(void *object);  /* 0, or an error number */

static int mutex_acquire(void *m) { return pthread_mutex_trylock(m); }
static int mutex_release(void *m) { return pthread_mutex_unlock(m); }
static int sem_acquire(void *s) { return sem_trywait(s) == 0 ? 0 : errno; }
static int sem_release(void *s) { return sem_post(s) == 0 ? 0 : errno; }

/* self._<name>(err): err an int, or None when `object` is unbound. */
static PyObject *slow_path(FastPath *self, const char *name, void *object, int err)
{
    PyObject *arg = object ? PyLong_FromLong(err) : Py_NewRef(Py_None);
    if (arg == NULL)
        return NULL;
    PyObject *result = PyObject_CallMethod((PyObject *)self, name, "O", arg);
    Py_DECREF(arg);
    return result;
}

/* self.<name>(*args, **kwargs): a method's Python rest. The methods that have one
 * are METH_FASTCALL | METH_KEYWORDS (no argument tuple a call), so they hand on
 * their arguments as they came. (CPython 3.11's specialized call of a C method
 * wants self's type to be the method's own: osvirt's Python subclasses miss it.) */
static PyObject *python_rest(PyObject *op, const char *name, PyObject *const *args, Py_ssize_t n,
                             PyObject *kwnames)
{
    PyObject *method = PyObject_GetAttrString(op, name);
    if (method == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, n, kwnames);
    Py_DECREF(method);
    return result;
}

/* wait() or wait(None): a wait without a timeout. */
static int untimed(PyObject *const *args, Py_ssize_t n, PyObject *kwnames)
{
    return kwnames == NULL && (n == 0 || (n == 1 && args[0] == Py_None));
}

/* `object`: the pthread object a `with` takes (a Condition's: its lock's mutex). */
static PyObject *enter(FastPath *self, void *object, op_fn acquire)
{
    int err = object ? acquire(object) : -1;
    if (err == 0)
        return Py_NewRef(self);
    PyObject *result = slow_path(self, "_enter_slow", object, err);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);
    return Py_NewRef(self);
}

static PyObject *exit_(FastPath *self, void *object, op_fn release)
{
    int err = object ? release(object) : -1;
    if (err == 0)
        Py_RETURN_NONE;  /* a false value: an exception in the block propagates */
    PyObject *result = slow_path(self, "_exit_slow", object, err);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *mutex_enter(PyObject *op, PyObject *unused)
{
    return enter((FastPath *)op, ((FastPath *)op)->object, mutex_acquire);
}

static PyObject *sem_enter(PyObject *op, PyObject *unused)
{
    return enter((FastPath *)op, ((FastPath *)op)->object, sem_acquire);
}

/* METH_FASTCALL: __exit__'s three arguments are not looked at (nor packed in a tuple). */
static PyObject *mutex_exit(PyObject *op, PyObject *const *args, Py_ssize_t n)
{
    return exit_((FastPath *)op, ((FastPath *)op)->object, mutex_release);
}

static PyObject *sem_exit(PyObject *op, PyObject *const *args, Py_ssize_t n)
{
    return exit_((FastPath *)op, ((FastPath *)op)->object, sem_release);
}

/* Semaphore.acquire(): acquire() that finds the count above 0 is a sem_trywait;
 * any other call (arguments, a wait) is the Python _acquire(...). */
static PyObject *sem_acquire_method(PyObject *op, PyObject *const *args, Py_ssize_t n, PyObject *kwnames)
{
    FastPath *self = (FastPath *)op;
    if (n == 0 && kwnames == NULL && self->object && sem_trywait(self->object) == 0)
        Py_RETURN_TRUE;
    return python_rest(op, "_acquire", args, n, kwnames);
}

/* Semaphore.release(): release() is a sem_post; release(n) is the Python _release(n). */
static PyObject *sem_release_method(PyObject *op, PyObject *const *args, Py_ssize_t n, PyObject *kwnames)
{
    if (n == 0 && kwnames == NULL)
        return exit_((FastPath *)op, ((FastPath *)op)->object, sem_release);
    return python_rest(op, "_release", args, n, kwnames);
}

/* OSError(err, strerror, facility), its subclass chosen by errno. */
static PyObject *os_error(int err, const char *facility)
{
    PyObject *args = Py_BuildValue("(iss)", err, strerror(err), facility);
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* Whether a wait may sleep with the GIL held. Only when this process has one
 * thread: then no thread wants the GIL while its only thread sleeps, and none
 * can come to be (threads are made by running threads). glibc's
 * __libc_single_threaded is true only while there is one thread: the first
 * pthread_create clears it, a foreign C library's too (whose thread may later
 * call PyGILState_Ensure). Keeping the GIL saves its release and retake around
 * the sleep, which run cold after the context switch (osvirt bench cond-rtt,
 * event-wake). */
static int keep_gil_asleep(void) { return __libc_single_threaded; }

/* result = call, a sleep: with the GIL released unless keep_gil_asleep(). */
#define ASLEEP(result, call)                                                   \
    do {                                                                       \
        if (keep_gil_asleep()) {                                               \
            result = (call);                                                   \
        } else {                                                               \
            Py_BEGIN_ALLOW_THREADS result = (call); Py_END_ALLOW_THREADS       \
        }                                                                      \
    } while (0)

/* -- Event: one futex word (csrc/inline/event.h); after close(), _live() raises. -- */
static PyObject *event_set(PyObject *op, PyObject *unused)
{
    osv_event *e = ((FastPath *)op)->object;
    if (e == NULL)
        return PyObject_CallMethod(op, "_live", NULL);
    int err = osv_event_raise(e);
    if (err != 0)
        return os_error(err, "futex(FUTEX_WAKE_OP)");
    Py_RETURN_NONE;
}

static PyObject *event_clear(PyObject *op, PyObject *unused)
{
    osv_event *e = ((FastPath *)op)->object;
    if (e == NULL)
        return PyObject_CallMethod(op, "_live", NULL);
    osv_event_lower(e);
    Py_RETURN_NONE;
}

static PyObject *event_is_set(PyObject *op, PyObject *unused)
{
    osv_event *e = ((FastPath *)op)->object;
    if (e == NULL)
        return PyObject_CallMethod(op, "_live", NULL);
    return PyBool_FromLong(osv_event_word(e) & 1);
}

/* Event.wait() without a timeout, whole: sleep until the word changes, the GIL
 * released (keep_gil_asleep) and the keeper held (a close() meanwhile cannot
 * unmap it); a signal handler runs on EINTR, and its exception ends the wait.
 * A timeout is the Python _wait(timeout). */
static PyObject *event_wait(PyObject *op, PyObject *const *args, Py_ssize_t n, PyObject *kwnames)
{
    FastPath *self = (FastPath *)op;
    osv_event *e = self->object;
    if (e == NULL || !untimed(args, n, kwnames))
        return python_rest(op, "_wait", args, n, kwnames);
    uint32_t seen = osv_event_word(e);
    if (seen & 1)
        Py_RETURN_TRUE;
    PyObject *keeper = Py_NewRef(self->keeper);
    int err = 0;
    while (osv_event_word(e) == seen) {
        if (err == EINTR && PyErr_CheckSignals() < 0)
            break;
        ASLEEP(err, osv_futex_sleep(&e->word, seen, NULL));
        if (err != 0 && err != EINTR) {
            os_error(err, "futex(FUTEX_WAIT_BITSET)");
            break;
        }
    }
    Py_DECREF(keeper);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_TRUE;
}

/* -- Condition: its futex word and counts, and its lock's mutex (_bind_lock). -- */

/* The calling thread's TID, kept per thread: gettid() is a system call, and
 * notify() and wait() ask it every time. A forked child's one thread has a TID
 * of its own: the fork handler (exec_module) forgets the one kept. Initial-exec:
 * a load off %fs, not a __tls_get_addr call each time (glibc keeps static TLS
 * room for a dlopen'ed module's few bytes). */
static __thread int kept_tid __attribute__((tls_model("initial-exec")));
static int tid_kept_safely;  /* the fork handler is registered */
static void forget_tid(void) { kept_tid = 0; }

static int caller_tid(void)
{
    if (!tid_kept_safely)
        return gettid();
    if (kept_tid == 0)
        kept_tid = gettid();
    return kept_tid;
}

static int held_by_caller(pthread_mutex_t *m)
{
    int tid = caller_tid();
    return (__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) & FUTEX_TID_MASK) == tid
           || __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) == tid;
}

/* -- RLock: an error-checking robust mutex, and just past it the count its holder
 * keeps (osvirt.sync.lock). -- */
static int64_t *rlock_count(void *m) { return (int64_t *)((char *)m + sizeof(pthread_mutex_t)); }

static int rlock_acquire(void *m)
{
    int err = pthread_mutex_trylock(m);
    if (err == 0)
        *rlock_count(m) = 1;
    else if (err == EDEADLK) {  /* held by this thread: one level more */
        ++*rlock_count(m);
        err = 0;
    }
    return err;
}

static int rlock_release(void *m)
{
    if (!held_by_caller(m))
        return EPERM;
    int64_t *count = rlock_count(m);
    if (*count > 1) {
        --*count;
        return 0;
    }
    *count = 0;  /* before the unlock: the next holder sets it */
    return pthread_mutex_unlock(m);
}

static PyObject *rlock_enter(PyObject *op, PyObject *unused)
{
    return enter((FastPath *)op, ((FastPath *)op)->object, rlock_acquire);
}

static PyObject *rlock_exit(PyObject *op, PyObject *const *args, Py_ssize_t n)
{
    return exit_((FastPath *)op, ((FastPath *)op)->object, rlock_release);
}

/* `with cond:` takes the lock as the lock's own `with` does (an RLock's: a level). */
static PyObject *cond_enter(PyObject *op, PyObject *unused)
{
    FastPath *self = (FastPath *)op;
    return enter(self, self->mutex, self->count ? rlock_acquire : mutex_acquire);
}

static PyObject *cond_exit(PyObject *op, PyObject *const *args, Py_ssize_t n)
{
    FastPath *self = (FastPath *)op;
    return exit_(self, self->mutex, self->count ? rlock_release : mutex_release);
}

/* Condition.notify(): wakes one waiter (csrc/inline/condition.h); notify(n) and
 * anything unusual (closed, not held) is the Python _notify(...). */
static PyObject *cond_notify(PyObject *op, PyObject *const *args, Py_ssize_t n, PyObject *kwnames)
{
    FastPath *self = (FastPath *)op;
    osv_condition *c = self->object;
    if (c == NULL || self->mutex == NULL || n != 0 || kwnames != NULL || !held_by_caller(self->mutex))
        return python_rest(op, "_notify", args, n, kwnames);
    int err = osv_cv_wake(c, 1);
    if (err != 0)
        return os_error(err, "futex(FUTEX_WAKE_OP)");
    Py_RETURN_NONE;
}

/* Condition.wait() without a timeout, on a lock the caller holds, whole: sleep until
 * a notify is owed, the GIL released (keep_gil_asleep) and the keepers held; a signal
 * handler runs on EINTR, with the lock held again (as threading's), and its exception
 * ends the wait.
 * A timeout, and what the lock reports (EOWNERDEAD: OwnerDead), are Python's (_wait,
 * _wait_on). */
static PyObject *cond_wait(PyObject *op, PyObject *const *args, Py_ssize_t n, PyObject *kwnames)
{
    FastPath *self = (FastPath *)op;
    osv_condition *c = self->object;
    pthread_mutex_t *m = self->mutex;
    if (c == NULL || m == NULL || !untimed(args, n, kwnames) || !held_by_caller(m))
        return python_rest(op, "_wait", args, n, kwnames);
    PyObject *keeper = Py_NewRef(self->keeper), *mutex_keeper = Py_NewRef(self->mutex_keeper);
    int64_t levels = self->count ? *self->count : 0;  /* an RLock's: the next holders write it */
    int64_t notifies = osv_cv_enter(c);
    int err, notified = 0;
    for (;;) {
        ASLEEP(err, osv_cv_sleep(c, m, NULL));
        if (err != 0 && err != EINTR)
            break;
        if ((notified = osv_cv_take(c, notifies)))
            break;
        if (err == EINTR && PyErr_CheckSignals() < 0)
            break;
    }
    osv_cv_leave(c);  /* the lock held again, unless it failed for good (ENOTRECOVERABLE) */
    if (self->count)
        *self->count = levels;
    Py_DECREF(keeper);
    Py_DECREF(mutex_keeper);
    if (notified)
        Py_RETURN_TRUE;
    if (PyErr_Occurred())
        return NULL;
    return PyObject_CallMethod(op, "_wait_on", "i", err);
}

/* Use what is at `address`, keeping `keeper` alive. */
static PyObject *use(void **object, PyObject **keeper_slot, PyObject *keeper, uintptr_t address)
{
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "address 0");
        return NULL;
    }
    PyObject *old = *keeper_slot;
    *keeper_slot = Py_NewRef(keeper);
    *object = (void *)address;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyObject *bind(PyObject *op, PyObject *args)
{
    FastPath *self = (FastPath *)op;
    PyObject *keeper;
    uintptr_t address;
    if (!PyArg_ParseTuple(args, "OK:_bind", &keeper, &address))
        return NULL;
    return use(&self->object, &self->keeper, keeper, address);
}

/* _bind_lock(keeper, address, count_address): count_address 0 unless the lock is an RLock. */
static PyObject *bind_lock(PyObject *op, PyObject *args)
{
    FastPath *self = (FastPath *)op;
    PyObject *keeper;
    uintptr_t address, count;
    if (!PyArg_ParseTuple(args, "OKK:_bind_lock", &keeper, &address, &count))
        return NULL;
    PyObject *result = use((void **)&self->mutex, &self->mutex_keeper, keeper, address);
    if (result != NULL)
        self->count = (int64_t *)count;
    return result;
}

static int clear(PyObject *op)
{
    FastPath *self = (FastPath *)op;
    self->object = NULL;
    self->mutex = NULL;
    self->count = NULL;
    Py_CLEAR(self->keeper);
    Py_CLEAR(self->mutex_keeper);
    return 0;
}

static PyObject *unbind(PyObject *op, PyObject *unused)
{
    clear(op);
    Py_RETURN_NONE;
}

static int traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((FastPath *)op)->keeper);
    Py_VISIT(((FastPath *)op)->mutex_keeper);
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static void dealloc(PyObject *op) { osv_heap_dealloc(op, clear); }

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

static PyMethodDef rlock_methods[] = {
    {"__enter__", rlock_enter, METH_NOARGS,
     "pthread_mutex_trylock, or one level more for its holder; anything else goes to _enter_slow(err)."},
    {"__exit__", (PyCFunction)(void (*)(void))rlock_exit, METH_FASTCALL,
     "One level less, pthread_mutex_unlock at the last; anything else goes to _exit_slow(err)."},
    BIND_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyMethodDef sem_methods[] = {
    {"__enter__", sem_enter, METH_NOARGS, "sem_trywait; anything but 0 goes to _enter_slow(errno)."},
    {"__exit__", (PyCFunction)(void (*)(void))sem_exit, METH_FASTCALL,
     "sem_post; anything but 0 goes to _exit_slow(errno)."},
    {"acquire", (PyCFunction)(void (*)(void))sem_acquire_method, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=None)\n--\n\n"
     "Decrement, waiting while the count is 0 (threading's arguments); True, or False\n"
     "when not blocking or when `timeout` passed first."},
    {"release", (PyCFunction)(void (*)(void))sem_release_method, METH_FASTCALL | METH_KEYWORDS,
     "release(n=1)\n--\n\n"
     "Increment by n, waking as many waiters (sem_post); OSError(EOVERFLOW) past SEM_VALUE_MAX."},
    BIND_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyMethodDef event_methods[] = {
    {"set", event_set, METH_NOARGS, "set()\n--\n\nRaise the flag and wake every waiter."},
    {"clear", event_clear, METH_NOARGS, "clear()\n--\n\nLower the flag."},
    {"is_set", event_is_set, METH_NOARGS, "is_set()\n--\n\nThe flag now (one load: a snapshot)."},
    {"wait", (PyCFunction)(void (*)(void))event_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nBlock until the flag is set or `timeout` passed; whether it was set."},
    BIND_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyMethodDef cond_methods[] = {
    {"__enter__", cond_enter, METH_NOARGS, "pthread_mutex_trylock of the lock; anything but 0 goes to _enter_slow(err)."},
    {"__exit__", (PyCFunction)(void (*)(void))cond_exit, METH_FASTCALL,
     "pthread_mutex_unlock of the lock; anything but 0 goes to _exit_slow(err)."},
    {"notify", (PyCFunction)(void (*)(void))cond_notify, METH_FASTCALL | METH_KEYWORDS,
     "notify(n=1)\n--\n\nWake up to `n` waiters; RuntimeError unless the caller holds the lock."},
    {"wait", (PyCFunction)(void (*)(void))cond_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nRelease the lock, wait for a notify, take the lock again; False when\n"
     "`timeout` passed. Raises OwnerDead (lock held) if a holder of the lock died meanwhile."},
    {"_bind_lock", bind_lock, METH_VARARGS,
     "_bind_lock(keeper, address, count_address): the lock's mutex (and an RLock's count), keeping `keeper` alive."},
    BIND_METHODS,
    {NULL, NULL, 0, NULL},
};

#define FASTPATH_SLOTS(methods) \
    {Py_tp_methods, methods}, {Py_tp_traverse, traverse}, {Py_tp_clear, clear}, \
    {Py_tp_dealloc, dealloc}, {Py_tp_new, PyType_GenericNew}, {0, NULL}

static PyType_Slot mutex_slots[] = {FASTPATH_SLOTS(mutex_methods)};
static PyType_Slot sem_slots[] = {FASTPATH_SLOTS(sem_methods)};
static PyType_Slot rlock_slots[] = {FASTPATH_SLOTS(rlock_methods)};
static PyType_Slot event_slots[] = {FASTPATH_SLOTS(event_methods)};
static PyType_Slot cond_slots[] = {FASTPATH_SLOTS(cond_methods)};

#define FASTPATH_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC)

static PyType_Spec mutex_spec = {"osvirt._fastlock.MutexFastPath", sizeof(FastPath), 0, FASTPATH_FLAGS, mutex_slots};
static PyType_Spec sem_spec = {"osvirt._fastlock.SemaphoreFastPath", sizeof(FastPath), 0, FASTPATH_FLAGS, sem_slots};
static PyType_Spec rlock_spec = {"osvirt._fastlock.RLockFastPath", sizeof(FastPath), 0, FASTPATH_FLAGS, rlock_slots};
static PyType_Spec event_spec = {"osvirt._fastlock.EventFastPath", sizeof(FastPath), 0, FASTPATH_FLAGS, event_slots};
static PyType_Spec cond_spec = {"osvirt._fastlock.ConditionFastPath", sizeof(FastPath), 0, FASTPATH_FLAGS, cond_slots};

static int exec_module(PyObject *module)
{
    if (!tid_kept_safely)
        tid_kept_safely = pthread_atfork(NULL, NULL, forget_tid) == 0;
    /* RLockFastPath derives from MutexFastPath (the same layout), so that RLock can
     * derive from both it and osvirt.sync's BaseMutex. */
    static struct { const char *name; PyType_Spec *spec; const char *base; } types[] = {
        {"MutexFastPath", &mutex_spec, NULL}, {"RLockFastPath", &rlock_spec, "MutexFastPath"},
        {"SemaphoreFastPath", &sem_spec, NULL}, {"EventFastPath", &event_spec, NULL},
        {"ConditionFastPath", &cond_spec, NULL},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        PyObject *base = types[i].base ? PyObject_GetAttrString(module, types[i].base) : NULL;
        if (types[i].base && base == NULL)
            return -1;
        PyObject *type = PyType_FromModuleAndSpec(module, types[i].spec, base);
        Py_XDECREF(base);
        if (type == NULL || PyModule_AddObject(module, types[i].name, type) < 0) {
            Py_XDECREF(type);
            return -1;
        }
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "osvirt._fastlock",
    "C paths of osvirt.sync's Mutex, Lock, RLock, Semaphore, Event and Condition (see csrc/cpython/fastlock.c).",
    0, NULL, module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastlock(void)
{
    return PyModuleDef_Init(&module_def);
}
