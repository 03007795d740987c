import errno
import os
import re
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from osvirt import fs
from osvirt.process import Children

MiB = 1 << 20


def _open(path, flags=os.O_RDWR | os.O_CREAT, mode=0o600):
    return os.open(path, flags | os.O_CLOEXEC, mode)


def test_fd_table_shows_open_offsets_and_close(tmp):
    path = os.path.join(tmp, "f")
    fd = _open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        entry = fs.fd_entry(fd)
        assert entry.target == path and entry.pos == 0 and entry.inode == os.fstat(fd).st_ino
        assert entry.flag_names.startswith("O_RDWR|O_APPEND|O_CLOEXEC")
        assert entry.flags & os.O_APPEND
        os.write(fd, b"hello")
        assert fs.fd_entry(fd).pos == 5
        os.lseek(fd, 1, os.SEEK_SET)
        os.read(fd, 2)
        assert fs.fd_entry(fd).pos == 3
        assert fd in [e.fd for e in fs.fd_table()]
    finally:
        os.close(fd)
    assert fd not in [e.fd for e in fs.fd_table()]
    with pytest.raises(FileNotFoundError, match=f"fd {fd} not open"):
        fs.fd_entry(fd)
    with pytest.raises(ValueError):
        fs.fd_entry(-1)


def test_open_flag_names_keeps_unknown_bits_in_octal():
    assert fs.open_flag_names(os.O_WRONLY | os.O_APPEND) == "O_WRONLY|O_APPEND"
    assert fs.open_flag_names(0o100000) == "O_RDONLY|0o100000"
    # O_TMPFILE holds O_DIRECTORY's bit: named as itself, not as O_DIRECTORY and a bare bit
    assert fs.open_flag_names(os.O_WRONLY | os.O_CLOEXEC | os.O_TMPFILE) == "O_WRONLY|O_CLOEXEC|O_TMPFILE"


def test_pread_and_pwrite_leave_the_offset(tmp):
    fd = _open(os.path.join(tmp, "f"))
    try:
        os.write(fd, b"0123456789")
        os.lseek(fd, 3, os.SEEK_SET)
        assert fs.pread(fd, 4, 5) == b"5678"
        assert fs.pwrite(fd, b"AB", 0) == 2
        assert os.lseek(fd, 0, os.SEEK_CUR) == 3 and fs.fd_entry(fd).pos == 3
        assert fs.pread(fd, 100, 0) == b"AB23456789"  # short only at end of file
        assert fs.pread(fd, 4, 50) == b""
        for bad in (lambda: fs.pread(fd, 1, -1), lambda: fs.pwrite(fd, b"x", -1), lambda: fs.pread(fd, -1, 0)):
            with pytest.raises(ValueError):
                bad()
    finally:
        os.close(fd)


def _append_records(path, writer, count, size):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    for i in range(count):
        record = f"{writer}:{i}:".encode()
        os.write(fd, record + b"x" * (size - len(record) - 1) + b"\n")
    os.close(fd)


def test_concurrent_o_append_writers_lose_and_interleave_nothing(tmp):
    path, writers, count, size = os.path.join(tmp, "log"), 4, 500, 64
    os.close(_open(path))
    with Children() as kids:
        pids = [kids.fork(_append_records, path, w, count, size) for w in range(writers)]
        assert [kids.wait(p) for p in pids] == [0] * writers
    data = open(path, "rb").read()
    assert len(data) == writers * count * size
    records = [data[i:i + size] for i in range(0, len(data), size)]
    seen = sorted(tuple(map(int, r.split(b":")[:2])) for r in records)
    assert seen == [(w, i) for w in range(writers) for i in range(count)]
    assert all(r.endswith(b"x\n") and r.count(b"\n") == 1 for r in records)


TEMP_NAME = re.compile(r"\.target\.osvirt-\d+-[0-9a-f]{8}")  # osvirt.naming.replacing's, the tracker's "file"
WAYS = ["O_TMPFILE", "no O_TMPFILE", "no /proc/self/fd"]

# For a writer of its own (below): os.open answering O_TMPFILE as a filesystem without it does.
_NO_TMPFILE_SCRIPT = """
import errno, os
open_ = os.open
def refusing_o_tmpfile(path, flags, *args, **kwargs):
    if flags & os.O_TMPFILE == os.O_TMPFILE:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
    return open_(path, flags, *args, **kwargs)
os.open = refusing_o_tmpfile
"""


def _refuse_o_tmpfile(monkeypatch, err=errno.EOPNOTSUPP):
    """os.open refuses O_TMPFILE with `err` (EOPNOTSUPP: as a filesystem without it does)."""
    open_ = os.open

    def refusing(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(err, os.strerror(err), path)
        return open_(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", refusing)


@pytest.fixture(params=WAYS)
def way(request, monkeypatch):
    """durable_write's way to its temp file: an unnamed inode; a named file from the start, as on a
    filesystem that refuses O_TMPFILE; or, with no /proc/self/fd to link through, one named at the rename."""
    if request.param == "no O_TMPFILE":
        _refuse_o_tmpfile(monkeypatch)
    elif request.param == "no /proc/self/fd":
        monkeypatch.setattr(fs.storage, "_FD_DIR", "/nonexistent/proc/self/fd")
    return request.param


def test_durable_write_creates_and_replaces_keeping_the_mode(tmp, way):
    path = os.path.join(tmp, "target")
    fs.durable_write(path, b"first")
    assert open(path, "rb").read() == b"first" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    inode = os.stat(path).st_ino
    fs.durable_write(path, b"second")
    assert open(path, "rb").read() == b"second"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.stat(path).st_ino != inode  # a new inode renamed over the old name
    assert os.listdir(tmp) == ["target"]  # no temp file left


def test_durable_write_steps_are_the_documented_ones(tmp, way):
    steps = list(fs.durable_write_steps(os.path.join(tmp, "t"), b"x" * 10, chunk_bytes=4))
    assert steps == ["open temp", "write", "write", "write", "fsync temp", "rename", "fsync directory"]


@pytest.mark.parametrize("err", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.EACCES])
def test_only_a_refusal_of_o_tmpfile_itself_falls_back_to_a_named_temp_file(tmp, monkeypatch, err):
    path = os.path.join(tmp, "target")
    _refuse_o_tmpfile(monkeypatch, err)
    steps = fs.durable_write_steps(path, b"new")
    if err == errno.EACCES:  # not "no O_TMPFILE here": a refusal to report, as for the named file
        with pytest.raises(PermissionError, match=r"^\[Errno 13\] durable_write: open temp file in the target's "
                                                  r"directory: Permission denied") as info:
            next(steps)
        assert info.value.filename == path and os.listdir(tmp) == []
        return
    assert next(steps) == "open temp"
    [temp] = os.listdir(tmp)
    assert TEMP_NAME.fullmatch(temp) and stat.S_IMODE(os.stat(os.path.join(tmp, temp)).st_mode) == 0o600
    assert list(steps) == ["write", "fsync temp", "rename", "fsync directory"]
    assert os.listdir(tmp) == ["target"] and open(path, "rb").read() == b"new"


@pytest.fixture(scope="module")
def strace():
    """strace's path, once it has traced a child here; else the test skips with what refused it."""
    path = shutil.which("strace")
    if path is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    # ptrace of one's own child needs no capability, but seccomp, Yama or an LSM may refuse it.
    probe = subprocess.run([path, "-o", os.devnull, sys.executable, "-c", ""], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace a child here: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    return path


_CALL = re.compile(r"^(\w+)\((.*)\)\s+= (-?\d+)")
_FD = re.compile(r"(\d+|AT_FDCWD)<([^>]*)>(\(deleted\))?")  # strace 6 puts "(deleted)" after the >, older inside
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_AT = {"linkat": "link", "renameat": "rename", "renameat2": "rename"}  # (olddirfd, old, newdirfd, new, ...)


def _traced_calls(trace, directory):
    """(call, arguments..., result) for each traced call that names `directory`.

    strace -y prints an fd as `3</its/path>`: an fd argument becomes its path,
    or `unnamed inode, fd 3` for an inode with no name (an O_TMPFILE's
    `/dir/#1234 (deleted)`); a path beside a directory fd (linkat, renameat)
    is joined to it; a write to a pipe is the line sent (osvirt.tracker's
    protocol). Strings must be traced whole (strace -s)."""
    calls = []
    for line in open(trace):
        match = _CALL.match(line)
        if not match or directory not in match[2]:
            continue
        name, args, result = match[1], match[2], int(match[3])
        fds = []
        for number, fd_path, deleted in _FD.findall(args):
            if (deleted or fd_path.endswith(" (deleted)")) and os.path.basename(fd_path).startswith("#"):
                assert os.path.dirname(fd_path) == directory, line
                fd_path = f"unnamed inode, fd {number}"
            fds.append(fd_path)
        strings = [s.encode().decode("unicode_escape") for s in _STRING.findall(args)]
        if name in _AT:
            calls.append((_AT[name], *(s if s.startswith("/") else os.path.join(d, s)
                                       for d, s in zip(fds, strings)), result))
        elif name in ("link", "rename"):
            calls.append((name, *strings, result))
        elif fds[0].startswith("pipe:"):
            calls.append(("tracker", strings[0], result))
        else:  # write, fsync, fdatasync
            calls.append((name, fds[0], result))
    return calls


def test_durable_write_fsyncs_the_temp_file_renames_it_then_fsyncs_the_directory(tmp, strace):
    tmp = os.path.realpath(tmp)  # as strace -y resolves an fd's path
    path, trace = os.path.join(tmp, "target"), os.path.join(tmp, "trace")
    fs.durable_write(path, b"old")
    script = "import sys; from osvirt import fs; fs.durable_write(sys.argv[1], b'new')"
    # -B: importing writes no .pyc (whose atomic write would be a rename of its own)
    subprocess.run([strace, "-y", "-s", "4096", "-o", trace, "-e",
                    "trace=write,fsync,fdatasync,rename,renameat,renameat2,link,linkat",
                    sys.executable, "-B", "-c", script, path], check=True)
    calls = _traced_calls(trace, tmp)
    temp = next((c[2] for c in calls if c[0] == "link"), None)
    assert temp and os.path.dirname(temp) == tmp and TEMP_NAME.fullmatch(os.path.basename(temp)), calls
    fd = calls[1][1].rpartition(" ")[2]
    assert calls == [
        ("tracker", f"+file {temp}\n", len(f"+file {temp}\n")),  # registered before the name can exist
        ("write", f"unnamed inode, fd {fd}", 3), ("fsync", f"unnamed inode, fd {fd}", 0),  # data down, no name
        ("link", f"/proc/self/fd/{fd}", temp, 0),  # the name appears ...
        ("rename", temp, path, 0),  # ... and goes at once
        ("tracker", f"-file {temp}\n", len(f"-file {temp}\n")),
        ("fsync", tmp, 0),  # the rename on disk
    ], calls
    assert open(path, "rb").read() == b"new" and sorted(os.listdir(tmp)) == ["target", "trace"]


def _write_then_die(path, data, kill_after):
    for n, _ in enumerate(fs.durable_write_steps(path, data, chunk_bytes=len(data) // 4), 1):
        if n == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_writer_killed_after_any_step_leaves_old_or_new_never_a_mix(tmp):
    path = os.path.join(tmp, "target")
    old, new = b"O" * 64 * 1024, b"N" * 96 * 1024
    steps = list(fs.durable_write_steps(os.path.join(tmp, "probe"), new, chunk_bytes=len(new) // 4))
    os.unlink(os.path.join(tmp, "probe"))
    renamed_at = steps.index("rename") + 1
    with Children() as kids:
        for kill_after in range(1, len(steps) + 1):
            fs.durable_write(path, old)
            assert kids.wait(kids.fork(_write_then_die, path, new, kill_after)) == -signal.SIGKILL
            assert open(path, "rb").read() == (new if kill_after >= renamed_at else old), steps[kill_after - 1]
            # Its temp file had no name before the rename: the kernel freed it with the writer.
            assert os.listdir(tmp) == ["target"], steps[kill_after - 1]


_KILLED_WRITER_SCRIPT = """
import os, signal, sys
from osvirt import fs
path, kill_after = sys.argv[1], sys.argv[2]
if kill_after == "between link and rename":  # the two system calls between which the temp file has a name
    os.rename = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
for n, step in enumerate(fs.durable_write_steps(path, b"N" * 4096, chunk_bytes=1024), 1):
    if str(n) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("refuse_o_tmpfile", [False, True], ids=["O_TMPFILE", "no O_TMPFILE"])
def test_a_temp_file_named_when_its_writer_is_killed_is_removed_by_the_tracker(tmp, refuse_o_tmpfile):
    path, old = os.path.join(tmp, "target"), b"O" * 1024
    steps = list(fs.durable_write_steps(path, b"N" * 4096, chunk_bytes=1024))
    renamed_at = steps.index("rename") + 1
    script = (_NO_TMPFILE_SCRIPT if refuse_o_tmpfile else "") + _KILLED_WRITER_SCRIPT
    for kill_after in [*range(1, len(steps) + 1), "between link and rename"]:
        fs.durable_write(path, old)
        # A process of its own, so that its tracker is its own: that tracker holds the stderr
        # pipe, whose EOF says the writer is dead and the tracker has done its removals too.
        writer = subprocess.run([sys.executable, "-c", script, path, str(kill_after)], stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, timeout=60)
        assert writer.returncode == -signal.SIGKILL, writer.stderr
        renamed = kill_after != "between link and rename" and kill_after >= renamed_at
        assert open(path, "rb").read() == (b"N" * 4096 if renamed else old), (kill_after, writer.stderr)
        assert os.listdir(tmp) == ["target"], (kill_after, writer.stderr)
        removed = re.findall(r"removed file written before a rename (\S+):", writer.stderr)
        named = kill_after == "between link and rename" or refuse_o_tmpfile and not renamed
        assert len(removed) == named and all(TEMP_NAME.fullmatch(os.path.basename(r)) for r in removed), \
            (kill_after, writer.stderr)


def test_durable_write_removes_its_temp_file_when_stopped_early(tmp, way):
    path = os.path.join(tmp, "target")
    fs.durable_write(path, b"old")
    steps = fs.durable_write_steps(path, b"new" * 100, chunk_bytes=10)
    next(steps), next(steps)
    unnamed = [e for e in fs.fd_table() if e.target.startswith(os.path.join(tmp, "#"))]
    if way == "no O_TMPFILE":
        [temp] = [n for n in os.listdir(tmp) if n != "target"]
        assert TEMP_NAME.fullmatch(temp) and unnamed == []
    else:  # an inode with no name, open O_TMPFILE: nothing in the directory
        assert os.listdir(tmp) == ["target"]
        assert len(unnamed) == 1 and "O_TMPFILE" in unnamed[0].flag_names and \
            unnamed[0].target.endswith(" (deleted)"), unnamed
    steps.close()
    assert os.listdir(tmp) == ["target"] and open(path, "rb").read() == b"old"
    assert not [e for e in fs.fd_table() if e.target.startswith(os.path.join(tmp, "#"))]  # its fd closed


def test_durable_write_bad_paths_and_data(tmp):
    missing = os.path.join(tmp, "no", "such")
    with pytest.raises(FileNotFoundError) as info:
        fs.durable_write(missing, b"x")
    assert info.value.filename == missing
    with pytest.raises(TypeError):
        fs.durable_write(os.path.join(tmp, "t"), "text, not bytes")
    assert os.listdir(tmp) == []
    os.mkdir(os.path.join(tmp, "d"))
    with pytest.raises(IsADirectoryError, match="durable_write: rename over the target"):
        fs.durable_write(os.path.join(tmp, "d"), b"x")
    with pytest.raises(IsADirectoryError, match="durable_write: / is a directory"):
        fs.durable_write("/", b"x")
    assert os.listdir(tmp) == ["d"]  # the temp file linked beside it is gone again


def test_fallocate_reserves_blocks_without_changing_content(tmp):
    fd = _open(os.path.join(tmp, "f"))
    try:
        os.write(fd, b"k" * 8192)
        before = os.fstat(fd).st_blocks
        fs.fallocate(fd, 0, 4 * MiB, keep_size=True)
        st = os.fstat(fd)
        assert st.st_size == 8192 and st.st_blocks - before >= (4 * MiB - 8192) // 512
        assert fs.pread(fd, 9000, 0) == b"k" * 8192
        fs.fallocate(fd, 0, 4 * MiB)
        assert os.fstat(fd).st_size == 4 * MiB and fs.pread(fd, 16, 8192) == bytes(16)
        with pytest.raises(ValueError):
            fs.fallocate(fd, 0, 0)
    finally:
        os.close(fd)


def test_punch_hole_frees_blocks_and_reads_zeros(tmp):
    fd = _open(os.path.join(tmp, "f"))
    try:
        os.write(fd, b"d" * MiB)
        os.fsync(fd)
        before = os.fstat(fd).st_blocks
        fs.punch_hole(fd, 0, MiB // 2)
        assert before - os.fstat(fd).st_blocks == MiB // 2 // 512
        assert fs.pread(fd, 4, 0) == bytes(4) and os.fstat(fd).st_size == MiB
        assert fs.data_ranges(fd) == [(MiB // 2, MiB)]
    finally:
        os.close(fd)


@pytest.fixture
def sparse_src(tmp):
    """16 MiB: 64 KiB of data at 0 and at 8 MiB, holes between and after."""
    path = os.path.join(tmp, "src")
    fd = _open(path)
    os.pwrite(fd, os.urandom(65536), 0)
    os.pwrite(fd, os.urandom(65536), 8 * MiB)
    os.ftruncate(fd, 16 * MiB)
    yield fd
    os.close(fd)


def test_copy_file_range_copies_and_on_ext4_or_tmpfs_fills_the_holes(tmp, sparse_src):
    dst = _open(os.path.join(tmp, "dst"))
    try:
        assert fs.copy_file_range(sparse_src, dst) == 16 * MiB
        assert fs.pread(dst, 16 * MiB, 0) == fs.pread(sparse_src, 16 * MiB, 0)
        assert os.lseek(sparse_src, 0, os.SEEK_CUR) == 0 and os.lseek(dst, 0, os.SEEK_CUR) == 0
        kind = fs.filesystem(f"/proc/self/fd/{dst}").type
        if kind not in ("ext2/ext3/ext4", "tmpfs"):
            pytest.skip(f"{kind} may reflink: the hole-filling splice path is ext4's and tmpfs's")
        assert os.fstat(dst).st_blocks * 512 >= 16 * MiB  # every hole written as zeros
        assert fs.data_ranges(dst) == [(0, 16 * MiB)]
    finally:
        os.close(dst)


def test_copy_sparse_keeps_the_holes(tmp, sparse_src):
    dst = _open(os.path.join(tmp, "dst"))
    try:
        assert fs.copy_sparse(sparse_src, dst) == 2 * 65536
        assert os.fstat(dst).st_size == 16 * MiB
        assert fs.data_ranges(dst) == fs.data_ranges(sparse_src)
        assert os.fstat(dst).st_blocks * 512 <= 2 * 65536 + 64 * 1024
        assert fs.pread(dst, 16 * MiB, 0) == fs.pread(sparse_src, 16 * MiB, 0)
    finally:
        os.close(dst)


def test_copy_file_range_refusal_names_the_call(tmp):
    src = _open(os.path.join(tmp, "s"), os.O_WRONLY | os.O_CREAT)
    dst = _open(os.path.join(tmp, "d"))
    try:
        os.write(src, b"x")
        with pytest.raises(OSError) as info:
            fs.copy_file_range(src, dst, 1)  # the source is open write-only
        assert info.value.errno == errno.EBADF and "copy_file_range" in str(info.value)
    finally:
        os.close(src)
        os.close(dst)
