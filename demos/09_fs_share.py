"""How the kernel shares and protects a file, measured (seed §4.3.3, `share_and_protect_file`).

The article's `share_and_protect_file(path, 0644)` is empty. Protection: a
new file's mode is the mode asked for minus the umask's bits; a mode-000
file refuses its owner a read unless CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH
says otherwise; a process running as another user (a child that drops to uid
65534, when this holds CAP_SETUID and CAP_SETGID) gets EACCES on a 0600 file the owner reads,
and on any file in a directory it may not search. Sharing: a forked child
shares its parent's open file description and so its offset, while two opens
of one file have an offset each. Locks: flock conflicts between processes;
an fcntl byte-range lock blocks an overlapping request and not a disjoint
one, F_GETLK names the holder's pid, and the kernel drops the lock when its
holder is SIGKILLed. Open-file-description locks have no holder pid (-1).

Usage: python demos/09_fs_share.py [--json] [--linger SECONDS]
"""
import errno
import os
import signal
import stat
import sys
import time

from osvirt import env, fs
from osvirt.demo import run
from osvirt.naming import private_dir

NAME = "fs-share"
SEED = "4.3.3 share_and_protect_file"
SUMMARY = "mode bits and umask, EACCES for another uid, shared offsets, flock and fcntl locks with the holder's pid"

NOBODY = 65534


def add_arguments(parser):
    parser.add_argument("--linger", type=float, default=0, metavar="SECONDS",
                        help="pause this long while a child holds a byte-range lock (to try Ctrl-C)")


def _errno_name(code):
    return "success" if code == 0 else errno.errorcode.get(code, str(code))


def _as_nobody(call, path):
    """In a child: become uid/gid 65534, then `call(path)`; exit 0, or the errno it failed with."""
    fs.drop_to(NOBODY, NOBODY)
    try:
        call(path)
    except OSError as e:
        return e.errno
    return 0


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _refused(call):
    """The errno `call()` fails with, or 0."""
    try:
        call()
    except OSError as e:
        return e.errno
    return 0


def body(demo):
    tmp = demo.own(private_dir())
    path = os.path.join(tmp, "shared")
    with open(path, "wb") as f:
        f.write(b"Hello, World!" + bytes(4096 - 13))

    with demo.step("umask decides a new file's mode", asked="umask(m); open(O_CREAT, 0666); mkdir(0777)"):
        for mask in (0o022, 0o077, 0o027):
            with fs.umask(mask):
                f = os.path.join(tmp, f"file-{mask:03o}")
                os.close(os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                d = os.path.join(tmp, f"dir-{mask:03o}")
                os.mkdir(d, 0o777)
            got = (stat.S_IMODE(os.stat(f).st_mode), stat.S_IMODE(os.stat(d).st_mode))
            want = (fs.new_file_mode(0o666, mask), fs.new_file_mode(0o777, mask))
            demo.check(f"umask {mask:03o}: file 0666 and directory 0777 become",
                       expected=f"{want[0]:04o} ({stat.filemode(want[0] | stat.S_IFREG)}), {want[1]:04o}",
                       observed=f"{got[0]:04o} ({stat.filemode(got[0] | stat.S_IFREG)}), {got[1]:04o}",
                       ok=got == want)

    with demo.step("mode 000: even the owner is refused, unless CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH",
                   asked="chmod(0000); open(O_RDONLY) as the owner"):
        locked = os.path.join(tmp, "locked")
        open(locked, "x").close()
        os.chmod(locked, 0)
        code = _refused(lambda: _read(locked))
        # Either capability lets a read past the mode bits (CAP_DAC_READ_SEARCH only reads and searches).
        bypass = [cap.upper() for cap in ("cap_dac_override", "cap_dac_read_search") if env.can(cap)]
        demo.check("the owner opens a mode-000 file",
                   expected=f"success: the mode check is skipped ({' and '.join(bypass)})" if bypass
                   else "EACCES: the owner's bits are ---",
                   observed=_errno_name(code), ok=code == (0 if bypass else errno.EACCES))

    with demo.step("another uid is refused a 0600 file the owner reads",
                   asked="chmod(0600); child: setgroups([]), setgid(65534), setuid(65534), open()"):
        demo.require(env.can("setuid"), "dropping to uid 65534")
        shared = demo.own(fs.searchable_dir())
        secret = os.path.join(shared, "secret")
        with open(secret, "xb") as f:
            f.write(b"mine")
        os.chmod(secret, 0o600)
        owner = _read(secret)

        def nobody(call):
            return demo.children.wait(demo.children.fork(_as_nobody, call, secret))

        demo.say(f"The directory is 0711 ({shared}): uid 65534 may search it, so the file's own "
                 "mode bits decide.")
        demo.check("the owner reads the 0600 file", expected="b'mine'", observed=repr(owner), ok=owner == b"mine")
        seen, opened = nobody(os.stat), nobody(_read)
        demo.check("uid 65534 stats it, then opens it", expected="stat succeeds; open EACCES (other bits ---)",
                   observed=f"stat {_errno_name(seen)}; open {_errno_name(opened)}",
                   ok=seen == 0 and opened == errno.EACCES)
        os.chmod(secret, 0o604)
        opened = nobody(_read)
        demo.check("the same after chmod 0604", expected="open succeeds (other may read)",
                   observed=f"open {_errno_name(opened)}", ok=opened == 0)
        os.chmod(shared, 0o700)
        seen, opened = nobody(os.stat), nobody(_read)
        demo.say("With the directory 0700 the path check refuses first: search (x) on the directory "
                 "is missing, so even stat fails, whatever the file's own bits.")
        demo.check("a 0604 file in a 0700 directory", expected="stat EACCES, open EACCES",
                   observed=f"stat {_errno_name(seen)}; open {_errno_name(opened)}",
                   ok=seen == opened == errno.EACCES)

    with demo.step("fork shares the file offset, two opens do not",
                   asked="open(); fork(): child read(5); second open(): read(5) on the first"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        code = demo.children.wait(demo.children.fork(os.read, fd, 5))
        after_child = fs.fd_entry(fd).pos
        other = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        os.read(fd, 5)
        mine, theirs = fs.fd_entry(fd).pos, fs.fd_entry(other).pos
        os.close(fd)
        os.close(other)
        demo.check("the parent's offset after its child read 5 bytes", expected="5: one open file description",
                   observed=f"pos {after_child}", ok=code == 0 and after_child == 5)
        demo.check("two opens of one file, 5 bytes read on the first", expected="10 and 0: a description each",
                   observed=f"{mine} and {theirs}", ok=(mine, theirs) == (10, 0))

    with demo.step("flock conflicts between processes", asked="child: flock(LOCK_EX); parent: flock(LOCK_SH|LOCK_NB)"):
        holder = fs.hold_in_child(demo.children, path, lambda fd: fs.flock(fd, "exclusive"))
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            code = _refused(lambda: fs.flock(fd, "shared", wait=False))
            demo.check(f"a shared lock while child {holder} holds an exclusive one",
                       expected="EWOULDBLOCK (EAGAIN)", observed=_errno_name(code), ok=code == errno.EWOULDBLOCK)
            os.kill(holder, signal.SIGKILL)
            demo.children.wait(holder)
            code = _refused(lambda: fs.flock(fd, "exclusive", wait=False))
            demo.check("the same once the holder is dead", expected="granted", observed=_errno_name(code), ok=code == 0)
        finally:
            os.close(fd)

    with demo.step("fcntl byte-range locks, and F_GETLK",
                   asked="child: F_SETLK write [0, 100); parent: F_GETLK; F_SETLK [50, 60) and [100, 200); SIGKILL"):
        holder = fs.hold_in_child(demo.children, path, lambda fd: fs.setlk(fd, 0, 100, "write"))
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if demo.args.linger > 0:
                demo.say(f"(pausing {demo.args.linger} s: child pid {holder} holds [0, 100) of {path}; "
                         "Ctrl-C now leaves nothing behind)")
                demo.out.flush()
                time.sleep(demo.args.linger)
            found = fs.getlk(fd, 50, 10)
            demo.check("F_GETLK on [50, 60)", expected=f"write lock [0, 100) held by pid {holder}",
                       observed=str(found), ok=found == fs.LockHolder(holder, 0, 100, "write"))
            code = _refused(lambda: fs.setlk(fd, 50, 10, "read"))
            demo.check("F_SETLK read [50, 60): overlaps", expected="EAGAIN", observed=_errno_name(code),
                       ok=code == errno.EAGAIN)
            code = _refused(lambda: fs.setlk(fd, 100, 100, "write"))
            demo.check("F_SETLK write [100, 200): disjoint", expected="granted", observed=_errno_name(code), ok=code == 0)
            os.kill(holder, signal.SIGKILL)
            status = demo.children.wait(holder)
            found = fs.getlk(fd, 0, 100)
            code = _refused(lambda: fs.setlk(fd, 0, 100, "write"))
            demo.check("after SIGKILL of the holder", expected="F_GETLK: no lock; F_SETLK [0, 100): granted",
                       observed=f"holder exit {status}; F_GETLK {found}; F_SETLK {_errno_name(code)}",
                       ok=found is None and code == 0)
        finally:
            os.close(fd)

    with demo.step("open-file-description locks have no holder pid",
                   asked="open() twice; F_OFD_SETLK write [0, 10) on one; F_OFD_GETLK on the other"):
        a, b = os.open(path, os.O_RDWR | os.O_CLOEXEC), os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fs.setlk(a, 0, 10, "write", ofd=True)
            found = fs.getlk(b, 0, 10, ofd=True)
            demo.say("An OFD lock belongs to the open file description, not to a process: two opens "
                     "in one process conflict, and F_OFD_GETLK reports pid -1.")
            demo.check("F_OFD_GETLK from a second open in the same process", expected="write [0, 10), pid -1",
                       observed=str(found), ok=found == fs.LockHolder(-1, 0, 10, "write"))
        finally:
            os.close(a)
            os.close(b)


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
