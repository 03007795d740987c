import errno
import os
import pickle

import pytest

from osvirt.errors import OsvirtError, kernel_error


def test_kernel_error_picks_the_stdlib_subclass_and_keeps_errno():
    e = kernel_error(errno.EPERM, "sched_setscheduler(SCHED_FIFO)", "needs CAP_SYS_NICE")
    assert isinstance(e, PermissionError)
    assert e.errno == errno.EPERM
    assert str(e) == ("[Errno 1] sched_setscheduler(SCHED_FIFO): Operation not permitted "
                      "(needs CAP_SYS_NICE)")


def test_kernel_error_names_the_file():
    e = kernel_error(errno.ENOENT, "open", filename="/nonexistent")
    assert isinstance(e, FileNotFoundError) and e.filename == "/nonexistent"


def test_a_real_refusal_matches_what_os_raises():
    with pytest.raises(OSError) as raised:
        os.open("/nonexistent/x", os.O_RDONLY)
    mine = kernel_error(raised.value.errno, "open")
    assert type(mine) is type(raised.value)


@pytest.mark.parametrize("exc", [kernel_error(errno.EAGAIN, "mq_send"), OsvirtError("why")])
def test_exceptions_pickle_across_processes(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and back.args == exc.args
