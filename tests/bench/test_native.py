import errno
import os
import signal

import pytest

from osvirt.bench import _native


def test_a_c_loop_returns_its_elapsed_ns():
    assert _native.c_loop("getppid", (), 1000) >= 1000 * 10  # a system call takes more than 10 ns


def test_bad_arguments_are_refused_before_c_runs():
    with pytest.raises(ValueError, match="osv_bench_nothing_such: no such C loop"):
        _native.c_loop("nothing_such", (), 1)
    for n in (0, -1, 2 ** 62 + 1, True, 1.5):
        with pytest.raises(ValueError, match="osv_bench_getppid: n must be"):
            _native.c_loop("getppid", (), n)
    with pytest.raises(TypeError, match="neither an int, a str nor a buffer"):
        _native.c_loop("pipe_write", (1, 1.5), 1)
    with pytest.raises(ValueError, match="holds a NUL byte"):
        _native.c_loop("durable_write", ("/tmp", "/tmp/a\0b", "/tmp/c", b"x"), 1)
    with pytest.raises(TypeError, match="read-only"):
        _native.c_loop("pipe_write", (1, memoryview(b"x").toreadonly()), 1)


def test_a_buffer_goes_to_c_with_its_own_length():
    r, w = os.pipe()
    try:
        _native.c_loop("pipe_write", (w, b"abc"), 2)
        assert os.read(r, 100) == b"abcabc"
    finally:
        os.close(r)
        os.close(w)


def test_a_kernel_refusal_is_the_oserror_naming_the_loop():
    with pytest.raises(OSError, match="osv_bench_fionread") as e:
        _native.c_loop("fionread", (-1,), 1)
    assert e.value.errno == errno.EBADF


def test_the_signal_loop_counts_deliveries_and_restores_the_handler():
    before = signal.getsignal(signal.SIGUSR1)
    assert _native.c_loop("kill_self", (signal.SIGUSR1,), 100) > 0  # -1/EPROTO had one gone missing
    assert signal.getsignal(signal.SIGUSR1) == before


def test_the_fault_loop_faults_once_per_page():
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _native.c_loop("touch_fresh", (0,), 512)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before >= 512


def test_the_sync_loops_share_their_objects_with_a_forked_process():
    from osvirt.process import Children
    with _native.SharedPage() as page, Children() as kids:
        assert _native.c_loop("mutex_lock_unlock", (page,), 1000) > 0
        assert _native.c_loop("sem_post_wait", (page,), 1000) > 0
        # each round trip waits for the other process to hand the turn back
        kids.fork(_native.cond_echo, page)
        assert _native.c_loop("cond_round_trip", (page,), 100) > 0
    page.close()  # idempotent
    with pytest.raises(ValueError, match="SharedPage is closed"):
        _native.c_loop("mutex_lock_unlock", (page,), 1)
