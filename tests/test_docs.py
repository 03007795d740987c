"""The README's demo table and the demos agree."""
import os
import re

from osvirt.cli import demos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_table_has_a_row_for_every_demo_with_its_seed_section():
    readme = open(os.path.join(ROOT, "README.md")).read()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| \d+ \| `([\w-]+)` \| ([\d.]+) ", readme, re.M)}
    for name, module in demos().items():
        assert name in rows, f"README's demo table has no row for {name}"
        assert module.SEED.startswith(rows[name]), f"{name}: README says §{rows[name]}, the demo §{module.SEED}"
