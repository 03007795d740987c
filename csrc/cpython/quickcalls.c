/* osvirt._quickcalls: hot system calls, the GIL released only where one may wait.
 *
 * Why a second C file over the Python API (after fastlock.c): a cffi call
 * always releases and retakes the GIL and saves errno around the C function
 * (~55-60 ns), and converts its arguments through a tuple (~20-40 ns), so
 * the bare cffi call of ioctl(FIONREAD) already cost ~1.6x the C loop, and
 * an mprotect or an mmap + munmap ~1.2-1.3x. ioctl_int's requests (answers
 * the driver has at hand), mprotect, mmap and munmap wait for nothing but a
 * kernel lock held for a short while (the mm's mmap_lock), never for
 * another process: nothing is gained by letting other threads run during
 * them. These functions are METH_FASTCALL (no tuple), parse their ints,
 * make the one call with the GIL held and return its answer. One exception:
 * an mmap of a file, or with MAP_POPULATE, may wait for the file's driver or
 * for pages read in, so it releases the GIL as cffi would. (Work that only
 * grows with the length, such as munmap of a large populated mapping, is
 * held like any C function's CPU work.) sigqueue never waits; sigtimedwait
 * takes a signal already pending with the GIL held (a zero timeout) and
 * releases it only to wait for one, as the trylock-then-wait paths of
 * fastlock.c do.
 *
 * Measured on the bench machine (2-core AMD EPYC, Python 3.11.7; timeit of
 * the bare call, best of 7, next to osvirt bench's C loop of the same call):
 *   ioctl(FIONREAD)           295 ns, C loop 267 ns: 1.10x (over cffi 1.6x)
 *   mprotect there and back  1.93 us, C loop 1.84 us: 1.05x (over cffi 1.3x)
 *   mmap + munmap of 1 MiB   3.29 us, C loop 3.07 us: 1.07x (over cffi 1.2x)
 *   sigqueue + sigtimedwait  1.95 us, C loop 1.68 us: 1.16x (over cffi 1.3x)
 * The ~15-30 ns left a call is the call of a builtin and the parse of its
 * ints. Above that, osvirt's paths paid for Python: ioctl_int ~350 ns
 * (1.31x; bench row fionread 1.38-1.43x), ipc.sigqueue then ipc.sigtimedwait
 * 2.8 us (bench rt-signal 1.61-1.67x): each Python function's frame, keyword
 * argument and checks, and for sigtimedwait the signal set made a mask and
 * QueuedSignal made. Their valid calls are now made here, checks included
 * (`checked`, below): 2026-11-27, load ~2, ioctl_int(fd, FIONREAD, name=...)
 * 371-395 ns against the bare call's 328-358 (the ~40 ns left: a call with a
 * keyword to a callable that is not a builtin, which 3.11 does not
 * specialize; made a call to a class, which it does, below: 1.05x); bench
 * rt-signal 0.98-1.14x its floor. Two Mapping.mprotect
 * calls: bench 1.00-1.22x (two method calls, ~45 ns each, and their checks).
 * mmap-1m stays above its floor because of the owner object, not the calls:
 * in the bench's loop a minimal Python owner around the same two calls
 * (__init__ that maps, close that unmaps, __del__ = close) costs 1.13x them
 * (6.37 us against 5.63), Mapping 1.24x (7.0 us: its checks, keyword-only
 * signature and instance attributes); with Mapping(size), close() and
 * mprotect(prot) made by `checked` below, Mapping costs what the minimal
 * owner does (1.14x against 1.12x, 1.20x against 1.24x: two runs at load 2).
 * mprotect(prot) made here costs about what the Python method did (two calls:
 * 2.19 us against 2.22, the bare calls 1.98): a method call to a callable
 * 3.11 does not specialize, and three attribute reads through the C API,
 * cost what the interpreter's specialized ones do. close() and mprotect(prot)
 * now read the mapping's fields in the object (MappingBase, below): mprotect
 * 1.03-1.04x the bare calls, one process, batches interleaved.
 *
 * No policy here (`checked` only recognizes a call its Python function would
 * pass, and hands any other to it): the callers in osvirt.device, osvirt.memory and osvirt.ipc (through
 * their _native.py) check every value (the fd and request, the range inside
 * a mapping they own), explain a refusal, and turn the OSError raised here
 * (errno only) into kernel_error naming the facility. No Python object
 * passed can crash the interpreter or reach the kernel truncated: anything
 * but exactly an int (a bool, a float, an int subclass) is a TypeError, an
 * int out of its C type's range an OverflowError, both before any system
 * call. Where that range is the caller's (ioctl_int), the caller lets this
 * refusal be its valid path's check and runs its own only after it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <limits.h>
#include <mqueue.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <time.h>
#include <unistd.h>

#include "../device.h"  /* OSV_IOCTL_ARG_MAX */
#include "heaptype.h"

/* The argument count, or TypeError. */
static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, expected, nargs);
    return -1;
}

/* Exactly an int, or TypeError: not a bool or another subclass, no __index__,
 * no float (the callers' checks take those apart and explain them). */
static int check_int(const char *name, PyObject *arg)
{
    if (PyLong_CheckExact(arg))
        return 0;
    PyErr_Format(PyExc_TypeError, "%s(): an int is required, not %.100s", name, Py_TYPE(arg)->tp_name);
    return -1;
}

/* OverflowError for an int outside the C range `range`, named after the call
 * (in place of PyLong_As*'s own, which names neither); another error stays. */
static int out_of_range(const char *name, PyObject *arg, const char *range)
{
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
    }
    PyErr_Format(PyExc_OverflowError, "%s(): %R is not in %s", name, arg, range);
    return -1;
}

/* A C int. */
static int arg_int(const char *name, PyObject *arg, int *out)
{
    if (check_int(name, arg) < 0)
        return -1;
    long value = PyLong_AsLong(arg);
    if ((value == -1 && PyErr_Occurred()) || value < INT_MIN || value > INT_MAX)
        return out_of_range(name, arg, "a C int's range");
    *out = (int)value;
    return 0;
}

/* A C long (off_t on Linux's 64-bit ABIs). */
static int arg_long(const char *name, PyObject *arg, long *out)
{
    if (check_int(name, arg) < 0)
        return -1;
    *out = PyLong_AsLong(arg);
    return *out == -1 && PyErr_Occurred() ? out_of_range(name, arg, "a C long's range") : 0;
}

/* An unsigned number in 0..max (an address, a length, an ioctl request, a
 * descriptor). */
static int arg_unsigned(const char *name, PyObject *arg, unsigned long max, unsigned long *out)
{
    if (check_int(name, arg) < 0)
        return -1;
    *out = PyLong_AsUnsignedLong(arg);
    if ((*out == (unsigned long)-1 && PyErr_Occurred()) || *out > max) {
        char range[48];
        snprintf(range, sizeof range, "0..%lu", max);
        return out_of_range(name, arg, range);
    }
    return 0;
}

/* fd in 0..INT_MAX and request in 0..UINT_MAX (the kernel's unsigned int
 * cmd): exactly the ranges osvirt.device.ioctl accepts, so ioctl_int there
 * calls this first and checks (and explains) only what it refuses. */
static PyObject *ioctl_int(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long fd, request;
    if (check_nargs("ioctl_int", nargs, 2) < 0 || arg_unsigned("ioctl_int", args[0], INT_MAX, &fd) < 0
        || arg_unsigned("ioctl_int", args[1], UINT_MAX, &request) < 0)
        return NULL;
    /* Only `value` is read back; `room` is for a request that writes more
     * (as much as fcntl.ioctl's buffer): it cannot overrun the stack. */
    union {
        int value;
        unsigned char room[OSV_IOCTL_ARG_MAX];
    } arg;
    arg.value = 0;
    if (ioctl((int)fd, request, &arg) == -1)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(arg.value);
}

static PyObject *mprotect_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long addr, length;
    int prot;
    if (check_nargs("mprotect", nargs, 3) < 0 || arg_unsigned("mprotect", args[0], ULONG_MAX, &addr) < 0
        || arg_unsigned("mprotect", args[1], ULONG_MAX, &length) < 0 || arg_int("mprotect", args[2], &prot) < 0)
        return NULL;
    if (mprotect((void *)(uintptr_t)addr, length, prot) == -1)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *mmap_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long length;
    int prot, flags, fd;
    long offset;
    if (check_nargs("mmap", nargs, 5) < 0 || arg_unsigned("mmap", args[0], ULONG_MAX, &length) < 0
        || arg_int("mmap", args[1], &prot) < 0 || arg_int("mmap", args[2], &flags) < 0
        || arg_int("mmap", args[3], &fd) < 0 || arg_long("mmap", args[4], &offset) < 0)
        return NULL;
    void *address;
    if (fd == -1 && !(flags & MAP_POPULATE)) {  /* nothing to read, no page faulted in yet */
        address = mmap(NULL, length, prot, flags, fd, (off_t)offset);
    } else {  /* a file's mapping (its driver's mmap, a read of its pages) or MAP_POPULATE may wait */
        Py_BEGIN_ALLOW_THREADS
        address = mmap(NULL, length, prot, flags, fd, (off_t)offset);
        Py_END_ALLOW_THREADS  /* keeps errno */
    }
    if (address == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromUnsignedLong((unsigned long)(uintptr_t)address);
}

static PyObject *munmap_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long addr, length;
    if (check_nargs("munmap", nargs, 2) < 0 || arg_unsigned("munmap", args[0], ULONG_MAX, &addr) < 0
        || arg_unsigned("munmap", args[1], ULONG_MAX, &length) < 0)
        return NULL;
    if (munmap((void *)(uintptr_t)addr, length) == -1)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* sigqueue(pid, signo, value), value as si_value.sival_int. It never waits:
 * a full queue at the receiver is EAGAIN. */
static PyObject *sigqueue_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int pid, signo, value;
    if (check_nargs("sigqueue", nargs, 3) < 0 || arg_int("sigqueue", args[0], &pid) < 0
        || arg_int("sigqueue", args[1], &signo) < 0 || arg_int("sigqueue", args[2], &value) < 0)
        return NULL;
    union sigval sv = {.sival_int = value};
    if (sigqueue(pid, signo, sv) == -1)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* (signo, code, value, pid, uid) of an accepted signal: a tuple, or an instance of
 * `type`, a tuple subclass without fields of its own (a typing.NamedTuple). */
static PyObject *siginfo_tuple(const siginfo_t *si, PyTypeObject *type)
{
    long fields[] = {si->si_signo, si->si_code, si->si_value.sival_int, si->si_pid, si->si_uid};
    PyObject *tuple = type == NULL ? PyTuple_New(5) : type->tp_alloc(type, 5);  /* as tuple.__new__(type, ...) */
    for (Py_ssize_t i = 0; tuple != NULL && i < 5; i++) {
        PyObject *field = PyLong_FromLong(fields[i]);
        if (field == NULL)
            Py_CLEAR(tuple);
        else
            PyTuple_SET_ITEM(tuple, i, field);
    }
    return tuple;
}

/* sigtimedwait(set) for a signal already pending, with the GIL held (a zero
 * timeout); only the wait for one (timeout_ns != 0; < 0: forever) releases it.
 * The signal, or -1 and errno (EAGAIN once the timeout passed). */
static int accept_signal(const sigset_t *set, siginfo_t *si, long timeout_ns)
{
    struct timespec wait = {0, 0};
    int sig = sigtimedwait(set, si, &wait);
    if (sig == -1 && errno == EAGAIN && timeout_ns != 0) {
        wait.tv_sec = timeout_ns / 1000000000L;
        wait.tv_nsec = timeout_ns % 1000000000L;
        Py_BEGIN_ALLOW_THREADS
        sig = timeout_ns < 0 ? sigwaitinfo(set, si) : sigtimedwait(set, si, &wait);
        Py_END_ALLOW_THREADS  /* keeps errno */
    }
    return sig;
}

/* Accept one signal of `mask` (bit s - 1 stands for signal s: Linux numbers
 * them 1..64), which the caller keeps blocked: its siginfo_tuple, or None once
 * timeout_ns has passed (EAGAIN); timeout_ns < 0 waits forever (sigwaitinfo).
 * A signal already pending is taken with the GIL held (a zero timeout); only
 * the wait for one releases it. */
static PyObject *sigtimedwait_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long timeout_ns;
    if (check_nargs("sigtimedwait", nargs, 2) < 0 || check_int("sigtimedwait", args[0]) < 0
        || arg_long("sigtimedwait", args[1], &timeout_ns) < 0)
        return NULL;
    unsigned long long mask = PyLong_AsUnsignedLongLong(args[0]);
    if (mask == (unsigned long long)-1 && PyErr_Occurred()) {
        out_of_range("sigtimedwait", args[0], "an unsigned 64-bit mask's range");
        return NULL;
    }
    sigset_t set;
    sigemptyset(&set);
    for (int signo = 1; mask; signo++, mask >>= 1)
        if ((mask & 1) && sigaddset(&set, signo) == -1)
            return PyErr_SetFromErrno(PyExc_OSError);
    siginfo_t si;
    if (accept_signal(&set, &si, timeout_ns) != -1)
        return siginfo_tuple(&si, NULL);
    if (errno == EAGAIN)
        Py_RETURN_NONE;
    return PyErr_SetFromErrno(PyExc_OSError);  /* InterruptedError for EINTR */
}

/* -- public functions whose valid call is made here, checks included -------------
 *
 * A Python function's call (its frame, its keyword argument) costs ~40-120 ns,
 * as much as its checks: ioctl_int(fd, FIONREAD, name=...) around the bare call
 * above cost 1.3x it. checked(kind, function, error[, result_type]) makes a
 * callable that stands for `function` (its __doc__, __name__, __module__,
 * __wrapped__ for inspect.signature, every other attribute too) and takes the
 * calls `function` would pass in one step: arguments of exactly the types and
 * ranges below, nothing more. It makes the system call, returns its answer
 * (an instance of result_type for sigtimedwait), and raises a refusal as
 * error(errno, ...)'s OSError (its context suppressed, as `raise ... from
 * None`). Any other call, a bad one included, is `function`'s own, before any
 * system call: it checks, explains, and may come back here with the values
 * made plain. So the policy stays in Python; C only recognizes the valid
 * call. The message queues' send and receive are methods so made (below):
 * their Python methods cost ~0.65-0.9 us a send + receive over the bare cffi
 * calls, ~1.25-1.4x the bench's round trips (posix-mq, sysv-mq); made here,
 * they cost less than the cffi calls. Each kind returns 1 with *result set,
 * -1 with an exception, 0 to hand the call to `function` (nothing raised),
 * with *result left NULL. */
enum { CHECKED_IOCTL_INT, CHECKED_SIGQUEUE, CHECKED_SIGTIMEDWAIT, CHECKED_MQ_SEND, CHECKED_MQ_RECEIVE,
       CHECKED_MSGSND, CHECKED_MSGRCV, CHECKED_MAPPING_CLOSE, CHECKED_MAPPING_MPROTECT };
static const char *const checked_kinds[] = {"ioctl_int", "sigqueue", "sigtimedwait", "mq_send", "mq_receive",
                                            "msgsnd", "msgrcv", "mapping_close",
                                            "mapping_mprotect", NULL};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;  /* the kind's */
    PyObject *function;     /* the Python function: every other call, and what the object shows */
    PyObject *error;        /* error(errno, ...) -> the OSError naming the call; a method's: a name */
    PyObject *result_type;  /* sigtimedwait's QueuedSignal; NULL otherwise */
} Checked;

/* "name", "fmt", "i", interned: a keyword a call's code names is the same object; and
 * the attributes the message queues' methods read. */
static PyObject *name_str, *fmt_str, *i_str, *type_str, *block_str, *mqd_str, *msgsize_str, *id_str, *msgmax_str,
    *closed_str, *address_str, *size_str, *holes_str, *whole_str;

static int same_str(PyObject *a, PyObject *b)
{
    return a == b || PyUnicode_Compare(a, b) == 0;
}

/* The signals sigfillset gives (signal.valid_signals()): bit s - 1 for signal s. */
static unsigned long long valid_signals;

/* `arg` an int (an int subclass too when `subclass`, never a bool) in lo..hi: its
 * value in *out. Nothing raised either way: 0 means "not for the C path". */
static int int_in(PyObject *arg, int subclass, long lo, long hi, long *out)
{
    if (!(PyLong_CheckExact(arg) || (subclass && PyLong_Check(arg) && !PyBool_Check(arg))))
        return 0;
    int overflow;
    long value = PyLong_AsLongAndOverflow(arg, &overflow);
    if (overflow || value < lo || value > hi)
        return 0;
    *out = value;
    return 1;
}

/* A valid signal number: an int or an int subclass (signal.Signals), not a bool. */
static int signal_in(PyObject *arg, long *signo)
{
    return int_in(arg, 1, 1, 64, signo) && (valid_signals >> (*signo - 1) & 1);
}

/* Raise error(errno, *args)'s OSError, from None. `format` as Py_BuildValue's, its first item the errno. */
static int raise_error(Checked *self, const char *format, ...)
{
    va_list va;
    va_start(va, format);
    PyObject *args = Py_VaBuildValue(format, va);
    va_end(va);
    PyObject *exc = args == NULL ? NULL : PyObject_CallObject(self->error, args);
    Py_XDECREF(args);
    if (exc == NULL)
        return -1;
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_TypeError, "error() returned %.100s, not an exception", Py_TYPE(exc)->tp_name);
    } else {
        PyException_SetCause(exc, NULL);  /* from None: __suppress_context__ */
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    Py_DECREF(exc);
    return -1;
}

/* ioctl_int(fd, request, *, name, fmt="i"): fd 0..INT_MAX, request 0..UINT_MAX (the
 * ranges osvirt.device.ioctl accepts), name any object, fmt absent or "i". */
static int checked_ioctl_int(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                             PyObject **result)
{
    if (nargs != 2 || kwnames == NULL)
        return 0;
    PyObject *name = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        if (same_str(key, name_str))
            name = value;
        else if (!same_str(key, fmt_str) || !PyUnicode_CheckExact(value) || !same_str(value, i_str))
            return 0;
    }
    long fd, request;
    if (name == NULL || !int_in(args[0], 0, 0, INT_MAX, &fd) || !int_in(args[1], 0, 0, UINT_MAX, &request))
        return 0;
    union {  /* as ioctl_int above */
        int value;
        unsigned char room[OSV_IOCTL_ARG_MAX];
    } arg;
    arg.value = 0;
    if (ioctl((int)fd, (unsigned long)request, &arg) == -1)
        return raise_error(self, "(iO)", errno, name);
    *result = PyLong_FromLong(arg.value);
    return *result == NULL ? -1 : 1;
}

/* sigqueue(pid, signo, value=0), positional: pid 1..INT_MAX, a valid signo, value a C int. */
static int checked_sigqueue(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                            PyObject **result)
{
    long pid, signo, value = 0;
    if (kwnames != NULL || nargs < 2 || nargs > 3 || !int_in(args[0], 0, 1, INT_MAX, &pid)
        || !signal_in(args[1], &signo) || (nargs == 3 && !int_in(args[2], 0, INT_MIN, INT_MAX, &value)))
        return 0;
    union sigval sv = {.sival_int = (int)value};
    if (sigqueue((pid_t)pid, (int)signo, sv) == -1)
        return raise_error(self, "(illl)", errno, pid, signo, value);
    *result = Py_NewRef(Py_None);
    return 1;
}

/* sigtimedwait(signals) or sigtimedwait(signals, None): a set or frozenset of valid
 * signal numbers, waiting as long as it takes (EINTR: the handlers run, then again). */
static int checked_sigtimedwait(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                                PyObject **result)
{
    if (kwnames != NULL || nargs < 1 || nargs > 2 || (nargs == 2 && args[1] != Py_None)
        || !(PySet_CheckExact(args[0]) || PyFrozenSet_CheckExact(args[0])) || PySet_GET_SIZE(args[0]) == 0)
        return 0;
    sigset_t set;
    sigemptyset(&set);
    PyObject *iterator = PyObject_GetIter(args[0]), *item;
    if (iterator == NULL)
        return -1;
    long signo;
    while ((item = PyIter_Next(iterator)) != NULL) {
        int valid = signal_in(item, &signo);
        Py_DECREF(item);
        if (!valid)
            break;
        sigaddset(&set, (int)signo);
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return -1;
    if (item != NULL)
        return 0;
    siginfo_t si;
    while (accept_signal(&set, &si, -1) == -1) {
        if (errno != EINTR)
            return raise_error(self, "(ii)", errno, -1);
        if (PyErr_CheckSignals() < 0)  /* a handler raised (KeyboardInterrupt) */
            return -1;
    }
    *result = siginfo_tuple(&si, (PyTypeObject *)self->result_type);
    return *result == NULL ? -1 : 1;
}


/* -- the message queues' send and receive (methods: args[0] is the queue) ----------
 * Only a call that blocks without a timeout (SysV's: or not at all), on a queue still
 * open, with a message (bytes) and a buffer that fit: the call waits with the GIL
 * released. Anything else is the method's. At EINTR the signal handlers run, then
 * the call is made again (a KeyboardInterrupt ends the wait, as in the method); any
 * other failure is raised as the queue's self.<error>(errno[, type]) names it. */
#define CHECKED_BUFFER 8192  /* a message queue's default msgsize_max and msgmax: larger ones are Python's */

/* self.<name> as a C long in lo..hi: 1, else 0 (nothing raised: the method explains). */
static int attribute_in(PyObject *self, PyObject *name, long lo, long hi, long *out)
{
    PyObject *value = PyObject_GetAttr(self, name);
    if (value == NULL) {
        PyErr_Clear();
        return 0;
    }
    int in = int_in(value, 0, lo, hi, out);
    Py_DECREF(value);
    return in;
}

/* After a failed call: 1 to make it again (EINTR, the handlers run), -1 with the exception
 * to raise: one a handler raised, or self.<error>(err[, type])'s. */
static int failed(Checked *self, PyObject *queue, PyObject *type)
{
    int err = errno;
    if (err == EINTR)
        return PyErr_CheckSignals() < 0 ? -1 : 1;
    PyObject *number = PyLong_FromLong(err);
    PyObject *exc = number == NULL ? NULL : PyObject_CallMethodObjArgs(queue, self->error, number, type, NULL);
    Py_XDECREF(number);
    if (exc == NULL)
        return -1;
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_TypeError, "%U() returned %.100s, not an exception", self->error, Py_TYPE(exc)->tp_name);
    } else {
        PyException_SetCause(exc, NULL);
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    Py_DECREF(exc);
    return -1;
}

/* PosixMessageQueue.send(message, priority=0), positional. */
static int checked_mq_send(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                           PyObject **result)
{
    long mqd, msgsize, priority = 0;
    if (kwnames != NULL || nargs < 2 || nargs > 3 || !PyBytes_CheckExact(args[1])
        || (nargs == 3 && !int_in(args[2], 0, 0, MQ_PRIO_MAX - 1, &priority))
        || !attribute_in(args[0], mqd_str, 0, INT_MAX, &mqd)
        || !attribute_in(args[0], msgsize_str, 0, LONG_MAX, &msgsize) || PyBytes_GET_SIZE(args[1]) > msgsize)
        return 0;
    int sent, again;
    do {
        Py_BEGIN_ALLOW_THREADS
        sent = mq_send((mqd_t)mqd, PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1]), (unsigned)priority);
        Py_END_ALLOW_THREADS
    } while (sent == -1 && (again = failed(self, args[0], NULL)) > 0);
    if (sent == -1)
        return again;
    *result = Py_NewRef(Py_None);
    return 1;
}

/* PosixMessageQueue.receive(): (message, priority). */
static int checked_mq_receive(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                              PyObject **result)
{
    long mqd, msgsize;
    if (kwnames != NULL || nargs != 1 || !attribute_in(args[0], mqd_str, 0, INT_MAX, &mqd)
        || !attribute_in(args[0], msgsize_str, 0, CHECKED_BUFFER, &msgsize))
        return 0;
    char buffer[CHECKED_BUFFER];
    unsigned priority;
    ssize_t size;
    int again;
    do {
        Py_BEGIN_ALLOW_THREADS
        size = mq_receive((mqd_t)mqd, buffer, (size_t)msgsize, &priority);
        Py_END_ALLOW_THREADS
    } while (size == -1 && (again = failed(self, args[0], NULL)) > 0);
    if (size == -1)
        return again;
    *result = Py_BuildValue("(y#I)", buffer, (Py_ssize_t)size, priority);
    return *result == NULL ? -1 : 1;
}

/* `type` and `block` of SysVMessageQueue's methods, positional after the first `skip`
 * arguments or by keyword: 1 when each is an exact int in lo..hi and a bool. */
static int type_and_block(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t skip,
                          long lo, long *type, int *block)
{
    PyObject *values[2] = {NULL, NULL};  /* type, block */
    if (nargs > skip + 2)
        return 0;
    for (Py_ssize_t i = skip; i < nargs; i++)
        values[i - skip] = args[i];
    for (Py_ssize_t i = 0; kwnames != NULL && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int which = same_str(key, type_str) ? 0 : same_str(key, block_str) ? 1 : -1;
        if (which < 0 || values[which] != NULL)
            return 0;
        values[which] = args[nargs + i];
    }
    if (values[0] != NULL && !int_in(values[0], 0, lo, LONG_MAX, type))
        return 0;
    if (values[1] != NULL && !PyBool_Check(values[1]))
        return 0;
    *block = values[1] == NULL || values[1] == Py_True;
    return 1;
}

/* The queue's id and msgmax, while it is open (self._closed is False). */
static int sysv_queue(PyObject *self, long *id, long *msgmax)
{
    PyObject *closed = PyObject_GetAttr(self, closed_str);
    if (closed == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(closed);  /* only its address is compared: False is a singleton */
    return closed == Py_False && attribute_in(self, id_str, 0, INT_MAX, id)
           && attribute_in(self, msgmax_str, 0, CHECKED_BUFFER, msgmax);
}

struct checked_msg {
    long mtype;
    char mtext[CHECKED_BUFFER];
};

/* SysVMessageQueue.send(message, type=1, block=True). */
static int checked_msgsnd(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                          PyObject **result)
{
    long id, msgmax, type = 1;
    int block;
    if (nargs < 2 || !PyBytes_CheckExact(args[1]) || !type_and_block(args, nargs, kwnames, 2, 1, &type, &block)
        || !sysv_queue(args[0], &id, &msgmax) || PyBytes_GET_SIZE(args[1]) > msgmax)
        return 0;
    struct checked_msg m;
    size_t size = (size_t)PyBytes_GET_SIZE(args[1]);
    m.mtype = type;
    memcpy(m.mtext, PyBytes_AS_STRING(args[1]), size);
    int sent, again;
    do {
        Py_BEGIN_ALLOW_THREADS
        sent = msgsnd((int)id, &m, size, block ? 0 : IPC_NOWAIT);
        Py_END_ALLOW_THREADS
    } while (sent == -1 && (again = failed(self, args[0], NULL)) > 0);
    if (sent == -1)
        return again;
    *result = Py_NewRef(Py_None);
    return 1;
}

/* SysVMessageQueue.receive(type=0, block=True): (message, type). */
static int checked_msgrcv(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                          PyObject **result)
{
    long id, msgmax, type = 0;
    int block;
    if (nargs < 1 || !type_and_block(args, nargs, kwnames, 1, LONG_MIN + 1, &type, &block)
        || !sysv_queue(args[0], &id, &msgmax))
        return 0;
    struct checked_msg m;
    ssize_t size;
    int again = 0;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        size = msgrcv((int)id, &m, (size_t)msgmax, type, block ? 0 : IPC_NOWAIT);
        Py_END_ALLOW_THREADS
        if (size != -1)
            break;
        if (errno == E2BIG)  /* longer than msgmax was: the method takes it into a larger buffer */
            return 0;
        PyObject *type_obj = PyLong_FromLong(type);
        again = type_obj == NULL ? -1 : failed(self, args[0], type_obj);
        Py_XDECREF(type_obj);
        if (again < 0)
            return -1;
    }
    *result = Py_BuildValue("(y#l)", m.mtext, (Py_ssize_t)size, m.mtype);
    return *result == NULL ? -1 : 1;
}


/* -- osvirt.memory.Mapping: close() (also its __del__), mprotect(prot); Mapping(size) below
 * The object around mmap + munmap of 1 MiB cost ~1.4 us of Python over the two calls
 * (1.24x them, bench row mmap-1m): its __init__'s checks and defaults, close(), and
 * close() again as __del__. Their plainest calls are made here, with the GIL held as
 * quickcalls' mmap, munmap and mprotect are; every other call is Python's. */
#define MAPPING_SIZE_MAX (1L << 40)  /* larger sizes (still valid below the address limit) are Python's */
static long page_size;

/* Mapping's base (below): _address, _size, _holes and _whole in the object, read and
 * written here without an attribute lookup. */
typedef struct {
    PyObject_HEAD
    PyObject *address, *size, *holes, *whole;  /* NULL reads as None; holes () from the start */
} MappingBase;
static PyObject *mapping_base_type;

/* A Mapping's own fields: the object's when it is a MappingBase (always, for Mapping). */
static MappingBase *mapping_fields(PyObject *self)
{
    return PyObject_TypeCheck(self, (PyTypeObject *)mapping_base_type) ? (MappingBase *)self : NULL;
}

/* self._whole: (address, size) of a mapping all of which is still mapped, in *address and
 * *size; 0 for anything else (None once closed or partly unmapped: the method's). Read
 * in the object (a MappingBase's field), else as an attribute. */
static int whole(PyObject *self, long *address, long *size)
{
    MappingBase *fields = mapping_fields(self);
    PyObject *value = fields != NULL ? Py_XNewRef(fields->whole) : PyObject_GetAttr(self, whole_str);
    if (value == NULL) {
        PyErr_Clear();
        return 0;
    }
    int plain = PyTuple_CheckExact(value) && PyTuple_GET_SIZE(value) == 2
                && int_in(PyTuple_GET_ITEM(value, 0), 0, 1, LONG_MAX, address)
                && int_in(PyTuple_GET_ITEM(value, 1), 0, 1, LONG_MAX, size);
    Py_DECREF(value);
    return plain;
}

/* Mapping.close(self): nothing when closed; one munmap when nothing was unmapped before. */
static int checked_mapping_close(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                                 PyObject **result)
{
    if (kwnames != NULL || nargs != 1)
        return 0;
    MappingBase *fields = mapping_fields(args[0]);
    PyObject *address = fields != NULL ? Py_XNewRef(fields->address) : PyObject_GetAttr(args[0], address_str);
    if (address == NULL && fields == NULL) {
        PyErr_Clear();
        return 0;
    }
    int closed = address == NULL || address == Py_None;
    Py_XDECREF(address);
    long addr, size;
    if (!closed && !whole(args[0], &addr, &size))
        return 0;
    /* None first, as close() does: a second close (or __del__) finds nothing to unmap. */
    if (!closed && fields != NULL) {
        Py_SETREF(fields->address, Py_NewRef(Py_None));
        Py_SETREF(fields->whole, Py_NewRef(Py_None));
    } else if (!closed && (PyObject_SetAttr(args[0], address_str, Py_None) < 0
                           || PyObject_SetAttr(args[0], whole_str, Py_None) < 0)) {
        return -1;
    }
    if (!closed && munmap((void *)(uintptr_t)addr, (size_t)size) == -1) {
        PyObject *addr_obj = PyLong_FromLong(addr);
        int again = addr_obj == NULL ? -1 : failed(self, args[0], addr_obj);
        Py_XDECREF(addr_obj);
        return again > 0 ? 0 : -1;  /* munmap has no EINTR */
    }
    *result = Py_NewRef(Py_None);
    return 1;
}

/* Mapping.mprotect(self, prot): the whole mapping, still all mapped. */
static int checked_mapping_mprotect(Checked *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                                    PyObject **result)
{
    long prot, addr, size;
    if (kwnames != NULL || nargs != 2 || !int_in(args[1], 0, 0, PROT_READ | PROT_WRITE | PROT_EXEC, &prot)
        || !whole(args[0], &addr, &size))
        return 0;
    if (mprotect((void *)(uintptr_t)addr, (size_t)size, (int)prot) == -1)
        return failed(self, args[0], args[1]) > 0 ? 0 : -1;  /* mprotect has no EINTR */
    *result = Py_NewRef(Py_None);
    return 1;
}

/* -- osvirt.memory.Mapping's base: its four attributes in the object, Mapping(size) and
 * its finalizer in C ----------------------------------------------------------------
 * Made and freed as a Python class with a __dict__ and a __del__, a Mapping cost what any
 * such object does next to mmap + munmap, 1.20-1.28x the bare calls (bench row mmap-1m,
 * one process, batches interleaved), with __init__, close() and __del__ already in C: the
 * type's call and __init__'s lookup, four attributes stored in the instance's dict, the
 * __del__ looked up and called. A class of Owned and this base, whose call (the plain one,
 * Mapping(size)) and finalizer are C's, cost 1.07-1.09x. So Mapping's _address, _size,
 * _holes and _whole live here (members: read and written from Python as before), and
 * mapping_class(Mapping) gives the class this call and this finalizer. In one process,
 * batches interleaved, Mapping(1 MiB).close() then cost 1.08-1.12x the bare calls, and
 * less than mmap.mmap's (1.19-1.30x). */

static PyObject *mapping_base_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    MappingBase *self = (MappingBase *)type->tp_alloc(type, 0);
    if (self != NULL && (self->holes = PyTuple_New(0)) == NULL)
        Py_CLEAR(self);
    return (PyObject *)self;
}

static int mapping_base_traverse(PyObject *op, visitproc visit, void *arg)
{
    MappingBase *self = (MappingBase *)op;
    Py_VISIT(self->address);
    Py_VISIT(self->size);
    Py_VISIT(self->holes);
    Py_VISIT(self->whole);
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static int mapping_base_clear(PyObject *op)
{
    MappingBase *self = (MappingBase *)op;
    Py_CLEAR(self->address);
    Py_CLEAR(self->size);
    Py_CLEAR(self->holes);
    Py_CLEAR(self->whole);
    return 0;
}

static void mapping_base_dealloc(PyObject *op) { osv_heap_dealloc(op, mapping_base_clear); }

/* Mapping(size): anonymous, private, read-write, the defaults; any other call is the
 * class's own (its __init__, which checks and explains). */
static PyObject *mapping_call(PyObject *cls, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    long size;
    if (kwnames != NULL || nargs != 1 || !int_in(args[0], 0, 1, MAPPING_SIZE_MAX, &size)) {
        PyObject *tuple = PyTuple_New(nargs), *kwargs = kwnames == NULL ? NULL : PyDict_New(), *made = NULL;
        for (Py_ssize_t i = 0; tuple != NULL && i < nargs; i++)
            PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
        int ok = tuple != NULL && (kwnames == NULL || kwargs != NULL);
        for (Py_ssize_t i = 0; ok && kwnames != NULL && i < PyTuple_GET_SIZE(kwnames); i++)
            ok = PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) == 0;
        if (ok)
            made = PyType_Type.tp_call(cls, tuple, kwargs);  /* __new__, then __init__ */
        Py_XDECREF(tuple);
        Py_XDECREF(kwargs);
        return made;
    }
    size = (size + page_size - 1) & ~(page_size - 1);  /* whole pages */
    MappingBase *self = (MappingBase *)mapping_base_new((PyTypeObject *)cls, NULL, NULL);
    if (self == NULL)
        return NULL;
    void *address = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address == MAP_FAILED) {
        PyObject *exc = PyObject_CallMethod((PyObject *)self, "_map_error", "il", errno, size);
        if (exc != NULL && PyExceptionInstance_Check(exc))
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        else if (exc != NULL)
            PyErr_SetString(PyExc_TypeError, "_map_error() returned no exception");
        Py_XDECREF(exc);
        Py_DECREF(self);
        return NULL;
    }
    self->size = PyLong_FromLong(size);
    self->address = PyLong_FromUnsignedLong((unsigned long)(uintptr_t)address);
    self->whole = self->size == NULL || self->address == NULL ? NULL : PyTuple_Pack(2, self->address, self->size);
    if (self->whole == NULL) {
        munmap(address, (size_t)size);
        Py_CLEAR(self->address);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* What __del__ (close()) does, in C while all of it is still mapped; else close() itself. */
static void mapping_finalize(PyObject *op)
{
    MappingBase *self = (MappingBase *)op;
    long address, size;
    if (self->address == NULL || self->address == Py_None)
        return;
    if (self->whole != NULL && PyTuple_CheckExact(self->whole) && PyTuple_GET_SIZE(self->whole) == 2
        && int_in(PyTuple_GET_ITEM(self->whole, 0), 0, 1, LONG_MAX, &address)
        && int_in(PyTuple_GET_ITEM(self->whole, 1), 0, 1, LONG_MAX, &size)) {
        Py_SETREF(self->address, Py_NewRef(Py_None));
        Py_SETREF(self->whole, Py_NewRef(Py_None));
        munmap((void *)(uintptr_t)address, (size_t)size);  /* nothing to report from a finalizer */
        return;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *done = PyObject_CallMethod(op, "close", NULL);
    if (done == NULL)
        PyErr_WriteUnraisable(op);
    Py_XDECREF(done);
    PyErr_Restore(type, value, traceback);
}

static PyMemberDef mapping_base_members[] = {
    {"_address", T_OBJECT, offsetof(MappingBase, address), 0, NULL},
    {"_size", T_OBJECT, offsetof(MappingBase, size), 0, NULL},
    {"_holes", T_OBJECT, offsetof(MappingBase, holes), 0, NULL},
    {"_whole", T_OBJECT, offsetof(MappingBase, whole), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot mapping_base_slots[] = {
    {Py_tp_new, mapping_base_new}, {Py_tp_members, mapping_base_members}, {Py_tp_traverse, mapping_base_traverse},
    {Py_tp_clear, mapping_base_clear}, {Py_tp_dealloc, mapping_base_dealloc}, {0, NULL},
};

static PyType_Spec mapping_base_spec = {
    "osvirt._quickcalls.MappingBase", sizeof(MappingBase), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, mapping_base_slots,
};

/* mapping_class(cls): cls (a subclass of MappingBase) made by mapping_call and finalized by
 * mapping_finalize (in place of the __del__ its Python class would call). */
static PyObject *mapping_class(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)mapping_base_type)) {
        PyErr_SetString(PyExc_TypeError, "mapping_class(): a subclass of MappingBase is required");
        return NULL;
    }
    ((PyTypeObject *)cls)->tp_vectorcall = mapping_call;
    ((PyTypeObject *)cls)->tp_finalize = mapping_finalize;
    PyType_Modified((PyTypeObject *)cls);
    return Py_NewRef(cls);
}

/* Each kind's vectorcall: its C path, else the function's (no dispatch between: ~10 ns). */
#define CHECKED_CALL(kind) \
    static PyObject *kind##_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) \
    { \
        PyObject *result = NULL; \
        if (kind((Checked *)op, args, PyVectorcall_NARGS(nargsf), kwnames, &result) != 0) \
            return result; \
        return PyObject_Vectorcall(((Checked *)op)->function, args, nargsf, kwnames); \
    }
CHECKED_CALL(checked_ioctl_int)
CHECKED_CALL(checked_sigqueue)
CHECKED_CALL(checked_sigtimedwait)
CHECKED_CALL(checked_mq_send)
CHECKED_CALL(checked_mq_receive)
CHECKED_CALL(checked_msgsnd)
CHECKED_CALL(checked_msgrcv)
CHECKED_CALL(checked_mapping_close)
CHECKED_CALL(checked_mapping_mprotect)
static const vectorcallfunc checked_calls[] = {
    checked_ioctl_int_call, checked_sigqueue_call, checked_sigtimedwait_call, checked_mq_send_call,
    checked_mq_receive_call, checked_msgsnd_call, checked_msgrcv_call,
    checked_mapping_close_call, checked_mapping_mprotect_call,
};

/* -- a plain function's checked(): a class, for Python 3.11's specialized call ------------
 * 3.11 specializes a call to a class that has a vectorcall and its own __new__
 * (PRECALL_BUILTIN_CLASS, keywords too: the class's vectorcall called at once), never a
 * call to an instance (the generic call: PyObject_Vectorcall, the result checked). So
 * checked() of ioctl_int, sigqueue or sigtimedwait makes a class: named as the function,
 * its __wrapped__ and __doc__ the function's (inspect.signature follows __wrapped__), no
 * instances (its __new__ refuses), immutable, whose vectorcall is the kind's; the checked
 * instance the kind works with is kept in `checked_classes` below, found by the class. In one
 * process, batches interleaved, a call of such a class with a keyword cost 1.02-1.05x the
 * bare builtin's (ioctl(FIONREAD)), the instance's 1.10-1.14x. */
#define CHECKED_FUNCTIONS 16  /* classes made in a process: the three functions, made at import */
static struct {
    PyObject *cls;
    Checked *checked;
} checked_classes[CHECKED_FUNCTIONS];

static Checked *function_of(PyObject *cls)
{
    for (int i = 0; i < CHECKED_FUNCTIONS && checked_classes[i].cls != NULL; i++)
        if (checked_classes[i].cls == cls)
            return checked_classes[i].checked;
    PyErr_SetString(PyExc_SystemError, "checked: a class not made by checked()");
    return NULL;
}

#define CHECKED_CLASS_CALL(kind) \
    static PyObject *kind##_class_call(PyObject *cls, PyObject *const *args, size_t nargsf, PyObject *kwnames) \
    { \
        Checked *self = function_of(cls); \
        return self == NULL ? NULL : kind##_call((PyObject *)self, args, nargsf, kwnames); \
    }
CHECKED_CLASS_CALL(checked_ioctl_int)
CHECKED_CLASS_CALL(checked_sigqueue)
CHECKED_CLASS_CALL(checked_sigtimedwait)
static const vectorcallfunc checked_class_calls[] = {
    checked_ioctl_int_class_call, checked_sigqueue_class_call, checked_sigtimedwait_class_call,
};

static PyObject *checked_class_new(PyTypeObject *cls, PyObject *args, PyObject *kwargs)
{
    PyErr_Format(PyExc_TypeError, "%s is a function: it makes no instances", cls->tp_name);
    return NULL;
}

static PyType_Slot checked_class_slots[] = {{Py_tp_new, checked_class_new}, {0, NULL}};

/* The class standing for self->function (see above), or NULL with an exception. */
static PyObject *checked_class(Checked *self, int k)
{
    int free = 0;
    while (free < CHECKED_FUNCTIONS && checked_classes[free].cls != NULL)
        free++;
    if (free == CHECKED_FUNCTIONS) {
        PyErr_SetString(PyExc_RuntimeError, "checked(): no room for another function");
        return NULL;
    }
    PyObject *module = PyObject_GetAttrString(self->function, "__module__");
    PyObject *qualname = module == NULL ? NULL : PyObject_GetAttrString(self->function, "__qualname__");
    PyObject *doc = qualname == NULL ? NULL : PyObject_GetAttrString(self->function, "__doc__");
    PyObject *name = doc == NULL ? NULL : PyUnicode_FromFormat("%S.%S", module, qualname);
    const char *utf8 = name == NULL ? NULL : PyUnicode_AsUTF8(name);
    char *spec_name = utf8 == NULL ? NULL : PyMem_RawMalloc(strlen(utf8) + 1);  /* tp_name: kept for good */
    PyObject *cls = NULL;
    if (spec_name != NULL) {
        strcpy(spec_name, utf8);
        PyType_Spec spec = {spec_name, sizeof(PyObject), 0, Py_TPFLAGS_DEFAULT, checked_class_slots};
        cls = PyType_FromSpec(&spec);
        if (cls == NULL)
            PyMem_RawFree(spec_name);
    } else if (utf8 != NULL) {
        PyErr_NoMemory();
    }
    PyObject *dict = cls == NULL ? NULL : ((PyTypeObject *)cls)->tp_dict;
    if (dict != NULL && (PyDict_SetItemString(dict, "__wrapped__", self->function) < 0
                         || PyDict_SetItemString(dict, "__doc__", doc) < 0
                         || PyObject_SetAttrString(cls, "__qualname__", qualname) < 0))
        Py_CLEAR(cls);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(doc);
    Py_XDECREF(name);
    if (cls == NULL)
        return NULL;
    PyTypeObject *type = (PyTypeObject *)cls;
    type->tp_vectorcall = checked_class_calls[k];
    type->tp_flags |= Py_TPFLAGS_IMMUTABLETYPE;  /* what the specialization asks; nothing set after */
    PyType_Modified(type);
    checked_classes[free].cls = Py_NewRef(cls);
    checked_classes[free].checked = (Checked *)Py_NewRef((PyObject *)self);
    return cls;
}

static PyObject *checked_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"kind", "function", "error", "result_type", NULL};
    const char *kind;
    PyObject *function, *error = Py_None, *result_type = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sO|OO:checked", keywords, &kind, &function, &error,
                                     &result_type))
        return NULL;
    int k = 0;
    while (checked_kinds[k] != NULL && strcmp(checked_kinds[k], kind) != 0)
        k++;
    if (checked_kinds[k] == NULL) {
        PyErr_Format(PyExc_ValueError, "checked(): no C path for %s", kind);
        return NULL;
    }
    /* A method (a queue's, a Mapping's) names a method of the object that makes its error. */
    int method = k >= CHECKED_MQ_SEND;
    if (!PyCallable_Check(function) || !(method ? PyUnicode_CheckExact(error) : PyCallable_Check(error))) {
        PyErr_SetString(PyExc_TypeError, "checked(): function must be callable, and error callable (a method's: "
                                         "the name of the queue's method that makes the error)");
        return NULL;
    }
    if (k == CHECKED_SIGTIMEDWAIT && !(PyType_Check(result_type)
                                       && PyType_IsSubtype((PyTypeObject *)result_type, &PyTuple_Type)
                                       && ((PyTypeObject *)result_type)->tp_basicsize == PyTuple_Type.tp_basicsize)) {
        PyErr_SetString(PyExc_TypeError, "checked(): sigtimedwait's result_type must be a tuple subclass without fields");
        return NULL;
    }
    Checked *self = (Checked *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = checked_calls[k];
    self->function = Py_NewRef(function);
    self->error = Py_NewRef(error);
    self->result_type = k == CHECKED_SIGTIMEDWAIT ? Py_NewRef(result_type) : NULL;
    if (method)
        return (PyObject *)self;
    PyObject *cls = checked_class(self, k);
    Py_DECREF(self);
    return cls;
}

/* What the object shows is its function's: name, docstring, module, annotations, ... */
static PyObject *checked_getattro(PyObject *op, PyObject *name)
{
    PyObject *value = PyObject_GenericGetAttr(op, name);
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return value;
    PyErr_Clear();
    return PyObject_GetAttr(((Checked *)op)->function, name);
}

static PyObject *checked_attribute(PyObject *op, void *name)
{
    return PyObject_GetAttrString(((Checked *)op)->function, (const char *)name);
}

/* In a class, a method: bound to the instance (LOAD_METHOD skips that: METHOD_DESCRIPTOR). */
static PyObject *checked_get(PyObject *op, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(op);
    return PyMethod_New(op, obj);
}

static PyObject *checked_repr(PyObject *op)
{
    return PyObject_Repr(((Checked *)op)->function);
}

static int checked_traverse(PyObject *op, visitproc visit, void *arg)
{
    Checked *self = (Checked *)op;
    Py_VISIT(self->function);
    Py_VISIT(self->error);
    Py_VISIT(self->result_type);
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static int checked_clear(PyObject *op)
{
    Checked *self = (Checked *)op;
    Py_CLEAR(self->function);
    Py_CLEAR(self->error);
    Py_CLEAR(self->result_type);
    return 0;
}

static void checked_dealloc(PyObject *op) { osv_heap_dealloc(op, checked_clear); }

/* Data descriptors, so that the type's own __doc__ and __module__ do not hide the function's. */
static PyGetSetDef checked_getset[] = {
    {"__doc__", checked_attribute, NULL, NULL, "__doc__"},
    {"__module__", checked_attribute, NULL, NULL, "__module__"},
    {"__name__", checked_attribute, NULL, NULL, "__name__"},
    {"__qualname__", checked_attribute, NULL, NULL, "__qualname__"},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef checked_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(Checked, function), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Checked, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot checked_slots[] = {
    {Py_tp_new, checked_new}, {Py_tp_call, PyVectorcall_Call}, {Py_tp_getattro, checked_getattro},
    {Py_tp_getset, checked_getset}, {Py_tp_members, checked_members}, {Py_tp_repr, checked_repr}, {Py_tp_descr_get, checked_get},
    {Py_tp_traverse, checked_traverse}, {Py_tp_clear, checked_clear}, {Py_tp_dealloc, checked_dealloc},
    {0, NULL},
};

static PyType_Spec checked_spec = {
    "osvirt._quickcalls.checked", sizeof(Checked), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
        | Py_TPFLAGS_METHOD_DESCRIPTOR,
    checked_slots,
};

static int exec_module(PyObject *module)
{
    page_size = sysconf(_SC_PAGESIZE);
    sigset_t all;
    sigfillset(&all);
    for (int signo = 1; signo <= 64; signo++)
        if (sigismember(&all, signo) == 1)
            valid_signals |= 1ULL << (signo - 1);
    static struct { PyObject **str; const char *text; } strs[] = {
        {&name_str, "name"}, {&fmt_str, "fmt"}, {&i_str, "i"}, {&type_str, "type"}, {&block_str, "block"},
        {&mqd_str, "_mqd"}, {&msgsize_str, "_msgsize"}, {&id_str, "id"}, {&msgmax_str, "_msgmax"},
        {&closed_str, "_closed"}, {&address_str, "_address"}, {&size_str, "_size"}, {&holes_str, "_holes"},
        {&whole_str, "_whole"},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (*strs[i].str == NULL && (*strs[i].str = PyUnicode_InternFromString(strs[i].text)) == NULL)
            return -1;
    PyObject *type = PyType_FromModuleAndSpec(module, &checked_spec, NULL);
    if (type == NULL || PyModule_AddObject(module, "checked", type) < 0) {
        Py_XDECREF(type);
        return -1;
    }
    mapping_base_type = PyType_FromModuleAndSpec(module, &mapping_base_spec, NULL);
    if (mapping_base_type == NULL || PyModule_AddObject(module, "MappingBase", Py_NewRef(mapping_base_type)) < 0)
        return -1;
    return 0;
}

/* A METH_FASTCALL function, its signature line for help() and inspect, and what it does. */
#define FUNCTION(name, f, signature, doc) \
    {name, (PyCFunction)(void (*)(void))(f), METH_FASTCALL, name signature "\n--\n\n" doc}

static PyMethodDef functions[] = {
    FUNCTION("ioctl_int", ioctl_int, "(fd, request)",
             "ioctl(fd, request, &int): the int the kernel wrote; OSError(errno) if refused."),
    FUNCTION("mprotect", mprotect_, "(addr, length, prot)", "mprotect(2); OSError(errno) if refused."),
    FUNCTION("mmap", mmap_, "(length, prot, flags, fd, offset)",
             "mmap(NULL, length, prot, flags, fd, offset): the new mapping's address; OSError(errno) if refused."),
    FUNCTION("munmap", munmap_, "(addr, length)", "munmap(2); OSError(errno) if refused."),
    FUNCTION("sigqueue", sigqueue_, "(pid, signo, value)",
             "sigqueue(pid, signo, {.sival_int = value}); OSError(errno) if refused."),
    FUNCTION("sigtimedwait", sigtimedwait_, "(mask, timeout_ns)",
             "Accept one blocked signal of mask (bit s - 1: signal s): (signo, code, value, pid, uid),\n"
             "or None after timeout_ns (< 0: wait forever); OSError(errno) if refused."),
    {"mapping_class", mapping_class, METH_O,
     "mapping_class(cls)\n--\n\nMake cls (a subclass of MappingBase) by its plain call and finalize it in C."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "osvirt._quickcalls",
    "System calls that cannot block, made without releasing the GIL (see csrc/cpython/quickcalls.c).\n\n"
    "Arguments are ints (TypeError otherwise, OverflowError out of the C type's range);\n"
    "a refusal is a plain OSError with errno, which osvirt's callers rename after the facility.",
    0, functions, module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__quickcalls(void)
{
    return PyModuleDef_Init(&module_def);
}
