"""threading's Barrier, process-shared, which a party's death breaks instead of hanging.

`Barrier(parties, action=None, timeout=None)`: `wait(timeout=None)` holds
each caller until `parties` of them have arrived and returns its arrival
index, 0..parties-1; the last to arrive runs `action` first. `abort()`,
`reset()`, a wait's timeout and an action that raises break it: every waiter,
and every later one until `reset()`, gets BrokenBarrierError (threading's own
class). Named by default: `Barrier.open(name)` in another process, and
pickled by name (with its action and timeout, which stay per process).

Its state is words under a robust mutex (osvirt.sync.monitor): the
generation, how many arrived in it, whether it is broken, and which of the
last 60 generations ended by reset(). A waiter waits for the generation to
change, so a released party never has to come back for the barrier to be
usable again (threading's barrier drains: a dead party would hang it).

A party that dies inside the barrier breaks it, for the others would wait for
it at the next phase forever: dying with the mutex held, the next caller gets
it with EOWNERDEAD; dying while it waits, it leaves a slot behind: each waiter
holds a robust mutex of its own (a slot, one per party) while it waits, and
every 0.1 s the waiters try the others' slots: EOWNERDEAD there is a death.
A party that dies before it arrives is one the barrier never knew of: a
timeout is what ends that wait.
"""
from collections.abc import Callable
import threading
import time
from typing import Any

from osvirt.sync import _native
from osvirt.sync.monitor import Monitor
from osvirt.sync.mutex import SLICE_NS, wait_timeout

__all__ = ["Barrier", "BrokenBarrierError"]

BrokenBarrierError = threading.BrokenBarrierError
GEN, COUNT, BROKEN, RESETS = 0, 1, 2, 3  # the monitor's words
RESET_BITS = 60  # RESETS: bit g % 60 set when generation g ended by reset() (an int64 stays positive)
MAX_SLOTS = 1024  # waiters past this many wait without a slot: their death goes unseen
MAX_PARTIES = 2 ** 62


class Barrier(Monitor):
    """threading.Barrier, process-shared.

    >>> barrier = Barrier(1, action=lambda: print("last in"))
    >>> barrier.wait()
    last in
    0
    """

    _KIND = "barrier"

    def __init__(self, parties: int, action: Callable[[], object] | None = None,
                 timeout: float | None = None, *, named: bool = True) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int):
            raise TypeError(f"Barrier: parties must be an int, not {parties!r}")
        if not 1 <= parties <= MAX_PARTIES:
            raise ValueError(f"Barrier: parties must be in 1..{MAX_PARTIES}, not {parties}")
        self._set_local(parties, action, timeout)
        slots = min(parties, MAX_SLOTS)
        self._create_monitor(named=named, metadata=parties,
                             size_bytes=_native.sizeof("osv_monitor") + slots * _native.sizeof("pthread_mutex_t"))

    def _init_more(self, ptr: Any) -> None:
        for slot in self._slots(ptr, self._parties):
            _native.mutex_init(slot, _native.PTHREAD_MUTEX_ERRORCHECK, True)

    def _set_local(self, parties: int, action: Callable[[], object] | None, timeout: float | None) -> None:
        if action is not None and not callable(action):
            raise TypeError(f"Barrier: action must be callable or None, not {action!r}")
        wait_timeout("Barrier", timeout)
        self._parties, self._action, self._timeout = parties, action, timeout

    @classmethod
    def open(cls, name: str, action: Callable[[], object] | None = None,
             timeout: float | None = None) -> "Barrier":
        """The barrier another process created, by its name, with this process's
        `action` and default `timeout`."""
        self: Barrier = cls._opened(name)
        region = self._held_region()
        self._set_local(region.metadata, action, timeout)
        if region.size_bytes < (_native.sizeof("osv_monitor")
                                      + len(self._slot_ps) * _native.sizeof("pthread_mutex_t")):
            self.close()
            raise ValueError(f"Barrier.open({name}): too small for {self._parties} parties")
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        name = super().__reduce__()[1][0]
        return (type(self).open, (name, self._action, self._timeout))

    @staticmethod
    def _slots(ptr: Any, parties: int) -> list[Any]:
        """The slot mutexes past the osv_monitor (valid while `ptr` is held)."""
        first = _native.following(ptr, "pthread_mutex_t")
        return [first + i for i in range(min(parties, MAX_SLOTS))]

    def _hold(self, region: Any, ptr: Any) -> None:
        super()._hold(region, ptr)
        self._slot_ps = self._slots(ptr, region.metadata)

    def _mutexes(self, ptr: Any) -> list[Any]:
        return [*super()._mutexes(ptr), *self._slot_ps]

    @property
    def parties(self) -> int:
        return self._parties

    @property
    def n_waiting(self) -> int:
        """How many wait now (0 once broken)."""
        return 0 if self._word(BROKEN) else self._word(COUNT)

    @property
    def broken(self) -> bool:
        return bool(self._word(BROKEN))

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the other parties; this caller's arrival index (0..parties-1).

        BrokenBarrierError when the barrier is or gets broken (abort, reset,
        timeout, a failed action, a party's death) before all arrive.
        """
        timeout_s = wait_timeout("Barrier.wait", self._timeout if timeout is None else timeout)
        with self._locked() as ptr:
            if self._words[BROKEN]:
                raise BrokenBarrierError
            gen, index = self._words[GEN], self._words[COUNT]
            self._words[COUNT] = index + 1
            if index + 1 == self._parties:
                self._release(ptr)
            else:
                self._wait_for_release(ptr, gen, timeout_s)
            return int(index)

    def _release(self, ptr: Any) -> None:
        """The last party: run the action, then start the next generation."""
        try:
            if self._action is not None:
                self._action()
        except BaseException:
            self._break(ptr)
            raise
        gen = self._words[GEN]
        self._words[RESETS] &= ~(1 << gen % RESET_BITS)
        self._words[GEN] = gen + 1
        self._words[COUNT] = 0
        self._broadcast(ptr)

    def _wait_for_release(self, ptr: Any, gen: int, timeout_s: float | None) -> None:
        slot = self._take_slot(ptr)
        try:
            end = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
            while self._words[GEN] == gen and not self._words[BROKEN]:
                left_ns = SLICE_NS if end is None else min(end - time.monotonic_ns(), SLICE_NS)
                if left_ns <= 0 or (self._cond_wait(ptr, left_ns) == _native.ETIMEDOUT
                                    and self._a_party_died(ptr, slot)):
                    self._break(ptr)
            if self._words[GEN] == gen or self._words[RESETS] >> gen % RESET_BITS & 1:
                raise BrokenBarrierError  # broken, or reset() ended this generation
        finally:
            if slot is not None:
                _native.mutex_unlock(slot)

    def _take_slot(self, ptr: Any) -> Any:
        """Lock a free slot, held while waiting; None when all are taken."""
        for slot in self._slot_ps:
            outcome = _native.mutex_trylock(slot)
            if outcome == 0:
                return slot
            if outcome == _native.EOWNERDEAD:  # a party died waiting: the barrier is broken
                self._free_dead(slot)
                self._break(ptr)
        return None

    def _a_party_died(self, ptr: Any, mine: Any) -> bool:
        """Whether a slot another waiter held is now its dead holder's (EOWNERDEAD)."""
        died = False
        for slot in self._slot_ps:
            if slot == mine:
                continue
            outcome = _native.mutex_trylock(slot)
            if outcome == _native.EOWNERDEAD:
                self._free_dead(slot)
                died = True
            elif outcome == 0:
                _native.mutex_unlock(slot)
        return died

    @staticmethod
    def _free_dead(slot: Any) -> None:
        _native.mutex_consistent(slot)
        _native.mutex_unlock(slot)

    def _owner_died(self, ptr: Any) -> None:
        self._break(ptr)

    def _break(self, ptr: Any) -> None:
        self._words[BROKEN] = 1
        self._broadcast(ptr)

    def abort(self) -> None:
        """Break the barrier: every waiter, and every later wait, gets BrokenBarrierError."""
        with self._locked() as ptr:
            self._break(ptr)

    def reset(self) -> None:
        """Back to its first state: the present waiters get BrokenBarrierError."""
        with self._locked() as ptr:
            gen = self._words[GEN]
            bit = 1 << gen % RESET_BITS  # set only if someone waits to be told
            self._words[RESETS] = self._words[RESETS] | bit if self._words[COUNT] else self._words[RESETS] & ~bit
            self._words[GEN] = gen + 1
            self._words[COUNT] = 0
            self._words[BROKEN] = 0
            self._broadcast(ptr)

    def __repr__(self) -> str:
        if self.closed:
            return f"<osvirt.sync.Barrier at {id(self):#x}: closed>"
        if self.broken:
            return f"<osvirt.sync.Barrier at {id(self):#x}: broken>"
        return f"<osvirt.sync.Barrier at {id(self):#x}: waiters={self.n_waiting}/{self.parties}>"
