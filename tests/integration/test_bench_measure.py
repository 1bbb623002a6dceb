"""The bench's CPU meter reads the threads of this process from the operating system; the surge
benchmark writes its site file; the growth step generates floors of any size and, run at a tiny size,
reports every figure."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import yaml

from controller.bench import growth
from controller.bench.context import BenchContext, Profile
from controller.bench.generated_floor import floor_devices, generated_floor
from controller.bench.measure import CpuMeter
from controller.bench.report import growth_table
from controller.bench.surge import SPEED, fast_site, surge_site
from controller.site import load_site


def test_cpu_meter_names_the_busy_thread() -> None:
    meter = CpuMeter()
    meter.start()
    spun = threading.Event()
    release = threading.Event()

    def spin() -> None:
        until = time.perf_counter() + 0.3
        while time.perf_counter() < until:
            pass
        spun.set()
        release.wait()  # a thread's CPU is only visible while it lives

    worker = threading.Thread(target=spin, name="bench-spinner")
    worker.start()
    spun.wait()
    shares = {s.name: s.percent for s in meter.stop()}
    release.set()
    worker.join()
    assert shares.get("controller thread bench-spinner", 0) > 5
    assert "other processes on the machine" in shares


def test_surge_site_keeps_real_time_budgets(tmp_path: Path) -> None:
    ctx = BenchContext(Profile.named("tiny"), tmp_path, None)
    path = surge_site(ctx, "mqtt://127.0.0.1:1999")
    site = load_site(path)
    original = yaml.safe_load(ctx.peak_path.read_text())
    assert site.broker.url == "mqtt://127.0.0.1:1999"
    assert site.simulation.operator.mean_s == 0 and site.simulation.packer.mean_s == 0
    assert site.simulation.printer.print_s == 0
    for sorter, before in zip(site.sorters, original["sorters"]):
        assert sorter.scan_to_divert_m / SPEED == before["scan_to_divert_m"]
    assert site.timeouts.pick_s / SPEED == original["timeouts"]["pick_s"]
    assert site.timeouts.ack_s == original["timeouts"]["ack_s"]  # never divided by the speed
    assert {p.endpoint for p in site.plcs}.isdisjoint({p["endpoint"] for p in original["plcs"]})


def test_generated_floor_has_the_devices_asked_for(tmp_path: Path) -> None:
    for devices in (20, 258, 1000):
        assert floor_devices(generated_floor(devices)) == devices
    site = load_site(fast_site(generated_floor(258), "mqtt://127.0.0.1:1999", tmp_path / "258.yaml"))
    assert len(site.plcs) == 2 and len(site.pick_lights) == 258 - 2 * 9


async def test_growth_step_reports_every_figure(tmp_path: Path) -> None:
    """The step at a tiny size: one small generated floor, two numbers of active orders, short windows.
    The figures mean nothing; each must be there and be a number."""
    profile = dataclasses.replace(Profile.named("tiny"), growth_floors=("20",), growth_active=(10, 30),
                                  growth_seconds=1.0, growth_warmup_seconds=1.5, growth_idle_seconds=0.2)
    result = await growth.run(BenchContext(profile, tmp_path, None))
    (floor,) = result["floors"]
    assert floor["devices"] == 20
    assert floor["idle_cpu_percent"] >= 0 and floor["idle_rss_mb"] > 0
    assert [p["parked"] for p in floor["points"]] == [10, 30]
    for point in floor["points"]:
        assert point["shipped"] > 0 and point["exceptions"] == 0 and point["writer_errors"] == 0
        assert point["cpu_ms_per_order"] > 0 and point["rss_mb"] > 0 and point["cpu_percent"] > 0
    table = growth_table(result)
    assert table.count("\n| 20 |") == 3  # idle, then each number of active orders
