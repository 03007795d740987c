"""What the kernel keeps about a filesystem and a file.

The filesystem under a path: its type (statfs's f_type, the superblock
magic, named from <linux/magic.h>, and the mount's own fstype from
/proc/self/mountinfo, which tells ext4 from ext2), block size, and block and
inode counts (statvfs). A file: its inode, link count and the blocks it really
holds next to its size. A sparse file: where its data and its holes lie
(lseek SEEK_DATA/SEEK_HOLE), and the physical extents behind the data (the
FIEMAP ioctl, which ext4, xfs and btrfs answer and tmpfs refuses with
EOPNOTSUPP).
"""
import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from typing import Any, NamedTuple

from _cffi_backend import FFI

from osvirt.errors import kernel_error
from osvirt.fs import _native

__all__ = ["Filesystem", "FileInfo", "Extent", "filesystem", "fs_type_name", "file_info",
           "data_ranges", "hole_ranges", "fiemap"]

# A path, as osvirt.fs takes it.
Path = str | os.PathLike[str]


class Filesystem(NamedTuple):
    """The filesystem under `path`: statfs's f_type as `magic` and `type`,
    the mount's fstype and mount point from /proc/self/mountinfo, and statvfs's
    counts (blocks in units of `fragment_size`)."""
    path: str
    type: str
    magic: int
    mount_type: str | None  # None: no mount in /proc/self/mountinfo has its device
    mount_point: str | None
    block_size: int
    fragment_size: int
    blocks_total: int
    blocks_free: int
    blocks_available: int
    inodes_total: int
    inodes_free: int
    name_max: int


class FileInfo(NamedTuple):
    """One inode as stat(2) reports it; `blocks_512` is st_blocks (always
    512-byte units), `allocated_bytes` the space it really holds."""
    path: str
    kind: str
    inode: int
    device: int
    links: int
    size: int
    blocks_512: int
    allocated_bytes: int
    mode: int


class Extent(NamedTuple):
    """One FIEMAP extent: byte offsets in the file and on the device, its
    length, and the names of its FIEMAP_EXTENT_* flags."""
    logical: int
    physical: int
    length: int
    flags: frozenset[str]


@contextlib.contextmanager
def _opened(target: int | Path, facility: str, flags: int = os.O_RDONLY) -> Iterator[int]:
    """An fd for `target`: an int is used as it is, a path is opened here and closed after."""
    if isinstance(target, int):
        yield target
        return
    try:
        fd = os.open(target, flags | os.O_CLOEXEC)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise kernel_error(e.errno, f"{facility}: open", filename=target) from None
    try:
        yield fd
    finally:
        os.close(fd)


def fs_type_name(magic: int) -> str:
    """The filesystem's name for a statfs f_type, or its hex when <linux/magic.h> has none we map."""
    return _native.FS_MAGICS.get(magic, f"unknown (f_type {magic:#x})")


def _mount_of(path: Path) -> tuple[str, str] | tuple[None, None]:
    """(fstype, mount point) of the mount holding `path`, matched by st_dev in /proc/self/mountinfo."""
    dev, real = os.stat(path).st_dev, os.path.realpath(path)
    mounts: list[tuple[str, str]] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            major, minor = map(int, fields[2].split(":"))
            if os.makedev(major, minor) == dev:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040: a space
                mounts.append((fields[fields.index("-") + 1], point))
    # Bind mounts repeat a device: the longest mount point that holds path; any, if none does
    # (a chroot sees mount points it cannot reach).
    holding = [m for m in mounts if real.startswith(m[1])] or mounts
    return max(holding, key=lambda m: len(m[1]), default=(None, None))


def filesystem(path: Path) -> Filesystem:
    """The filesystem under `path`: type, block size and counts (statfs + statvfs)."""
    magic = _native.statfs_type(path)
    try:
        vfs = os.statvfs(path)
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, "statvfs", filename=path) from None
    mount_type, mount_point = _mount_of(path)
    return Filesystem(os.fspath(path), fs_type_name(magic), magic, mount_type, mount_point,
                      vfs.f_bsize, vfs.f_frsize, vfs.f_blocks, vfs.f_bfree, vfs.f_bavail,
                      vfs.f_files, vfs.f_ffree, vfs.f_namemax)


_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"),
          (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "char device"),
          (stat.S_ISBLK, "block device"))


def file_info(path: Path, follow_symlinks: bool = True) -> FileInfo:
    """stat(2) of `path` (lstat with follow_symlinks=False: a symlink's own inode)."""
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, "stat" if follow_symlinks else "lstat", filename=path) from None
    kind = next(name for test, name in _KINDS if test(st.st_mode))
    return FileInfo(os.fspath(path), kind, st.st_ino, st.st_dev, st.st_nlink, st.st_size,
                    st.st_blocks, st.st_blocks * 512, stat.S_IMODE(st.st_mode))


def _seek(fd: int, offset: int, whence: int, name: str) -> int | None:
    """lseek, with ENXIO (no data, or no hole, at or after offset) answered as None."""
    try:
        return os.lseek(fd, offset, whence)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return None
        assert e.errno is not None
        raise kernel_error(e.errno, f"lseek({offset}, {name})") from None


def data_ranges(target: int | Path) -> list[tuple[int, int]]:
    """[(start, end)...] byte ranges holding data, by lseek SEEK_DATA/SEEK_HOLE.

    `target` is a path or an open fd (whose offset this moves). A filesystem
    without hole tracking reports all of the file as one data range.
    """
    with _opened(target, "lseek(SEEK_DATA)") as fd:
        ranges: list[tuple[int, int]] = []
        offset = 0
        while (start := _seek(fd, offset, os.SEEK_DATA, "SEEK_DATA")) is not None:
            end = _seek(fd, start, os.SEEK_HOLE, "SEEK_HOLE")  # EOF counts as a hole
            assert end is not None  # so a data offset always has one after it
            ranges.append((start, end))
            offset = end
        return ranges


def hole_ranges(target: int | Path) -> list[tuple[int, int]]:
    """[(start, end)...] byte ranges that are holes (read as zeros, hold no blocks)."""
    with _opened(target, "lseek(SEEK_HOLE)") as fd:
        size = os.fstat(fd).st_size
        holes: list[tuple[int, int]] = []
        offset = 0
        for start, end in data_ranges(fd) + [(size, size)]:
            if start > offset:
                holes.append((offset, start))
            offset = end
        return holes


def fiemap(target: int | Path, extent_count: int | None = None) -> list[Extent]:
    """The file's physical extents, by the FS_IOC_FIEMAP ioctl (FIEMAP_FLAG_SYNC first).

    `extent_count=None` asks the kernel how many there are, then maps them all.
    A filesystem that does not map extents (tmpfs) raises OSError(EOPNOTSUPP).
    """
    if extent_count is not None and not 0 <= extent_count <= 1 << 16:
        raise ValueError(f"ioctl(FS_IOC_FIEMAP): extent_count {extent_count} not in 0..65536")
    with _opened(target, "ioctl(FS_IOC_FIEMAP)") as fd:
        if extent_count is None:
            extent_count = _fiemap_call(fd, 0, target)[1].fm_mapped_extents
        buf, header = _fiemap_call(fd, extent_count, target)
        return [Extent(logical, physical, length,
                       frozenset(n for n, bit in _native.FIEMAP_EXTENT_FLAGS.items() if flags & bit))
                for logical, physical, length, flags in _native.fiemap_extents(buf, header)]


def _fiemap_call(fd: int, extent_count: int, target: int | Path) -> tuple[FFI.CData, Any]:
    buf, header = _native.fiemap_request(0, 2 ** 64 - 1, _native.FIEMAP_FLAG_SYNC, extent_count)
    try:
        _native.fiemap_ioctl(fd, buf)
    except OSError as e:
        hint = None
        if e.errno == errno.EOPNOTSUPP:
            # statfs through the fd's /proc link: the filesystem of the open file itself.
            hint = f"{fs_type_name(_native.statfs_type(f'/proc/self/fd/{fd}'))} does not map extents"
        assert e.errno is not None
        raise kernel_error(e.errno, "ioctl(FS_IOC_FIEMAP)", hint,
                           filename=None if isinstance(target, int) else target) from None
    return buf, header
