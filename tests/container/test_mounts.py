"""osvirt.container.mounts: the kernel's evidence from forked children in mount
namespaces of their own (CAP_SYS_ADMIN, or a user namespace of their own as an
unprivileged user): mountinfo inside and outside, EROFS, st_rdev, a pty's
number, what a pivoted root reaches. Nothing is ever mounted in the test
process's namespace, and none is left in its mountinfo after any test.
"""
import errno
import json
import os
import stat
import subprocess
import tempfile

import pytest

from osvirt import env
from osvirt.container import docker, mounts, namespaces, rootfs
from osvirt.container.mounts import MS
from osvirt.naming import unique_name
from osvirt.process import Children

kernel = pytest.mark.needs("mount_namespace")

# Documentation/admin-guide/devices.txt: the fixed numbers of the devices a container's /dev holds.
DEVICE_NUMBERS = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
                  "tty": (5, 0)}


def _host_mounts():
    return {(row.mount_point, row.fstype, row.source) for row in mounts.mountinfo()}


@pytest.fixture(autouse=True)
def _nothing_left_in_the_host_mountinfo():
    """No tracker is needed: every mount lives in a child's namespace and goes with it.

    Only new mounts where these tests mount (pytest's tmp_path, host_usr_root's /mnt) or with an osvirt
    label count: other people's runs may mount elsewhere meanwhile.
    """
    before = _host_mounts()
    yield
    new = _host_mounts() - before
    places = ("/mnt", "/tmp", tempfile.gettempdir())
    assert not [m for m in new if any(m[0] == p or m[0].startswith(p + "/") for p in places)
                or m[2].startswith("osvirt-")]


def _report_then_hold(report_w, hold_r, target, args):
    """In the child: run the target, send its result as one JSON line, stay alive until the parent is done."""
    os.write(report_w, json.dumps(target(*args)).encode() + b"\n")
    os.close(report_w)
    os.read(hold_r, 1)  # a byte from the parent (no EOF: forked processes hold the write end too)
    return 0


def _in_namespaces(target, *args, kinds=(), while_held=None):
    """target(*args) in a child with a mount namespace (and `kinds`) of its own; what it returned.

    Without CAP_SYS_ADMIN the child is root in a user namespace of its own
    (uid and gid 0 mapped to this process's). `while_held(result)` runs
    here while the child, and so its namespaces, still exist.
    """
    user = "CAP_SYS_ADMIN" not in env.capabilities()
    maps = {"uid_map": [(0, os.geteuid(), 1)], "gid_map": [(0, os.getegid(), 1)]} if user else {}
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    with Children() as kids:
        try:
            started = namespaces.fork_in(kids, ["mount", *kinds, *(["user"] if user else [])], _report_then_hold,
                                         report_w, hold_r, target, args, **maps)
        finally:
            os.close(report_w)
            os.close(hold_r)
        try:
            with os.fdopen(report_r, "rb") as f:
                line = f.readline()
            assert line, "the child exited without a report (its traceback is on stderr)"
            result = json.loads(line)
            if while_held:
                while_held(result)
            os.write(hold_w, b"g")
        finally:
            os.close(hold_w)
        assert kids.wait(started.owned, timeout_s=60) == 0
    return result


def _errno_of(action):
    try:
        action()
    except OSError as e:
        return errno.errorcode[e.errno]
    return None


# --- a mount inside is not outside ---------------------------------------------

def _mount_tmpfs(target, label):
    mounts.make_private("/")
    mounts.mount(label, target, "tmpfs", MS["NOSUID"], "mode=700")
    return [(row.mount_point, row.fstype, row.source) for row in mounts.mountinfo() if row.source == label]


@kernel
def test_a_tmpfs_mounted_inside_is_in_the_childs_mountinfo_and_not_the_parents(tmp_path):
    label = unique_name("tmpfs")

    def outside(inside):
        assert inside == [[str(tmp_path), "tmpfs", label]]
        assert not [row for row in mounts.mountinfo() if row.source == label]  # while the child holds it
        assert os.listdir(tmp_path) == []

    _in_namespaces(_mount_tmpfs, str(tmp_path), label, while_held=outside)


def _unmounted(target, label):
    mounts.make_private("/")
    mounts.mount(label, target, "tmpfs")
    with open(f"{target}/kept", "w+") as f:  # a file open in it keeps the mount busy
        f.write("still here")
        busy = _errno_of(lambda: mounts.umount2(target))
        mounts.umount2(target, mounts.MNT["MNT_DETACH"])  # gone from the tree now, freed when unused
        left = [row.mount_point for row in mounts.mountinfo() if row.source == label]
        f.seek(0)
        return {"busy": busy, "left": left, "read": f.read(), "listed": os.listdir(target)}


@kernel
def test_umount2_refuses_a_busy_mount_with_ebusy_and_mnt_detach_takes_it_out_of_the_tree_at_once(tmp_path):
    seen = _in_namespaces(_unmounted, str(tmp_path), unique_name("tmpfs"))
    assert seen == {"busy": "EBUSY", "left": [], "read": "still here", "listed": []}


def _propagates(point, label, private):
    """In a test "host" namespace: a shared tmpfs on `point`; a child namespace copied from it mounts under it."""
    mounts.make_private("/")
    mounts.mount("tmpfs", point, "tmpfs")
    mounts.mount(None, point, None, MS["SHARED"])
    os.mkdir(f"{point}/inner")
    peer = [row.propagation for row in mounts.mountinfo() if row.mount_point == point]

    def child():
        namespaces.unshare(["mount"])  # its copy of `point` is in the same peer group
        if private:
            mounts.make_private("/")
        mounts.mount(label, f"{point}/inner", "tmpfs")

    with Children() as kids:
        assert kids.wait(kids.fork(child), timeout_s=30) == 0
    return {"peer": sorted(peer[0]), "here": [row.fstype for row in mounts.mountinfo() if row.source == label]}


@kernel
@pytest.mark.parametrize("private", [False, True], ids=["shared", "made private"])
def test_make_private_stops_a_mount_propagating_back_to_the_namespace_it_was_copied_from(tmp_path, private):
    label = unique_name("inner")
    seen = _in_namespaces(_propagates, str(tmp_path), label, private)
    assert seen["peer"][0].startswith("shared:")  # the test's "host" mount is shared
    assert seen["here"] == ([] if private else ["tmpfs"])  # the failure without make_private, then the fix


# --- read-only binds and masks -------------------------------------------------

def _read_only_bind(base):
    mounts.make_private("/")
    os.makedirs(f"{base}/src/sub")
    os.makedirs(f"{base}/dst")
    mounts.mount("tmpfs", f"{base}/src/sub", "tmpfs")  # an rbind brings it along: read-only too
    mounts.bind(f"{base}/src", f"{base}/dst", read_only=True)
    options = {row.mount_point: sorted(row.options & {"ro", "rw"}) for row in mounts.mountinfo()
               if row.mount_point.startswith(base)}
    return {"options": options,
            "write dst": _errno_of(lambda: open(f"{base}/dst/f", "w").close()),
            "write dst/sub": _errno_of(lambda: open(f"{base}/dst/sub/f", "w").close()),
            "write src": _errno_of(lambda: open(f"{base}/src/sub/f", "w").close())}


@kernel
@pytest.mark.parametrize("setattr", [True, False], ids=["mount_setattr", "remounts from mountinfo"])
def test_a_read_only_bind_refuses_writes_with_erofs_under_it_too_and_leaves_its_source_writable(
        tmp_path, monkeypatch, setattr):
    if not setattr:  # as on a kernel before 5.12
        monkeypatch.setattr(mounts._native, "mount_setattr", lambda *args: False)
    base = str(tmp_path)
    seen = _in_namespaces(_read_only_bind, base)
    assert seen == {"options": {f"{base}/src/sub": ["rw"], f"{base}/dst": ["ro"], f"{base}/dst/sub": ["ro"]},
                    "write dst": "EROFS", "write dst/sub": "EROFS", "write src": None}


def _read_only_rbind_with_flags(base):
    mounts.make_private("/")
    os.makedirs(f"{base}/src/sub")
    os.makedirs(f"{base}/dst")
    mounts.mount("tmpfs", f"{base}/src/sub", "tmpfs")
    rootfs._bind(f"{base}/src", f"{base}/dst", MS["BIND"] | MS["REC"] | MS["RDONLY"] | MS["NOSUID"] | MS["NODEV"],
                 recursive=True)  # an OCI mount's "rbind", "ro", "nosuid", "nodev"
    return {row.mount_point: sorted(row.options & {"ro", "rw", "nosuid", "nodev"}) for row in mounts.mountinfo()
            if row.mount_point.startswith(f"{base}/dst")}


@kernel
@pytest.mark.parametrize("setattr", [True, False], ids=["mount_setattr", "remounts from mountinfo"])
def test_an_rbinds_options_go_on_it_and_read_only_on_every_mount_it_brought(tmp_path, monkeypatch, setattr):
    if not setattr:
        monkeypatch.setattr(mounts._native, "mount_setattr", lambda *args: False)
    base = str(tmp_path)
    assert _in_namespaces(_read_only_rbind_with_flags, base) == {
        f"{base}/dst": ["nodev", "nosuid", "ro"], f"{base}/dst/sub": ["ro"]}


def _masked(base):
    mounts.make_private("/")
    mounts.mask([f"{base}/secret", f"{base}/dir", f"{base}/absent"])
    with open(f"{base}/secret", "rb") as f:
        read = f.read().decode()
    rdev = os.stat(f"{base}/secret").st_rdev
    return {"read": read, "rdev": [os.major(rdev), os.minor(rdev)], "listed": os.listdir(f"{base}/dir"),
            "write dir": _errno_of(lambda: open(f"{base}/dir/new", "w").close()),
            "absent": os.path.exists(f"{base}/absent")}


@kernel
def test_mask_puts_dev_null_over_a_file_and_an_empty_read_only_tmpfs_over_a_directory(tmp_path):
    (tmp_path / "secret").write_text("the host's")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside").write_text("the host's")
    seen = _in_namespaces(_masked, str(tmp_path))
    assert seen == {"read": "", "rdev": list(DEVICE_NUMBERS["null"]), "listed": [], "write dir": "EROFS",
                    "absent": False}
    assert (tmp_path / "secret").read_text() == "the host's"  # and outside, the files as they were


# --- a whole root: host_usr_root, prepare_rootfs, pivot_root -------------------

def _pivoted(host_path, masked_files, masked_dirs, binds):
    try:  # here, in the child's namespace: a check that let it through would cover this child's / only
        mounts.host_usr_root("/")
    except ValueError as e:
        refused = str(e)
    mounts.make_private("/")
    root = mounts.host_usr_root()
    mounts.prepare_rootfs(root, binds=[tuple(b) for b in binds], readonly_rootfs=True)
    root_dev = os.stat(root).st_dev
    mounts.pivot_root(root)
    table = mounts.mountinfo()
    masked = {}
    for path in masked_files:
        with open(path, "rb") as f:
            masked[path] = f.read(16).decode()
    masked.update((path, os.listdir(path)) for path in masked_dirs)
    master, pty = os.openpty()  # through /dev/ptmx -> pts/ptmx
    ptys = [os.ttyname(pty), sorted(os.listdir("/dev/pts"))]
    os.close(pty)
    os.close(master)
    shm = os.statvfs("/dev/shm")
    return {
        "refused /": refused,
        "cwd": os.getcwd(),
        "root is the new root": os.stat("/").st_dev == root_dev,
        "root mounts": [row.fstype for row in table if row.mount_point == "/"],
        "pid": os.getpid(),
        "proc pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "true": subprocess.run(["/usr/bin/true"]).returncode,
        "sh": subprocess.run(["/bin/sh", "-c", "echo $((6 * 7))"], capture_output=True, text=True).stdout,
        "host path": os.path.exists(host_path),
        "work": os.path.exists("/work"),
        "top": sorted(os.listdir("/")),
        "dev": sorted(os.listdir("/dev")),
        "rdev": {name: [os.major(os.stat(f"/dev/{name}").st_rdev), os.minor(os.stat(f"/dev/{name}").st_rdev)]
                 for name in mounts.DEVICES},
        "char devices": all(stat.S_ISCHR(os.stat(f"/dev/{name}").st_mode) for name in mounts.DEVICES),
        "links": {name: os.readlink(f"/dev/{name}") for name in ("ptmx", "fd", "stdin", "stdout", "stderr")},
        "ptys": ptys,
        "masked": masked,
        "write /": _errno_of(lambda: open("/new", "w").close()),
        "write /usr": _errno_of(lambda: open("/usr/new", "w").close()),
        "write /tmp": _errno_of(lambda: open("/tmp/new", "w").close()),
        "write /data": _errno_of(lambda: open("/data/new", "w").close()),
        "write /ro": _errno_of(lambda: open("/ro/new", "w").close()),
        "read /ro": open("/ro/file").read(),
        "read-only": {row.mount_point: sorted(row.options & {"ro", "rw"}) for row in table
                      if row.mount_point in ("/sys", *docker.READONLY_PATHS)},
        "shm bytes": shm.f_blocks * shm.f_frsize,
    }


@kernel
def test_pivot_root_into_the_host_usr_root_leaves_only_the_container_filesystem_in_reach(tmp_path):
    files = [p for p in docker.MASKED_PATHS if os.path.isfile(p)]  # those this kernel has
    dirs = [p for p in docker.MASKED_PATHS if os.path.isdir(p)]
    (tmp_path / "data").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "file").write_text("from the host")
    binds = [(str(tmp_path / "data"), "/data", False), (str(tmp_path / "ro"), "/ro", True)]
    seen = _in_namespaces(_pivoted, str(tmp_path), files, dirs, binds, kinds=["pid", "ipc", "network"])
    assert seen["refused /"].startswith("host_usr_root: where must not be /")
    assert seen["cwd"] == "/" and seen["root is the new root"]
    # one mount on /: prepare_rootfs's bind of host_usr_root's tmpfs (the tmpfs itself went with the old root)
    assert seen["root mounts"] == ["tmpfs"]
    assert seen["pid"] == 1 and seen["proc pids"] == [1]  # /proc is the child's own PID namespace's
    assert seen["true"] == 0 and seen["sh"] == "42\n"
    assert not seen["host path"] and not seen["work"]
    links = {name for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32") if os.path.lexists(f"/{name}")}
    assert set(seen["top"]) == {"usr", "etc", "proc", "sys", "dev", "tmp", "data", "ro"} | links
    assert seen["dev"] == sorted([*mounts.DEVICES, "ptmx", "pts", "shm", "mqueue", "fd", "stdin", "stdout",
                                  "stderr"])
    assert seen["rdev"] == {name: list(numbers) for name, numbers in DEVICE_NUMBERS.items()}
    assert seen["char devices"]
    assert seen["links"] == {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
    assert seen["ptys"] == ["/dev/pts/0", ["0", "ptmx"]]  # a new devpts instance: numbered from 0
    assert files and seen["masked"] == {**{p: "" for p in files}, **{p: [] for p in dirs}}
    assert seen["write /"] == "EROFS" and seen["write /usr"] == "EROFS" and seen["write /tmp"] is None
    # the binds: the host's directories, one writable (the file is there after), one read-only
    assert seen["write /data"] is None and (tmp_path / "data" / "new").exists()
    assert seen["write /ro"] == "EROFS" and seen["read /ro"] == "from the host"
    # (a file there would be refused EACCES in a user namespace first: root outside owns them)
    assert seen["read-only"] == {p: ["ro"] for p in ("/sys", *docker.READONLY_PATHS) if os.path.exists(p)}
    assert seen["shm bytes"] == docker.SHM_SIZE_BYTES


# --- bad input: refused before any system call ----------------------------------
# Each target would make the kernel fail (it does not exist, or names no filesystem), so a check
# that let one through shows as an OSError, and nothing is mounted here either way.

@pytest.mark.parametrize("call, error", [
    (lambda d: mounts.mount("none", "relative/dir", "osvirt-no-fs"), ValueError),
    (lambda d: mounts.mount("none", f"{d}/absent", "osvirt-no-fs", 1 << 40), ValueError),
    (lambda d: mounts.mount("none", f"{d}/absent", "osvirt-no-fs", -1), ValueError),
    (lambda d: mounts.mount("none", f"{d}/absent", "osvirt-no-fs", True), TypeError),
    (lambda d: mounts.mount("no\0ne", f"{d}/absent", "osvirt-no-fs"), ValueError),
    (lambda d: mounts.mount("none", f"{d}/ab\0sent", "osvirt-no-fs"), ValueError),
    (lambda d: mounts.mount("none", f"{d}/absent", "osvirt-no-fs", 0, "size=1\0"), ValueError),
    (lambda d: mounts.mount("none", os.fsencode(f"{d}/absent"), "osvirt-no-fs"), TypeError),
    (lambda d: mounts.umount2("relative"), ValueError),
    (lambda d: mounts.umount2(f"{d}/absent", 1 << 20), ValueError),
    (lambda d: mounts.bind("relative", f"{d}/absent"), ValueError),
    (lambda d: mounts.bind(f"{d}/absent", "relative"), ValueError),
    (lambda d: mounts.make_private("relative"), ValueError),
    (lambda d: mounts.pivot_root("relative"), ValueError),
    (lambda d: mounts.mask([f"{d}/absent", "relative"]), ValueError),
    (lambda d: mounts.mask(f"{d}/absent"), TypeError),
    (lambda d: mounts.read_only([f"{d}/absent\0"]), ValueError),
    (lambda d: mounts.minimal_dev("relative"), ValueError),
    (lambda d: mounts.prepare_rootfs("relative"), ValueError),
    (lambda d: mounts.prepare_rootfs(f"{d}/absent", binds=[("relative", "/x", False)]), ValueError),
    (lambda d: mounts.prepare_rootfs(f"{d}/absent", binds=[(f"{d}/absent", "x", False)]), ValueError),
    (lambda d: mounts.host_usr_root("relative"), ValueError),
])
def test_bad_input_raises_before_any_system_call(tmp_path, call, error):
    with pytest.raises(error) as raised:
        call(str(tmp_path))
    assert str(raised.value).split(":")[0] in {"mount", "umount2", "bind", "make_private", "pivot_root", "mask",
                                               "read_only", "minimal_dev", "prepare_rootfs", "host_usr_root"}
    assert os.listdir(tmp_path) == []


def test_mountinfo_keeps_the_filesystem_types_asked_for(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text("25 1 0:22 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
                    "26 1 0:23 / /mnt\\040x rw - tmpfs tmpfs rw\n"
                    "27 1 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    assert [row.mount_point for row in mounts.mountinfo(str(path), ("cgroup", "cgroup2"))] == [
        "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified"]
    assert [row.mount_point for row in mounts.mountinfo(str(path))][1] == "/mnt x"


def test_mountinfo_reads_escaped_paths_and_the_optional_fields(tmp_path):
    line = ("36 35 98:0 /mnt1 /mnt\\040two\\134x rw,noatime master:1 shared:7 - ext3 /dev/ro\\040ot rw,errors=continue\n")
    path = tmp_path / "mountinfo"
    path.write_text(line)
    assert mounts.mountinfo(str(path)) == [mounts.MountInfo(
        36, 35, "/mnt1", "/mnt two\\x", frozenset({"rw", "noatime"}), frozenset({"master:1", "shared:7"}),
        "ext3", "/dev/ro ot", frozenset({"rw", "errors=continue"}))]
