"""osvirt.container.Container: what the kernel shows from inside a container and from the host.

Each test runs a real container (the host's /usr as its root unless said
otherwise) and compares what a program inside reports with what the host
sees: pids, hostnames, SysV ids, mountinfo, uid maps, file owners, cgroup
counters, errnos. As root the container gets namespaces with CAP_SYS_ADMIN;
as an unprivileged user it is rootless (a user namespace of its own, uid 0
inside mapped to the caller's uid), where the kernel allows user namespaces.
Inside the docker-like CI container Docker's seccomp profile refuses unshare
with namespace flags: every test skips with that reason. The leak guard
checks after each test that no child, temp directory or cgroup is left.
"""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest
import sysv_ipc  # imported here: a callable run in a container finds no module it has not got already

from osvirt.container import Container, ContainerError, capabilities, docker, mounts, namespaces, oci
from osvirt.container.container import spec_for
from osvirt.errors import SpecError
from osvirt.naming import private_dir

needs_namespaces = pytest.mark.needs("mount_namespace")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stdout_of(make):
    """(exit status, stdout) of the container make() creates and starts, its stdout a pipe to here."""
    r, w = os.pipe()
    saved = os.dup(1)
    try:
        os.dup2(w, 1)
        os.close(w)
        container = make()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    with container:
        status = container.wait(timeout_s=60)
    with os.fdopen(r) as f:
        return status, f.read()


def _output(argv, **options):
    """Run argv in a container; (exit status, its stdout)."""
    return _stdout_of(lambda: Container.run(argv, **options))


def _started(spec):
    c = Container(spec)
    c.create()
    c.start()
    return c


def _holding(target, *args, **options):
    """Start a container running the callable `target(report_w, hold_r, *args)`; yield (container, report).

    The callable reports one JSON line, then waits for a byte: what the host
    checks while the container still exists.
    """
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()

    def body():
        os.close(report_r)
        os.close(hold_w)
        return target(report_w, hold_r, *args)

    c = Container.run(body, **options)
    os.close(report_w)
    os.close(hold_r)
    with os.fdopen(report_r) as f:
        line = f.readline()
    return c, (json.loads(line) if line else None), hold_w


def _report(report_w, value):
    os.write(report_w, json.dumps(value).encode() + b"\n")


@needs_namespaces
def test_the_program_is_pid_1_inside_while_the_host_sees_another_pid():
    status, out = _output(["sh", "-c", "echo $$; grep NSpid /proc/$$/status"], init=False)
    assert status == 0
    pid, nspid = out.splitlines()
    assert pid == "1"
    assert nspid.split()[-1] == "1" and nspid.split()[-2] != "1"  # NSpid: ... <the parent namespace's> 1


@needs_namespaces
def test_the_state_pid_is_the_hosts_view_of_pid_1():
    with Container.run(["sleep", "30"], init=False) as c:
        assert c.pid != 1
        with open(f"/proc/{c.pid}/status") as f:
            nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
        assert nspid[-2:] == [str(c.pid), "1"]
        assert c.state()["status"] == "running" and c.state()["pid"] == c.pid
        c.kill(signal.SIGKILL)
        assert c.wait() == -signal.SIGKILL
        assert c.state()["status"] == "stopped" and "pid" not in c.state()


@needs_namespaces
def test_osvirts_init_reaps_an_orphan_and_forwards_signals():
    script = textwrap.dedent("""\
        (sleep 0.2 & echo $! > /tmp/orphan)
        sleep 0.1
        grep PPid /proc/$(cat /tmp/orphan)/status
        sleep 0.5
        for f in /proc/[0-9]*/stat; do cut -d' ' -f3 "$f"; done | grep -c Z
        echo $$
        exit 0
    """)
    status, out = _output(["sh", "-c", script])
    ppid, zombies, own_pid = out.split("\n")[:3]
    assert ppid.split() == ["PPid:", "1"]  # its parent gone, the orphan is PID 1's
    assert zombies == "0"  # and PID 1 reaped it
    assert own_pid == "2"  # the program runs under osvirt's init
    with Container.run(["sleep", "30"]) as c:  # sleep has no SIGTERM handler: PID 1 forwards it
        c.kill(signal.SIGTERM)
        assert c.wait(timeout_s=10) == -signal.SIGTERM


@needs_namespaces
def test_the_hostname_is_set_inside_only():
    before = socket.gethostname()
    status, out = _output(["hostname"], hostname="inside-only")
    assert (status, out) == (0, "inside-only\n")
    assert socket.gethostname() == before


def _make_queue(report_w, hold_r, key):
    q = sysv_ipc.MessageQueue(key, sysv_ipc.IPC_CREX)
    with open("/proc/sysvipc/msg") as f:
        inside = [int(line.split()[0]) for line in list(f)[1:]]
    _report(report_w, {"id": q.id, "inside": key in inside})
    os.read(hold_r, 1)
    q.remove()
    return 0


@needs_namespaces
def test_a_sysv_queue_made_inside_is_invisible_outside():
    key = int.from_bytes(os.urandom(3), "big") + 1
    c, report, hold = _holding(_make_queue, key)
    try:
        assert report["inside"]
        with open("/proc/sysvipc/msg") as f:
            outside = [int(line.split()[0]) for line in list(f)[1:]]
        assert key not in outside
    finally:
        os.write(hold, b".")
        os.close(hold)
        assert c.wait(timeout_s=30) == 0
        c.close()


def _mountinfo_inside(report_w, hold_r):
    _report(report_w, [[row.mount_point, row.fstype] for row in mounts.mountinfo()])
    os.read(hold_r, 1)
    return 0


@needs_namespaces
def test_the_containers_tmpfs_is_invisible_outside():
    before = {(row.mount_point, row.fstype, row.source) for row in mounts.mountinfo()}
    c, inside, hold = _holding(_mountinfo_inside)
    try:
        assert ["/tmp", "tmpfs"] in inside and ["/", "tmpfs"] in inside  # host_usr_root's tmpfs is its /
        assert any(point == "/usr" for point, _ in inside)
        during = {(row.mount_point, row.fstype, row.source) for row in mounts.mountinfo()}
        assert not {m for m in during - before if m[0] in ("/mnt", "/mnt/tmp", "/mnt/usr")}
    finally:
        os.write(hold, b".")
        os.close(hold)
        c.wait(timeout_s=30)
        c.close()


@pytest.mark.needs("userns", "mount_namespace")
def test_rootless_uid_0_inside_is_the_callers_uid_outside(tmp_path):
    os.chmod(tmp_path, 0o777)
    status, out = _output(["sh", "-c", "id -u; cat /proc/self/uid_map; touch /out/made-inside"], rootless=True,
                          volumes=[(str(tmp_path), "/out", False)])
    assert status == 0
    uid, uid_map = out.splitlines()[:2]
    assert uid == "0"
    assert uid_map.split() == ["0", str(os.geteuid()), "1"]
    assert os.stat(tmp_path / "made-inside").st_uid == os.geteuid()


@needs_namespaces
@pytest.mark.needs("cgroup_memory")
def test_the_memory_limit_kills_what_goes_past_it():
    # a shell variable of 64 MiB, past the 32 MiB limit: the OOM killer ends it
    with Container.run(["sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"],
                       memory="32m") as c:
        status = c.wait(timeout_s=60)
        assert status == -signal.SIGKILL
        assert c.cgroup.oom_kill_count() >= 1
        assert c.cgroup.memory_peak_bytes() <= 32 << 20


def _fork_until_refused(report_w, hold_r):
    made = 0
    while True:
        try:
            pid = os.fork()
        except OSError as e:
            _report(report_w, {"made": made, "errno": e.errno})
            break
        if pid == 0:
            os.read(hold_r, 1)
            os._exit(0)
        made += 1
    os.read(hold_r, 1)
    return 0


@needs_namespaces
@pytest.mark.needs("cgroup_pids")
def test_fork_past_the_pids_limit_fails_with_eagain():
    c, report, hold = _holding(_fork_until_refused, pids=8)
    try:
        assert report["errno"] == errno.EAGAIN
        assert c.cgroup.pids_current() == 8  # osvirt's init, the target, and what it forked
        assert report["made"] == 8 - 2
    finally:
        os.write(hold, b"." * 8)  # a byte for each process inside (the monitor holds a write end: no EOF)
        os.close(hold)
        c.wait(timeout_s=30)
        c.close()


def _unshare_and_getpid(report_w, hold_r):
    results = {"getpid": os.getpid()}
    for kinds in (["mount"], ["user", "mount"]):
        try:
            namespaces.unshare(kinds)
            results["+".join(kinds)] = 0
        except OSError as e:
            results["+".join(kinds)] = e.errno
    _report(report_w, results)
    return 0


@needs_namespaces
@pytest.mark.needs("seccomp_filter")
def test_dockers_seccomp_profile_refuses_unshare_and_allows_getpid():
    c, report, hold = _holding(_unshare_and_getpid)
    os.close(hold)
    c.wait(timeout_s=30)
    c.close()
    assert report == {"getpid": 2, "mount": errno.EPERM, "user+mount": errno.EPERM}
    # without the filter a new user namespace needs no capability: the refusal above was the filter's
    c, report, hold = _holding(_unshare_and_getpid, seccomp="none")
    os.close(hold)
    c.wait(timeout_s=30)
    c.close()
    assert report["mount"] == errno.EPERM  # no CAP_SYS_ADMIN among Docker's 14
    assert report["user+mount"] == 0 or report["user+mount"] == errno.ENOSPC  # max_user_namespaces


@needs_namespaces
def test_capeff_inside_is_exactly_dockers_14():
    status, out = _output(["grep", "^Cap", "/proc/self/status"])
    sets = {line.split(":")[0]: int(line.split()[1], 16) for line in out.splitlines()}
    assert capabilities.names(sets["CapEff"]) == set(docker.CAPABILITIES)
    assert capabilities.names(sets["CapBnd"]) == set(docker.CAPABILITIES)
    assert sets["CapInh"] == 0 and sets["CapAmb"] == 0


@needs_namespaces
@pytest.mark.parametrize("script, status", [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", -signal.SIGTERM)])
@pytest.mark.parametrize("init", [True, False])
def test_the_exit_status_passes_through(script, status, init):
    if init is False and status < 0:
        # PID 1 of a namespace gets no signal it has no handler for, from inside or (SIGKILL aside) outside
        script, status = "sleep 30", -signal.SIGKILL
    with Container.run(["sh", "-c", script], init=init) as c:
        if script == "sleep 30":
            c.kill(signal.SIGKILL)
        assert c.wait(timeout_s=30) == status


@needs_namespaces
def test_an_exec_failure_is_raised_by_start_naming_the_step_and_errno():
    with pytest.raises(ContainerError) as raised:
        Container.run(["/no/such/program"])
    assert raised.value.errno == errno.ENOENT
    assert raised.value.step.startswith("exec ['/no/such/program']")


@needs_namespaces
def test_a_set_up_failure_is_raised_by_create_naming_the_step(tmp_path):
    spec = spec_for(["true"], volumes=[(str(tmp_path / "missing"), "/x", False)])
    c = Container(spec)
    with pytest.raises(ContainerError) as raised:
        c.create()
    assert raised.value.errno == errno.ENOENT and raised.value.step == "mount /x (bind)"
    assert c.status == "stopped"


def test_a_bad_spec_raises_before_any_system_call():
    before = psutil.Process().children()
    with pytest.raises(SpecError) as raised:
        Container.run(["true"], memory=1000)  # below runc's 6 MiB minimum
    assert raised.value.field == "linux.resources.memory.limit"
    config = docker.oci_config("/srv", ["true"])
    config["process"]["cwd"] = "relative"
    with pytest.raises(SpecError, match="process.cwd"):
        oci.parse(config, "/srv")
    assert psutil.Process().children() == before


@needs_namespaces
def test_nothing_is_left_after_an_exception_inside_the_with():
    with pytest.raises(RuntimeError):
        with Container.run(["sleep", "30"]) as c:
            pid, state_dir, cgroups = c.pid, c.state_dir, dict(c.state()["cgroupPaths"])
            raise RuntimeError("the caller's own error")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(state_dir)
    assert not [p for p in cgroups.values() if os.path.exists(p)]


@needs_namespaces
@pytest.mark.needs("cgroup_memory", "cgroup_cpu", "cgroup_pids")  # rootless, none is made without them
def test_the_program_starts_in_the_containers_cgroup():
    """The cgroup is made while the process builds its root; it is moved in before it is created."""
    r, w = os.pipe()
    c = Container(spec_for(["cat", "/proc/self/cgroup"]))
    saved = os.dup(1)
    try:
        os.dup2(w, 1)
        os.close(w)
        c.create()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    with c:
        cgroup_paths = c.state()["cgroupPaths"]
        c.start()
        assert c.wait(timeout_s=60) == 0
        with os.fdopen(r) as f:
            lines = f.read().splitlines()
    assert cgroup_paths  # memory, cpu, pids: where this machine has each
    name = {os.path.basename(path) for path in cgroup_paths.values()}.pop()
    v1 = {controller: line for line in lines for controller in line.split(":")[1].split(",") if controller}
    for controller in cgroup_paths:  # its v1 hierarchy's line, else the v2 one's
        line = v1.get(controller) or next(line for line in lines if line.startswith("0::"))
        assert line.endswith("/" + name), (controller, lines)


@needs_namespaces
def test_a_cgroup_that_fails_leaves_no_process_nor_state_directory(monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "mkdir(cgroup memory)")
    monkeypatch.setattr("osvirt.container.container._cgroups.Cgroup", refused)
    c = Container(spec_for(["true"], memory="64m"))
    with pytest.raises(PermissionError, match="mkdir"):
        c.create()
    assert c.pid is None or not psutil.pid_exists(c.pid)  # killed and reaped (forked first, as root)
    assert not os.path.exists(c.state_dir)


_OWNER = textwrap.dedent("""\
    import sys
    from osvirt.container import Container
    with Container.run(["sleep", "60"], **({"memory": "64m"} if sys.argv[1] == "1" else {})) as c:
        print(c.pid, c.state_dir, *c.state()["cgroupPaths"].values(), flush=True)
        c.wait()
""")


@needs_namespaces
@pytest.mark.parametrize("signo", [signal.SIGKILL, signal.SIGINT])
def test_nothing_is_left_after_the_owner_is_sigkilled_or_interrupted(signo):
    from osvirt.env import can
    limited = "1" if can("cgroup_memory") else "0"
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, limited], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line, proc.stderr.read()
        pid, state_dir, cgroups = int(line[0]), line[1], line[2:]
        assert psutil.pid_exists(pid)
    finally:
        proc.send_signal(signo)  # SIGINT: a Ctrl-C, KeyboardInterrupt in wait(); SIGKILL: the tracker's turn
    _, err = proc.communicate(timeout=60)  # the tracker holds stderr: EOF once it has removed what was left
    deadline = time.monotonic() + 10
    while (psutil.pid_exists(pid) or os.path.exists(state_dir) or any(map(os.path.exists, cgroups))) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid), err
    assert not os.path.exists(state_dir), err
    assert not [p for p in cgroups if os.path.exists(p)], err


@needs_namespaces
@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_a_created_container_ends_at_the_signals_that_end_runcs(signo):
    """Its process waits on exec.fifo as PID 1 of its namespace, where the kernel drops a signal with no
    handler: SIGTERM, SIGINT and SIGHUP end it anyway (128 + N), as they end runc's; SIGUSR1 does not."""
    from osvirt.container.container import WAITING_DEATHS
    c = Container(spec_for(["true"]), init=False)
    with c:
        c.create()
        c.kill(signo)
        if signo in WAITING_DEATHS:
            assert c.wait(timeout_s=10) == 128 + signo
            assert c.status == "stopped"
        else:
            with pytest.raises(TimeoutError):
                c.wait(timeout_s=0.5)
            assert c.status == "created"


@needs_namespaces
@pytest.mark.needs("cgroup_memory", "cgroup_cpu", "cgroup_pids")
@pytest.mark.parametrize("end", ["exits", "SIGTERM while created"])
def test_a_detached_containers_cgroup_goes_with_its_last_process_even_without_delete(end):
    """A container with a state root is nobody's to track once created (here by another process, as
    osvirt-runtime create does): its monitor removes its cgroup once the program has exited, or once a
    signal ended it before start, so that a state directory removed without delete() leaves no cgroup."""
    create = ("import sys\nfrom osvirt.container import Container\nfrom osvirt.container.container import spec_for\n"
              "Container(spec_for(['true']), 'c1', state_root=sys.argv[1]).create()\n")
    with private_dir() as root:
        try:
            with tempfile.TemporaryFile() as out:  # a file: the created container's process holds it open
                made = subprocess.run([sys.executable, "-c", create, root], cwd=ROOT, stdout=out, stderr=out,
                                      timeout=60)
                out.seek(0)
                assert made.returncode == 0, out.read()
            c = Container.load(os.path.join(root, "c1"))
            paths = set(c.state()["cgroupPaths"].values())
            assert paths and all(os.path.isdir(p) for p in paths)
            if end == "exits":
                c.start()
            else:
                c.kill(signal.SIGTERM)
            assert c.wait(timeout_s=10) == (0 if end == "exits" else 128 + signal.SIGTERM)
            assert sorted(p for p in paths if os.path.exists(p)) == []
        finally:
            shutil.rmtree(os.path.join(root, "c1"))  # no delete(): what a caller that loses the state does


_STEP = textwrap.dedent("""\
    import json, signal, sys
    from osvirt.container import Container
    from osvirt.container.container import spec_for
    step, root = sys.argv[1], sys.argv[2]
    if step == "create":
        c = Container(spec_for(["sleep", "60"]), "c1", state_root=root, init=True)
        c.create()
    else:
        c = Container.load(root + "/c1")
        if step == "start":
            c.start()
        elif step == "kill":
            c.kill(signal.SIGTERM)
        elif step == "wait":
            print(c.wait())
        elif step == "delete":
            c.delete()
    if step != "delete":
        print(json.dumps(c.state()))
""")


@needs_namespaces
def test_create_start_kill_wait_delete_in_separate_processes():
    def step(name):
        # to files: a created container's process holds the creator's stdout and stderr, as runc's does
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([sys.executable, "-c", _STEP, name, root], cwd=ROOT, stdout=out, stderr=err,
                                  timeout=60)
            out.seek(0)
            err.seek(0)
            assert proc.returncode == 0, err.read()
            return out.read()

    with private_dir() as root:  # osvirt-<pid>-...: the leak guard of a run beside this one tells it apart
        try:
            created = json.loads(step("create"))
            assert created["status"] == "created" and psutil.pid_exists(created["pid"])
            assert os.path.exists(os.path.join(root, "c1", "exec.fifo"))
            assert psutil.Process(created["pid"]).ppid() not in (os.getpid(),)  # outlived its creator
            assert json.loads(step("start"))["status"] == "running"
            assert json.loads(step("kill").splitlines()[-1])["id"] == "c1"
            waited = step("wait").splitlines()
            assert waited[0] == str(-signal.SIGTERM)
            assert json.loads(waited[1])["status"] == "stopped"
            step("delete")
            assert not os.path.exists(os.path.join(root, "c1"))
            assert not [p for p in created["cgroupPaths"].values() if os.path.exists(p)]
        finally:
            if os.path.exists(os.path.join(root, "c1")):
                Container.load(os.path.join(root, "c1")).delete(force=True)


def _osvirt(*argv):
    return subprocess.run([sys.executable, "-m", "osvirt", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@needs_namespaces
def test_osvirt_container_run_exits_with_the_commands_status():
    proc = _osvirt("container", "run", "--hostname", "cli-box", "--", "sh", "-c", "hostname; exit 5")
    assert (proc.returncode, proc.stdout) == (5, "cli-box\n"), proc.stderr
    proc = _osvirt("container", "run", "--", "sh", "-c", "kill -KILL $$")
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr


@needs_namespaces
def test_osvirt_container_run_binds_a_volume_read_only(tmp_path):
    (tmp_path / "f").write_text("from the host")
    proc = _osvirt("container", "run", "--volume", f"{tmp_path}:/data:ro", "--",
                   "sh", "-c", "cat /data/f; touch /data/g")
    assert proc.stdout == "from the host" and proc.returncode == 1
    assert "Read-only file system" in proc.stderr
    assert not (tmp_path / "g").exists()


def test_osvirt_container_run_refuses_bad_flags_before_running_anything():
    proc = _osvirt("container", "run", "--memory", "lots", "--", "true")
    assert proc.returncode == 1 and "size 'lots'" in proc.stderr
    proc = _osvirt("container", "run", "--volume", "nocolon", "--", "true")
    assert proc.returncode == 1 and "HOST:GUEST" in proc.stderr
    proc = _osvirt("container", "run")
    assert proc.returncode == 1 and "no command given" in proc.stderr


@needs_namespaces
@pytest.mark.needs("cap_sys_admin")  # a spec of its own, without the user namespace spec_for adds rootless
@pytest.mark.parametrize("init", [False, True])
def test_a_terminal_through_the_console_socket(tmp_path, init):
    """runc's --console-socket: the master of a pty of the container's own devpts comes over SCM_RIGHTS."""
    config = docker.oci_config("/mnt", ["sh", "-c", "tty; stty size"], env=["PATH=/usr/bin:/bin"])
    config["annotations"] = {"org.osvirt.root": "host-usr"}
    config["process"].update(terminal=True, consoleSize={"height": 24, "width": 100})
    path = str(tmp_path / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        c = Container(oci.parse(config, str(tmp_path)), console_socket=path, init=init)
        try:
            c.create()
            conn, _ = listener.accept()
            with conn:
                name, fds, _, _ = socket.recv_fds(conn, 64, 1)
            assert name == b"/dev/ptmx" and len(fds) == 1
            c.start()
            assert c.wait(timeout_s=30) == 0
            out = b""
            while True:
                try:
                    chunk = os.read(fds[0], 4096)
                except OSError:  # EIO: every slave closed
                    break
                if not chunk:
                    break
                out += chunk
            os.close(fds[0])
        finally:
            c.close()
    assert out.decode().split() == ["/dev/pts/0", "24", "100"]  # its own devpts: numbered from 0


@needs_namespaces
@pytest.mark.needs("cap_sys_admin")  # joining another container's namespaces: root's (setns over them)
def test_a_namespace_path_is_joined_not_made():
    with Container.run(["sleep", "30"], hostname="first", init=False) as first:
        config = docker.oci_config("/mnt", ["sh", "-c", "hostname; readlink /proc/self/ns/uts /proc/self/ns/ipc"],
                                   env=["PATH=/usr/bin:/bin"])
        config["annotations"] = {"org.osvirt.root": "host-usr"}
        del config["hostname"]  # it would set the first's
        for ns in config["linux"]["namespaces"]:
            if ns["type"] == "uts":
                ns["path"] = f"/proc/{first.pid}/ns/uts"
        status, out = _stdout_of(lambda: _started(oci.parse(config, "/")))
        assert status == 0
        hostname, uts, ipc = out.split()
        assert hostname == "first"
        assert uts == os.readlink(f"/proc/{first.pid}/ns/uts")  # the same UTS namespace
        assert ipc != os.readlink(f"/proc/{first.pid}/ns/ipc")  # a new IPC one, as listed without a path


@needs_namespaces
def test_a_program_that_is_an_init_is_pid_1_itself(tmp_path):
    init = tmp_path / "tini"  # named as an init: Container.run gives it no init of osvirt's
    init.write_text("#!/bin/sh\necho $$\n")
    init.chmod(0o755)
    status, out = _output([str(init)], volumes=[(str(tmp_path), str(tmp_path), True)])
    assert (status, out) == (0, "1\n")
