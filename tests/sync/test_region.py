import os
import sys

import posix_ipc
import pytest

from osvirt.process import Children
from osvirt.sync import SharedRegion


def test_an_anonymous_region_is_shared_with_a_forked_child():
    with SharedRegion(64) as region:
        assert region.name is None and "MAP_ANONYMOUS" in region.where
        view = region.view("q")
        with Children() as kids:
            assert kids.wait(kids.fork(lambda: view.__setitem__(0, 1234))) == 0
        assert view[0] == 1234                 # the child's store, read back here


def test_a_named_region_lives_in_dev_shm_and_an_unrelated_process_writes_into_it():
    with SharedRegion(64, named=True) as region:
        path = f"/dev/shm{region.name}"
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert region.where.startswith(path)
        script = ("import sys\nfrom osvirt.sync import SharedRegion\n"
                  "r = SharedRegion.open(sys.argv[1]); r.view('q')[1] = 99; r.close()\n")
        with Children() as kids:
            assert kids.spawn([sys.executable, "-c", script, region.name]).wait(30) == 0
        assert region.view("q")[1] == 99
        assert os.path.exists(path)            # the opener only unmapped
    assert not os.path.exists(path)            # the creator unlinked it


def test_sizes_round_up_to_64_bytes_and_the_opener_sees_the_same():
    with SharedRegion(10, named=True, metadata=7) as region:
        opened = SharedRegion.open(region.name)
        assert region.size_bytes == opened.size_bytes == 64
        assert opened.metadata == 7 and opened.creator_pid == os.getpid()
        opened.close()


def test_a_forked_childs_close_does_not_unlink():
    with SharedRegion(8, named=True) as region:
        with Children() as kids:
            assert kids.wait(kids.fork(region.close)) == 0
        assert os.path.exists(f"/dev/shm{region.name}")


@pytest.mark.parametrize("size", [0, -1, 1.5, "8", True])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="size_bytes"):
        SharedRegion(size)


@pytest.mark.parametrize("name", ["no-slash", "/a/b", "/", 5])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="shm_open"):
        SharedRegion.open(name)


def test_opening_a_missing_name_is_the_kernels_enoent():
    with pytest.raises(posix_ipc.ExistentialError):
        SharedRegion.open("/osvirt-no-such-region")


def test_a_foreign_shm_object_is_refused_without_being_used():
    shm = posix_ipc.SharedMemory("/osvirt-foreign-test", posix_ipc.O_CREX, mode=0o600, size=4096)
    try:
        with pytest.raises(ValueError, match="nothing initialised"):
            SharedRegion.open(shm.name)
    finally:
        shm.close_fd()
        shm.unlink()


def test_views_are_released_by_close_and_use_after_close_is_value_error():
    region = SharedRegion(16)
    view = region.view("q")
    region.close()
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError, match="after close"):
        region.view()
    region.close()                             # idempotent


def test_a_view_in_a_format_that_does_not_fit_is_value_error():
    with SharedRegion(64) as region:
        with pytest.raises(ValueError, match="cannot view"):
            region.view("Z")
