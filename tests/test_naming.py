import os
import re
import stat

import pytest

from osvirt.naming import private_dir, replacing, unique_name
from osvirt.process import Children


def test_unique_name_carries_pid_and_randomness():
    a, b = unique_name(), unique_name("fifo")
    assert re.fullmatch(rf"osvirt-{os.getpid()}-[0-9a-f]{{8}}", a)
    assert re.fullmatch(rf"osvirt-{os.getpid()}-[0-9a-f]{{8}}-fifo", b)
    assert a != unique_name()


@pytest.mark.parametrize("bad", ["a/b", "nul\0"])
def test_unique_name_rejects_path_separators(bad):
    with pytest.raises(ValueError, match="unique_name"):
        unique_name(bad)


def test_private_dir_is_0700_and_removed_with_its_contents():
    with private_dir() as d:
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert os.path.basename(d).startswith(f"osvirt-{os.getpid()}-")
        open(os.path.join(d, "f"), "w").close()
    assert not os.path.exists(d)


def test_private_dir_is_removed_on_exception():
    with pytest.raises(RuntimeError):
        with private_dir() as d:
            raise RuntimeError
    assert not os.path.exists(d)


def test_private_dir_is_left_alone_by_a_forked_childs_copy():
    context = private_dir()
    d = context.__enter__()
    open(os.path.join(d, "f"), "w").close()
    with Children() as kids:
        # The child closes its copy of the context (as its garbage collector would).
        pid = kids.fork(lambda: context.__exit__(None, None, None) or (0 if os.path.isdir(d) else 3))
        assert kids.wait(pid, timeout_s=10) == 0  # the directory was still there after the child's exit ran
    assert sorted(os.listdir(d)) == ["f"]  # the parent's directory and what it holds
    context.__exit__(None, None, None)
    assert not os.path.exists(d)


def test_a_ctrl_c_while_the_directory_is_made_still_removes_it(monkeypatch):
    import signal

    made = []
    real_mkdir = os.mkdir

    def mkdir_then_ctrl_c(path, mode):
        real_mkdir(path, mode)
        made.append(path)
        os.kill(os.getpid(), signal.SIGINT)  # arrives before private_dir owns the directory

    monkeypatch.setattr(os, "mkdir", mkdir_then_ctrl_c)
    # Python's own handler, even where the suite was started with SIGINT ignored (a background job).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with private_dir():
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert made and not os.path.exists(made[0])


def test_replacing_renames_over_the_file_at_the_end_and_leaves_it_whole_on_an_exception():
    with private_dir() as d:
        path = os.path.join(d, "state")
        with open(path, "wb") as f:
            f.write(b"old")
        with replacing(path) as f:
            f.write(b"new, ")
            assert open(path, "rb").read() == b"old"  # a reader sees the old file until the rename
            assert os.path.basename(f.name).startswith(".state.osvirt-")
            f.write(b"whole")
        assert open(path, "rb").read() == b"new, whole"
        with pytest.raises(RuntimeError):
            with replacing(path) as f:
                f.write(b"half")
                raise RuntimeError("interrupted")
        assert open(path, "rb").read() == b"new, whole" and os.listdir(d) == ["state"]
