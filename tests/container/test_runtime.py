"""osvirt-runtime (osvirt/container/runtime.py) driven as tools drive runc, next to runc itself.

Every test runs the command line in a child process and reads back what the kernel shows:
/proc/PID/ns, a file the container wrote through a bind mount, /proc/PID/cgroup, the host's
/proc/self/mountinfo, /proc/*/environ. Bundles come from `osvirt-runtime spec` (and `runc spec`
where runc is installed), with a root filesystem made of the host's /usr (a read-only bind, and
the usrmerge links as the host has them): no test depends on a downloaded rootfs.

A container needs a mount namespace of its own: with CAP_SYS_ADMIN (root) the bundle is the
plain spec; without it (uid 65534) `spec --rootless`'s, in a user namespace of its own. Where
neither works (Docker's seccomp profile refuses unshare) the container tests skip with why.
"""
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from osvirt import env
from osvirt.container import runtime
from osvirt.container.cgroups import cgroup_directory, cgroup_mounts

needs = pytest.mark.needs
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "osvirt-runtime")
# The console script when installed (what tools call), else the module.
OSVIRT_RUNTIME = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else [sys.executable, "-m", "osvirt.container.runtime"]
RUNC = shutil.which("runc")
needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed")
ROOTLESS = "CAP_SYS_ADMIN" not in env.capabilities()


def call(tool, root, *args, timeout=60):
    """`tool --root ROOT ARGS...`, stdin /dev/null, its output captured in files: a container created
    inherits them and keeps them open, so pipes would not reach EOF before it ends."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run([*tool, "--root", str(root), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=timeout)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def _last_error(stderr):
    """The msg of the last logrus text line on stderr (quoted as Go's %q, which JSON reads, when not plain)."""
    lines = [line for line in stderr.splitlines() if line.startswith("time=")]
    assert lines, stderr
    msg = lines[-1].split(" msg=", 1)[1]
    return json.loads(msg) if msg.startswith('"') else msg


# -- bundles ---------------------------------------------------------------------------------------
def make_bundle(path, args, tool=OSVIRT_RUNTIME, marker=None):
    """A bundle at `path` from `tool spec` (--rootless without CAP_SYS_ADMIN): `args` run in a root
    of the host's /usr, with path/out bound read-write at /out; `marker` goes into the environment."""
    path.mkdir()
    subprocess.run([*tool, "spec", "--bundle", str(path), *(["--rootless"] if ROOTLESS else [])], check=True)
    with open(path / "config.json") as f:
        config = json.load(f)
    process = config["process"]
    process["terminal"] = False  # no console socket here
    process["args"] = args
    if marker:
        process["env"].append(marker)
    rootfs = path / "rootfs"
    for name in ("usr", "proc", "dev", "sys", "tmp", "out"):
        (rootfs / name).mkdir(parents=True)
    (path / "out").mkdir()
    binds = [("/usr", "/usr", "ro"), (str(path / "out"), "/out", "rw")]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # as the host has them
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), rootfs / name)
        elif os.path.isdir(host):
            (rootfs / name).mkdir()
            binds.append((host, host, "ro"))
    config["mounts"] += [{"destination": guest, "type": "bind", "source": host, "options": ["rbind", mode]}
                         for host, guest, mode in binds]
    with open(path / "config.json", "w") as f:
        json.dump(config, f, indent=1)
    return path


def make_busybox_bundle(path, busybox, args, tool):
    """A bundle at `path` as `tool spec` (runc's, where installed) writes it, whose rootfs holds
    nothing but Debian's static busybox and its applets' links; path/out bound read-write at /out."""
    path.mkdir()
    subprocess.run([*tool, "spec", "--bundle", str(path), *(["--rootless"] if ROOTLESS else [])], check=True)
    with open(path / "config.json") as f:
        config = json.load(f)
    config["process"].update(terminal=False, args=args)
    bin_dir = path / "rootfs" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("proc", "dev", "sys", "tmp", "out"):
        (path / "rootfs" / name).mkdir()
    shutil.copy(busybox, bin_dir / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", bin_dir / applet)
    (path / "out").mkdir()
    config["mounts"].append({"destination": "/out", "type": "bind", "source": str(path / "out"),
                             "options": ["rbind", "rw"]})
    with open(path / "config.json", "w") as f:
        json.dump(config, f, indent=1)
    return path


# -- what a container leaves on the host ----------------------------------------------------------------
def cgroup_dirs(pid):
    """The cgroup directories of process `pid`, in every hierarchy mounted here."""
    with open(f"/proc/{pid}/cgroup") as f:
        own = {}
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller.removeprefix("name=")] = path
    dirs = set()
    for mount in cgroup_mounts():
        for controller in mount.controllers or {""}:
            if controller in own and (d := cgroup_directory(mount, own[controller])) is not None:
                dirs.add(d)
    return dirs


def all_cgroup_dirs():
    """Every cgroup directory there is now, in every hierarchy mounted here."""
    return {path for mount in cgroup_mounts() for path, _, _ in os.walk(mount.point)}


def mount_points():
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


def processes_with(marker):
    """The pids whose environment holds `marker` (a runtime started with it, its children, the container)."""
    found = []
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:  # gone, or not ours to read
            pass
    return found


def alive(pid):
    """Whether `pid` runs (a zombie, which runc's detached init is until PID 1 reaps it, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- no container needed: ids, signals, flags, spec, errors -------------------------------------------------
@pytest.mark.parametrize("container_id, message", [
    ("a", None), ("A-b_c.d+e", None), ("a,b", None), ("..a", None),
    ("", "container id cannot be empty"), (".", "invalid container ID format"), ("..", "invalid container ID format"),
    ("a/b", "invalid container ID format"), ("a b", "invalid container ID format"), ("é", "invalid container ID format"),
    ("a:b", "invalid container ID format"), ("a\nb", "invalid container ID format"),
])
def test_ids_are_checked_with_runcs_rule(container_id, message, tmp_path):
    if message is None:
        runtime.validate_id(container_id)
        expected = "container does not exist"
    else:
        with pytest.raises(runtime.Failure, match=message):
            runtime.validate_id(container_id)
        expected = message
    ours = call(OSVIRT_RUNTIME, tmp_path / "ours", "state", container_id)
    assert (ours.returncode, _last_error(ours.stderr)) == (1, expected)
    if RUNC:  # runc says the same of the same id
        theirs = call([RUNC], tmp_path / "runc", "state", container_id)
        assert (theirs.returncode, _last_error(theirs.stderr)) == (1, expected)


def test_signals_by_name_or_number_as_runc_parses_them():
    assert runtime.parse_signal("9") == signal.SIGKILL
    assert runtime.parse_signal("KILL") == runtime.parse_signal("sigkill") == runtime.parse_signal("SigKill") == 9
    assert runtime.parse_signal("USR1") == signal.SIGUSR1
    assert runtime.parse_signal("99") == 99  # the kernel judges a number (EINVAL at kill)
    for bad in ("FOO", "SIG", "", "-"):
        with pytest.raises(runtime.Failure, match="unknown signal"):
            runtime.parse_signal(bad)


def test_errors_are_logged_as_runc_logs_them(tmp_path):
    text = call(OSVIRT_RUNTIME, tmp_path, "kill", "nothing-here")
    assert text.returncode == 1 and text.stdout == ""
    assert text.stderr.startswith('time="') and 'level=error msg="container does not exist"' in text.stderr
    log = tmp_path / "log.json"
    as_json = call(OSVIRT_RUNTIME, tmp_path, "--log", str(log), "--log-format", "json", "delete", "nothing-here")
    assert as_json.returncode == 1
    assert as_json.stderr == "container does not exist\n"  # with --log, stderr gets the message too
    entry = json.loads(log.read_text())
    assert sorted(entry) == ["level", "msg", "time"] and entry["level"] == "error"
    assert entry["msg"] == "container does not exist"
    bad = call(OSVIRT_RUNTIME, tmp_path, "--log-format", "xml", "list")
    assert (bad.returncode, _last_error(bad.stderr)) == (1, "invalid log-format: xml")
    other = call(OSVIRT_RUNTIME, tmp_path, "exec", "x", "sh")  # runc's, not osvirt-runtime's
    assert (other.returncode, _last_error(other.stderr)) == (1, "exec: runc's command is not supported by osvirt-runtime")


def test_flags_in_gos_syntax_anywhere_after_the_command(tmp_path):
    for args in (["delete", "--force", "x"], ["delete", "x", "-f"], ["delete", "--force=true", "x"],
                 ["delete", "-force", "x"]):
        assert call(OSVIRT_RUNTIME, tmp_path, *args).returncode == 0, args  # --force: nothing to delete is fine
    no = call(OSVIRT_RUNTIME, tmp_path, "delete", "--force=false", "x")
    assert (no.returncode, _last_error(no.stderr)) == (1, "container does not exist")
    for args, message in ((["create", "--nope", "x"], "flag provided but not defined: -nope"),
                          (["kill", "--all=maybe", "x"], 'invalid boolean value "maybe" for -all: parse error'),
                          (["state"], 'osvirt-runtime: "state" requires exactly 1 argument(s)'),
                          (["kill", "a", "b", "c"], 'osvirt-runtime: "kill" requires a maximum of 2 argument(s)')):
        out = call(OSVIRT_RUNTIME, tmp_path, *args)
        assert out.returncode == 1 and out.stdout.startswith("Incorrect Usage."), args
        assert _last_error(out.stderr) == message


def test_what_is_not_supported_is_said_before_anything_is_made(tmp_path):
    subprocess.run([*OSVIRT_RUNTIME, "spec", "--bundle", str(tmp_path)], check=True)
    for flags, message in ((["--no-pivot"], "--no-pivot is not supported"),
                           (["--preserve-fds", "2"], "--preserve-fds is not supported")):
        out = call(OSVIRT_RUNTIME, tmp_path / "root", "create", "--bundle", str(tmp_path), *flags, "c1")
        assert out.returncode == 1 and _last_error(out.stderr).startswith(f"osvirt-runtime create failed: {message}")
    systemd = subprocess.run([*OSVIRT_RUNTIME, "--root", str(tmp_path / "root"), "--systemd-cgroup", "create",
                              "--bundle", str(tmp_path), "c1"], capture_output=True, text=True)
    assert systemd.returncode == 1 and "--systemd-cgroup is not supported" in _last_error(systemd.stderr)
    # runc spec's terminal: true needs a console socket when the runtime detaches, as runc says
    tty = call(OSVIRT_RUNTIME, tmp_path / "root", "create", "--bundle", str(tmp_path), "c1")
    assert (tty.returncode, _last_error(tty.stderr)) == (
        1, "osvirt-runtime create failed: cannot allocate tty if runc will detach without setting console socket")
    assert not os.path.exists(tmp_path / "root")  # not even the root directory was made
    # accepted by the commands that make no cgroup, as tools pass it to all of them
    assert call(OSVIRT_RUNTIME, tmp_path / "root", "--systemd-cgroup", "list").returncode == 0


def test_default_root_as_runcs(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    expected = "/run/osvirt-runtime" if os.geteuid() == 0 else "/run/user/1234/osvirt-runtime"
    assert runtime.default_root() == expected
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime.default_root() == "/run/osvirt-runtime"


def test_list_of_an_empty_root(tmp_path):
    table = call(OSVIRT_RUNTIME, tmp_path / "root", "list")
    assert table.returncode == 0 and table.stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert os.stat(tmp_path / "root").st_mode & 0o777 == 0o700  # made as runc makes its root
    assert call(OSVIRT_RUNTIME, tmp_path / "root", "list", "--format", "json").stdout == "null\n"
    if RUNC:
        assert call([RUNC], tmp_path / "runc", "list").stdout == table.stdout


@needs_runc
@pytest.mark.parametrize("rootless", [False, True])
def test_spec_is_runcs_but_for_version_and_hostname(rootless, tmp_path):
    configs = []
    for tool, name in ((OSVIRT_RUNTIME, "ours"), ([RUNC], "runc")):
        (tmp_path / name).mkdir()
        subprocess.run([*tool, "spec", "--bundle", str(tmp_path / name), *(["--rootless"] if rootless else [])],
                       check=True)
        with open(tmp_path / name / "config.json") as f:
            configs.append(json.load(f))
    ours, theirs = configs
    assert (ours.pop("ociVersion"), ours.pop("hostname")) == (runtime.OCI_VERSION, "osvirt")
    assert theirs.pop("ociVersion").startswith("1.0") and theirs.pop("hostname") == "runc"
    assert ours == theirs
    if rootless:
        assert ours["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]


def test_spec_refuses_to_overwrite_and_a_missing_bundle(tmp_path):
    assert call(OSVIRT_RUNTIME, tmp_path, "spec", "-b", str(tmp_path)).returncode == 0
    again = call(OSVIRT_RUNTIME, tmp_path, "spec", "-b", str(tmp_path))
    assert (again.returncode, _last_error(again.stderr)) == (1, "File config.json exists. Remove it first")
    missing = call(OSVIRT_RUNTIME, tmp_path, "spec", "-b", str(tmp_path / "nowhere"))
    assert (missing.returncode, _last_error(missing.stderr)) == (
        1, f"chdir {tmp_path / 'nowhere'}: no such file or directory")


@pytest.mark.parametrize("tool", ["osvirt-runtime", pytest.param("runc", marks=needs_runc)])
def test_bad_bundles_give_runcs_errors(tool, tmp_path):
    command, name = (OSVIRT_RUNTIME, runtime.PROG) if tool == "osvirt-runtime" else ([RUNC], "runc")
    nowhere = call(command, tmp_path / "root", "create", "--bundle", str(tmp_path / "nowhere"), "c1")
    assert (nowhere.returncode, _last_error(nowhere.stderr)) == (
        1, f"{name} create failed: chdir {tmp_path / 'nowhere'}: no such file or directory")
    empty = call(command, tmp_path / "root", "create", "--bundle", str(tmp_path), "c1")
    assert (empty.returncode, _last_error(empty.stderr)) == (
        1, f"{name} create failed: JSON specification file config.json not found")
    (tmp_path / "good" / "rootfs").mkdir(parents=True)
    subprocess.run([*command, "spec", "--bundle", str(tmp_path / "good")], check=True)
    bad_id = call(command, tmp_path / "root", "create", "--bundle", str(tmp_path / "good"), "c/1")
    assert (bad_id.returncode, _last_error(bad_id.stderr)) == (1, f"{name} create failed: invalid container ID format")
    assert not os.path.exists(tmp_path / "root" / "c1")


# -- containers ------------------------------------------------------------------------------------------
_LOOP = "trap 'exit 0' TERM; echo $$ > /out/pid; hostname > /out/hostname; while :; do sleep 0.05; done"


def _state(tool, root, container_id):
    out = call(tool, root, "state", container_id)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _lifecycle(tool, tmp_path):
    """create, state, start, kill SIGTERM, state, delete, as a tool drives a runtime; what was seen."""
    root, bundle = tmp_path / "root", make_bundle(tmp_path / "bundle", ["sh", "-c", _LOOP], tool)
    try:
        return _steps(tool, root, bundle, tmp_path)
    finally:  # whatever failed, nothing stays for the next test
        call(tool, root, "delete", "--force", "c1")


def _steps(tool, root, bundle, tmp_path):
    mounts_before = mount_points()
    created = call(tool, root, "create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "c1")
    assert created.returncode == 0, created.stderr
    seen = {"created": _state(tool, root, "c1")}
    pid = seen["created"]["pid"]
    assert (tmp_path / "pid").read_text() == str(pid)  # no newline, as runc writes it
    seen["namespaces"] = {ns for ns in ("pid", "mnt", "uts", "ipc")
                          if os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino}
    seen["cgroups"] = cgroup_dirs(pid) - cgroup_dirs(os.getpid())
    exists = call(tool, root, "create", "--bundle", str(bundle), "c1")
    seen["create again"] = (exists.returncode, _last_error(exists.stderr))
    assert not (bundle / "out" / "pid").exists()  # not started yet
    assert call(tool, root, "start", "c1").returncode == 0
    assert wait_for(lambda: (bundle / "out" / "hostname").exists() and (bundle / "out" / "hostname").read_text())
    seen["inside"] = ((bundle / "out" / "pid").read_text().strip(), (bundle / "out" / "hostname").read_text().strip())
    seen["running"] = _state(tool, root, "c1")
    again = call(tool, root, "start", "c1")
    seen["start again"] = (again.returncode, _last_error(again.stderr))
    busy = call(tool, root, "delete", "c1")
    seen["delete running"] = (busy.returncode, _last_error(busy.stderr))
    assert all(str(bundle) not in point for point in mount_points())  # the container's mounts are its own
    assert call(tool, root, "kill", "c1", "TERM").returncode == 0
    assert wait_for(lambda: _state(tool, root, "c1")["status"] == "stopped")
    seen["stopped"] = _state(tool, root, "c1")
    dead = call(tool, root, "kill", "c1")
    seen["kill stopped"] = (dead.returncode, _last_error(dead.stderr))
    assert call(tool, root, "delete", "c1").returncode == 0
    gone = call(tool, root, "state", "c1")
    seen["state deleted"] = (gone.returncode, _last_error(gone.stderr))
    seen["left"] = {"state dir": os.path.exists(root / "c1"), "process": alive(pid),
                    "cgroups": sorted(d for d in seen["cgroups"] if os.path.exists(d)),
                    "mounts": sorted(set(mount_points()) - set(mounts_before))}
    return seen


@needs("mount_namespace")
def test_lifecycle_create_start_kill_delete_leaves_nothing(tmp_path):
    seen = _lifecycle(OSVIRT_RUNTIME, tmp_path)
    created, running, stopped = seen["created"], seen["running"], seen["stopped"]
    assert created["status"] == "created" and created["id"] == "c1" and created["pid"] > 0
    assert created["bundle"] == str(tmp_path / "bundle") and created["ociVersion"] == runtime.OCI_VERSION
    assert seen["namespaces"] == {"pid", "mnt", "uts", "ipc"}
    assert seen["create again"] == (1, f"{runtime.PROG} create failed: container with given ID already exists")
    assert seen["inside"] == ("1", "osvirt")  # PID 1 of its own namespace; the spec's hostname
    assert running["status"] == "running" and running["pid"] == created["pid"]
    assert seen["start again"] == (1, "cannot start an already running container")
    assert seen["delete running"] == (1, "cannot delete container c1 that is not stopped: running")
    assert stopped["status"] == "stopped" and stopped["pid"] == 0
    assert seen["kill stopped"] == (1, "container not running")
    assert seen["state deleted"] == (1, "container does not exist")
    assert seen["left"] == {"state dir": False, "process": False, "cgroups": [], "mounts": []}


@needs("mount_namespace")
def test_a_busybox_bundle_from_runc_spec_through_create_start_state_kill_delete(debian_busybox, tmp_path):
    """The issue's bundle: `runc spec` (osvirt-runtime's where runc is absent) and a root filesystem
    of Debian's busybox alone, no host file inside; driven by osvirt-runtime, nothing left after."""
    spec_tool = [RUNC] if RUNC else OSVIRT_RUNTIME
    root = tmp_path / "root"
    bundle = make_busybox_bundle(tmp_path / "bundle", debian_busybox, ["sh", "-c", _LOOP], spec_tool)
    try:
        seen = _steps(OSVIRT_RUNTIME, root, bundle, tmp_path)
    finally:
        call(OSVIRT_RUNTIME, root, "delete", "--force", "c1")
    assert seen["created"]["status"] == "created" and seen["running"]["status"] == "running"
    assert seen["namespaces"] == {"pid", "mnt", "uts", "ipc"}
    assert seen["inside"][0] == "1"  # busybox's sh is PID 1 of its own namespace
    assert seen["stopped"]["status"] == "stopped"
    assert seen["left"] == {"state dir": False, "process": False, "cgroups": [], "mounts": []}


@needs_runc
@needs("mount_namespace")
def test_lifecycle_as_runcs(tmp_path):
    """The same flow through runc and through osvirt-runtime: the same states, keys and answers."""
    (tmp_path / "runc").mkdir()
    (tmp_path / "ours").mkdir()
    theirs = _lifecycle([RUNC], tmp_path / "runc")
    ours = _lifecycle(OSVIRT_RUNTIME, tmp_path / "ours")
    for step in ("created", "running", "stopped"):
        assert list(ours[step]) == list(theirs[step]), step
        assert ours[step]["status"] == theirs[step]["status"]
    for step in ("start again", "delete running", "kill stopped", "state deleted"):
        assert ours[step] == theirs[step], step
    assert ours["inside"][0] == theirs["inside"][0] == "1"
    assert ours["namespaces"] == theirs["namespaces"]
    assert ours["left"] == theirs["left"] == {"state dir": False, "process": False, "cgroups": [], "mounts": []}


def _hooked(tool, tmp_path):
    """A bundle whose hooks each save the state JSON they read on stdin; what each command ran."""
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "touch /out/ran; sleep 60"], tool)
    with open(bundle / "config.json") as f:
        config = json.load(f)
    # The runtime's hooks run on the host, writing beside the bundle; startContainer runs in the
    # container (its path resolves there, and /out is the bundle's out).
    config["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {where}/{kind}.json"]}]
                       for kind, where in (("prestart", bundle), ("createRuntime", bundle), ("poststart", bundle),
                                           ("poststop", bundle), ("startContainer", "/out"))}
    with open(bundle / "config.json", "w") as f:
        json.dump(config, f)
    root, seen = tmp_path / "root", {}

    def ran():
        return {path.stem: json.loads(path.read_text())["status"]
                for path in [*bundle.glob("*.json"), *(bundle / "out").glob("*.json")] if path.stem != "config"}
    try:
        for step in (["create", "--bundle", str(bundle), "h1"], ["start", "h1"], ["kill", "h1", "KILL"],
                     ["delete", "h1"]):
            if step[0] == "delete":
                assert wait_for(lambda: _state(tool, root, "h1")["status"] == "stopped")
            done = call(tool, root, *step)
            assert done.returncode == 0, done.stderr
            if step[0] == "start":
                assert wait_for(lambda: (bundle / "out" / "ran").exists())
            seen[step[0]] = ran()
    finally:
        call(tool, root, "delete", "--force", "h1")
    return seen


@needs("mount_namespace")
@pytest.mark.parametrize("tool", ["osvirt-runtime", pytest.param("runc", marks=needs_runc)])
def test_hooks_run_at_their_points(tool, tmp_path):
    """Each hook when the runtime-spec says, reading the state of that moment."""
    seen = _hooked(OSVIRT_RUNTIME if tool == "osvirt-runtime" else [RUNC], tmp_path)
    poststart = {"poststart": "running"}
    if tool == "runc" and seen["create"].get("poststart") == "created":
        # runc before 1.2 runs poststart in create, before the program starts (runc #4348)
        poststart = {}
        for hooks in seen.values():
            del hooks["poststart"]
    assert seen["create"] == {"prestart": "creating", "createRuntime": "creating"}
    assert seen["start"] == {**seen["create"], "startContainer": "created", **poststart}
    assert seen["delete"] == {**seen["start"], "poststop": "stopped"}


@needs("mount_namespace")
@pytest.mark.parametrize("tool", ["osvirt-runtime", pytest.param("runc", marks=needs_runc)])
def test_run_exits_with_the_containers_status(tool, tmp_path):
    command = OSVIRT_RUNTIME if tool == "osvirt-runtime" else [RUNC]
    root = tmp_path / "root"
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "exit 7"], command)
    run = call(command, root, "run", "--bundle", str(bundle), "r1")
    assert run.returncode == 7, run.stderr
    assert not os.path.exists(root / "r1")  # deleted after it ran
    kept = call(command, root, "run", "--keep", "--bundle", str(bundle), "r1")
    assert kept.returncode == 7, kept.stderr
    assert _state(command, root, "r1")["status"] == "stopped"  # until delete
    assert call(command, root, "delete", "r1").returncode == 0
    # A signal to the runtime goes to the container's process, which the trap makes exit 3.
    trap = make_bundle(tmp_path / "trap", ["sh", "-c", "trap 'exit 3' USR1; touch /out/ready; "
                                                       "while :; do sleep 0.05; done"], command)
    for container_id, how, status in (("r2", "signal the runtime", 3), ("r3", "kill KILL", 128 + signal.SIGKILL)):
        proc = subprocess.Popen([*command, "--root", str(root), "run", "--bundle", str(trap), container_id],
                                stdin=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: (trap / "out" / "ready").exists())
            if how == "signal the runtime":
                proc.send_signal(signal.SIGUSR1)
            else:  # PID 1 of a namespace takes SIGKILL only from outside it: from here
                assert call(command, root, "kill", container_id, "KILL").returncode == 0
            assert proc.wait(timeout=30) == status, how
        finally:
            call(command, root, "delete", "--force", container_id)
            proc.kill()
            proc.wait()
            (trap / "out" / "ready").unlink(missing_ok=True)
    assert os.listdir(root) == []


@needs("mount_namespace")
@pytest.mark.parametrize("tool", ["osvirt-runtime", pytest.param("runc", marks=needs_runc)])
def test_delete_of_a_created_container_kills_it(tool, tmp_path):
    """runc's delete (and so tools') takes a created container without --force, though the spec
    asks for an error: a create whose start never comes is cleaned up so."""
    command, root = OSVIRT_RUNTIME if tool == "osvirt-runtime" else [RUNC], tmp_path / "root"
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "touch /out/ran"], command)
    assert call(command, root, "create", "--bundle", str(bundle), "d1").returncode == 0
    pid = _state(command, root, "d1")["pid"]
    deleted = call(command, root, "delete", "d1")
    assert deleted.returncode == 0, deleted.stderr
    assert wait_for(lambda: not alive(pid)) and os.listdir(root) == []
    assert not (bundle / "out" / "ran").exists()  # it never ran


@needs("mount_namespace")
@pytest.mark.parametrize("tool", ["osvirt-runtime", pytest.param("runc", marks=needs_runc)])
def test_a_created_container_stops_at_sigterm_as_runcs(tool, tmp_path):
    """kill TERM, INT or HUP stops a created container that was never started (runc's init, waiting on
    exec.fifo, dies of them); kill USR1 leaves it created, as runc's."""
    command, root = OSVIRT_RUNTIME if tool == "osvirt-runtime" else [RUNC], tmp_path / "root"
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "touch /out/ran"], command)
    seen = {}
    for name in ("TERM", "INT", "HUP", "USR1"):
        cid = f"s-{name.lower()}"
        try:
            assert call(command, root, "create", "--bundle", str(bundle), cid).returncode == 0
            pid = _state(command, root, cid)["pid"]
            assert call(command, root, "kill", cid, name).returncode == 0
            wait_for(lambda: not alive(pid), timeout_s=2.0 if name == "USR1" else 10.0)
            seen[name] = (_state(command, root, cid)["status"], alive(pid))
        finally:
            call(command, root, "delete", "--force", cid)
    assert seen == {"TERM": ("stopped", False), "INT": ("stopped", False), "HUP": ("stopped", False),
                    "USR1": ("created", True)}
    assert not (bundle / "out" / "ran").exists()  # never started
    assert os.listdir(root) == []


def _console(path):
    """A listening AF_UNIX socket at `path`, as a tool that asks for --console-socket holds one."""
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(path))
    listening.listen(1)
    return listening


@needs("mount_namespace")
@pytest.mark.parametrize("tool", ["osvirt-runtime", pytest.param("runc", marks=needs_runc)])
def test_a_terminal_through_the_console_socket(tool, tmp_path):
    """runc's protocol: create sends the master of the container's pty over the socket; its program's
    stdio is the slave, its controlling terminal, sized as process.consoleSize says."""
    command, root = OSVIRT_RUNTIME if tool == "osvirt-runtime" else [RUNC], tmp_path / "root"
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "tty; stty size; ls -l /proc/self/fd/0 >/dev/null"],
                         command)
    with open(bundle / "config.json") as f:
        config = json.load(f)
    config["process"].update(terminal=True, consoleSize={"height": 24, "width": 100})
    with open(bundle / "config.json", "w") as f:
        json.dump(config, f)
    no_socket = call(command, root, "create", "--bundle", str(bundle), "t1")
    assert no_socket.returncode == 1
    assert _last_error(no_socket.stderr).endswith("cannot allocate tty if runc will detach without setting console socket")
    with _console(tmp_path / "console.sock") as listening:
        created = call(command, root, "create", "--bundle", str(bundle), "--console-socket",
                       str(tmp_path / "console.sock"), "t1")
        try:
            assert created.returncode == 0, created.stderr
            connection, _ = listening.accept()
            with connection:
                _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
            assert len(fds) == 1
            with open(fds[0], "rb", buffering=0) as master:
                assert call(command, root, "start", "t1").returncode == 0
                out = b""
                while True:
                    try:
                        chunk = master.read(4096)
                    except OSError:  # EIO: every slave closed, the program has exited
                        break
                    if not chunk:
                        break
                    out += chunk
        finally:
            call(command, root, "delete", "--force", "t1")
    assert out.decode().split("\r\n")[:2] == ["/dev/pts/0", "24 100"]


@needs("mount_namespace")
@pytest.mark.skipif(shutil.which("script") is None, reason="script(1) (util-linux), the terminal here, is not installed")
@pytest.mark.parametrize("tool", ["osvirt-runtime", pytest.param("runc", marks=needs_runc)])
def test_run_in_the_foreground_proxies_the_programs_terminal(tool, tmp_path):
    """process.terminal without a console socket: run gives the program a pty and proxies it to its own
    terminal (script(1)'s here), as runc does: what is typed reaches the program, echoed by the pty."""
    command, root = OSVIRT_RUNTIME if tool == "osvirt-runtime" else [RUNC], tmp_path / "root"
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "tty; touch /out/ready; read x; echo got $x; exit 5"],
                         command)
    with open(bundle / "config.json") as f:
        config = json.load(f)
    config["process"]["terminal"] = True
    with open(bundle / "config.json", "w") as f:
        json.dump(config, f)
    line = " ".join(shlex.quote(word) for word in [*command, "--root", str(root), "run", "--bundle", str(bundle), "p1"])
    with subprocess.Popen(["script", "-qfec", line, "/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            assert wait_for(lambda: (bundle / "out" / "ready").exists())
            out, _ = proc.communicate(b"abc\n", timeout=30)
        finally:
            call(command, root, "delete", "--force", "p1")
    assert proc.returncode == 5
    # Two ptys in a row (script's, the container's): where the typed line meets a terminal still in
    # cooked mode, a line can end in "\r\r\n"; the lines themselves are what counts.
    lines = [line for line in out.replace(b"\r", b"").split(b"\n") if line]
    assert lines[0] == b"/dev/pts/0" and b"got abc" in lines
    assert b"abc" in lines[1:lines.index(b"got abc")]  # the pty echoed what was typed


@needs("mount_namespace")
def test_kill_all_and_list(tmp_path):
    root, bundle = tmp_path / "root", make_bundle(tmp_path / "bundle", ["sh", "-c", "sleep 60 & wait"])
    assert call(OSVIRT_RUNTIME, root, "run", "--detach", "--bundle", str(bundle), "k1").returncode == 0
    try:
        state = _state(OSVIRT_RUNTIME, root, "k1")
        assert state["status"] == "running"
        listed = call(OSVIRT_RUNTIME, root, "list", "--format", "json")
        assert [(s["id"], s["pid"], s["status"]) for s in json.loads(listed.stdout)] == [("k1", state["pid"], "running")]
        assert call(OSVIRT_RUNTIME, root, "list", "-q").stdout == "k1\n"
        pids = json.loads(call(OSVIRT_RUNTIME, root, "ps", "--format", "json", "k1").stdout)
        assert state["pid"] in pids and len(pids) == 2  # sh and its sleep
        unknown = call(OSVIRT_RUNTIME, root, "kill", "k1", "NOSUCH")
        assert (unknown.returncode, _last_error(unknown.stderr)) == (1, 'unknown signal "NOSUCH"')
        # sh as PID 1 ignores SIGTERM (no handler); --all reaches the sleep too, which dies of it
        assert call(OSVIRT_RUNTIME, root, "kill", "--all", "k1", "KILL").returncode == 0
        assert wait_for(lambda: _state(OSVIRT_RUNTIME, root, "k1")["status"] == "stopped")
        assert not any(map(alive, pids))
    finally:
        assert call(OSVIRT_RUNTIME, root, "delete", "--force", "k1").returncode == 0
    assert os.listdir(root) == []


def _create_time_s(tmp_path):
    """How long a create of such a bundle takes here (then deleted): where the random points fall."""
    bundle = make_bundle(tmp_path / "timed", ["sh", "-c", "sleep 60"])
    began = time.monotonic()
    assert call(OSVIRT_RUNTIME, tmp_path / "root", "create", "--bundle", str(bundle), "timed").returncode == 0
    took = time.monotonic() - began
    assert call(OSVIRT_RUNTIME, tmp_path / "root", "delete", "--force", "timed").returncode == 0
    return took


def _killed_at_random(tmp_path, command, rounds):
    """`command` (create or run) SIGKILLed at random points, from its start to past the container's
    start; after each, what is left once delete --force (after create) has run: processes that
    carry the round's marker in their environment, their cgroups, mounts, state directories."""
    root = tmp_path / "root"
    span_s = 1.5 * _create_time_s(tmp_path)
    left = []
    for i in range(rounds):
        marker = f"OSVIRT_RUNTIME_TEST={os.getpid()}-{i}"
        bundle = make_bundle(tmp_path / f"b{i}", ["sh", "-c", "sleep 60"], marker=marker)
        mounts_before = mount_points()
        proc = subprocess.Popen([*OSVIRT_RUNTIME, "--root", str(root), command, "--bundle", str(bundle), f"x{i}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, OSVIRT_RUNTIME_TEST=marker.split("=", 1)[1]))
        cgroups, existing = set(), all_cgroup_dirs()
        deadline = time.monotonic() + random.uniform(0, span_s)
        while time.monotonic() < deadline:  # the cgroups its processes are in, made since it started
            for pid in processes_with(marker):
                try:
                    cgroups |= cgroup_dirs(pid) - existing
                except OSError:  # gone
                    pass
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        if command == "create":
            deleted = call(OSVIRT_RUNTIME, root, "delete", "--force", f"x{i}")
            assert deleted.returncode == 0, deleted.stderr
        wait_for(lambda: not processes_with(marker) and not any(os.path.exists(d) for d in cgroups)
                 and not (os.path.exists(root) and os.listdir(root)))
        left.append({"processes": processes_with(marker), "cgroups": sorted(d for d in cgroups if os.path.exists(d)),
                     "mounts": sorted(set(mount_points()) - set(mounts_before)),
                     "state": sorted(os.listdir(root)) if os.path.exists(root) else []})
    return left


@needs("mount_namespace")
def test_create_sigkilled_at_random_points_leaves_what_delete_force_removes(tmp_path):
    nothing = {"processes": [], "cgroups": [], "mounts": [], "state": []}
    assert _killed_at_random(tmp_path, "create", 6) == [nothing] * 6


@needs("mount_namespace")
def test_run_sigkilled_at_random_points_leaves_nothing(tmp_path):
    """The tracker removes what the container's processes (dead with the runtime) leave: the cgroup,
    and the state directory."""
    nothing = {"processes": [], "cgroups": [], "mounts": [], "state": []}
    assert _killed_at_random(tmp_path, "run", 6) == [nothing] * 6


def test_the_tracker_removes_only_a_state_directory_of_containers_files(tmp_path):
    for bad in ("relative/x", str(tmp_path / "a b"), str(tmp_path / "x" / ".."), "/"):
        with pytest.raises(ValueError, match="not a container's state directory"):
            runtime.check_state_dir("osvirt-runtime run", bad)
    state = tmp_path / "c1"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"id": "c1"}))
    os.mkfifo(state / "exec.fifo")
    (state / "exit-status").write_text("")
    assert runtime.remove_state_dir(str(state)) and not state.exists()
    assert not runtime.remove_state_dir(str(state))  # nothing there any more
    for name, content in (("precious", "a file Container does not make"), ("state.json", '{"id": "c2"}')):
        other = tmp_path / f"other-{name}"
        other.mkdir()
        (other / name).write_text(content)
        with pytest.raises(ValueError, match="left as it is"):
            runtime.remove_state_dir(str(other))
        assert (other / name).read_text() == content
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    with pytest.raises(ValueError, match="left as it is"):
        runtime.remove_state_dir(str(tmp_path / "sub"))
