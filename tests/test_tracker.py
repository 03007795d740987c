"""osvirt.tracker: what a SIGKILLed owner leaves, the tracker removes; nothing else.

Each test starts a client, a Python process that makes objects through the
library and prints what it made as one JSON line, then SIGKILLs it. The
client's stderr is a pipe the tracker inherits, so reading it to EOF waits
for the tracker to finish; what the kernel still holds (/dev/shm, the mqueue
mount, /proc/sysvipc, /proc/swaps, the temp directories) is then polled for a
bounded moment.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import posix_ipc
import pytest

from osvirt import tracker
from osvirt.memory import swaps
from osvirt.naming import private_dir, unique_name
from osvirt.process import Children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _posix_exists(kind, name):
    """Whether POSIX IPC object `name` exists, from the kernel's listing where there is one."""
    if kind == "shm":
        return name[1:] in os.listdir("/dev/shm")
    if kind == "sem":
        return "sem." + name[1:] in os.listdir("/dev/shm")  # glibc's place for named semaphores
    try:
        posix_ipc.MessageQueue(name).close()  # no mqueue mount to list everywhere; mq_open answers
        return True
    except posix_ipc.ExistentialError:
        return False


def _sysv_exists(table, ident):
    with open(f"/proc/sysvipc/{table}") as f:
        return any(line.split()[1] == str(ident) for line in list(f)[1:])


def _held(made):
    """What of `made` (the client's JSON) the kernel still holds."""
    held = [name for kind, name in made.get("posix", []) if _posix_exists(kind, name)]
    held += [f"{table} id {ident}" for table, ident in made.get("sysv", []) if _sysv_exists(table, ident)]
    held += [path for path in made.get("paths", []) + made.get("files", []) if os.path.lexists(path)]
    held += [path for path in made.get("paths", []) if path in swaps()]
    return held


def _gone(made, timeout_s=10.0):
    """What of `made` the kernel still holds after waiting up to `timeout_s` for it to go."""
    deadline = time.monotonic() + timeout_s
    while (held := _held(made)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return held


@contextlib.contextmanager
def _untracked_shm(name):
    """A POSIX shm object `name` made here, unknown to any tracker, and unlinked at the end."""
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=4096)
    try:
        yield
    finally:
        shm.unlink()
        shm.close_fd()


def _client(kids, source):
    """Start a client running `source` (which prints one JSON line once its objects exist,
    then sleeps); its Popen and that JSON."""
    # `kept` holds the client's context managers: its objects live until it is killed.
    code = ("import contextlib, json, os, sys, time\nkept = contextlib.ExitStack()\n" + textwrap.dedent(source)
            + "\nprint(json.dumps(made), flush=True)\ntime.sleep(600)\n")
    proc = kids.spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                      cwd=ROOT)
    line = proc.stdout.readline()
    if not line:
        raise AssertionError("the client died before making its objects:\n" + proc.communicate()[1])
    return proc, json.loads(line)


def _sigkill(proc):
    """SIGKILL the client; its stderr, once the tracker (which holds it too) has exited."""
    proc.kill()
    return proc.communicate(timeout=60)[1]


EVERY_KIND = """
from osvirt import ipc, tracker
from osvirt.naming import private_dir, replacing, unique_name
from osvirt.sync import SharedRegion, SysVSemaphore
import posix_ipc

shm, mq = ipc.PosixSharedMemory(4096), ipc.PosixMessageQueue(max_messages=1)
region = SharedRegion(64, named=True)
fifo = ipc.Fifo()
directory = kept.enter_context(private_dir())
inner = kept.enter_context(private_dir(directory))  # an osvirt directory in an osvirt directory
half_written = kept.enter_context(replacing(os.path.join(directory, "snapshot"))).name  # before its rename
sem_name = "/" + unique_name()
with tracker.tracked("sem", sem_name):
    sem = posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, mode=0o600)
msq, sysv_shm, sysv_sem = ipc.SysVMessageQueue(), ipc.SysVSharedMemory(4096), SysVSemaphore(1)
made = {"posix": [("shm", shm.name), ("mqueue", mq.name), ("shm", region.name), ("sem", sem_name)],
        "sysv": [("msg", msq.id), ("shm", sysv_shm.id), ("sem", sysv_sem.id)],
        "paths": [os.path.dirname(fifo.path), directory, inner], "files": [half_written]}
"""


def test_a_sigkilled_owner_leaves_nothing_and_the_tracker_says_what_it_removed():
    with Children() as kids:
        proc, made = _client(kids, EVERY_KIND)
        assert len(_held(made)) == 11, "the client's objects exist before the kill"
        err = _sigkill(proc)
    assert _gone(made) == [], err
    for kind, name in made["posix"]:
        assert f"removed {tracker.KINDS[kind].what} {name}: " in err, err
    for table, ident in made["sysv"]:
        assert f"removed {tracker.KINDS['sysv-' + table].what} id={ident}," in err, err
    for path in made["paths"]:
        assert f"removed directory {path}: " in err, err
    assert f"removed file written before a rename {made['files'][0]}: " in err, err


def test_a_ctrl_c_while_a_sysv_object_is_made_comes_after_its_registration():
    """make_sysv holds SIGINT off from the creation to the registration: the Ctrl-C sent
    just before the IPC_PRIVATE queue is made ends the client after both, and the tracker
    removes the queue. Unheld, KeyboardInterrupt would stop the client before the queue
    existed (and, a moment later, leave it unregistered)."""
    source = """
    import signal, sysv_ipc
    from osvirt import tracker

    def make():
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: pending while held off
        q = sysv_ipc.MessageQueue(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, mode=0o600)
        print(json.dumps({"sysv": [["msg", q.id]]}), flush=True)
        return q
    tracker.make_sysv("sysv-msg", make, lambda q: q.id)
    """
    with Children() as kids:
        code = "import json, os\n" + textwrap.dedent(source)
        proc = kids.spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT)
        line = proc.stdout.readline()
        err = proc.communicate(timeout=60)[1]
        assert line, "the client ended before it made its queue:\n" + err
        made = json.loads(line)
        assert "KeyboardInterrupt" in err and proc.returncode != 0, err
    assert _gone(made) == [], err
    assert f"removed {tracker.KINDS['sysv-msg'].what} id={made['sysv'][0][1]}," in err, err


def test_what_the_owner_removed_itself_is_not_touched_again():
    """An owner that removed and unregistered its object: the tracker is silent, and leaves
    alone an object of the same name made since by someone else."""
    with Children() as kids:
        proc, made = _client(kids, """
            from osvirt import ipc
            shm = ipc.PosixSharedMemory(4096)
            shm.close()
            made = {"posix": [("shm", shm.name)]}
        """)
        name = made["posix"][0][1]
        with _untracked_shm(name):
            err = _sigkill(proc)
            assert _posix_exists("shm", name) and "removed" not in err, err


def test_a_creation_that_fails_unregisters_its_name():
    """tracked(): the name was registered before the creation; when that fails (here EEXIST),
    it is unregistered, so the object someone else holds under that name stays."""
    name = "/" + unique_name()
    with _untracked_shm(name), Children() as kids:
        proc, _ = _client(kids, f"""
            import posix_ipc
            from osvirt import tracker
            try:
                with tracker.tracked("shm", {name!r}):
                    posix_ipc.SharedMemory({name!r}, posix_ipc.O_CREX, mode=0o600, size=4096)
            except posix_ipc.ExistentialError:
                pass
            made = {{}}
        """)
        err = _sigkill(proc)
        assert _posix_exists("shm", name) and "removed" not in err, err


def test_a_burst_bigger_than_the_pipe_is_taken_whole_and_in_order():
    """The tracker reads in batches, 20 ms apart: 30,000 registrations and unregistrations
    (~2.6 MB, more than the pipe holds) wait at most for its next read, and are applied in
    order: of all those names only the directory registered last is removed, promptly."""
    with Children() as kids:
        proc, made = _client(kids, """
            import tempfile
            from osvirt import tracker
            from osvirt.naming import private_dir, unique_name
            start = time.monotonic()
            for i in range(15000):
                name = os.path.join(tempfile.gettempdir(), unique_name(f"burst{i}"))
                tracker.register("dir", name)
                tracker.unregister("dir", name)
            directory = kept.enter_context(private_dir())
            made = {"paths": [directory], "burst_s": time.monotonic() - start}
        """)
        killed = time.monotonic()
        err = _sigkill(proc)  # returns once the tracker has exited
        after_kill_s = time.monotonic() - killed
    assert _gone(made, timeout_s=0) == [], err
    assert err.count("removed") == 1 and f"removed directory {made['paths'][0]}: " in err, err
    assert made["burst_s"] < 30 and after_kill_s < 10, (made, after_kill_s)


def test_names_with_bytes_not_utf8_a_newline_or_backslashes_are_removed_as_they_were_made():
    """A path's undecodable bytes (surrogate escapes in Python) cross the protocol as they
    were, and a newline in it (escaped, as a backslash is) does not end the line early."""
    with Children() as kids:
        proc, made = _client(kids, """
            import tempfile
            from osvirt import tracker
            from osvirt.naming import private_dir, replacing, unique_name
            path = os.path.join(tempfile.gettempdir(), unique_name("\\udcff"))  # the byte 0xff
            with tracker.tracked("dir", path):
                os.mkdir(path)
            odd = os.path.join(kept.enter_context(private_dir()), "new\\nline \\\\n\\udcfe")
            os.mkdir(odd)
            half_written = kept.enter_context(replacing(os.path.join(odd, "target"))).name
            made = {"paths": [path], "files": [half_written]}
        """)
        path, half_written = made["paths"][0], made["files"][0]
        assert os.fsencode(path).endswith(b"-\xff") and os.path.isdir(path)
        assert b"new\nline \\n\xfe/.target.osvirt-" in os.fsencode(half_written) and os.path.exists(half_written)
        err = _sigkill(proc)
    assert _gone(made) == [], err
    assert err.count("removed directory") == 2 and "removed file written before a rename" in err, err
    assert "refused" not in err, err


def test_a_killed_tracker_is_replaced_by_a_new_one():
    with Children() as kids:
        proc, made = _client(kids, """
            import psutil
            from osvirt import tracker
            from osvirt.naming import private_dir, unique_name
            tracker.register("dir", "/tmp/" + unique_name())  # the first tracker starts
            pipe = f"pipe:[{os.fstat(tracker._fd).st_ino}]"

            def reads_our_pipe(pid):
                try:
                    return any(os.readlink(f"/proc/{pid}/fd/{fd}") == pipe for fd in os.listdir(f"/proc/{pid}/fd"))
                except OSError:  # gone, or another user's
                    return False
            first = next(p for p in psutil.process_iter(["cmdline"])
                         if "osvirt.tracker" in " ".join(p.info["cmdline"] or []) and reads_our_pipe(p.pid))
            first.kill()
            first.wait(10)
            directory = kept.enter_context(private_dir())  # EPIPE: a second tracker starts
            made = {"paths": [directory], "first": first.pid}
        """)
        err = _sigkill(proc)
    assert _gone(made) == [], err
    assert f"removed directory {made['paths'][0]}: " in err and f"(pid {made['first']})" not in err


def test_a_forked_child_keeps_the_objects_until_it_dies_too():
    with Children() as kids:
        proc, made = _client(kids, """
            from osvirt import ipc
            from osvirt.naming import private_dir
            shm, directory = ipc.PosixSharedMemory(4096), kept.enter_context(private_dir())
            child = os.fork()
            if child == 0:  # shares the objects, and inherits the connection to the tracker
                time.sleep(600)
                os._exit(0)
            made = {"posix": [("shm", shm.name)], "paths": [directory], "child": child}
        """)
        proc.kill()
        proc.wait()
        time.sleep(0.5)  # time the tracker would need to act, were it told to
        assert len(_held(made)) == 2, "removed while a forked child still holds the connection"
        os.kill(made["child"], signal.SIGKILL)  # the last process connected: now it acts
        err = proc.communicate(timeout=60)[1]
    assert _gone(made) == [], err
    assert made["posix"][0][1] in err and made["paths"][0] in err


def test_a_program_a_client_execs_does_not_hold_the_connection():
    with Children() as kids:
        proc, made = _client(kids, """
            import subprocess
            from osvirt.naming import private_dir
            directory = kept.enter_context(private_dir())
            sleeper = subprocess.Popen(["sleep", "600"], close_fds=False)  # inherits all it may: not the tracker's pipe
            made = {"paths": [directory], "sleeper": sleeper.pid}
        """)
        try:
            proc.kill()
            proc.wait()
            assert _gone(made) == [], "the exec'd program kept the tracker waiting"
        finally:
            os.kill(made["sleeper"], signal.SIGKILL)
        proc.communicate(timeout=60)


@pytest.mark.needs("cap_sys_admin")
def test_a_swap_file_is_swapped_off_and_removed():
    with Children() as kids:
        proc, made = _client(kids, """
            from osvirt.memory import SwapFile
            swap = SwapFile(1)
            made = {"paths": [swap.path]}
        """)
        assert made["paths"][0] in swaps()
        err = _sigkill(proc)
    assert _gone(made) == [], err
    assert f"removed swap file {made['paths'][0]}: " in err


def _forger(kids, lines, objects):
    """A client that writes raw protocol `lines` (it holds a connection once it registered
    something of its own) and is SIGKILLed; its stderr."""
    proc, _ = _client(kids, f"""
        from osvirt import tracker
        from osvirt.naming import unique_name
        tracker.register("dir", "/tmp/" + unique_name())  # connected, by a name of nothing
        for line in {lines!r}:
            tracker._send(line.encode())
        made = {{}}
    """)
    err = _sigkill(proc)
    for what in objects:
        assert os.path.lexists(what), f"the tracker removed {what}:\n{err}"
    return err


def test_names_not_osvirt_made_are_refused():
    with Children() as kids, private_dir() as d:
        plain = os.path.join(d, "precious")
        os.mkdir(plain)
        beside = os.path.join(d, "sub", unique_name())  # osvirt-named, but not in a temp directory
        os.makedirs(beside)
        err = _forger(kids, [f"+dir {plain}\n", f"+dir {beside}\n", "+swap /etc/passwd\n",
                             "+file /etc/passwd\n", "+shm /precious\n", "+nosuchkind /osvirt-1-0123abcd\n"],
                     [plain, beside])
    for name in (plain, beside, "/etc/passwd", "/precious", "nosuchkind"):
        assert "refused" in err and name in err, err
    assert "removed" not in err, err


@pytest.mark.needs("cap_chown")
def test_an_object_of_another_uid_is_not_removed():
    with Children() as kids:
        path = os.path.join("/tmp", unique_name())
        os.mkdir(path, 0o700)
        try:
            os.chown(path, 65534, 65534)
            err = _forger(kids, [f"+dir {path}\n"], [path])
        finally:
            os.rmdir(path)
    assert f"did not remove directory {path}" in err and "uid 65534" in err, err


def test_a_sysv_id_whose_key_or_creation_time_changed_is_not_removed():
    """The id of a removed object may be given to a new one: that one stays."""
    import sysv_ipc
    sem = sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, mode=0o600)
    try:
        with Children() as kids:
            err = _forger(kids, [f"+sysv-sem id={sem.id},key={sem.key + 1},ctime=0\n"], [])
        assert _sysv_exists("sem", sem.id), err
        assert "removed" not in err, err
    finally:
        sem.remove()


@pytest.mark.parametrize("kind, name", [("dir", "/tmp/x"), ("dir", "relative/osvirt-1-0123abcd"),
                                        ("dir", "/tmp/../etc/osvirt-1-0123abcd"), ("shm", "osvirt-1-0123abcd"),
                                        ("shm", "/osvirt-1-0123abcd-a b"), ("sysv-sem", "12"),
                                        ("cgroup", "/osvirt-1-0123abcd"), ("veth", "eth0"),
                                        ("veth", "osv1-0123456789abc"), ("veth", "osv1-xyz0")])
def test_bad_names_are_refused_before_anything_is_sent(kind, name):
    with pytest.raises(ValueError, match=r"mkdir|shm_open|semget|netlink|resource tracker"):
        tracker.register(kind, name)
