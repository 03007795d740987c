"""Process synchronization, measured (seed §4.1.3, `sync`).

The article's `sync()` is empty. Here processes really share memory and the
kernel's futexes really arbitrate it: children incrementing one counter
without a lock lose updates, and a process-shared pthread mutex makes the
total exact. A robust mutex's holder is SIGKILLed mid-update; the next
locker is told (EOWNERDEAD), repairs the data and goes on. A counting
semaphore of K admits exactly K at a time; a SysV semaphore taken with
SEM_UNDO is given back by the kernel when its holder dies (a POSIX one is
not); a producer and a consumer pass items through a bounded buffer with a
condition variable; a barrier keeps phases apart, and breaks instead of
hanging when a party dies in it. The later steps use osvirt.sync's
threading-protocol classes (Lock, Condition, Barrier: the same methods as
threading's, process-shared and robust). Last, the article's own example,
compiled: it does not.

Usage: python demos/03_sync.py [--json]
"""
import contextlib
import sys
import time

from osvirt import env
from osvirt.demo import run
from osvirt.device import cc
from osvirt.sync import (Barrier, BrokenBarrierError, Condition, Lock, Mutex, Semaphore, SharedRegion, SysVSemaphore,
                         workloads)
from osvirt.sync.workloads import OCCUPANCY, PAIR

NAME = "sync"
SEED = "4.1.3 sync"
SUMMARY = "lost updates, process-shared and robust mutexes, semaphores, condition, barrier"

# How long a step waits for its children: a cap for a hung child, not a measurement. Two new
# interpreters (the named-mutex step) or the compiler on a loaded machine, with the CPU taken
# and the disk busy, may take many seconds to start.
WAIT_S = 60
N, M = 4, 2000   # processes x increments of the shared counter


def _shared(demo, count):
    """`count` int64 counters in a fresh anonymous shared region owned by the demo."""
    return demo.own(SharedRegion(8 * count)).view("q")


def _owned(demo, obj):
    return demo.own(contextlib.closing(obj))


def _all_exit(demo, pids):
    """Wait for every child; the list of their exit codes."""
    return [demo.children.wait(pid, timeout_s=WAIT_S) for pid in pids]


def _pair(pair):
    """(first, second, repairs) of a robust-mutex pair (workloads.PAIR), as they are now."""
    return pair[PAIR["first"]], pair[PAIR["second"]], pair[PAIR["repairs"]]


def _count(demo, mutex):
    counter = _shared(demo, 1)
    pids = [demo.children.fork(workloads.increment, counter, M, mutex, True) for _ in range(N)]
    codes = _all_exit(demo, pids)
    return counter[0], codes


def body(demo):
    demo.say(f"{N} processes each read the shared counter, sched_yield(), write it back plus one, "
             f"{M} times: {N * M} increments in all.")
    with demo.step("no lock: updates are lost", asked="mmap(MAP_SHARED|MAP_ANONYMOUS); fork() x4; "
                   "load, sched_yield(), store"):
        total, codes = demo.retry(lambda: _count(demo, None), lambda r: r[0] < N * M)
        demo.check("counter after unsynchronised increments", f"< {N * M} (lost updates)",
                   f"{total} ({N * M - total} lost, {100 * (N * M - total) / (N * M):.1f} %)",
                   total < N * M and codes == [0] * N)

    with demo.step("a process-shared mutex: none are lost",
                   asked="pthread_mutex_init(PTHREAD_PROCESS_SHARED, ERRORCHECK, ROBUST) in the mapping"):
        mutex = _owned(demo, Mutex())
        demo.say(f"the mutex lives in {mutex.where}")
        total, codes = _count(demo, mutex)
        demo.check("counter after increments under the mutex", f"exactly {N * M}", str(total),
                   total == N * M and codes == [0] * N)

    with demo.step("unrelated processes open the mutex by name",
                   asked="shm_open(O_CREAT|O_EXCL, 0600) + pthread_mutex_init; exec'd processes shm_open it"):
        mutex, region = _owned(demo, Mutex(named=True)), demo.own(SharedRegion(8, named=True))
        demo.say(f"the mutex lives in {mutex.where}")
        argv = [sys.executable, "-m", "osvirt.sync.workloads", mutex.name, region.name, str(M)]
        procs = [demo.children.spawn(argv) for _ in range(2)]
        workloads.increment(region.view("q"), M, mutex, True)
        codes = [proc.wait(WAIT_S) for proc in procs]
        demo.check("counter after this process and 2 exec'd ones each add", f"exactly {3 * M}",
                   str(region.view("q")[0]), region.view("q")[0] == 3 * M and codes == [0, 0])

    with demo.step("robust mutex: its holder is SIGKILLed mid-update",
                   asked="kill(holder, SIGKILL); pthread_mutex_lock -> EOWNERDEAD; pthread_mutex_consistent"):
        mutex = _owned(demo, Mutex(robust=True))
        pair = _shared(demo, 3)
        demo.say("The pair (first, second) starts at (0, 0) and must stay equal outside the lock; the "
                 "holder bumps first, then is killed before it bumps second.")
        holder = demo.children.fork_ready(workloads.hold_mid_update, mutex, pair)
        status = workloads.kill_and_reap(demo.children, holder)
        owner_died, before = workloads.repair_pair(mutex, pair)
        repaired = _pair(pair)
        demo.check("the holder's end", "killed by SIGKILL (-9)", str(status), status == -9)
        demo.check("the next lock, and the data it guards",
                   "EOWNERDEAD: the caller holds it, and sees the pair as the holder left it: "
                   "(1, 0), first - second = 1",
                   f"{'EOWNERDEAD (OwnerDead raised, mutex held)' if owner_died else 'acquired normally'}; "
                   f"pair {before}, first - second = {before[0] - before[1]}",
                   owner_died and before == (1, 0))
        demo.say("Nothing rolls the dead holder's store back: the memory is shared, and the kernel only "
                 "hands the lock on with a flag. The new holder completes the update (second = first), "
                 "then calls pthread_mutex_consistent.")
        after = [workloads.repair_pair(mutex, pair)[0]]
        pid = demo.children.fork(workloads.update_pair, mutex, pair, 100)
        after.append(demo.children.wait(pid, timeout_s=WAIT_S))
        demo.check("after the repair and pthread_mutex_consistent: work goes on",
                   "pair (1, 1); lock without EOWNERDEAD; a new child does 100 updates; pair (101, 101)",
                   f"pair {repaired[:2]}; owner died again: {after[0]}; child exit {after[1]}; "
                   f"pair {_pair(pair)[:2]}",
                   repaired == (1, 1, 1) and after == [False, 0] and _pair(pair) == (101, 101, 1))

    k, contenders = 2, 5
    with demo.step(f"a counting semaphore of {k} among {contenders} processes",
                   asked=f"sem_init(pshared=1, {k}); sem_clockwait / sem_post"):
        def occupancy():
            sem, lock, stats = _owned(demo, Semaphore(k)), _owned(demo, Mutex()), _shared(demo, 3)
            pids = [demo.children.fork(workloads.occupy, sem, lock, stats, 3, 0.02) for _ in range(contenders)]
            codes = _all_exit(demo, pids)
            return stats[OCCUPANCY["max"]], stats[OCCUPANCY["entries"]], codes
        most, entries, codes = demo.retry(occupancy, lambda r: r[0] == k)
        demo.check("most processes inside at once", f"exactly {k} (of {contenders} contending)",
                   f"{most} ({entries} entries)", most == k and entries == 3 * contenders
                   and codes == [0] * contenders)

    with demo.step("SysV semaphore with SEM_UNDO: the kernel gives it back",
                   asked="semop(-1, SEM_UNDO) in a child; kill(SIGKILL); semctl(GETVAL)"):
        def after_death(sem):
            pid = demo.children.fork_ready(workloads.hold_until_killed, sem)
            held = sem.value
            return held, workloads.kill_and_reap(demo.children, pid), sem.value
        sysv = _owned(demo, SysVSemaphore(1, undo=True))
        demo.say(f"it is {sysv.where}")
        held, status, back = after_death(sysv)
        demo.check("semval: held by the child, then after its SIGKILL", "0, then 1 (undone by the kernel)",
                   f"{held}, then {back} (child {status})", (held, back, status) == (0, 1, -9))
        posix = _owned(demo, Semaphore(1))
        held, status, back = after_death(posix)
        demo.check("a POSIX semaphore (sem_init) the same way", "0, then still 0: no undo for POSIX",
                   f"{held}, then {back} (child {status})", (held, back, status) == (0, 0, -9))

    capacity, count = 4, 2000
    with demo.step(f"producer/consumer over a {capacity}-slot buffer with condition variables",
                   asked="Condition(Lock()): wait_for / notify, threading's protocol "
                         "(pthread_cond_timedwait / pthread_cond_signal, PTHREAD_PROCESS_SHARED)"):
        lock = _owned(demo, Lock())
        not_full, not_empty = _owned(demo, Condition(lock)), _owned(demo, Condition(lock))
        ring, received = _shared(demo, 2 + capacity), _shared(demo, count)
        pids = [demo.children.fork(workloads.produce, not_full, not_empty, ring, capacity, range(1, count + 1)),
                demo.children.fork(workloads.consume, not_full, not_empty, ring, capacity, count, received)]
        codes = _all_exit(demo, pids)
        got = list(received)
        lost = sorted(set(range(1, count + 1)) - set(got))
        dup = len(got) - len(set(got))
        demo.check("items received", f"1..{count}, each once, in order",
                   f"{len(got)} received, {len(lost)} lost, {dup} duplicated, in order: {got == sorted(got)}",
                   got == list(range(1, count + 1)) and codes == [0, 0])

    parties, phases = 4, 3
    with demo.step(f"a barrier: {parties} processes, {phases} phases",
                   asked=f"Barrier({parties}).wait() in each: threading's protocol, on a robust mutex and a "
                         "condition (PTHREAD_PROCESS_SHARED)"):
        barrier = demo.own(Barrier(parties))
        stamps, serials = _shared(demo, 2 * parties * phases), _shared(demo, parties * phases)
        pids = [demo.children.fork(workloads.run_phases, barrier, me, parties, phases, stamps, serials, 0.02)
                for me in range(parties)]
        codes = _all_exit(demo, pids)
        gaps = []
        for phase in range(phases - 1):
            ends = [stamps[(phase * parties + p) * 2 + 1] for p in range(parties)]
            starts = [stamps[((phase + 1) * parties + p) * 2] for p in range(parties)]
            gaps.append((min(starts) - max(ends)) / 1e6)
        demo.check("earliest start of phase k+1 minus latest end of phase k", ">= 0 ms for every k",
                   ", ".join(f"{g:.3f} ms" for g in gaps), all(g >= 0 for g in gaps) and codes == [0] * parties)
        per_phase = [sum(serials[phase * parties:(phase + 1) * parties]) for phase in range(phases)]
        demo.check("wait() returned 0 (the first to arrive) per phase", "exactly 1", str(per_phase),
                   per_phase == [1] * phases)

    with demo.step("a party SIGKILLed inside the barrier", asked="Barrier(3): a child waits, is killed; wait() here"):
        barrier = demo.own(Barrier(3))
        pid = demo.children.fork(barrier.wait)
        deadline = time.monotonic() + WAIT_S
        while barrier.n_waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.005)                   # until the child waits (it holds a robust slot mutex there)
        status = workloads.kill_and_reap(demo.children, pid)
        start = time.monotonic()
        try:
            outcome = f"returned {barrier.wait(WAIT_S)}"
        except BrokenBarrierError:
            outcome = "BrokenBarrierError"
        took = time.monotonic() - start
        demo.check("the next party's wait, the third never coming", "BrokenBarrierError at once: the dead "
                   "party's slot mutex is EOWNERDEAD; no hang until a timeout", f"{outcome} after {took:.3f} s "
                   f"(child {status})", outcome == "BrokenBarrierError" and took < WAIT_S / 2 and status == -9)

    with demo.step("the seed's 4.1.3 example, compiled", asked="cc -fsyntax-only on the article's code"):
        _erratum(demo)


SEED_CODE = r"""#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <pthread.h>

void sync(int pid) {
}

int main() {
    pthread_t thread1;
    pthread_t thread2;
    pthread_create(&thread1, NULL, sync, (void *)pid1);
    pthread_create(&thread2, NULL, sync, (void *)pid2);
    pthread_join(thread1, NULL);
    pthread_join(thread2, NULL);
    return 0;
}
"""


# The same program with the three faults fixed, nothing else changed.
FIXED_CODE = SEED_CODE.replace("void sync(int pid) {\n", "void *sync_process(void *pid) {\n    return pid;\n") \
    .replace("int main() {\n", "int main() {\n    pid_t pid1 = 1, pid2 = 2;\n") \
    .replace("NULL, sync, (void *)pid", "NULL, sync_process, (void *)(long)pid")


def _erratum(demo):
    demo.require(env.can("cc"), "compile the seed's example")
    code, diagnostics, _ = cc.compile_source(SEED_CODE, ["-fsyntax-only"], timeout_s=WAIT_S)
    lines = diagnostics.replace("\u2018", "'").replace("\u2019", "'").splitlines()
    errors = [line.split(": error: ", 1)[1] for line in lines if ": error: " in line]
    warnings = [line.split(": warning: ", 1)[1] for line in lines if ": warning: " in line]
    clash = any(e.startswith("conflicting types for 'sync'") for e in errors)
    undeclared = [e for e in errors if "undeclared" in e]
    demo.check("the compiler on the seed's code", "fails: sync() conflicts with sync(2) in <unistd.h>; "
               "pid1/pid2 undeclared", f"exit {code}; errors: {'; '.join(errors)}",
               code != 0 and clash and len(undeclared) >= 2)
    demo.say("warnings: " + ("; ".join(warnings) or "none (an error stopped the compiler first)"))
    fixed, diagnostics, _ = cc.compile_source(FIXED_CODE, ["-fsyntax-only", "-Wall", "-Werror"], timeout_s=WAIT_S)
    demo.check("renamed, pids declared, a void *(*)(void *) start routine", "compiles cleanly (exit 0)",
               f"exit {fixed}" + (f": {diagnostics.strip()}" if fixed else ""), fixed == 0)
    demo.say("The article is wrong here: <unistd.h> declares `void sync(void)` (flush filesystem "
             "buffers), so `void sync(int)` is a conflicting redeclaration; pid1 and pid2 are never "
             "declared; and pthread_create wants a `void *(*)(void *)` start routine, not "
             "`void (*)(int)`. It also syncs threads of one process, not processes: the steps "
             "above put the pthread objects in shared memory with PTHREAD_PROCESS_SHARED instead.")


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
