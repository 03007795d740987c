import errno
import os
import stat

import pytest

from osvirt import env, fs
from osvirt.process import Children

NOBODY = 65534


def test_current_umask_reads_without_changing():
    with fs.umask(0o027):
        assert fs.current_umask() == 0o027
        assert fs.current_umask() == 0o027


def test_umask_decides_a_new_files_mode_and_is_restored(tmp):
    before = fs.current_umask()
    for mask, requested in ((0o022, 0o666), (0o077, 0o666), (0o027, 0o777), (0o000, 0o640)):
        with fs.umask(mask) as previous:
            assert previous == before
            path = os.path.join(tmp, f"f{mask:o}")
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, requested))
            directory = os.path.join(tmp, f"d{mask:o}")
            os.mkdir(directory, requested)
        assert stat.S_IMODE(os.stat(path).st_mode) == fs.new_file_mode(requested, mask)
        assert stat.S_IMODE(os.stat(directory).st_mode) == fs.new_file_mode(requested, mask)
    assert fs.current_umask() == before
    assert fs.new_file_mode(0o666, 0o022) == 0o644
    with pytest.raises(ValueError):
        fs.new_file_mode(0o10000, 0)
    with pytest.raises(ValueError):
        with fs.umask(-1):
            pass


def _open_as(uid, path):
    """In a child: become uid, open path for reading; 0, or the errno (as exit code)."""
    fs.drop_to(uid, uid)
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as e:
        return e.errno
    return 0


def test_unsearchable_ancestor_names_the_directory_that_refuses_search(tmp):
    inner = os.path.join(tmp, "inner")
    os.mkdir(inner, 0o755)
    os.chmod(tmp, 0o700)
    blocked = fs.unsearchable_ancestor(os.path.join(inner, "file"))
    assert blocked is not None and os.path.commonpath([blocked, tmp]) == blocked
    os.chmod(tmp, 0o711)
    assert fs.unsearchable_ancestor(os.path.join(inner, "file")) in (None, *_ancestors(tmp))


def _ancestors(path):
    parent = os.path.dirname(path)
    return [] if parent == path else [parent, *_ancestors(parent)]


def test_searchable_dir_is_0711_and_reachable_by_others():
    with fs.searchable_dir() as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o711
        assert os.path.basename(path).startswith("osvirt-")
        assert fs.unsearchable_ancestor(os.path.join(path, "file")) is None
    assert not os.path.exists(path)


@pytest.mark.needs("setuid")
def test_another_uid_is_refused_a_0600_file_the_owner_reads():
    with fs.searchable_dir() as tmp, Children() as kids:
        path = os.path.join(tmp, "secret")
        with open(path, "x") as f:
            f.write("mine")
        os.chmod(path, 0o600)
        assert open(path).read() == "mine"
        assert kids.wait(kids.fork(_open_as, NOBODY, path)) == errno.EACCES
        os.chmod(path, 0o604)  # "other" may read now
        assert kids.wait(kids.fork(_open_as, NOBODY, path)) == 0
        os.chmod(tmp, 0o700)  # the file is readable, but the path is not searchable
        assert kids.wait(kids.fork(_open_as, NOBODY, path)) == errno.EACCES


@pytest.mark.needs("not_cap_dac_override", "not_cap_dac_read_search")  # either would let a read through
def test_mode_000_refuses_even_the_owner_without_cap_dac_override(tmp):
    path = os.path.join(tmp, "locked")
    open(path, "x").close()
    os.chmod(path, 0o000)
    with pytest.raises(PermissionError):
        open(path)
    assert os.stat(path).st_uid == os.geteuid()


def _drop_and_report(uid):
    try:
        fs.drop_to(uid, uid)
    except PermissionError as e:
        return 100 + e.errno if "needs CAP_SETGID" in str(e) else 1
    return 0


def test_drop_to_without_the_capabilities_says_which(tmp):
    if env.can("setuid"):
        pytest.skip("this process holds CAP_SETGID and CAP_SETUID: drop_to succeeds")
    with Children() as kids:
        assert kids.wait(kids.fork(_drop_and_report, NOBODY)) == 100 + errno.EPERM
    with pytest.raises(ValueError):
        fs.drop_to(-1, 0)
