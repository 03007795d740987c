"""A method whose plainest calls are made in C: osvirt._quickcalls.checked, bound as a method.

For the message queues' send and receive (osvirt.ipc) and Mapping's __init__,
close and mprotect (osvirt.memory); csrc/cpython/quickcalls.c says which calls
each takes and why.
"""
from collections.abc import Callable
from typing import Any, TypeVar, cast

from osvirt import _quickcalls

__all__ = ["checked_method"]

_F = TypeVar("_F", bound=Callable[..., Any])


def checked_method(kind: str, error: str) -> Callable[[_F], _F]:
    """A decorator: the method, with the calls C recognizes for `kind` made there; a
    failure of theirs is raised as the object's method named `error` makes it:
    error(errno[, one value of the call]). Every other call is the method's."""
    def decorate(function: _F) -> _F:
        return cast(_F, _quickcalls.checked(kind, function, error))
    return decorate
