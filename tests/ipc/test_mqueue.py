import errno
import random

import posix_ipc
import pytest

from osvirt import env
from osvirt.ipc import MQ_PRIO_MAX, PosixMessageQueue, SysVMessageQueue, mq_limits
from osvirt.process import Children


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
