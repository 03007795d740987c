"""A newc cpio archive built in Python: the initramfs format Linux unpacks into its rootfs.

The kernel's initramfs is a "newc" (SVR4, no CRC) cpio archive
(Documentation/driver-api/early-userspace/buffer-format.rst): one entry per
file, each a 110-byte ASCII header, the path name, then the data, and the
archive closed by an entry named TRAILER!!!. The header is the magic
"070701" followed by thirteen 8-digit hexadecimal fields:

    c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize
    c_devmajor c_devminor c_rdevmajor c_rdevminor c_namesize c_check

c_namesize counts the name's terminating NUL; the header and name are
padded with NULs to a multiple of 4 bytes, and so is the data. c_check is 0
(it is the "070702" format that sums the data). A directory's entry must come
before the entries inside it; the kernel makes device nodes with mknod from
c_rdevmajor/c_rdevminor, symlinks from the data (the target), and gives each
entry the mode, owner and mtime of its header.

`Archive` builds one entry at a time (add_dir, add_file, add_symlink,
add_device, add_fifo); `from_directory` walks a host directory. Owners are
uid 0 and gid 0 unless asked otherwise: an initramfs's files belong to the
guest's root, not to whoever built it. Hard links are stored as separate
files (nlink 1), which costs space but nothing in meaning for an initramfs.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator

__all__ = ["Archive", "from_directory", "MAGIC", "TRAILER"]

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110  # 6 + 13 * 8
_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
           "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check")


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _clean_name(name: str) -> str:
    """An archive path: relative, '/'-separated, no '.' or '..' parts, not empty."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"cpio: empty path name {name!r}")
    if ".." in parts:
        raise ValueError(f"cpio: path name {name!r} has a '..' part")
    if any("\0" in p for p in parts):
        raise ValueError(f"cpio: path name {name!r} has a NUL byte")
    return "/".join(parts)


class Archive:
    """A newc cpio archive built entry by entry; `to_bytes()` closes it with TRAILER!!!."""

    def __init__(self, *, uid: int = 0, gid: int = 0, mtime: int = 0) -> None:
        self.uid, self.gid, self.mtime = uid, gid, mtime
        self._chunks: list[bytes] = []
        self._names: set[str] = set()
        self._ino = 300000  # inode numbers only need to differ between entries; start past small ones
        self.entries = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", *, nlink: int = 1, rdev: tuple[int, int] = (0, 0),
               mtime: int | None = None) -> None:
        if name != TRAILER:
            name = _clean_name(name)
            if name in self._names:
                raise ValueError(f"cpio: {name!r} is already in the archive")
            parent = name.rpartition("/")[0]
            if parent and parent not in self._names:
                raise ValueError(f"cpio: {name!r} comes before its directory {parent!r} (add_dir it first)")
            self._names.add(name)
            self._ino += 1
            ino = self._ino
        else:
            ino = 0
        encoded = name.encode() + b"\0"
        values = {
            "ino": ino, "mode": mode, "uid": self.uid, "gid": self.gid, "nlink": nlink,
            "mtime": self.mtime if mtime is None else mtime, "filesize": len(data),
            "devmajor": 0, "devminor": 0, "rdevmajor": rdev[0], "rdevminor": rdev[1],
            "namesize": len(encoded), "check": 0,
        }
        for field, value in values.items():
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"cpio: {name!r}: {field} {value} does not fit the 8 hex digits of newc")
        header = MAGIC + b"".join(b"%08X" % values[f] for f in _FIELDS)
        self._chunks.append(header + encoded + b"\0" * _pad4(HEADER_SIZE + len(encoded)))
        if data:
            self._chunks.append(bytes(data) + b"\0" * _pad4(len(data)))
        if name != TRAILER:
            self.entries += 1

    def __contains__(self, name: str) -> bool:
        """Whether an entry of this path name is in the archive."""
        return _clean_name(name) in self._names

    def add_dir(self, name: str, mode: int = 0o755, mtime: int | None = None) -> None:
        self._entry(name, stat.S_IFDIR | (mode & 0o7777), nlink=2, mtime=mtime)

    def add_file(self, name: str, data: bytes, mode: int = 0o644, mtime: int | None = None) -> None:
        self._entry(name, stat.S_IFREG | (mode & 0o7777), data, mtime=mtime)

    def add_symlink(self, name: str, target: str, mtime: int | None = None) -> None:
        if not target:
            raise ValueError(f"cpio: symlink {name!r} needs a target")
        self._entry(name, stat.S_IFLNK | 0o777, target.encode(), mtime=mtime)

    def add_device(self, name: str, kind: str, major: int, minor: int, mode: int = 0o600,
                   mtime: int | None = None) -> None:
        """A device node: kind "c" (character) or "b" (block), made by the kernel with mknod."""
        if kind not in ("c", "b"):
            raise ValueError(f"cpio: device kind must be 'c' or 'b', not {kind!r}")
        kind_bits = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        self._entry(name, kind_bits | (mode & 0o7777), rdev=(major, minor), mtime=mtime)

    def add_fifo(self, name: str, mode: int = 0o644, mtime: int | None = None) -> None:
        self._entry(name, stat.S_IFIFO | (mode & 0o7777), mtime=mtime)

    def add_path(self, name: str, path: str | os.PathLike[str], *, keep_mtime: bool = True) -> None:
        """One host file system object (not followed if a symlink) as entry `name`."""
        st = os.lstat(path)
        mtime = int(st.st_mtime) if keep_mtime else None
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            self.add_dir(name, mode, mtime=mtime)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                self.add_file(name, f.read(), mode, mtime=mtime)
        elif stat.S_ISLNK(st.st_mode):
            self.add_symlink(name, os.readlink(path), mtime=mtime)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            self.add_device(name, "c" if stat.S_ISCHR(st.st_mode) else "b",
                            os.major(st.st_rdev), os.minor(st.st_rdev), mode, mtime=mtime)
        elif stat.S_ISFIFO(st.st_mode):
            self.add_fifo(name, mode, mtime=mtime)
        else:
            raise ValueError(f"cpio: {os.fspath(path)!r} is a socket or an unknown kind of file "
                             f"(mode {st.st_mode:#o}): an initramfs cannot hold it")

    def to_bytes(self) -> bytes:
        """The archive so far, closed by TRAILER!!! (this Archive can go on growing after)."""
        trailer = Archive(uid=0, gid=0, mtime=0)
        trailer._entry(TRAILER, 0, nlink=1)
        return b"".join(self._chunks + trailer._chunks)

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write the archive to `path`; the number of bytes written."""
        data = self.to_bytes()
        with open(path, "wb") as f:
            f.write(data)
        return len(data)


def _walk(root: str) -> Iterator[tuple[str, str]]:
    """(archive name, host path) under root, sorted, each directory before what it holds;
    symlinks to directories are entries, not followed."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        yield entry.name, entry.path
        if entry.is_dir(follow_symlinks=False):
            for name, path in _walk(entry.path):
                yield f"{entry.name}/{name}", path


def from_directory(directory: str | os.PathLike[str], *, uid: int = 0, gid: int = 0,
                   keep_mtime: bool = False, console: bool = False) -> Archive:
    """An Archive of everything under `directory` (not the directory itself: its
    contents become the guest's /). Modes are kept; owners are `uid`/`gid` (root);
    mtimes are 0, so the same tree gives the same bytes whenever it is built,
    unless `keep_mtime`. `console=True` adds dev/ and a dev/console node
    (5:1), which init needs for its stdin, stdout and stderr, unless the tree has them."""
    root = os.fspath(directory)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"cpio: {root!r} is not a directory")
    archive = Archive(uid=uid, gid=gid)
    for name, path in _walk(root):
        archive.add_path(name, path, keep_mtime=keep_mtime)
    if console:
        if "dev" not in archive:
            archive.add_dir("dev")
        if "dev/console" not in archive:
            archive.add_device("dev/console", "c", 5, 1, 0o600)
    return archive
