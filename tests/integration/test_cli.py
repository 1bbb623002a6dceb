"""The command line as a user meets it: a bad site file is refused with the reason, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.test_site import ROOT, write_variant


def test_cli_refuses_bad_site_without_traceback(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda d: d["printers"].append({"id": "prn-1"}))
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "sim", "--site", str(path)],
                          check=False, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "duplicate id 'prn-1'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_refuses_a_site_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes((ROOT / "config" / "demo.yaml").read_text().replace("site: ", "site: Süd ", 1)
                     .encode("latin-1"))
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "sim", "--site", str(path)],
                          check=False, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert f"{path}: not UTF-8 text" in proc.stderr
    assert "Traceback" not in proc.stderr
