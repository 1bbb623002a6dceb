"""The example integrator test of docs/testing.md, copied out of the docs into an empty directory and
run with pytest from a fresh install of the floorctl wheel outside the checkout: `pip install floorctl`
is all it needs (the plugin comes through the pytest11 entry point, the demo site from the wheel)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.wheel import ROOT, run

pytestmark = pytest.mark.slow


def example_test() -> str:
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    section = text.split("## An example to copy", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/testing.md: no example test under 'An example to copy'"
    return match.group(1)


def test_the_documented_example_passes_from_a_fresh_install(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "integrator"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_floor.py").write_text(example_test(), encoding="utf-8")
    python = str(installed / "python")
    where = run([python, "-c", "import controller.testing.plugin as p; print(p.__file__)"], project, 30)
    assert not where.strip().startswith(str(ROOT)), where
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert re.search(r"\b3 passed\b", done.stdout), done.stdout[-2000:]
