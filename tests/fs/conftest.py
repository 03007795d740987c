import pytest

from osvirt.naming import private_dir


@pytest.fixture
def tmp():
    """A private directory (0700, named osvirt-*) in the temp dir, removed with all it holds."""
    with private_dir() as path:
        yield path
