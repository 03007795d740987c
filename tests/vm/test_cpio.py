"""osvirt.vm.cpio: a newc initramfs built in Python, read back by GNU cpio and by a reader
written here from the format's description (buffer-format.rst), not from the writer."""
import os
import shutil
import stat
import subprocess

import pytest

from osvirt.vm import cpio


def read_newc(data):
    """[(name, fields, payload)] of a newc archive, up to and including TRAILER!!!:
    every header and name checked against the format, independently of osvirt.vm.cpio."""
    names = ["ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
             "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check"]
    out, pos = [], 0
    while True:
        assert pos % 4 == 0, f"entry at {pos} not 4-byte aligned"
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}: {data[pos:pos + 6]!r}"
        fields = {n: int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i, n in enumerate(names)}
        name_end = pos + 110 + fields["namesize"]
        assert data[name_end - 1] == 0, "name not NUL-terminated"
        name = data[pos + 110:name_end - 1].decode()
        body = name_end + (-name_end % 4)
        assert data[name_end:body] == b"\0" * (body - name_end)
        payload = data[body:body + fields["filesize"]]
        pos = body + fields["filesize"]
        pos += -pos % 4
        out.append((name, fields, payload))
        if name == "TRAILER!!!":
            assert pos == len(data), "bytes after the trailer"
            return out


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "etc" / "deep" / "er").mkdir(parents=True)
    (root / "bin" / "init").write_bytes(b"#!/bin/sh\necho hello\n")
    os.chmod(root / "bin" / "init", 0o755)
    (root / "etc" / "motd").write_text("welcome\n")
    os.chmod(root / "etc" / "motd", 0o640)
    (root / "etc" / "deep" / "er" / "odd").write_bytes(bytes(range(256)) * 3 + b"x")  # 769: padding needed
    (root / "etc" / "empty").write_bytes(b"")
    os.symlink("../bin/init", root / "etc" / "link")
    os.mkfifo(root / "etc" / "fifo")
    return root


def test_an_archive_by_hand_reads_back_field_by_field():
    a = cpio.Archive()
    a.add_dir("dev")
    a.add_device("dev/console", "c", 5, 1)
    a.add_file("init", b"abc", 0o755)
    a.add_symlink("sh", "init")
    entries = read_newc(a.to_bytes())
    assert [e[0] for e in entries] == ["dev", "dev/console", "init", "sh", "TRAILER!!!"]
    dev, console, init, sh, trailer = (e[1] for e in entries)
    assert stat.S_ISDIR(dev["mode"]) and dev["nlink"] == 2 and stat.S_IMODE(dev["mode"]) == 0o755
    assert stat.S_ISCHR(console["mode"]) and (console["rdevmajor"], console["rdevminor"]) == (5, 1)
    assert init["mode"] == stat.S_IFREG | 0o755 and init["filesize"] == 3 and entries[2][2] == b"abc"
    assert stat.S_ISLNK(sh["mode"]) and entries[3][2] == b"init"
    assert all(e[1]["uid"] == e[1]["gid"] == 0 and e[1]["check"] == 0 for e in entries)
    assert len({e[1]["ino"] for e in entries[:-1]}) == 4  # distinct inodes
    assert trailer["namesize"] == len("TRAILER!!!") + 1 and trailer["filesize"] == 0


def test_the_archive_refuses_what_the_kernel_would_misplace():
    a = cpio.Archive()
    with pytest.raises(ValueError, match="before its directory"):
        a.add_file("etc/motd", b"x")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        a.add_file("../escape", b"x")
    with pytest.raises(ValueError, match="empty path"):
        a.add_dir("/./")
    a.add_file("x", b"1")
    with pytest.raises(ValueError, match="already"):
        a.add_file("./x", b"2")
    with pytest.raises(ValueError, match="'c' or 'b'"):
        a.add_device("tty", "p", 4, 1)
    with pytest.raises(ValueError, match="8 hex digits"):
        cpio.Archive(uid=1 << 32).add_file("y", b"")


def test_a_directory_round_trips_through_the_reader_here(tree):
    archive = cpio.from_directory(tree, console=True)
    entries = {name: (fields, payload) for name, fields, payload in read_newc(archive.to_bytes())}
    names = list(entries)
    # each directory comes before what it holds
    for name in names:
        parent = name.rpartition("/")[0]
        if parent and name != "TRAILER!!!":
            assert names.index(parent) < names.index(name), (parent, name)
    for path in tree.rglob("*"):
        rel = str(path.relative_to(tree))
        fields, payload = entries[rel]
        st = os.lstat(path)
        assert fields["mode"] == st.st_mode, rel
        assert fields["uid"] == fields["gid"] == 0 and fields["mtime"] == 0
        if stat.S_ISREG(st.st_mode):
            assert payload == path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            assert payload.decode() == os.readlink(path)
    fields, _ = entries["dev/console"]
    assert stat.S_ISCHR(fields["mode"]) and (fields["rdevmajor"], fields["rdevminor"]) == (5, 1)
    assert set(names) == {str(p.relative_to(tree)) for p in tree.rglob("*")} | {"dev", "dev/console", "TRAILER!!!"}


def test_the_same_tree_gives_the_same_bytes(tree):
    assert cpio.from_directory(tree).to_bytes() == cpio.from_directory(tree).to_bytes()
    kept = read_newc(cpio.from_directory(tree, keep_mtime=True).to_bytes())
    assert dict((n, f["mtime"]) for n, f, _ in kept)["etc/motd"] == int(os.lstat(tree / "etc" / "motd").st_mtime)


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed here (.ci/run installs it on the host)")
def test_gnu_cpio_lists_and_extracts_it(tree, tmp_path):
    archive = tmp_path / "initramfs.cpio"
    cpio.from_directory(tree).write(archive)
    listing = subprocess.run(["cpio", "-t", "--quiet", "-F", str(archive)], capture_output=True, text=True, check=True)
    assert sorted(listing.stdout.split()) == sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "-F", str(archive)],
                   cwd=out, check=True, capture_output=True)
    for path in tree.rglob("*"):
        rel = path.relative_to(tree)
        copy = out / rel
        assert stat.S_IFMT(os.lstat(copy).st_mode) == stat.S_IFMT(os.lstat(path).st_mode), rel
        if path.is_symlink():
            assert os.readlink(copy) == os.readlink(path)
        elif path.is_file():
            assert copy.read_bytes() == path.read_bytes()
            assert stat.S_IMODE(os.stat(copy).st_mode) == stat.S_IMODE(os.stat(path).st_mode)
    # verbose listing: owner root, as the guest's root will see them
    verbose = subprocess.run(["cpio", "-tv", "--quiet", "--numeric-uid-gid", "-F", str(archive)],
                             capture_output=True, text=True, check=True)
    for line in verbose.stdout.splitlines():
        assert line.split()[2:4] == ["0", "0"], line


@pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar (libarchive-tools) is not installed")
def test_bsdtar_reads_it_as_newc(tree, tmp_path):
    archive = tmp_path / "initramfs.cpio"
    cpio.from_directory(tree).write(archive)
    listing = subprocess.run(["bsdtar", "-tvf", str(archive)], capture_output=True, text=True, check=True)
    assert len(listing.stdout.splitlines()) == len(list(tree.rglob("*")))


def test_a_socket_is_refused_with_its_name(tmp_path):
    import socket
    root = tmp_path / "r"
    root.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
        with pytest.raises(ValueError, match="sock.*socket"):
            cpio.from_directory(root)
    with pytest.raises(NotADirectoryError):
        cpio.from_directory(root / "nothing")
