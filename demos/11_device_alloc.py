"""Devices the kernel allocates from a pool, and how a program asks for them.

The seed's §4.4.2 opens one fixed node, /dev/mydevice, and calls an empty
allocate_and_manage_device(fd). On Linux, allocation is the kernel's: a
program opens a multiplexer and gets a new device, where two opens of a
fixed node such as /dev/null are two descriptors on one device. Each open
of /dev/ptmx makes a pseudo-terminal pair with its own /dev/pts/N, released
when both ends close; the next open gets the lowest free N. A terminal can
be held exclusively (TIOCEXCL: others get EBUSY, except CAP_SYS_ADMIN).
/dev/loop-control hands out free loop devices (LOOP_CTL_GET_FREE), which
are attached to a file, sized, and detached back to the pool; sysfs shows
none left attached.

Usage: python demos/11_device_alloc.py [--json] [--hold-s SECONDS]
"""
import errno
import itertools
import os
import stat
import sys
import time

from osvirt import env
from osvirt.demo import run
from osvirt.device import devices, loop, pty
from osvirt.fs.perms import drop_to
from osvirt.naming import private_dir, unique_name

NAME = "device-alloc"
SEED = "4.4.2 allocate_and_manage_device"
SUMMARY = "pseudo-terminals allocated and released, exclusive use (TIOCEXCL), loop devices from the kernel's pool"

NOBODY = 65534
PAIRS = 4


def add_arguments(parser):
    parser.add_argument("--hold-s", type=float, default=0.0, metavar="SECONDS",
                        help="pause this long holding the loop devices attached (to try Ctrl-C)")


def _open_as(path, uid):
    drop_to(uid, uid)  # without CAP_SYS_ADMIN, TIOCEXCL applies
    return pty.open_errno(path)


def _second_open(demo, path, uid):
    """The errno of opening `path` here (uid None) or in a child that became `uid`."""
    if uid is None:
        return pty.open_errno(path)
    return demo.children.wait(demo.children.fork(_open_as, path, uid), timeout_s=10)


def _reopened(demo):
    """Hold PAIRS ptys, close the middle one, then open one more: its N and the lowest free
    index /dev/pts showed just before that open."""
    held = sorted((demo.own(pty.PseudoTerminal()) for _ in range(PAIRS)), key=lambda p: p.number)
    released, folder = held[PAIRS // 2].number, os.path.dirname(held[0].path)
    held[PAIRS // 2].close()  # both ends: the node goes with the master, the index with the last end
    taken = {int(n) for n in os.listdir(folder) if n.isdigit()}
    lowest = min(set(range(len(taken) + 1)) - taken)
    again = demo.own(pty.PseudoTerminal())
    result = {"released": released, "lowest free": lowest, "got": again.number,
              "highest": held[-1].number}
    for p in held + [again]:
        p.close()
    return result


def _name(err):
    return "opened" if err == 0 else errno.errorcode.get(err, str(err))


def body(demo):
    with demo.step("the seed's open(\"/dev/mydevice\"): a fixed node allocates nothing; a multiplexer does",
                   asked="open(/dev/null) twice, fstat(fd) of each; open(/dev/ptmx) twice, ioctl(TIOCGPTN)"):
        nulls = [demo.own(open("/dev/null", "r+b", buffering=0)) for _ in range(2)]
        seen = [os.fstat(f.fileno()) for f in nulls]
        a, b = demo.own(pty.PseudoTerminal()), demo.own(pty.PseudoTerminal())
        demo.check("two opens of /dev/null, both held", "two fds on one device: char 1:3, one inode",
                   "; ".join(f"fd {f.fileno()}: {'char' if stat.S_ISCHR(st.st_mode) else 'not char'} "
                             f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} inode {st.st_ino}"
                             for f, st in zip(nulls, seen)),
                   nulls[0].fileno() != nulls[1].fileno() and os.path.samestat(*seen)
                   and all(stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) for st in seen))
        demo.check("two opens of /dev/ptmx", "two new devices", f"{a.path}, {b.path}", a.number != b.number)
        demo.say("Erratum: allocate_and_manage_device(open(\"/dev/mydevice\")) has nothing to allocate: the "
                 "node names one device, and there is no /dev/mydevice "
                 f"({_name(pty.open_errno('/dev/mydevice'))}). The kernel allocates devices when a program "
                 "opens a multiplexer (/dev/ptmx) or asks a control device (/dev/loop-control), as below. "
                 "The seed also calls open() without #include <fcntl.h> (see the device demo).")
        for f in nulls:
            f.close()
        a.close()
        b.close()

    with demo.step(f"{PAIRS} pseudo-terminals opened at once, then closed and opened again",
                   asked="open(/dev/ptmx) x4; ioctl(master, TIOCGPTN); close; open(/dev/ptmx) x4"):
        # Other processes open ptys too and may take a released N at once: up to 3 tries.
        for attempt in range(3):
            pairs = [demo.own(pty.PseudoTerminal()) for _ in range(PAIRS)]
            first = sorted(p.number for p in pairs)
            nodes = [devices.identify(p.path) for p in pairs]
            for p in pairs:
                p.close()
            gone = [n for n in first if not os.path.exists(f"/dev/pts/{n}")]
            if len(gone) == PAIRS:
                break
        demo.check("their numbers N", f"{PAIRS} distinct", first, len(set(first)) == PAIRS)
        demo.check("their /dev/pts/N nodes", "char devices of the pts driver, minor N",
                   ", ".join(f"{d.node}={d.number}" for d in nodes),
                   all("pts" in d.registered and d.minor == p.number % 256 for d, p in zip(nodes, pairs)))
        demo.check("after close: /dev/pts/N removed", f"all {PAIRS}", f"{len(gone)} removed (attempt {attempt + 1})",
                   len(gone) == PAIRS)
        # devpts hands out the lowest free index: release one of ours from the middle and the
        # next open of /dev/ptmx gets it back, not a number past the others. Other processes
        # open and close ptys too, between the listing and the open: up to 3 tries.
        attempt = itertools.count(1)
        reuse = demo.retry(lambda: dict(_reopened(demo), attempt=next(attempt)),
                           lambda r: r["got"] == r["lowest free"])
        demo.check("released one of ours, opened again: the lowest free N",
                   f"/dev/pts/{reuse['lowest free']}, the lowest index /dev/pts lacked"
                   + (", the one just released" if reuse["lowest free"] == reuse["released"] else ""),
                   f"/dev/pts/{reuse['got']} (released /dev/pts/{reuse['released']}; ours went up to "
                   f"{reuse['highest']}; attempt {reuse['attempt']})", reuse["got"] == reuse["lowest free"])

    with demo.step("exclusive use: after TIOCEXCL a second opener of the slave gets EBUSY",
                   asked="ioctl(slave, TIOCEXCL); open(/dev/pts/N); ioctl(slave, TIOCNXCL); open(/dev/pts/N)"):
        p = demo.own(pty.PseudoTerminal())
        bypass = env.can("cap_sys_admin")  # tty_reopen: EBUSY unless capable(CAP_SYS_ADMIN)
        if bypass:
            demo.require(env.can("setuid"), "a second opener without CAP_SYS_ADMIN")
            os.fchown(p.slave, NOBODY, -1)  # the terminal handed to that user, as grantpt would
            opener = f"a child of uid {NOBODY} (setuid away from uid 0 clears its capabilities)"
        else:
            opener = "this process, without CAP_SYS_ADMIN"
        pty.set_exclusive(p.slave)
        refused = _second_open(demo, p.path, NOBODY if bypass else None)
        demo.check(f"TIOCEXCL, then {opener} opens {p.path}", "EBUSY", _name(refused), refused == errno.EBUSY)
        if bypass:
            let_through = pty.open_errno(p.path)
            demo.check("TIOCEXCL, then this process, holding CAP_SYS_ADMIN, opens it",
                       "opened (CAP_SYS_ADMIN bypasses TIOCEXCL)", _name(let_through), let_through == 0)
        pty.set_exclusive(p.slave, False)
        allowed = _second_open(demo, p.path, NOBODY if bypass else None)
        demo.check(f"TIOCNXCL, then {opener} opens it", "opened", _name(allowed), allowed == 0)

    with demo.step("loop devices taken from the kernel's pool, attached, sized and detached",
                   asked="ioctl(loop-control, LOOP_CTL_GET_FREE); LOOP_CONFIGURE; BLKGETSIZE64; LOOP_CLR_FD"):
        demo.require(env.can("loop"))
        folder = demo.own(private_dir())
        files = []
        for size in (1 << 20, 3 << 20):
            files.append(os.path.join(folder, unique_name(f"{size >> 20}MiB.img")))
            with open(files[-1], "wb") as f:
                f.truncate(size)
        for attempt in range(3):  # another process may attach the free device first: ask again
            free = loop.get_free()
            shown = loop.backing_file(free)
            if shown is None:
                break
        demo.check("LOOP_CTL_GET_FREE", "a detached device (no backing_file in sysfs)",
                   f"/dev/loop{free}, backing_file: {shown or 'none'}", shown is None)
        held = [demo.own(loop.LoopDevice(path)) for path in files]
        demo.check("two held at once", "two distinct devices", ", ".join(d.path for d in held),
                   held[0].number != held[1].number)
        for dev in held:
            shown = loop.backing_file(dev.number)
            demo.check(f"{dev.path}: BLKGETSIZE64 and sysfs backing_file",
                       f"{os.path.getsize(dev.backing)}, {os.path.basename(dev.backing)}",
                       f"{dev.size_bytes()}, {os.path.basename(shown or '-')}",
                       dev.size_bytes() == os.path.getsize(dev.backing) and shown == dev.backing)
        if demo.args.hold_s > 0:
            print(f"holding {', '.join(d.path for d in held)} for {demo.args.hold_s} s", file=sys.stderr, flush=True)
            time.sleep(demo.args.hold_s)
        for dev in held:
            dev.close()
        left = {n: f for n, f in loop.attached().items() if f in files}
        demo.check("after detach: /sys/block/loop*/loop/backing_file naming our files", "none",
                   left or "none", not left)


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
