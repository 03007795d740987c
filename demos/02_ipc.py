"""Process communication (seed §4.1.2): what each channel between processes really does.

The article lists pipes, named pipes, message queues, signals and shared
memory and leaves every body empty. This demo makes each one carry data
between real processes and measures the promise behind it: a pipe is one-way
and atomic up to PIPE_BUF, ends in EOF or EPIPE, and holds 64 KiB; a FIFO
joins unrelated processes but is one byte stream, not the full-duplex channel
the article calls it; a POSIX queue orders by priority, a System V queue lets
the receiver pick by type; standard signals coalesce while real-time signals
queue with a value; shared memory is one set of pages seen by both sides.
With --linger the demo pauses while it holds its queues, segments, FIFOs and
a child, so they can be looked at with `ipcs`, `ls /dev/shm` and `ps`.

Usage: python demos/02_ipc.py [--json] [--linger SECONDS]
"""
import errno
import itertools
import os
import random
import select
import signal
import sys
import time

from osvirt import env, fs, ipc
from osvirt.demo import run
from osvirt.memory.procfs import ADDRESS_LIMIT, maps

NAME = "ipc"
SEED = "4.1.2 communication"
SUMMARY = "pipes, FIFOs, POSIX and System V message queues, queued signals and shared memory, measured"

N_SIGNALS = 1000
# How long a step waits for a child to start and answer: a cap for a hung child, not a
# measurement. A new interpreter (the FIFO peer) on a loaded machine, with the CPU taken and
# the disk busy, may take many seconds to start, and a tighter cap failed the step there.
WAIT_S = 60
_SI_CODES = {ipc.SI_QUEUE: "SI_QUEUE", ipc.SI_USER: "SI_USER"}


def add_arguments(parser):
    parser.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                        help="pause this long while holding every object (queues, segments, FIFOs, a child)")


def _write_with_default_sigpipe(fd):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python ignores SIGPIPE; C programs do not
    os.write(fd, b"x")


def _send_each(send, messages):
    """In a child: send every (message, priority or type) in order."""
    for message, rank in messages:
        send(message, rank)


def _send_signals(parent, count):
    for _ in range(count):
        os.kill(parent, signal.SIGUSR1)
    for value in range(count):
        ipc.sigqueue(parent, signal.SIGRTMIN, value)


def _share(posix_name, sysv_id, memfd_path, ready_fd, release_fd):
    """In a child: map the three segments by name, id and path, write into each, and stay until released."""
    segments = (ipc.PosixSharedMemory.open(posix_name), ipc.SysVSharedMemory.attach(sysv_id),
                ipc.Memfd.open(memfd_path))
    for kind, shm in zip(("posix", "sysv", "memfd"), segments):
        message = b"%s written by pid %d" % (kind.encode(), os.getpid())
        shm.buffer[:len(message)] = message
    os.write(ready_fd, b"r")
    os.read(release_fd, 1)


def _pending_signals():
    """The signal numbers in this process's shared pending set (ShdPnd in /proc/self/status)."""
    with open("/proc/self/status") as f:
        mask = int(next(line.split()[1] for line in f if line.startswith("ShdPnd:")), 16)
    return [bit + 1 for bit in range(64) if mask >> bit & 1]


def _memfd_held(inode):
    """What of the memfd `inode` this process holds: (its fds in /proc/self/fd, its ranges in /proc/self/maps)."""
    fds = [e.fd for e in fs.fd_table() if e.target.startswith("/memfd:") and e.inode == inode]
    ranges = [f"{v.start:x}-{v.end:x}" for v in maps(0, ADDRESS_LIMIT)
              if v.path.startswith("/memfd:") and v.inode == inode]
    return fds, ranges


def _sysv_shm_ids():
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[1]) for line in list(f)[1:]}


def body(demo):
    held = []

    with demo.step("a pipe is one-way", asked="pipe2(); write(read end)"):
        with ipc.Pipe() as p:
            try:
                os.write(p.read_fd, b"x")
                observed = "the write succeeded"
            except OSError as e:
                observed = errno.errorcode[e.errno]
        demo.check("write to the read end", "EBADF (the read end is not open for writing)", observed,
                   observed == "EBADF")

    with demo.step("EOF comes once every write end is closed",
                   asked="fork a child holding the write end; close ours; select(); read()"):
        with ipc.Pipe() as p, ipc.Pipe() as release:
            holder = demo.children.fork(os.read, release.read_fd, 1)
            p.close_write()
            waiting = select.select([p.read_fd], [], [], 0.2)[0]
            os.write(release.write_fd, b"x")
            demo.children.wait(holder)
            last = os.read(p.read_fd, 1)
        demo.check("read end while the child still holds a write end", "not readable (no data, no EOF)",
                   "readable" if waiting else "not readable after 0.2 s", not waiting)
        demo.check("read() after the child exited", "b'' (EOF)", repr(last), last == b"")

    with demo.step("writing with no reader", asked="close the read end; write() with SIGPIPE ignored, then with SIG_DFL"):
        with ipc.Pipe() as p:
            p.close_read()
            try:
                os.write(p.write_fd, b"x")
                observed = "the write succeeded"
            except OSError as e:
                observed = errno.errorcode[e.errno]
            demo.check("write, SIGPIPE ignored (Python's default)", "EPIPE", observed, observed == "EPIPE")
            code = demo.children.wait(demo.children.fork(_write_with_default_sigpipe, p.write_fd))
        demo.check("a child writes with SIGPIPE at its default action", f"killed by SIGPIPE (exit {-signal.SIGPIPE})",
                   f"exit {code}" + (f" ({signal.Signals(-code).name})" if code < 0 else ""), code == -signal.SIGPIPE)

    with demo.step(f"4 concurrent writers, writes of PIPE_BUF ({ipc.PIPE_BUF}) bytes and of 256 KiB",
                   asked="4 forked children each write(2) records into one pipe; the parent reads and checks them"):
        small = ipc.concurrent_writes(demo.children, writers=4, records=1000, record_bytes=ipc.PIPE_BUF)
        demo.check(f"records of {ipc.PIPE_BUF} bytes (= PIPE_BUF)", "0 torn, 0 out of order of 4000 (atomic, POSIX)",
                   f"{small.torn} torn, {small.out_of_order} out of order of {small.records}",
                   small == (4000, 0, 0))
        tries = itertools.count(1)  # mixing is allowed, not promised: give it three chances
        attempt, large = demo.retry(
            lambda: (next(tries), ipc.concurrent_writes(demo.children, writers=4, records=16, record_bytes=256 * 1024)),
            lambda seen: seen[1].torn > 0)
        demo.check("records of 256 KiB (> PIPE_BUF and > the capacity)", "some torn (no atomicity promised)",
                   f"{large.torn} of {large.records} torn (attempt {attempt})", large.torn > 0)

    with demo.step("pipe capacity", asked="fill a non-blocking pipe until EAGAIN; fcntl(F_SETPIPE_SZ); fill again"):
        with ipc.Pipe() as p:
            filled = ipc.fill(p.write_fd)
            demo.check("bytes a new pipe takes before EAGAIN", "65536 (16 pages, the Linux default)",
                       f"{filled} (F_GETPIPE_SZ says {ipc.get_pipe_size(p.write_fd)})", filled == 65536)
        with ipc.Pipe() as p:
            limit = ipc.pipe_max_size()
            asked = min(limit, 1 << 20)
            granted = ipc.set_pipe_size(p.write_fd, asked)
            filled = ipc.fill(p.write_fd)
            demo.check(f"after F_SETPIPE_SZ({asked})", f"{asked} bytes before EAGAIN (pipe-max-size is {limit})",
                       f"{filled} (F_SETPIPE_SZ returned {granted})", filled == granted == asked)
            if env.can("cap_sys_resource"):
                demo.skip("F_SETPIPE_SZ above pipe-max-size", "CAP_SYS_RESOURCE is in the effective set: it would pass")
            else:
                try:
                    ipc.set_pipe_size(p.write_fd, 2 * limit)
                    observed = "granted"
                except OSError as e:
                    observed = errno.errorcode[e.errno]
                demo.check(f"F_SETPIPE_SZ({2 * limit}), above pipe-max-size", "EPERM without CAP_SYS_RESOURCE",
                           observed, observed == "EPERM")

    with demo.step("a FIFO between unrelated processes, one per direction",
                   asked="mkfifo(0600) x2 in a private directory; spawn a new interpreter that opens them by path"):
        request, reply = demo.own(ipc.Fifo("request")), demo.own(ipc.Fifo("reply"))
        held += [request, reply]
        demo.check("FIFO mode (stat)", "0o600", f"{oct(request.mode)} and {oct(reply.mode)}",
                   request.mode == reply.mode == 0o600)
        peer = demo.children.spawn([sys.executable, "-m", "osvirt.ipc.echo", request.path, reply.path])
        request.write_all(b"hello from %d\n" % os.getpid(), timeout_s=WAIT_S)
        answer = reply.read_all(timeout_s=WAIT_S)
        demo.check("reply from the spawned peer over the second FIFO",
                   f"'<peer pid {peer.pid}> hello from {os.getpid()}'", repr(answer.decode()),
                   answer == b"%d hello from %d\n" % (peer.pid, os.getpid()))
        peer.wait(timeout=WAIT_S)

    with demo.step("erratum: a named pipe is not full duplex", asked="open(fifo, O_RDWR); write('ping'); read()"):
        fd = os.open(request.path, os.O_RDWR | os.O_NONBLOCK)
        try:
            os.write(fd, b"ping")
            echoed = os.read(fd, 16)
        finally:
            os.close(fd)
        demo.check("what the writer itself reads back", "b'ping': its own bytes (one stream, no direction)",
                   repr(echoed), echoed == b"ping")
        demo.say("The article calls a named pipe full duplex (全双工). It is one byte stream: whoever reads "
                 "takes whatever anyone wrote, so two parties writing both ways on one FIFO read each "
                 "other's and their own words in any mix. Two-way talk needs two FIFOs, as in the step above.")

    with demo.step("POSIX message queue: priority order", asked="mq_open(O_CREAT|O_EXCL); a child mq_sends; mq_getattr; mq_receive"):
        mq = demo.own(ipc.PosixMessageQueue(max_message_size=64))
        held.append(mq)
        n = mq.attributes()["max_messages"]  # /proc/sys/fs/mqueue/msg_max unless privileged
        priorities = random.choices(range(10), k=n)
        while len(set(priorities)) == n:  # at least two of one priority, to see FIFO within it
            priorities = random.choices(range(10), k=n)
        demo.children.wait(demo.children.fork(_send_each, mq.send, [(b"%d" % seq, p) for seq, p in enumerate(priorities)]))
        count = mq.attributes()["current_messages"]
        demo.check("mq_getattr after the child sent", f"mq_curmsgs = {n} (mq_maxmsg {n})", str(count), count == n)
        try:
            mq.send(b"one too many", block=False)
            observed = "sent"
        except OSError as e:
            observed = errno.errorcode[e.errno]
        demo.check("mq_send to the full queue, O_NONBLOCK", "EAGAIN", observed, observed == "EAGAIN")
        got = [(int(m), p) for m, p in (mq.receive(timeout_s=5) for _ in range(n))]
        want = sorted(enumerate(priorities), key=lambda m: -m[1])  # stable: FIFO within a priority
        demo.check(f"receive order of {n} messages (seq, priority) sent in order with priorities {priorities}",
                   f"highest priority first, FIFO within one: {want}", str(got), got == want)
        count = mq.attributes()["current_messages"]
        demo.check("mq_getattr after receiving all", "mq_curmsgs = 0", str(count), count == 0)
        demo.say("The article calls a message queue first-in first-out: it is so only within one priority.")

    with demo.step("System V message queue: the receiver picks by type",
                   asked="msgget(IPC_PRIVATE); a child msgsnd types 5,2,4,1,3,2; msgrcv(2), msgrcv(-3), msgrcv(0)"):
        msq = demo.own(ipc.SysVMessageQueue())
        held.append(msq)
        demo.children.wait(demo.children.fork(_send_each, msq.send,
                                              [(b"seq %d" % seq, t) for seq, t in enumerate((5, 2, 4, 1, 3, 2))]))
        for mtype, expected, theory in ((2, (b"seq 1", 2), "the oldest of type 2"),
                                        (-3, (b"seq 3", 1), "the oldest of the lowest type <= 3"),
                                        (0, (b"seq 0", 5), "the oldest of any type")):
            got = msq.receive(type=mtype, block=False)
            demo.check(f"msgrcv(type={mtype})", f"{theory}: {expected}", str(got), got == expected)

    with demo.step(f"{N_SIGNALS} SIGUSR1 and {N_SIGNALS} SIGRTMIN sent to this process while blocked",
                   asked=f"a child: kill(SIGUSR1) x{N_SIGNALS}, sigqueue(SIGRTMIN, 0..{N_SIGNALS - 1}); "
                         "we: sigtimedwait until none is pending"):
        demo.require(env.can("sigqueue_1000"))
        with ipc.blocked({signal.SIGUSR1, signal.SIGRTMIN}):
            sender = demo.children.fork(_send_signals, os.getpid(), N_SIGNALS)
            demo.children.wait(sender)
            pending = _pending_signals()
            usr1 = ipc.accept_pending({signal.SIGUSR1})
            rt = ipc.accept_pending({signal.SIGRTMIN})
        demo.check(f"SIGUSR1 accepted after {N_SIGNALS} sent", "1 (a standard signal is one pending bit)",
                   f"{len(usr1)} (ShdPnd, the kernel's pending set, held signals {pending})", len(usr1) == 1)
        values = [s.value for s in rt]
        senders = {s.pid for s in rt}
        demo.check(f"SIGRTMIN accepted after {N_SIGNALS} sigqueue", f"{N_SIGNALS}, values 0..{N_SIGNALS - 1} in order",
                   f"{len(rt)}, values {values[:3]}...{values[-2:]}, in order: {values == list(range(N_SIGNALS))}",
                   values == list(range(N_SIGNALS)))
        demo.check("si_pid and si_code of every SIGRTMIN", f"the sender {sender}, SI_QUEUE",
                   f"pids {sorted(senders)}, codes {sorted({_SI_CODES.get(s.code, s.code) for s in rt})}",
                   senders == {sender} and {s.code for s in rt} == {ipc.SI_QUEUE})
        demo.say("Accepted with sigtimedwait, the synchronous form of delivery: a Python handler could not "
                 "count them, since the interpreter records only that a signal came, not how often.")

    with demo.step("shared memory: POSIX, System V and memfd, seen by another process",
                   asked="shm_open / shmget(IPC_PRIVATE) / memfd_create; a child maps each and writes; we load"):
        size = 4096
        segments = {"posix": demo.own(ipc.PosixSharedMemory(size)), "sysv": demo.own(ipc.SysVSharedMemory(size)),
                    "memfd": demo.own(ipc.Memfd(size))}
        held += segments.values()
        with ipc.Pipe() as ready, ipc.Pipe() as release:
            child = demo.children.fork(_share, segments["posix"].name, segments["sysv"].id,
                                       segments["memfd"].path, ready.write_fd, release.read_fd)
            if not select.select([ready.read_fd], [], [], WAIT_S)[0]:
                raise TimeoutError(f"the sharing child did not write within {WAIT_S} s")
            os.read(ready.read_fd, 1)
            for kind, shm in segments.items():
                expected = b"%s written by pid %d" % (kind.encode(), child)
                seen = bytes(shm.buffer[:len(expected)])  # a load from our own mapping: no read(2)
                demo.check(f"{kind}: our mapping after the child's store", repr(expected.decode()),
                           repr(seen.decode(errors="replace")), seen == expected)
            with open(f"/proc/{child}/maps") as f:
                maps = f.read()
            marks = {"posix": segments["posix"].path, "sysv": "SYSV00000000", "memfd": "/memfd:osvirt"}
            demo.check("the child's /proc/PID/maps", f"maps {', '.join(marks.values())}",
                       ", ".join(f"{k}: {'mapped' if m in maps else 'absent'}" for k, m in marks.items()),
                       all(m in maps for m in marks.values()))
            if demo.args.linger > 0:
                held.append(f"child pid {child}")
                demo.say("holding, for --linger:")
                for thing in held:
                    demo.say(f"- {thing}", indent=6)
                demo.say(f"(pausing {demo.args.linger:g} s: try ipcs, ls /dev/shm, ps --ppid {os.getpid()})")
                time.sleep(demo.args.linger)
            os.write(release.write_fd, b"x")
            demo.children.wait(child)
        memfd_inode = fs.fd_entry(segments["memfd"].fd).inode
        memfd_before = _memfd_held(memfd_inode)
        for shm in segments.values():
            shm.close()
        memfd_after = _memfd_held(memfd_inode)
        gone = {"posix": not os.path.exists(segments["posix"].path),
                "sysv": segments["sysv"].id not in _sysv_shm_ids(), "memfd": memfd_after == ([], [])}
        demo.check("after close()", f"{segments['posix'].path} unlinked, segment {segments['sysv'].id} "
                   f"gone from /proc/sysvipc/shm, memfd inode {memfd_inode} in neither /proc/self/fd "
                   "nor /proc/self/maps",
                   ", ".join(f"{k}: {'gone' if g else 'STILL THERE'}" for k, g in gone.items())
                   + f" (memfd: fds {memfd_before[0]} and mappings {memfd_before[1]} before close(), "
                   f"{memfd_after[0]} and {memfd_after[1]} after)",
                   all(gone.values()) and memfd_before[0] and memfd_before[1])
        demo.say("The memfd had two descriptors here: ours, and the dup() Python's mmap keeps of it. "
                 "With both and the mapping gone (the child's went when it exited), nothing holds the "
                 "inode: it never had a name, so the kernel frees it and its pages.")

    demo.say("The seed's main() calls fork(); fork(); and says it made two processes: it makes four "
             "(see `osvirt demo sched` and docs/ERRATA.md).", indent=0)


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
