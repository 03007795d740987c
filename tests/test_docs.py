"""The README's tables agree with the demos and the bench's primitives."""
import os
import re

from osvirt.bench import LOOP, PRIMITIVES
from osvirt.cli import demos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_table_has_a_row_for_every_demo_with_its_seed_section():
    readme = open(os.path.join(ROOT, "README.md")).read()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| \d+ \| `([\w-]+)` \| ([\d.]+) ", readme, re.M)}
    for name, module in demos().items():
        assert name in rows, f"README's demo table has no row for {name}"
        assert module.SEED.startswith(rows[name]), f"{name}: README says §{rows[name]}, the demo §{module.SEED}"


def test_readme_bench_table_has_a_row_for_every_primitive_and_no_other():
    readme = open(os.path.join(ROOT, "README.md")).read()
    rows = re.findall(r"^\| `([\w-]+)` \| (?:-|\d+) \| ", readme, re.M)
    assert rows == [p.name for p in PRIMITIVES if p is not LOOP], "README's bench table is not one run of `osvirt bench`"
