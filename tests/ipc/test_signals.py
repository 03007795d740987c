import errno
import inspect
import os
import signal
import threading
import time

import psutil
import pytest

from osvirt import _quickcalls
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


@pytest.mark.parametrize("timeout_s", [5, None])  # sigtimedwait, and sigwaitinfo without a timeout
def test_sigtimedwait_lets_a_handled_signal_interrupt_it(timeout_s):
    def handler(signo, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with blocked({signal.SIGUSR2}), pytest.raises(KeyboardInterrupt):
            sigtimedwait({signal.SIGUSR2}, timeout_s)
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


def _pid_1_is_ours():
    """kill(2)'s rule without CAP_KILL: a sender's real or effective uid matching the
    target's real or saved uid lets the signal through."""
    uids = psutil.Process(1).uids()
    return bool({os.getuid(), os.geteuid()} & {uids.real, uids.saved})


@pytest.mark.needs("not_cap_kill")
@pytest.mark.skipif(_pid_1_is_ours(), reason="pid 1 runs as this user: the kernel would deliver the signal to it")
def test_sigqueue_to_another_users_process_is_eperm():
    with pytest.raises(PermissionError) as e:
        sigqueue(1, signal.SIGRTMIN, 0)
    assert e.value.errno == errno.EPERM


@pytest.mark.parametrize("args", [(1, 0, 0), (1, 65, 0), (1, 32, 0), (1, -1, 0),
                                  (1, RT, 2**31), (1, RT, -2**31 - 1), (0, RT, 0), (-5, RT, 0), (2**31, RT, 0)])
def test_sigqueue_rejects_bad_arguments_before_any_syscall(args):
    with pytest.raises(ValueError, match="sigqueue"):
        sigqueue(*args)


@pytest.mark.parametrize("signals, timeout_s", [({0}, 0), ({65}, 0), (set(), 0), ({RT}, -1), ({RT, 0}, 0),
                                               ([65], 0), (frozenset(), None), ([], None), ({32}, None)])
def test_sigtimedwait_rejects_bad_arguments(signals, timeout_s):
    with pytest.raises(ValueError, match="sigtimedwait"):
        sigtimedwait(signals, timeout_s)


def test_sigtimedwait_wants_a_set_not_an_int():
    with pytest.raises(TypeError):
        sigtimedwait(RT, 0)
    with pytest.raises(TypeError, match="sigqueue"):
        sigqueue(1, RT, 1.5)


def test_numbers_that_only_hash_like_a_signal_are_refused_before_any_syscall():
    with blocked({RT}):
        with pytest.raises(TypeError, match="sigtimedwait"):
            sigtimedwait({float(RT)}, 0)  # 34.0 finds 34 in a dict: the type is checked first
        with pytest.raises(TypeError, match="sigqueue"):
            sigqueue(os.getpid(), float(RT), 1)
        with pytest.raises(TypeError, match="sigqueue"):
            sigqueue(float(os.getpid()), RT, 1)
        assert RT not in signal.sigpending()  # nothing was sent


def test_sigtimedwait_accepts_only_the_signals_asked_for():
    me = os.getpid()
    with blocked({RT, RT + 1}):
        sigqueue(me, RT, 1)
        sigqueue(me, RT + 1, 2)
        # RT is pending and numbered lower, but the kernel's set holds only RT + 1
        assert sigtimedwait({RT + 1}, 0) == (RT + 1, SI_QUEUE, 2, me, os.getuid())
        assert sigtimedwait(frozenset([RT + 1]), 0) is None
        assert sigtimedwait([int(RT)], 0).value == 1  # any collection of plain ints, or of Signals
        assert accept_pending({RT, RT + 1}) == []


def test_sigtimedwait_reaches_the_first_and_the_last_signal_number():
    me, last = os.getpid(), signal.SIGRTMAX  # signals 1 and 64: the two ends of the C mask
    with blocked({signal.SIGHUP, last}):
        sigqueue(me, last, -9)
        os.kill(me, signal.SIGHUP)
        assert sigtimedwait({last}, 0) == (last, SI_QUEUE, -9, me, os.getuid())
        assert sigtimedwait({signal.SIGHUP}, 0) == (signal.SIGHUP, SI_USER, 0, me, os.getuid())


def test_queued_signal_is_a_named_tuple():
    me = os.getpid()
    with blocked({RT}):
        sigqueue(me, RT, 7)
        got = sigtimedwait({RT})
    signo, code, value, pid, uid = got
    assert (got.signo, got.code, got.value, got.pid, got.uid) == (signo, code, value, pid, uid) == \
        (RT, SI_QUEUE, 7, me, os.getuid())
    assert repr(got) == f"QueuedSignal(signo={int(RT)}, code={SI_QUEUE}, value=7, pid={me}, uid={os.getuid()})"


def test_sigtimedwait_after_a_timeout_and_an_error_reports_the_next_signal():
    me = os.getpid()
    with blocked({RT}):
        assert sigtimedwait({RT}, 0) is None  # EAGAIN
        for value in (5, -5):
            sigqueue(me, RT, value)
            assert sigtimedwait({RT}, 0) == (RT, SI_QUEUE, value, me, os.getuid())


def test_threads_waiting_at_once_each_get_their_own_signal():
    """Thread-directed signals (pthread_kill), each thread its own number, accepted
    concurrently: no result may carry another thread's signal."""
    rounds, wrong, errors = 2000, [], []

    def accept_own(signo):
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signo})
            me = threading.get_ident()
            for _ in range(rounds):
                signal.pthread_kill(me, signo)
                got = sigtimedwait({signo}, 1)
                if got is None or got.signo != signo or got.pid != os.getpid():
                    wrong.append(got)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=accept_own, args=(RT + i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and wrong == []


def test_accept_pending_gives_realtime_signals_lowest_number_first():
    me = os.getpid()
    with blocked({RT, RT + 1}):
        sigqueue(me, RT + 1, 1)
        sigqueue(me, RT, 2)
        sigqueue(me, RT + 1, 3)
        assert [(s.signo, s.value) for s in accept_pending({RT, RT + 1})] == [(RT, 2), (RT + 1, 1), (RT + 1, 3)]
        assert accept_pending({RT, RT + 1}) == []


# -- the C calls under sigqueue and sigtimedwait (osvirt._quickcalls) ----------------
@pytest.mark.parametrize("args, error", [
    (("1", 0), TypeError), ((1.0, 0), TypeError), ((True, 0), TypeError), ((None, 0), TypeError),
    ((-1, 0), OverflowError), ((2**64, 0), OverflowError), ((1, 0.5), TypeError), ((1, 2**63), OverflowError),
    ((1,), TypeError), ((1, 0, 0), TypeError),
])
def test_the_c_sigtimedwait_refuses_arguments_before_the_call_leaving_the_signal_pending(args, error):
    me = os.getpid()
    with blocked({RT}):
        sigqueue(me, RT, 3)
        with pytest.raises(error, match="sigtimedwait"):
            _quickcalls.sigtimedwait(*args)
        assert accept_pending({RT}) == [(RT, SI_QUEUE, 3, me, os.getuid())]  # still queued


@pytest.mark.parametrize("args, error", [
    ((True, int(RT), 0), TypeError), ((1, int(RT), 1.0), TypeError), ((1, "34", 0), TypeError), ((1, RT, 0), TypeError),
    ((2**31, int(RT), 0), OverflowError), ((1, int(RT), -2**31 - 1), OverflowError), ((1, int(RT)), TypeError),
])
def test_the_c_sigqueue_refuses_arguments_before_the_call(args, error):
    with blocked({RT}):
        with pytest.raises(error, match="sigqueue"):
            _quickcalls.sigqueue(*args)
        assert accept_pending({RT}) == []  # nothing was sent


def test_sigqueue_passes_a_signal_enum_member_to_c_as_its_number():
    # signal.SIGRTMIN is a signal.Signals; the C call takes exactly an int.
    me = os.getpid()
    with blocked({RT}):
        sigqueue(me, signal.Signals(RT), -9)
        with pytest.raises(TypeError, match="sigqueue"):
            _quickcalls.sigqueue(me, signal.Signals(RT), -9)
        assert _quickcalls.sigtimedwait(1 << (RT - 1), 0) == (RT, SI_QUEUE, -9, me, os.getuid())


def test_the_c_sigtimedwait_refuses_a_signal_the_c_library_keeps_for_itself():
    # 32 and 33 are glibc's (thread cancellation, setxid): sigaddset refuses them.
    with pytest.raises(OSError) as refused:
        _quickcalls.sigtimedwait(1 << (32 - 1), 0)
    assert refused.value.errno == errno.EINVAL


def test_a_wait_for_a_signal_lets_the_other_threads_run():
    """The wait (nothing pending yet) releases the GIL: this thread counts while
    another waits, then sends it the signal it waits for."""
    signo, got, counted = RT + 3, [], 0
    waiting = threading.Event()

    def wait():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signo})
        waiting.set()
        got.append(sigtimedwait({signo}, 10))

    waiter = threading.Thread(target=wait)
    with blocked({signo}):  # were the signal to reach this thread, it stays pending here
        t0 = time.monotonic()
        waiter.start()
        waiting.wait(5)
        while time.monotonic() - t0 < 0.3:
            counted += 1
        signal.pthread_kill(waiter.ident, signo)
        waiter.join(10)
        elapsed = time.monotonic() - t0
    assert got and got[0].signo == signo and got[0].pid == os.getpid()
    assert counted > 1000 and elapsed < 5, f"{counted} loops in {elapsed:.2f} s while the other thread waited"


# -- sigqueue and sigtimedwait's valid calls, made in C (osvirt._quickcalls.checked) ----
def test_sigqueue_and_sigtimedwait_show_their_python_functions_signature_and_docstring():
    for f in (sigqueue, sigtimedwait):
        assert inspect.signature(f) == inspect.signature(f.__wrapped__)
        assert f.__doc__ and f.__doc__ == f.__wrapped__.__doc__
        assert (f.__module__, f.__name__) == ("osvirt.ipc.signals", f.__wrapped__.__name__)


def test_an_untimed_wait_goes_on_after_a_handler_that_returns():
    # EINTR in the C wait: the handler runs, then the wait goes on, as the Python loop does.
    me = os.getpid()
    ran = []

    def handler(signo, frame):
        ran.append(signo)
        sigqueue(me, RT, 5)
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        with blocked({RT}):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            got = sigtimedwait(frozenset({RT}))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert ran == [signal.SIGALRM]
    assert type(got) is QueuedSignal and got == (RT, SI_QUEUE, 5, me, os.getuid())


def test_a_refusal_from_the_c_path_names_the_call_and_hides_the_handled_exception():
    with pytest.raises(ProcessLookupError, match=r"sigqueue\(2147483647, 34, 1\)") as e:
        try:
            raise KeyError("handled")
        except KeyError:
            sigqueue(2**31 - 1, int(RT), 1)  # no such pid (pid_max is at most 2**22)
    assert e.value.errno == errno.ESRCH and e.value.__suppress_context__ and e.value.__cause__ is None
