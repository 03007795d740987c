import signal

import pytest

from osvirt.bench import ipc
from osvirt.errors import OsvirtError

SIGNAL_SELF = next(p for p in ipc.PRIMITIVES if p.name == "signal-self")


def _usr1_caught():
    """SigCgt of this process: is SIGUSR1 caught by a handler?"""
    with open("/proc/self/status") as status:
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGUSR1 - 1) & 1)


def test_signal_self_batch_runs_the_handler_once_per_kill_and_restores_the_old_one():
    before = signal.getsignal(signal.SIGUSR1)
    with SIGNAL_SELF.python.open() as batch:
        assert _usr1_caught()  # the kernel has a handler for it: each kill is delivered
        assert batch.fn(500) > 0  # raises unless the handler ran 500 times
    assert signal.getsignal(signal.SIGUSR1) is before


def test_signal_self_batch_reports_deliveries_that_did_not_happen():
    with SIGNAL_SELF.python.open() as batch:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            # Blocked, the three kills leave one pending SIGUSR1 and no handler runs.
            with pytest.raises(OsvirtError, match="3 SIGUSR1 sent to self, the handler ran 0 times"):
                batch.fn(3)
            assert signal.SIGUSR1 in signal.sigpending()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # the pending one reaches the handler
