"""The one module of osvirt.fs that touches the C extension.

It checks what Python hands to C, turns -1/errno into `kernel_error`, and
lends the structs' layouts (struct fiemap, struct flock) from the headers so
no offset is retyped in Python.
"""
import fcntl
import os
from typing import Any

from _cffi_backend import FFI

from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

# f_type -> the name the kernel registers the filesystem under (/proc/filesystems,
# mountinfo), from <linux/magic.h>. ext2, ext3 and ext4 share one magic.
FS_MAGICS: dict[int, str] = {
    lib.EXT4_SUPER_MAGIC: "ext2/ext3/ext4", lib.XFS_SUPER_MAGIC: "xfs",
    lib.BTRFS_SUPER_MAGIC: "btrfs", lib.TMPFS_MAGIC: "tmpfs", lib.RAMFS_MAGIC: "ramfs",
    lib.OVERLAYFS_SUPER_MAGIC: "overlay", lib.FUSE_SUPER_MAGIC: "fuse",
    lib.NFS_SUPER_MAGIC: "nfs", lib.F2FS_SUPER_MAGIC: "f2fs", lib.EXFAT_SUPER_MAGIC: "exfat",
    lib.MSDOS_SUPER_MAGIC: "msdos/vfat", lib.SQUASHFS_MAGIC: "squashfs",
    lib.PROC_SUPER_MAGIC: "proc", lib.SYSFS_MAGIC: "sysfs", lib.DEVPTS_SUPER_MAGIC: "devpts",
    lib.CGROUP2_SUPER_MAGIC: "cgroup2",
}

FIEMAP_EXTENT_FLAGS: dict[str, int] = {
    name: getattr(lib, "FIEMAP_EXTENT_" + name)
    for name in ("LAST", "UNKNOWN", "DELALLOC", "ENCODED", "DATA_ENCRYPTED", "NOT_ALIGNED",
                 "DATA_INLINE", "DATA_TAIL", "UNWRITTEN", "MERGED", "SHARED")
}
FS_IOC_FIEMAP: int = lib.FS_IOC_FIEMAP
FIEMAP_FLAG_SYNC: int = lib.FIEMAP_FLAG_SYNC
FALLOC_FL_KEEP_SIZE: int = lib.FALLOC_FL_KEEP_SIZE
FALLOC_FL_PUNCH_HOLE: int = lib.FALLOC_FL_PUNCH_HOLE
OFF_MAX = 2 ** (8 * ffi.sizeof("off_t") - 1) - 1


def c_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes], facility: str) -> bytes:
    """`path` as the bytes C takes; NUL inside it is a ValueError, not a truncated name."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError(f"{facility}: path {path!r} holds a NUL byte")
    return raw


def statfs_type(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> int:
    """statfs(2)'s f_type (the superblock magic) of the filesystem under `path`."""
    raw = c_path(path, "statfs")
    out = ffi.new("long *")
    if lib.osv_statfs_type(raw, out) == -1:
        raise kernel_error(ffi.errno, "statfs", filename=path)
    return int(out[0])


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if lib.osv_fallocate(fd, mode, offset, length) == -1:
        raise kernel_error(ffi.errno, f"fallocate(fd {fd}, mode {mode:#x}, {offset}, {length})")


# -- struct fiemap: a header and fm_extent_count extents after it -------------
FIEMAP_HEADER = ffi.sizeof("struct fiemap")
FIEMAP_EXTENT = ffi.sizeof("struct fiemap_extent")


# The header is a struct's cdata: its fields (the cdef's) are unknown to mypy, hence Any.
def fiemap_request(start: int, length: int, flags: int, extent_count: int) -> tuple[FFI.CData, Any]:
    """A zeroed struct fiemap with room for `extent_count` extents: (buffer, header)."""
    buf = ffi.new("char[]", FIEMAP_HEADER + extent_count * FIEMAP_EXTENT)
    header: Any = ffi.cast("struct fiemap *", buf)
    header.fm_start, header.fm_length = start, length
    header.fm_flags, header.fm_extent_count = flags, extent_count
    return buf, header


def fiemap_ioctl(fd: int, buf: FFI.CData) -> None:
    """ioctl(FS_IOC_FIEMAP) on the request in `buf`, which the kernel fills in."""
    fcntl.ioctl(fd, FS_IOC_FIEMAP, ffi.buffer(buf), True)


def fiemap_extents(buf: FFI.CData, header: Any) -> list[tuple[int, int, int, int]]:
    """The mapped extents as (logical, physical, length, flags) tuples."""
    extents: Any = ffi.cast("struct fiemap_extent *", buf + FIEMAP_HEADER)  # a struct array's cdata
    return [(e.fe_logical, e.fe_physical, e.fe_length, e.fe_flags)
            for e in extents[0:header.fm_mapped_extents]]


# -- struct flock ---------------------------------------------------------------
def pack_flock(l_type: int, whence: int, start: int, length: int) -> bytes:
    """struct flock's bytes as fcntl(2) takes them; l_pid 0 (F_OFD_* insist on it)."""
    fl: Any = ffi.new("struct flock *")  # a struct's cdata: its fields (the cdef's) are unknown to mypy
    fl.l_type, fl.l_whence, fl.l_start, fl.l_len, fl.l_pid = l_type, whence, start, length, 0
    return bytes(ffi.buffer(fl))


def unpack_flock(raw: bytes) -> tuple[int, int, int, int, int]:
    """(l_type, l_whence, l_start, l_len, l_pid) from the bytes fcntl(2) returned."""
    fl: Any = ffi.cast("struct flock *", ffi.from_buffer(raw))
    return fl.l_type, fl.l_whence, fl.l_start, fl.l_len, fl.l_pid
