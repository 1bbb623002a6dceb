"""`floorctl run --standby` needs PostgreSQL: on SQLite it says so and exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from simulators.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_standby_on_sqlite_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--standby", "--site", str(ROOT / "config" / "demo.yaml"), "--database-url",
                 f"sqlite:///{tmp_path / 'floor.db'}", "--port", str(free_port()),
                 "--data-dir", str(tmp_path)])
    assert code == 2
    assert "needs PostgreSQL" in capsys.readouterr().err
