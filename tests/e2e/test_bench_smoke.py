"""`floorctl bench --json` runs every benchmark end to end (in its tiny size) and reports every figure.

The figures of a tiny run mean nothing and are never compared with anything: speed is not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.bench.report import lookup

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = (
    "opcua.bare_p50_ms", "opcua.bare_p99_ms", "opcua.ctl_p50_ms", "opcua.ctl_p99_ms",
    "mqtt.bare_p50_ms", "mqtt.bare_p99_ms", "mqtt.ctl_p50_ms", "mqtt.ctl_p99_ms",
    "divert.held_per_s", "divert.p99_ms", "surge.orders_per_s", "writer.sqlite_rows_per_s",
    "writer.stall_p99_ms", "memory.rss_mb_before", "memory.rss_mb_after",
)


def test_bench_json_has_every_figure() -> None:
    env = {**os.environ, "FLOORCTL_BENCH_TINY": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "controller.cli", "bench", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)  # the one JSON object is all there is on stdout
    assert results["profile"] == "tiny"
    errors = {key: value["error"] for key, value in results.items() if isinstance(value, dict) and "error" in value}
    assert errors == {}
    missing = [path for path in REQUIRED if not isinstance(lookup(results, path), int | float)]
    assert missing == []
    assert results["machine"]["nproc"] >= 1
    # Every timing row the controller path produced reached the database.
    assert results["mqtt"]["ctl"]["timing_rows_written"] == results["mqtt"]["ctl"]["commands_sent"]
    assert results["opcua"]["ctl"]["timing_rows_written"] == results["opcua"]["ctl"]["commands_sent"]
    assert results["memory"]["shipped"] == results["memory"]["orders"]
    assert "bench [" in done.stderr  # the progress bar goes to stderr, never into the JSON
