"""osvirt's exceptions.

A kernel refusal is the stdlib's OSError subclass for its errno
(PermissionError, FileNotFoundError, BlockingIOError, ...), with errno kept and
the facility named in the message, so `except PermissionError` works as it does
for any `os` call. Conditions that are not a failed system call are
OsvirtError subclasses. All of them pickle, since they cross processes here.
"""
import os

__all__ = ["OsvirtError", "kernel_error"]


class OsvirtError(Exception):
    """Base of the exceptions osvirt raises for conditions that are not an errno."""


def kernel_error(err, facility, hint=None, filename=None):
    """The OSError (subclass chosen by errno) for `facility` failing with `err`.

    >>> kernel_error(1, "sched_setscheduler(SCHED_FIFO)", "needs CAP_SYS_NICE")
    PermissionError(1, 'sched_setscheduler(SCHED_FIFO): Operation not permitted (needs CAP_SYS_NICE)')
    """
    message = f"{facility}: {os.strerror(err)}" + (f" ({hint})" if hint else "")
    if filename is None:
        return OSError(err, message)
    return OSError(err, message, os.fspath(filename))
