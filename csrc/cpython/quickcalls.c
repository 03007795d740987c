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
 * ints. Above that, osvirt's paths pay for Python: ioctl_int ~350 ns
 * (1.31x; bench row fionread 1.38-1.43x), two Mapping.mprotect calls 2.18 us
 * (1.19x; bench 1.20-1.22x: the two method calls, ~45 ns each, and their
 * checks). mmap-1m stays at ~1.37x (bench 1.32-1.37x), over its
 * 1.2x target, because of the owner object, not the calls: a minimal Python
 * owner around the same two calls (__init__ that maps, close that unmaps,
 * __del__ = close) already costs 3.85 us, 1.25x; Mapping's argument checks
 * and keyword-only signature add ~0.2-0.35 us more. ipc.sigqueue then
 * ipc.sigtimedwait cost 2.8 us (bench rt-signal 1.67x): a Python function
 * around each call, without checks, already 2.33 us (1.39x); the checks
 * (the signal set made a mask, the pid and value ranges) the rest.
 *
 * No policy here: the callers in osvirt.device, osvirt.memory and osvirt.ipc (through
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
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#include "../device.h"  /* OSV_IOCTL_ARG_MAX */

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

/* (signo, code, value, pid, uid) of an accepted signal. */
static PyObject *siginfo_tuple(const siginfo_t *si)
{
    long fields[] = {si->si_signo, si->si_code, si->si_value.sival_int, si->si_pid, si->si_uid};
    PyObject *tuple = PyTuple_New(5);
    for (Py_ssize_t i = 0; tuple != NULL && i < 5; i++) {
        PyObject *field = PyLong_FromLong(fields[i]);
        if (field == NULL)
            Py_CLEAR(tuple);
        else
            PyTuple_SET_ITEM(tuple, i, field);
    }
    return tuple;
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
    struct timespec wait = {0, 0};
    int sig = sigtimedwait(&set, &si, &wait);
    if (sig == -1 && errno == EAGAIN && timeout_ns != 0) {
        wait.tv_sec = timeout_ns / 1000000000L;
        wait.tv_nsec = timeout_ns % 1000000000L;
        Py_BEGIN_ALLOW_THREADS
        sig = timeout_ns < 0 ? sigwaitinfo(&set, &si) : sigtimedwait(&set, &si, &wait);
        Py_END_ALLOW_THREADS  /* keeps errno */
    }
    if (sig != -1)
        return siginfo_tuple(&si);
    if (errno == EAGAIN)
        Py_RETURN_NONE;
    return PyErr_SetFromErrno(PyExc_OSError);  /* InterruptedError for EINTR */
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
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot module_slots[] = {{0, NULL}};

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
