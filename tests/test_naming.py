import os
import re
import stat

import pytest

from osvirt.naming import private_dir, unique_name


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
