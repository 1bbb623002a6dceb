"""floorctl installed from a wheel, away from the checkout: `floorctl bench --json` runs every
benchmark end to end (in its tiny size) and reports every figure. The figures of a tiny run mean
nothing and are never compared with anything: speed is not a test.

The wheel and its venv: tests/e2e/wheel.py (built once per session, the `installed` fixture).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from controller.bench.report import lookup
from tests.e2e.wheel import ROOT, run

pytestmark = pytest.mark.slow

REQUIRED = (
    "opcua.bare_p50_ms", "opcua.bare_p99_ms", "opcua.ctl_p50_ms", "opcua.ctl_p99_ms",
    "mqtt.bare_p50_ms", "mqtt.bare_p99_ms", "mqtt.ctl_p50_ms", "mqtt.ctl_p99_ms",
    "divert.held_per_s", "divert.p99_ms", "surge.orders_per_s", "writer.sqlite_rows_per_s",
    "writer.stall_p99_ms", "memory.rss_mb_before", "memory.rss_mb_after",
    "whatif.hour_wall_s", "whatif.orders",
)
PROBE = """
import json, sys
import controller
from controller.cli import default_site
from controller.config_files import config_file
print(json.dumps({"controller": controller.__file__, "path": sys.path,
                  "files": [str(config_file(n)) for n in ("peak.yaml", "demo.yaml", "mosquitto.conf")],
                  "demo_default": str(default_site())}))
"""


def test_wheel_installed_bench_runs_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["PATH"] = os.pathsep.join([str(installed), "/usr/sbin", env.get("PATH", "")])  # mosquitto
    venv = installed.parent

    probe = json.loads(run([str(installed / "python"), "-c", PROBE], tmp_path, timeout=60, env=env))
    assert Path(probe["controller"]).is_relative_to(venv), probe["controller"]
    assert str(ROOT) not in probe["path"]  # "" is there (python -c): the test's directory
    for path in (*probe["files"], probe["demo_default"]):
        assert Path(path).is_relative_to(venv / "share" / "floorctl" / "config"), path

    env["FLOORCTL_BENCH_TINY"] = "1"
    out = run([str(installed / "floorctl"), "bench", "--json"], tmp_path, timeout=150, env=env)
    results = json.loads(out)
    assert results["profile"] == "tiny"
    errors = {key: value["error"] for key, value in results.items()
              if isinstance(value, dict) and "error" in value}
    assert errors == {}
    missing = [path for path in REQUIRED if not isinstance(lookup(results, path), int | float)]
    assert missing == []
    assert results["mqtt"]["ctl_p50_ms"] > 0 and results["opcua"]["ctl_p50_ms"] > 0
    assert results["surge"]["orders_per_s"] > 0
    assert results["memory"]["shipped"] == results["memory"]["orders"]
    assert results["whatif"]["shipped"] == results["whatif"]["orders"] > 0  # the example ships with the wheel
    assert results["machine"]["nproc"] >= 1
