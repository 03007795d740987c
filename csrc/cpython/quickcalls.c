/* osvirt._quickcalls: system calls that cannot block, made without releasing the GIL.
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
 * held like any C function's CPU work.)
 *
 * Measured on the bench machine (2-core AMD EPYC, Python 3.11.7; timeit of
 * the bare call, best of 7, next to osvirt bench's C loop of the same call):
 *   ioctl(FIONREAD)           295 ns, C loop 267 ns: 1.10x (over cffi 1.6x)
 *   mprotect there and back  1.93 us, C loop 1.84 us: 1.05x (over cffi 1.3x)
 *   mmap + munmap of 1 MiB   3.29 us, C loop 3.07 us: 1.07x (over cffi 1.2x)
 * The ~15-30 ns left a call is the call of a builtin and the parse of its
 * ints. Above that, osvirt's paths pay for Python: ioctl_int ~350 ns
 * (1.31x; bench row fionread 1.38-1.43x), two Mapping.mprotect calls 2.18 us
 * (1.19x; bench 1.20-1.22x: the two method calls, ~45 ns each, and their
 * checks). mmap-1m stays at ~1.37x (bench 1.32-1.37x), over its
 * 1.2x target, because of the owner object, not the calls: a minimal Python
 * owner around the same two calls (__init__ that maps, close that unmaps,
 * __del__ = close) already costs 3.85 us, 1.25x; Mapping's argument checks
 * and keyword-only signature add ~0.2-0.35 us more.
 *
 * No policy here: the callers in osvirt.device and osvirt.memory (through
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
#include <sys/ioctl.h>
#include <sys/mman.h>

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

/* A C int; OverflowError outside INT_MIN..INT_MAX. */
static int arg_int(const char *name, PyObject *arg, int *out)
{
    if (check_int(name, arg) < 0)
        return -1;
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < INT_MIN || value > INT_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s(): %ld does not fit in a C int", name, value);
        return -1;
    }
    *out = (int)value;
    return 0;
}

/* A C long (off_t on Linux's 64-bit ABIs); OverflowError outside its range. */
static int arg_long(const char *name, PyObject *arg, long *out)
{
    if (check_int(name, arg) < 0)
        return -1;
    *out = PyLong_AsLong(arg);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* An unsigned number in 0..max (an address, a length, an ioctl request, a
 * descriptor); OverflowError outside it. */
static int arg_unsigned(const char *name, PyObject *arg, unsigned long max, unsigned long *out)
{
    if (check_int(name, arg) < 0)
        return -1;
    *out = PyLong_AsUnsignedLong(arg);
    if (*out == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (*out > max) {
        PyErr_Format(PyExc_OverflowError, "%s(): %lu is not in 0..%lu", name, *out, max);
        return -1;
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
