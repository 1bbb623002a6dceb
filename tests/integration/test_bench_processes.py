"""The bench's helper processes do not outlive it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from simulators.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def _site_on_a_free_port(tmp_path: Path) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text((ROOT / "config" / "demo.yaml").read_text().replace(":48401/", f":{free_port()}/"))
    return site


def test_a_bench_killed_mid_run_leaves_no_helper_process(tmp_path: Path) -> None:
    """The bench's helpers (PLC simulators, the simulated floor) run in sessions of their own; killed
    with -9, the bench takes them along instead of leaving them to load the machine."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import asyncio, sys
        from pathlib import Path
        from controller.bench.processes import helper
        from simulators.broker import EmbeddedBroker

        async def main():
            async with EmbeddedBroker(data_dir=Path(sys.argv[2])) as broker:
                async with helper("simulated floor", "controller.cli", "sim", "--site", sys.argv[1],
                                  "--broker", broker.url, "--speed", "50", ready="floorctl sim:") as sims:
                    print(sims.pid, flush=True)
                    await asyncio.sleep(600)

        asyncio.run(main())
        """), str(_site_on_a_free_port(tmp_path)), str(tmp_path / "broker")], cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the simulated floor outlived the bench"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
