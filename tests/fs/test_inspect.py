import errno
import os
import re
import shutil
import subprocess

import pytest

from osvirt import fs
from osvirt.naming import unique_name

GiB = 1 << 30


def _stat_f(path):
    """coreutils' view: `stat -f` type (hex), block size, total blocks, total inodes."""
    out = subprocess.run(["stat", "-f", "-c", "%t %S %b %c", path], capture_output=True, text=True, check=True)
    t, bsize, blocks, inodes = out.stdout.split()
    return int(t, 16), int(bsize), int(blocks), int(inodes)


@pytest.mark.parametrize("where", [".", "/dev/shm", "tmp"])
def test_filesystem_agrees_with_stat_f(where, tmp):
    path = tmp if where == "tmp" else where
    info = fs.filesystem(path)
    assert (info.magic, info.block_size, info.blocks_total, info.inodes_total) == _stat_f(path)
    assert info.type == fs.fs_type_name(info.magic)
    assert info.mount_type is not None and os.path.realpath(path).startswith(info.mount_point)


def test_dev_shm_is_tmpfs_by_its_magic():
    info = fs.filesystem("/dev/shm")
    assert info.type == "tmpfs" and info.mount_type == "tmpfs" and info.magic == 0x01021994


def _mount_points():
    with open("/proc/self/mountinfo") as f:
        return sorted({line.split()[4].replace("\\040", " ") for line in f})


def test_every_known_magic_is_named_as_the_kernel_names_its_mount():
    """Each mount here whose magic osvirt knows: the name is mountinfo's type (overlay, not
    overlayfs: a container's root filesystem)."""
    named = {}
    for point in _mount_points():
        try:
            info = fs.filesystem(point)
        except OSError:  # a mount this user may not stat (masked, another's 0700 directory)
            continue
        if not info.type.startswith("unknown") and info.mount_point == point:
            named[point] = (info.mount_type, info.type)
    assert named
    same_magic = {"devtmpfs": "tmpfs"}  # devtmpfs is a tmpfs (or ramfs) instance
    wrong = {point: (mount_type, name) for point, (mount_type, name) in named.items()
             if same_magic.get(mount_type, mount_type.split(".")[0]) not in name.split("/")}  # fuse.sshfs is fuse
    assert not wrong, f"mountinfo type vs osvirt's name: {wrong}"


def test_bad_paths_raise_file_not_found_naming_the_path(tmp):
    missing = os.path.join(tmp, "missing")
    for call in (fs.filesystem, fs.file_info, fs.data_ranges, fs.hole_ranges, fs.fiemap):
        with pytest.raises(FileNotFoundError) as info:
            call(missing)
        assert info.value.filename == missing and info.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="NUL"):
        fs.filesystem("a\0b")


def test_a_new_file_uses_one_inode(tmp):
    # Other processes create and remove files on the same filesystem: retry until a quiet window.
    deltas = []
    for attempt in range(8):
        before = fs.filesystem(tmp).inodes_free
        path = os.path.join(tmp, f"f{attempt}")
        open(path, "x").close()
        deltas.append(before - fs.filesystem(tmp).inodes_free)
        if deltas[-1] == 1:
            break
    assert deltas[-1] == 1, f"free-inode drops seen: {deltas}"


def test_hard_link_shares_the_inode_and_counts_links_symlink_has_its_own(tmp):
    a, b, s = (os.path.join(tmp, n) for n in "abs")
    with open(a, "w") as f:
        f.write("data")
    first = fs.file_info(a)
    assert first.links == 1 and first.kind == "file" and first.inode == os.stat(a).st_ino
    os.link(a, b)
    assert fs.file_info(b).inode == first.inode
    assert fs.file_info(a).links == fs.file_info(b).links == 2
    os.symlink(a, s)
    link = fs.file_info(s, follow_symlinks=False)
    assert link.kind == "symlink" and link.inode != first.inode and link.links == 1
    assert link.size == len(a)  # a symlink's size is the length of the path it holds
    assert fs.file_info(s).inode == first.inode  # followed: the target's inode
    os.unlink(a)
    assert fs.file_info(b).links == 1


def test_directory_link_count_is_two_plus_subdirectories(tmp):
    d = os.path.join(tmp, "d")
    os.mkdir(d)
    assert fs.file_info(d).links == 2  # its name in the parent, and its own "."
    for i in range(3):
        os.mkdir(os.path.join(d, f"sub{i}"))  # each subdirectory's ".." links to d
    open(os.path.join(d, "file"), "x").close()  # a file adds none
    assert fs.file_info(d).links == 5


@pytest.fixture(params=["tmp", "/dev/shm"])
def sparse(request, tmp):
    """4 KiB of data at 0, a 1 GiB hole, 4 KiB of data at 1 GiB."""
    path = os.path.join(tmp if request.param == "tmp" else "/dev/shm", unique_name("sparse"))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.pwrite(fd, b"a" * 4096, 0)
        os.pwrite(fd, b"b" * 4096, GiB)
        yield path
    finally:
        os.close(fd)
        os.unlink(path)


def test_a_1gib_hole_holds_no_blocks_and_seek_finds_exactly_the_data(sparse):
    info = fs.file_info(sparse)
    assert info.size == GiB + 4096
    assert info.allocated_bytes <= 64 * 1024  # 8 KiB of data, a little metadata at most
    assert fs.data_ranges(sparse) == [(0, 4096), (GiB, GiB + 4096)]
    assert fs.hole_ranges(sparse) == [(4096, GiB)]


def test_an_empty_file_has_no_data_and_no_holes(tmp):
    path = os.path.join(tmp, "empty")
    open(path, "x").close()
    assert fs.data_ranges(path) == [] and fs.hole_ranges(path) == []


def _filefrag(path):
    """filefrag -v's extents as (logical, physical) in blocks, and the block size."""
    tool = shutil.which("filefrag", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if tool is None:
        pytest.skip("filefrag (e2fsprogs) not installed")
    out = subprocess.run([tool, "-v", path], capture_output=True, text=True, check=True).stdout
    block = int(re.search(r"blocks of (\d+) bytes", out)[1])
    rows = re.findall(r"^\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+)\.\.", out, re.M)
    return [(int(lo), int(ph)) for lo, ph in rows], block


def test_fiemap_lists_the_extents_where_supported_and_says_why_not(sparse):
    if fs.filesystem(sparse).type == "tmpfs":
        with pytest.raises(OSError) as info:
            fs.fiemap(sparse)
        assert info.value.errno == errno.EOPNOTSUPP and "tmpfs does not map extents" in str(info.value)
        return
    try:
        extents = fs.fiemap(sparse)
    except OSError as e:
        pytest.skip(f"{fs.filesystem(sparse).type} under the temp dir refuses FIEMAP: {errno.errorcode[e.errno]}")
    assert [(e.logical, e.length) for e in extents] == [(0, 4096), (GiB, 4096)]
    assert "LAST" in extents[-1].flags and "LAST" not in extents[0].flags
    assert all(e.physical > 0 and "DELALLOC" not in e.flags for e in extents)  # FIEMAP_FLAG_SYNC flushed them
    rows, block = _filefrag(sparse)
    assert rows == [(e.logical // block, e.physical // block) for e in extents]
    assert fs.fiemap(sparse, extent_count=1) == extents[:1]  # room for one: the kernel fills one


def test_fiemap_extent_count_is_checked_before_the_ioctl(sparse):
    with pytest.raises(ValueError, match="extent_count"):
        fs.fiemap(sparse, extent_count=-1)
