"""osvirt holds to `mypy --strict` (issue 15).

pyproject.toml's [tool.mypy] says what is checked (its `files`: osvirt and
the stubs of posix_ipc and sysv_ipc), and how strictly; this test runs mypy
with that configuration. The README's Python examples type-check under the
same configuration.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mypy(*args):
    # --cache-dir=/dev/null: mypy writes no cache, so the check leaves nothing
    # behind and runs wherever the tree is not ours to write (CI's uid 65534
    # copy is, but an installed or read-only tree is not).
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "pyproject.toml"),
                           "--cache-dir=/dev/null", *args], cwd=ROOT, capture_output=True, text=True)


def test_osvirt_passes_mypy_strict():
    result = mypy()
    assert result.returncode == 0, f"mypy --strict over osvirt:\n{result.stdout}{result.stderr}"


def test_readme_examples_type_check(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"^```python\n(.*?)^```", f.read(), re.M | re.S)
    assert blocks, "README.md has no ```python example"
    paths = []
    for i, block in enumerate(blocks):
        paths.append(tmp_path / f"readme_example_{i}.py")
        paths[-1].write_text(block)
    result = mypy(*map(str, paths))
    assert result.returncode == 0, f"mypy --strict over README.md's examples:\n{result.stdout}{result.stderr}"
