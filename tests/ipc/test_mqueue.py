import errno
import os
import random
import signal
import threading
import time

import posix_ipc
import pytest

from osvirt import env
from osvirt.ipc import MQ_PRIO_MAX, PosixMessageQueue, SysVMessageQueue, _native, mq_limits
from osvirt.process import Children, ready


def _sysv_msq_ids():
    with open("/proc/sysvipc/msg") as f:
        return {int(line.split()[1]) for line in list(f)[1:]}


def test_posix_queue_delivers_highest_priority_first_fifo_within_a_priority():
    with PosixMessageQueue() as q:
        n = q.attributes()["max_messages"]
        priorities = [random.randrange(3) for _ in range(n)]
        for seq, prio in enumerate(priorities):
            q.send(b"%d" % seq, priority=prio)
        assert q.attributes()["current_messages"] == n
        got = [q.receive() for _ in range(n)]
        assert q.attributes()["current_messages"] == 0
    want = sorted(((b"%d" % seq, p) for seq, p in enumerate(priorities)), key=lambda m: -m[1])  # stable
    assert got == want


def test_posix_queue_attributes_default_to_the_sysctl_limit():
    with PosixMessageQueue(max_message_size=64) as q:
        assert q.attributes() == {"current_messages": 0, "max_messages": mq_limits()["msg_max"],
                                  "max_message_size": 64}
        assert q.name.startswith("/osvirt-")


def test_full_posix_queue_is_eagain_when_non_blocking_and_etimedout_when_timed():
    with PosixMessageQueue(max_messages=2) as q:
        q.send(b"a")
        q.send(b"b")
        with pytest.raises(BlockingIOError) as e:
            q.send(b"c", block=False)
        assert e.value.errno == errno.EAGAIN
        with pytest.raises(TimeoutError) as e:
            q.send(b"c", timeout_s=0.01)
        assert e.value.errno == errno.ETIMEDOUT
        assert q.attributes()["current_messages"] == 2


def test_empty_posix_queue_receive_is_eagain_when_non_blocking():
    with PosixMessageQueue(max_messages=1) as q, pytest.raises(BlockingIOError) as e:
        q.receive(block=False)
    assert e.value.errno == errno.EAGAIN


def test_more_than_msg_max_is_einval_without_cap_sys_resource():
    if env.can("cap_sys_resource"):
        pytest.skip("CAP_SYS_RESOURCE lifts msg_max")
    with pytest.raises(OSError) as e:
        PosixMessageQueue(max_messages=mq_limits()["msg_max"] + 1)
    assert e.value.errno == errno.EINVAL and "msg_max" in str(e.value)


def test_posix_queue_is_unlinked_on_close_even_after_an_exception():
    with pytest.raises(RuntimeError):
        with PosixMessageQueue() as q:
            posix_ipc.MessageQueue(q.name).close()  # exists while open
            raise RuntimeError
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.MessageQueue(q.name)
    q.close()


def test_a_forked_child_sends_and_its_close_does_not_unlink():
    with PosixMessageQueue() as q, Children() as kids:
        def child():
            q.send(b"from child", priority=3)
            q.close()
        assert kids.wait(kids.fork(child)) == 0
        assert q.receive(timeout_s=5) == (b"from child", 3)


@pytest.mark.parametrize("kwargs", [dict(max_messages=0), dict(max_messages=-1), dict(max_message_size=0)])
def test_posix_queue_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="mq_open"):
        PosixMessageQueue(**kwargs)


@pytest.mark.parametrize("priority", [-1, MQ_PRIO_MAX])
def test_posix_queue_rejects_priorities_out_of_range(priority):
    with PosixMessageQueue(max_messages=1) as q:
        with pytest.raises(ValueError, match="priority"):
            q.send(b"x", priority=priority)
        assert q.attributes()["current_messages"] == 0


def test_posix_queue_rejects_a_message_longer_than_its_size():
    with PosixMessageQueue(max_message_size=8) as q, pytest.raises(ValueError, match="max_message_size"):
        q.send(bytes(9))


def test_sysv_msgrcv_selects_by_type():
    with SysVMessageQueue() as q:
        for seq, mtype in enumerate((5, 2, 4, 1, 3, 2)):
            q.send(b"%d" % seq, type=mtype)
        assert q.current_messages == 6
        assert q.receive(type=2) == (b"1", 2)    # the oldest of type 2
        assert q.receive(type=-3) == (b"3", 1)   # the lowest type <= 3
        assert q.receive(type=0) == (b"0", 5)    # the oldest of all
        assert q.receive(type=2) == (b"5", 2)
        assert q.current_messages == 2
        with pytest.raises(OSError) as e:
            q.receive(type=7, block=False)
        assert e.value.errno == errno.ENOMSG


def test_sysv_queue_is_private_0600_and_removed_on_close():
    with SysVMessageQueue() as q:
        with open("/proc/sysvipc/msg") as f:
            row = next(line.split() for line in f if line.split()[1] == str(q.id))
        assert int(row[0]) == 0 and int(row[2], 8) & 0o777 == 0o600  # key IPC_PRIVATE, perms
    assert q.id not in _sysv_msq_ids()
    q.close()


@pytest.mark.parametrize("mtype", [0, -1, 2**63])
def test_sysv_send_rejects_types_out_of_range(mtype):
    with SysVMessageQueue() as q, pytest.raises(ValueError, match="msgsnd"):
        q.send(b"x", type=mtype)


# -- the C send/receive path (csrc/msgqueue.c) -------------------------------------
def _blocked_in_kernel(pid, timeout_s=5.0):
    """Wait until `pid` sleeps in the kernel (state S); its wchan (the kernel function it waits in)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state == "S":
            with open(f"/proc/{pid}/wchan") as f:
                return f.read()
        time.sleep(0.005)
    raise AssertionError(f"child {pid} never blocked")


def _took_and_blocked_again(pid, signo, timeout_s=30.0):
    """Wait until `pid` has taken `signo` (pending no more: SigPnd, ShdPnd) and sleeps in the kernel again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
        if not pending >> (signo - 1) & 1 and status["State"].split()[0] == "S":
            return
        time.sleep(0.005)
    raise AssertionError(f"child {pid} did not take signal {signo} and block again")


def _receive_until_interrupted(receive, ready_fd):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ready(ready_fd)
    receive()  # KeyboardInterrupt: Children makes it exit code 130
    return 1


@pytest.mark.parametrize("kind", ["posix", "sysv"])
def test_sigint_interrupts_a_blocked_receive_with_keyboardinterrupt(kind):
    with (PosixMessageQueue(max_messages=1) if kind == "posix" else SysVMessageQueue()) as q, \
            Children() as kids:
        pid = kids.fork_ready(_receive_until_interrupted, q.receive)
        wchan = _blocked_in_kernel(pid)
        sent = time.monotonic()
        os.kill(pid, signal.SIGINT)
        assert kids.wait(pid, timeout_s=5) == 128 + signal.SIGINT, f"blocked in {wchan}"
        assert time.monotonic() - sent < 1.0
        q.send(b"after")  # nothing was taken: the message sent now is the only one
        assert q.receive(block=False)[0] == b"after"


def _receive_through_sigusr1(q, kwargs, report_fd, ready_fd):
    """Receive while SIGUSR1 (whose handler only counts) interrupts the wait; report
    `message handlers-run elapsed-ms` on report_fd."""
    caught = []
    signal.signal(signal.SIGUSR1, lambda *_: caught.append(1))
    ready(ready_fd)
    start = time.monotonic()
    try:
        message = q.receive(**kwargs)[0]
    except TimeoutError as e:
        message = errno.errorcode[e.errno].encode()
    os.write(report_fd, b"%s %d %d" % (message, len(caught), (time.monotonic() - start) * 1000))


@pytest.mark.parametrize("kind", ["posix", "sysv"])
def test_a_signal_whose_handler_returns_resumes_the_blocked_receive(kind):
    r, w = os.pipe()
    with (PosixMessageQueue(max_messages=1) if kind == "posix" else SysVMessageQueue()) as q, \
            Children() as kids, open(r, "rb") as report:
        pid = kids.fork_ready(_receive_through_sigusr1, q, {}, w)
        os.close(w)
        _blocked_in_kernel(pid)
        os.kill(pid, signal.SIGUSR1)  # EINTR in the child: its handler runs, the receive goes on
        # Sent once the receive waits again, not after a fixed sleep: on a loaded
        # machine the message could come first and the resumed wait go untested.
        _took_and_blocked_again(pid, signal.SIGUSR1)
        q.send(b"late")
        assert kids.wait(pid, timeout_s=5) == 0
        message, handled, _ = report.read().split()
    assert (message, handled) == (b"late", b"1")


def test_a_timed_receive_interrupted_by_a_signal_keeps_its_deadline():
    r, w = os.pipe()
    with PosixMessageQueue(max_messages=1) as q, Children() as kids, open(r, "rb") as report:
        pid = kids.fork_ready(_receive_through_sigusr1, q, {"timeout_s": 0.5}, w)
        os.close(w)
        _blocked_in_kernel(pid)
        os.kill(pid, signal.SIGUSR1)
        assert kids.wait(pid, timeout_s=5) == 0
        outcome, handled, elapsed_ms = report.read().split()
    assert (outcome, handled) == (b"ETIMEDOUT", b"1")
    assert 490 <= int(elapsed_ms) < 5000


def test_posix_receive_buffer_below_the_queue_message_size_is_emsgsize():
    # Why receive() sizes its buffer from mq_msgsize: the kernel refuses a smaller one.
    with PosixMessageQueue(max_messages=1, max_message_size=64) as q:
        q.send(b"x")
        small, _ = _native.mq_receiver(q._mqd, 63)
        assert _native.raw_mq_receive(small) == -1 and _native.last_errno() == errno.EMSGSIZE
        assert q.attributes()["current_messages"] == 1
        assert q.receive() == (b"x", 0)


def test_posix_timed_calls_are_etimedout_and_untimed_blocking_waits_for_the_message():
    with PosixMessageQueue(max_messages=1) as q, Children() as kids:
        start = time.monotonic()
        with pytest.raises(TimeoutError) as e:
            q.receive(timeout_s=0.05)
        assert e.value.errno == errno.ETIMEDOUT and time.monotonic() - start >= 0.05
        with pytest.raises(TimeoutError):
            q.receive(timeout_s=0)
        kids.fork(lambda: time.sleep(0.05) or q.send(b"m", priority=MQ_PRIO_MAX - 1))
        assert q.receive(timeout_s=10) == (b"m", MQ_PRIO_MAX - 1)
        q.send(b"full")
        with pytest.raises(TimeoutError):
            q.send(b"more", timeout_s=0)


def test_posix_send_accepts_bytes_like_and_refuses_str_and_int():
    with PosixMessageQueue(max_messages=3, max_message_size=8) as q:
        q.send(bytearray(b"ba"))
        q.send(memoryview(b"mv"), priority=True)  # bool is an int
        q.send(b"12345678")  # exactly max_message_size
        assert [q.receive() for _ in range(3)] == [(b"mv", 1), (b"ba", 0), (b"12345678", 0)]
        for bad in ("str", 5, None):
            with pytest.raises(TypeError, match="mq_send"):
                q.send(bad)
        assert q.attributes()["current_messages"] == 0


@pytest.mark.parametrize("timeout_s", [-1, float("nan"), 1e10])
def test_posix_queue_rejects_bad_timeouts_before_the_call(timeout_s):
    with PosixMessageQueue(max_messages=1) as q:
        with pytest.raises(ValueError, match="mq_receive: timeout_s"):
            q.receive(timeout_s=timeout_s)
        with pytest.raises(ValueError, match="mq_send: timeout_s"):
            q.send(b"x", timeout_s=timeout_s)
        assert q.attributes()["current_messages"] == 0


@pytest.mark.parametrize("kind", ["posix", "sysv"])
def test_a_closed_queue_refuses_send_and_receive(kind):
    q = PosixMessageQueue(max_messages=1) if kind == "posix" else SysVMessageQueue()
    q.send(b"x")
    q.receive()  # a buffer is pooled: close() must still make receive refuse
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.send(b"x")
    with pytest.raises(ValueError, match="closed"):
        q.receive()


@pytest.mark.parametrize("kind", ["posix", "sysv"])
def test_two_threads_receiving_on_one_queue_get_every_message_once_and_intact(kind):
    # Each message is one byte value repeated: a buffer two receives shared would mix two.
    size = 1000
    messages_sent = [bytes([i % 256]) * (size - i % 7) for i in range(3000)]
    with (PosixMessageQueue(max_messages=4, max_message_size=size) if kind == "posix"
          else SysVMessageQueue()) as q, Children() as kids:
        got = [[], []]

        def receiver(out):
            while (message := q.receive()[0]) != b"stop":
                out.append(message)

        threads = [threading.Thread(target=receiver, args=(out,)) for out in got]
        for t in threads:
            t.start()
        def sender():
            for message in messages_sent:
                q.send(message)
            for _ in threads:
                q.send(b"stop")

        assert kids.wait(kids.fork(sender), timeout_s=30) == 0
        for t in threads:
            t.join(30)
    messages = got[0] + got[1]
    assert all(got)  # both threads received
    assert sorted(messages) == sorted(messages_sent)


def test_sysv_full_queue_is_eagain_when_non_blocking():
    with SysVMessageQueue() as q:
        big = bytes(q._msgmax)
        while True:
            try:
                q.send(big, block=False)
            except BlockingIOError as e:
                assert e.errno == errno.EAGAIN
                break
        queued = q.current_messages
        assert queued >= 1
        assert q.receive(block=False) == (big, 1)
        assert q.current_messages == queued - 1


def test_sysv_message_of_msgmax_bytes_goes_and_one_more_is_refused_before_msgsnd():
    with open("/proc/sys/kernel/msgmax") as f:
        msgmax = int(f.read())
    with SysVMessageQueue() as q:
        q.send(b"m" * msgmax, type=9)
        assert q.receive() == (b"m" * msgmax, 9)
        with pytest.raises(ValueError, match="msgmax"):
            q.send(bytes(msgmax + 1))
        assert q.current_messages == 0


def test_sysv_receive_grows_its_buffer_for_a_message_longer_than_it_expected():
    # As after kernel.msgmax was raised: a message longer than the buffers is E2BIG
    # for msgrcv, and receive() retries with a larger buffer.
    with SysVMessageQueue() as q:
        q._msgmax, q._buffers = 100, []  # the buffers of a queue made when msgmax was 100
        q._mq.send(b"b" * 300, type=4)  # sysv_ipc's own msgsnd
        assert q.receive() == (b"b" * 300, 4)
        assert q.current_messages == 0


def test_sysv_receive_blocked_when_the_queue_is_removed_is_eidrm():
    r, w = os.pipe()
    with SysVMessageQueue() as q, Children() as kids, open(r, "rb") as report:
        def child(ready_fd):
            ready(ready_fd)
            try:
                q.receive()
            except OSError as e:
                os.write(w, errno.errorcode[e.errno].encode())
        pid = kids.fork_ready(child)
        os.close(w)
        _blocked_in_kernel(pid)
        q.close()  # IPC_RMID wakes the blocked msgrcv
        assert kids.wait(pid, timeout_s=5) == 0
        assert report.read() == b"EIDRM"


@pytest.mark.parametrize("kind", ["posix", "sysv"])
def test_send_and_receive_made_in_c_show_their_methods_signature_and_docstring(kind):
    # Their plain calls are made in C (osvirt._quickcalls.checked); the others by the method.
    import inspect
    cls = PosixMessageQueue if kind == "posix" else SysVMessageQueue
    for name in ("send", "receive"):
        method = getattr(cls, name)
        assert inspect.signature(method) == inspect.signature(method.__wrapped__)
        assert method.__doc__ and method.__doc__ == method.__wrapped__.__doc__
        assert method.__qualname__ == f"{cls.__name__}.{name}"
    with (cls() if kind == "sysv" else cls(max_messages=2, max_message_size=16)) as q:
        send = q.send  # bound, as a method is
        send(b"ab")
        assert q.receive() == (b"ab", 0 if kind == "posix" else 1)
