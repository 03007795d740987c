"""osvirt's exceptions.

A kernel refusal is the stdlib's OSError subclass for its errno
(PermissionError, FileNotFoundError, BlockingIOError, ...), with errno kept and
the facility named in the message, so `except PermissionError` works as it does
for any `os` call. Conditions that are not a failed system call are
OsvirtError subclasses. All of them pickle, since they cross processes here.
"""
import errno
import os

__all__ = ["OsvirtError", "OwnerDead", "ProtectionFault", "SpecError", "ContainerError", "kernel_error"]


class OsvirtError(Exception):
    """Base of the exceptions osvirt raises for conditions that are not an errno."""


class ProtectionFault(OsvirtError):
    """An access the kernel refused with SIGSEGV or SIGBUS, caught around that access.

    `address` is the faulting address the kernel reported (si_addr), `signo`
    the signal, `si_code` why and `code_name` its name (SEGV_ACCERR: mapped
    but this access is not allowed; SEGV_MAPERR: nothing mapped there;
    BUS_ADRERR: a file mapping past the end of its file); `access` says what
    was attempted.
    """

    def __init__(self, access: str, address: int, signo: int, si_code: int, code_name: str) -> None:
        super().__init__(access, address, signo, si_code, code_name)
        self.access, self.address, self.signo, self.si_code, self.code_name = \
            access, address, signo, si_code, code_name

    def __str__(self) -> str:
        return f"{self.access}: {self.code_name} at address {self.address:#x}"


class OwnerDead(OsvirtError):
    """A robust mutex was acquired, but its previous holder died holding it (EOWNERDEAD).

    The lock call succeeded: the caller now holds the mutex. The data it
    guards may be half-updated: repair it, call `make_consistent()`, then
    unlock. Unlocking without `make_consistent()` makes the mutex
    unrecoverable (every later lock fails with ENOTRECOVERABLE).
    """
    errno = errno.EOWNERDEAD

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where

    def __str__(self) -> str:
        return (f"pthread_mutex_lock: EOWNERDEAD: the previous holder of the mutex in {self.where} "
                "died holding it; you hold it now: repair the state, call make_consistent(), then unlock()")


def kernel_error(err: int, facility: str, hint: str | None = None,
                 filename: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None) -> OSError:
    """The OSError (subclass chosen by errno) for `facility` failing with `err`.

    >>> kernel_error(1, "sched_setscheduler(SCHED_FIFO)", "needs CAP_SYS_NICE")
    PermissionError(1, 'sched_setscheduler(SCHED_FIFO): Operation not permitted (needs CAP_SYS_NICE)')
    """
    message = f"{facility}: {os.strerror(err)}" + (f" ({hint})" if hint else "")
    if filename is None:
        return OSError(err, message)
    return OSError(err, message, os.fspath(filename))


class SpecError(OsvirtError, ValueError):
    """An OCI config.json (osvirt.container.oci) holds a value the runtime-spec does not allow.

    `field` names it as a path into the JSON (`process.args`,
    `linux.namespaces[2].type`); raised before any system call. A
    ValueError too, as osvirt's bad arguments are.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field, self.message = field, message

    def __str__(self) -> str:
        return f"config.json {self.field}: {self.message}"


class ContainerError(OsvirtError):
    """A container's set-up failed in its own process, before the program ran (osvirt.container.container).

    `step` names what it was doing (`mount /proc`, `pivot_root`, `exec
    ['sh']`), `errno` the kernel's answer (None when not a system call's),
    `message` the child's exception. Raised in the process that created or
    started the container, as runc reports its child's errors through its
    sync pipe.
    """

    def __init__(self, step: str, errno: int | None, message: str) -> None:
        super().__init__(step, errno, message)
        self.step, self.errno, self.message = step, errno, message

    def __str__(self) -> str:
        name = f"[{_errno_name(self.errno)}] " if self.errno else ""
        return f"container set-up failed at {self.step}: {name}{self.message}"


def _errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))
