"""Every memory test leaves the machine's swap as it found it."""
import pytest

from osvirt.memory import swaps


@pytest.fixture(autouse=True)
def no_swap_file_left_active():
    before = swaps()
    yield
    assert swaps() == before, f"swap left active: {sorted(set(swaps()) - set(before))}"
