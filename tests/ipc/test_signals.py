import errno
import os
import signal

import pytest

from osvirt.ipc import SI_QUEUE, SI_USER, QueuedSignal, accept_pending, blocked, sigqueue, sigtimedwait
from osvirt.process import Children

RT = signal.SIGRTMIN


def test_queued_realtime_signals_arrive_in_order_with_value_and_sender():
    parent = os.getpid()
    with blocked({RT}), Children() as kids:
        pid = kids.fork(lambda: [sigqueue(parent, RT, v) for v in (7, -3, 2**31 - 1, -2**31)])
        assert kids.wait(pid) == 0
        got = accept_pending({RT})
    assert got == [QueuedSignal(RT, SI_QUEUE, v, pid, os.getuid()) for v in (7, -3, 2**31 - 1, -2**31)]


def test_standard_signals_coalesce_while_blocked():
    with blocked({signal.SIGUSR1}):
        for _ in range(50):
            os.kill(os.getpid(), signal.SIGUSR1)
        assert signal.SIGUSR1 in signal.sigpending()
        got = accept_pending({signal.SIGUSR1})
    assert [(s.signo, s.code, s.pid) for s in got] == [(signal.SIGUSR1, SI_USER, os.getpid())]


def test_sigtimedwait_returns_none_after_the_timeout(monkeypatch):
    with blocked({signal.SIGUSR2}):
        assert sigtimedwait({signal.SIGUSR2}, 0.05) is None


def test_sigtimedwait_lets_a_handled_signal_interrupt_it():
    def handler(signo, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with blocked({signal.SIGUSR2}), pytest.raises(KeyboardInterrupt):
            sigtimedwait({signal.SIGUSR2}, 5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_blocked_discards_what_is_still_pending_and_restores_the_mask():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with blocked({RT}):
        sigqueue(os.getpid(), RT, 1)  # unblocked with its default action, it would kill us
        assert RT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert RT not in signal.sigpending()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before


def test_sigqueue_to_a_process_that_is_gone_is_esrch():
    with Children() as kids:
        pid = kids.fork(lambda: 0)
        kids.wait(pid)
    with pytest.raises(ProcessLookupError) as e:
        sigqueue(pid, RT, 0)
    assert e.value.errno == errno.ESRCH and "sigqueue" in str(e.value)


@pytest.mark.needs("not_root")
def test_sigqueue_to_another_users_process_is_eperm():
    with pytest.raises(PermissionError) as e:
        sigqueue(1, signal.SIGRTMIN, 0)
    assert e.value.errno == errno.EPERM


@pytest.mark.parametrize("args", [(1, 0, 0), (1, 65, 0), (1, 32, 0), (1, -1, 0),
                                  (1, RT, 2**31), (1, RT, -2**31 - 1), (0, RT, 0), (-5, RT, 0), (2**31, RT, 0)])
def test_sigqueue_rejects_bad_arguments_before_any_syscall(args):
    with pytest.raises(ValueError, match="sigqueue"):
        sigqueue(*args)


@pytest.mark.parametrize("signals, timeout_s", [({0}, 0), ({65}, 0), (set(), 0), ({RT}, -1)])
def test_sigtimedwait_rejects_bad_arguments(signals, timeout_s):
    with pytest.raises(ValueError, match="sigtimedwait"):
        sigtimedwait(signals, timeout_s)


def test_sigtimedwait_wants_a_set_not_an_int():
    with pytest.raises(TypeError):
        sigtimedwait(RT, 0)
    with pytest.raises(TypeError):
        sigqueue(1, RT, 1.5)


def test_accept_pending_gives_realtime_signals_lowest_number_first():
    me = os.getpid()
    with blocked({RT, RT + 1}):
        sigqueue(me, RT + 1, 1)
        sigqueue(me, RT, 2)
        sigqueue(me, RT + 1, 3)
        assert [(s.signo, s.value) for s in accept_pending({RT, RT + 1})] == [(RT, 2), (RT + 1, 1), (RT + 1, 3)]
        assert accept_pending({RT, RT + 1}) == []
