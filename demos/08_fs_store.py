"""How the kernel stores and manages a file, measured (seed §4.3.2, `store_and_manage_file`).

The article's `store_and_manage_file(path, "Hello, World!", 13)` is empty.
Here the same 13 bytes go through open, write, read and close while the fd
table in /proc/self/fd and /proc/self/fdinfo shows the kernel's view: the
open file description and its offset, which each write moves and
pread/pwrite do not. Writers in separate processes append to one log with
O_APPEND and lose nothing (and without it, seeking to the end first, they
overwrite each other). A file overwritten in place and killed midway is
left half-written; `durable_write` (an unnamed O_TMPFILE inode written and
fsynced, linked and renamed over the target, fsync of the directory) killed
after any of its steps leaves the old content or the new, and nothing else.
fallocate reserves blocks without changing what the file reads, and
copy_file_range copies inside the kernel, filling a sparse source's holes on
this filesystem, next to a copy that keeps them.

Usage: python demos/08_fs_store.py [--json]
"""
import os
import signal
import sys

from osvirt import fs
from osvirt.demo import run
from osvirt.naming import private_dir

NAME = "fs-store"
SEED = "4.3.2 store_and_manage_file"
SUMMARY = "the fd table and offsets, O_APPEND writers, durable writes, fallocate, copy_file_range"

MiB = 1 << 20
WRITERS, RECORDS, RECORD_BYTES = 4, 2000, 64


def _entry(fd):
    e = fs.fd_entry(fd)
    return f"fd {e.fd} -> {os.path.basename(e.target)}, pos {e.pos}, flags {e.flag_names}"


def _append(path, writer, o_append):
    """A writer: RECORDS records of RECORD_BYTES, each one write(2); without O_APPEND, lseek(END) first."""
    fd = os.open(path, os.O_WRONLY | (os.O_APPEND if o_append else 0))
    for i in range(RECORDS):
        head = f"{writer}:{i}:".encode()
        record = head + b"." * (RECORD_BYTES - len(head) - 1) + b"\n"
        if not o_append:
            os.lseek(fd, 0, os.SEEK_END)  # the race: another writer may append before our write
        os.write(fd, record)
    os.close(fd)


def _intact_records(data):
    """The (writer, index) of every whole, well-formed record in `data`."""
    found = set()
    for line in data.split(b"\n"):
        parts = line.split(b":")
        if len(line) == RECORD_BYTES - 1 and len(parts) == 3 and parts[2] == b"." * len(parts[2]):
            found.add((int(parts[0]), int(parts[1])))
    return found


def _appenders(demo, path, o_append):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    pids = [demo.children.fork(_append, path, w, o_append) for w in range(WRITERS)]
    codes = [demo.children.wait(pid) for pid in pids]
    data = open(path, "rb").read()
    return codes, len(data), _intact_records(data)


def _overwrite_then_die(path, data, chunks_before_kill):
    """The naive way: truncate the file in place and write it in four chunks; die midway."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    step = len(data) // 4
    for n, start in enumerate(range(0, len(data), step), 1):
        os.write(fd, data[start:start + step])
        if n == chunks_before_kill:
            os.kill(os.getpid(), signal.SIGKILL)


def _durable_then_die(path, data, kill_after):
    for n, _ in enumerate(fs.durable_write_steps(path, data, chunk_bytes=len(data) // 4), 1):
        if n == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def _sparse_source(directory):
    """16 MiB: 64 KiB of data at 0 and at 8 MiB, holes elsewhere."""
    fd = os.open(os.path.join(directory, "sparse"), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fs.pwrite(fd, os.urandom(64 * 1024), 0)
    fs.pwrite(fd, os.urandom(64 * 1024), 8 * MiB)
    os.ftruncate(fd, 16 * MiB)
    return fd


def body(demo):
    tmp = demo.own(private_dir())
    path = os.path.join(tmp, "file")

    with demo.step("open, write, read, close, seen in the fd table",
                   asked="open(O_RDWR|O_CREAT); write(13); lseek(0); read(5); close(); /proc/self/fd, fdinfo"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        opened = fs.fd_entry(fd)
        demo.say(f"after open : {_entry(fd)}")
        os.write(fd, b"Hello, World!")  # the seed's 13 bytes
        written = fs.fd_entry(fd).pos
        demo.say(f"after write: {_entry(fd)}")
        os.lseek(fd, 0, os.SEEK_SET)
        got = os.read(fd, 5)
        read_pos = fs.fd_entry(fd).pos
        demo.say(f"after read : {_entry(fd)} (read {got!r})")
        os.close(fd)
        listed = [e.fd for e in fs.fd_table()]
        demo.check("open adds an fd naming the file at offset 0", expected=f"/proc/self/fd/{fd} -> {path}, pos 0",
                   observed=f"-> {opened.target}, pos {opened.pos}", ok=opened.target == path and opened.pos == 0)
        demo.check("write moves the offset by the bytes written", expected="pos 13",
                   observed=f"pos {written}", ok=written == 13)
        demo.check("read from 0 moves it by the bytes read", expected="pos 5, b'Hello'",
                   observed=f"pos {read_pos}, {got!r}", ok=read_pos == 5 and got == b"Hello")
        demo.check("close removes the fd from the table", expected=f"fd {fd} not in /proc/self/fd",
                   observed=f"fds now {listed}", ok=fd not in listed)

    with demo.step("pread and pwrite leave the offset", asked="lseek(3); pread(5 at 7); pwrite(b'J' at 0)"):
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        os.lseek(fd, 3, os.SEEK_SET)
        got = fs.pread(fd, 5, 7)
        fs.pwrite(fd, b"J", 0)
        pos = fs.fd_entry(fd).pos
        content = fs.pread(fd, 13, 0)
        os.close(fd)
        demo.check("offset after pread and pwrite", expected="still 3", observed=f"pos {pos}", ok=pos == 3)
        demo.check("they read and wrote where asked", expected="b'World', b'Jello, World!'",
                   observed=f"{got!r}, {content!r}", ok=got == b"World" and content == b"Jello, World!")

    with demo.step(f"{WRITERS} processes append {RECORDS} records each",
                   asked=f"open(O_WRONLY|O_APPEND) in {WRITERS} children; write({RECORD_BYTES}) x {RECORDS}"):
        log = os.path.join(tmp, "log")
        codes, size, records = _appenders(demo, log, o_append=True)
        total = WRITERS * RECORDS
        demo.check("with O_APPEND: every record there, whole", expected=f"{total} records, {total * RECORD_BYTES} B",
                   observed=f"{len(records)} intact records, {size} B",
                   ok=codes == [0] * WRITERS and len(records) == total and size == total * RECORD_BYTES)
        codes, size, records = _appenders(demo, log, o_append=False)
        demo.say(f"Without O_APPEND (lseek to the end, then write: two calls, a race between them), "
                 f"this run kept {len(records)} of {total} records in {size} B: a writer that seeks, "
                 "is preempted, then writes, lands on a record another writer has just put there. "
                 "O_APPEND makes the seek and the write one step under the inode's lock.")

    with demo.step("the naive overwrite, killed midway", asked="open(O_TRUNC); write 2 of 4 chunks; SIGKILL"):
        target = os.path.join(tmp, "target")
        old, new = b"O" * 256 * 1024, b"N" * 384 * 1024
        fs.durable_write(target, old)
        code = demo.children.wait(demo.children.fork(_overwrite_then_die, target, new, 2))
        left = open(target, "rb").read()
        demo.check("what a crash mid-overwrite leaves", expected="neither the old nor the new content",
                   observed=f"killed by signal {-code}; {len(left)} B, {left.count(b'N')} of them new",
                   ok=code == -signal.SIGKILL and left not in (old, new))

    with demo.step("durable_write killed after each of its steps",
                   asked="open(O_TMPFILE); write x4; fsync; linkat, rename over; fsync(dir): SIGKILL after step k"):
        steps = list(fs.durable_write_steps(os.path.join(tmp, "probe"), new, chunk_bytes=len(new) // 4))
        os.unlink(os.path.join(tmp, "probe"))
        listed, outcomes = set(os.listdir(tmp)) | {"target"}, []
        for kill_after in range(1, len(steps) + 1):
            fs.durable_write(target, old)
            code = demo.children.wait(demo.children.fork(_durable_then_die, target, new, kill_after))
            left = open(target, "rb").read()
            outcomes.append("old" if left == old else "new" if left == new else f"MIX ({len(left)} B)")
        leftovers = sorted(set(os.listdir(tmp)) - listed)
        renamed = steps.index("rename")
        expected = ["old"] * renamed + ["new"] * (len(steps) - renamed)
        demo.say(", ".join(f"after {s!r}: {o}" for s, o in zip(steps, outcomes)))
        demo.say(f"The writers killed before the rename left {len(leftovers)} files: a process killed "
                 "outright removes nothing, but their new bytes were an inode with no name (open "
                 "O_TMPFILE), which the kernel freed with them. It gets a name (linkat) at the "
                 "rename step, and the very next system call renames it over the target.")
        demo.say("A kill leaves the page cache intact, so this shows rename's atomicity; the two "
                 "fsyncs are for power loss, which a demo cannot cause: without them the rename "
                 "could reach the disk before the data it points to.")
        demo.check("content after a kill at each step", expected=" ".join(expected),
                   observed=" ".join(outcomes), ok=outcomes == expected)
        demo.check("what the killed writers left in the directory", expected="nothing",
                   observed=", ".join(leftovers) or "nothing", ok=not leftovers)

    with demo.step("fallocate reserves blocks", asked="fallocate(fd, 0, 0, 4 MiB) on an 8 KiB file"):
        fd = os.open(os.path.join(tmp, "reserved"), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fs.pwrite(fd, b"k" * 8192, 0)
        before = os.fstat(fd).st_blocks
        fs.fallocate(fd, 0, 4 * MiB)
        after = os.fstat(fd)
        head, tail = fs.pread(fd, 8192, 0), fs.pread(fd, 4 * MiB - 8192, 8192)
        os.close(fd)
        demo.check("st_blocks (512 B units)", expected=f"{before} -> {4 * MiB // 512} or more",
                   observed=f"{before} -> {after.st_blocks}", ok=after.st_blocks >= 4 * MiB // 512)
        demo.check("what the file reads", expected="the 8 KiB written, then zeros; size 4 MiB",
                   observed=f"data kept: {head == b'k' * 8192}, rest zeros: {tail == bytes(len(tail))}, "
                            f"size {after.st_size}",
                   ok=head == b"k" * 8192 and tail == bytes(len(tail)) and after.st_size == 4 * MiB)

    with demo.step("copy_file_range, and a copy that keeps holes",
                   asked="copy_file_range(src, dst, 16 MiB); per SEEK_DATA range: copy_file_range; ftruncate"):
        src = _sparse_source(tmp)
        kind = fs.filesystem(tmp).type
        plain = os.open(os.path.join(tmp, "copy"), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        holed = os.open(os.path.join(tmp, "sparse-copy"), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            original = fs.pread(src, 16 * MiB, 0)
            copied, kept = fs.copy_file_range(src, plain), fs.copy_sparse(src, holed)
            rows = [(name, os.fstat(f).st_blocks * 512, fs.data_ranges(f), fs.pread(f, 16 * MiB, 0) == original)
                    for name, f in (("source", src), ("copy_file_range", plain), ("hole-keeping copy", holed))]
        finally:
            for f in (src, plain, holed):
                os.close(f)
        for name, allocated, data, same in rows:
            demo.say(f"{name:18}: {allocated // 1024:6} KiB allocated, data ranges {data}, same bytes: {same}")
        demo.check("copy_file_range copies every byte", expected="16 MiB, identical",
                   observed=f"{copied} B, identical: {rows[1][3]}", ok=copied == 16 * MiB and rows[1][3])
        if kind in ("ext2/ext3/ext4", "tmpfs"):
            demo.say(f"On {kind} copy_file_range has no reflink: the kernel splices the data, reading the "
                     "source's holes as zeros and writing them, so the copy is not sparse.")
            demo.check(f"{kind}: copy_file_range fills the holes", expected=f">= {16 * MiB // 1024} KiB allocated",
                       observed=f"{rows[1][1] // 1024} KiB", ok=rows[1][1] >= 16 * MiB)
        demo.check("SEEK_DATA/SEEK_HOLE copy keeps the holes",
                   expected=f"the source's data ranges {rows[0][2]}, ~128 KiB allocated, identical",
                   observed=f"{rows[2][2]}, {rows[2][1] // 1024} KiB, identical: {rows[2][3]}, {kept} B copied",
                   ok=rows[2][2] == rows[0][2] and rows[2][1] <= 192 * 1024 and rows[2][3])


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
