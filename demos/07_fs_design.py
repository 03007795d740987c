"""What a filesystem's design looks like from a process, measured (seed §4.3.1, `design_filesystem`).

The article's `design_filesystem(path)` is empty, and a process cannot design
a filesystem anyway: mkfs did that, and the kernel runs it. What a program
can do is look at the design it got. This demo asks statfs and statvfs for
the type, block size and inode counts under the project's directory, /tmp
and /dev/shm; counts the free inodes that new files take (one each) and hard
links take (none on ext4; one each on tmpfs, which charges every name);
shows that a hard link is a second name for the same inode while a symlink
is an inode of its own, and that a directory's link count is 2 plus its
subdirectories; and makes a file with a 1 GiB hole, which holds almost no
blocks, whose data SEEK_DATA and SEEK_HOLE find exactly, and whose extents
the FIEMAP ioctl maps to disk blocks where the filesystem has any (ext4
does; tmpfs has no disk).

Usage: python demos/07_fs_design.py [--json]
"""
import errno
import os
import sys

from osvirt import fs
from osvirt.demo import Demo, run
from osvirt.naming import private_dir

NAME = "fs-design"
SEED = "4.3.1 design_filesystem"
SUMMARY = "the filesystem under a path, inodes and link counts, sparse files' holes and extents"

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 1 << 30
TRIES = 8  # other processes create files on the same filesystems: look for a quiet window
BATCH = 10  # names made per measurement of f_ffree: a short window, which others' files rarely enter


def _inode_cost(directory, prefix, make, theory, tries=TRIES):
    """How many free inodes `make(path)` of BATCH new names took (f_ffree before minus after),
    measured again with new names until it equals `theory`; every drop seen."""
    drops = []

    def batch():
        # statvfs alone: fs.filesystem also reads mountinfo, which would widen the window.
        before = os.statvfs(directory).f_ffree
        for i in range(BATCH):
            make(os.path.join(directory, f"{prefix}{len(drops)}-{i}"))
        drops.append(before - os.statvfs(directory).f_ffree)
        return drops[-1]

    Demo.retry(batch, lambda drop: drop == theory, tries)
    return drops


def _tries(drops):
    return f"after {len(drops)} tries, drops seen {drops}" if len(drops) > 1 else "first try"


def _sparse(directory):
    """4 KiB of data at 0, a 1 GiB hole, 4 KiB at 1 GiB."""
    path = os.path.join(directory, "sparse")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fs.pwrite(fd, b"a" * 4096, 0)
        fs.pwrite(fd, b"b" * 4096, GiB)
    finally:
        os.close(fd)
    return path


def body(demo):
    tmp = demo.own(private_dir())
    shm = demo.own(private_dir("/dev/shm"))

    with demo.step("the filesystems under the project, /tmp and /dev/shm",
                   asked="statfs(path).f_type; statvfs(path); /proc/self/mountinfo"):
        for path in (PROJECT, "/tmp", "/dev/shm"):
            info = fs.filesystem(path)
            demo.say(f"{path}: f_type {info.magic:#x} = {info.type}, mounted as {info.mount_type} "
                     f"on {info.mount_point}; block {info.block_size} B, "
                     f"{info.blocks_total} blocks ({info.blocks_free} free), "
                     f"{info.inodes_total} inodes ({info.inodes_free} free)")
            demo.check(f"{path}: statfs's magic names the mounted filesystem",
                       expected=f"the type /proc/self/mountinfo gives ({info.mount_type})",
                       observed=f"f_type {info.magic:#x} ({info.type})",
                       ok=info.mount_type in info.type.split("/"))

    with demo.step("the seed's design_filesystem(path): the inodes mkfs made, taken by files, not by links",
                   asked=f"statvfs(dir).f_files and f_ffree around {BATCH} open(O_CREAT|O_EXCL), "
                         f"then around {BATCH} link() to one file"):
        demo.say("A process cannot design the filesystem it runs on: the article's "
                 "design_filesystem(\"/path/to/filesystem\") can only inspect one. ext4's inode table was "
                 "sized by mkfs (tmpfs sets its inode limit at mount time): a new file takes one of its free "
                 "inodes, a hard link only adds a directory entry naming an inode that exists.")
        for where in (tmp, shm):
            before = fs.filesystem(where)
            kind = before.type
            if not before.inodes_total:
                demo.skip(f"{kind}: inodes taken ({where})", "f_files is 0: no inode limit to count down")
                continue
            files = _inode_cost(where, "new", lambda p: open(p, "x").close(), BATCH)
            target = os.path.join(where, "target")
            open(target, "x").close()
            # tmpfs charges every name an inode slot: its dentries pin memory (mm/shmem.c, shmem_link).
            per_link = 1 if kind == "tmpfs" else 0
            links = _inode_cost(where, "link", lambda p: os.link(target, p), per_link * BATCH)
            after = fs.filesystem(where)
            demo.check(f"{kind}: free inodes taken by {BATCH} new files",
                       expected=f"{BATCH} (f_ffree - {BATCH}), f_files stays {before.inodes_total}",
                       observed=f"{files[-1]} ({_tries(files)}), f_files {after.inodes_total}",
                       ok=files[-1] == BATCH and after.inodes_total == before.inodes_total)
            demo.check(f"{kind}: free inodes taken by {BATCH} hard links to one file",
                       expected=f"{per_link * BATCH}" + (" (tmpfs counts each link against its inode limit)"
                                                         if per_link else " (a link is only a directory entry)"),
                       observed=f"{links[-1]} ({_tries(links)}); the file's st_nlink {fs.file_info(target).links}",
                       ok=links[-1] == per_link * BATCH)

    with demo.step("hard links share an inode, a symlink has its own", asked="link(); symlink(); stat(); lstat()"):
        a, b, s = (os.path.join(tmp, n) for n in ("file", "hardlink", "symlink"))
        with open(a, "x") as f:
            f.write("Hello, World!")
        alone = fs.file_info(a)
        os.link(a, b)
        os.symlink(a, s)
        first, second = fs.file_info(a), fs.file_info(b)
        link = fs.file_info(s, follow_symlinks=False)
        demo.say(f"file inode {first.inode}, hardlink inode {second.inode}, symlink inode {link.inode} "
                 f"(size {link.size}: the length of the path it holds)")
        demo.check("a hard link is the same inode", expected=f"inode {alone.inode} for both names",
                   observed=f"{first.inode} and {second.inode}", ok=first.inode == second.inode == alone.inode)
        demo.check("a hard link raises st_nlink", expected="1 -> 2",
                   observed=f"{alone.links} -> {first.links}", ok=(alone.links, first.links) == (1, 2))
        demo.check("a symlink is an inode of its own", expected=f"an inode other than {first.inode}, nlink 1",
                   observed=f"inode {link.inode}, nlink {link.links}, kind {link.kind}",
                   ok=link.inode != first.inode and link.links == 1 and link.kind == "symlink")

    with demo.step("a directory's link count is 2 + its subdirectories", asked="mkdir(); stat().st_nlink"):
        d = os.path.join(tmp, "dir")
        os.mkdir(d)
        counts = [fs.file_info(d).links]
        for i in range(3):
            os.mkdir(os.path.join(d, f"sub{i}"))
            counts.append(fs.file_info(d).links)
        open(os.path.join(d, "file"), "x").close()
        counts.append(fs.file_info(d).links)
        demo.say("Its name in the parent and its own '.' make 2; each subdirectory's '..' adds one; a file adds none.")
        demo.check("nlink after 0..3 subdirectories, then a file", expected="[2, 3, 4, 5, 5]",
                   observed=str(counts), ok=counts == [2, 3, 4, 5, 5])

    sparse = {}
    with demo.step("a file with a 1 GiB hole", asked="pwrite(4 KiB at 0); pwrite(4 KiB at 1 GiB); lseek(SEEK_DATA/SEEK_HOLE)"):
        for where in (tmp, shm):
            path = sparse[where] = _sparse(where)
            info, kind = fs.file_info(path), fs.filesystem(where).type
            demo.check(f"{kind}: blocks held by a {info.size}-byte file with 8 KiB of data",
                       expected="8 KiB, a little metadata at most (<= 64 KiB)",
                       observed=f"{info.allocated_bytes} B (st_blocks {info.blocks_512})",
                       ok=info.allocated_bytes <= 64 * 1024)
            data, holes = fs.data_ranges(path), fs.hole_ranges(path)
            demo.check(f"{kind}: SEEK_DATA/SEEK_HOLE find exactly the written ranges",
                       expected=f"data {[(0, 4096), (GiB, GiB + 4096)]}, hole {[(4096, GiB)]}",
                       observed=f"data {data}, hole {holes}",
                       ok=data == [(0, 4096), (GiB, GiB + 4096)] and holes == [(4096, GiB)])

    with demo.step("the extents behind the data", asked="ioctl(fd, FS_IOC_FIEMAP, FIEMAP_FLAG_SYNC)"):
        for where, path in sparse.items():
            info = fs.filesystem(where)
            kind, block = info.type, info.block_size
            try:
                extents = fs.fiemap(path)
            except OSError as e:
                name = "EOPNOTSUPP" if e.errno == errno.EOPNOTSUPP else errno.errorcode.get(e.errno, e.errno)
                demo.skip(f"FIEMAP on {kind} ({where})", f"{name}: {e.strerror}"
                          + ("; tmpfs keeps pages in memory, there are no disk blocks to map"
                             if kind == "tmpfs" else ""))
                continue
            for e in extents:
                demo.say(f"logical {e.logical} -> physical {e.physical} (block {e.physical // block}), "
                         f"{e.length} B, flags {sorted(e.flags) or '-'}")
            demo.check(f"{kind}: one extent per written range, on disk",
                       expected="logical 0 and 1 GiB, 4096 B each, physical addresses, the last marked LAST",
                       observed=", ".join(f"{e.logical}+{e.length}@{e.physical}" for e in extents),
                       ok=[(e.logical, e.length) for e in extents] == [(0, 4096), (GiB, 4096)]
                       and all(e.physical > 0 for e in extents) and "LAST" in extents[-1].flags)


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
