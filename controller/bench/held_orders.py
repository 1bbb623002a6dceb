"""The controller process of `floorctl bench --growth`: composed as `floorctl run` composes it (API
served, SQLite under its data directory, real MQTT and OPC UA links), driving a simulated floor and
measuring itself: its CPU seconds per order shipped and its resident size, with a given number of
orders active.

The active orders are parked: their lines are all at a few pick lights that the controller has paused
(as a supervisor pauses a zone), so they are received, allocated and queued for a device, and wait
there. The rest of the floor ships a steady flow of other orders past them, at a rate well below
what it can carry, and that flow is what the CPU per order is measured on.

It answers one JSON line per request line on stdin:
  idle SECONDS               its CPU with every device online and no order
  hold ACTIVE SECONDS RATE WARMUP STILL
                       orders parked until ACTIVE are, its CPU holding them with nothing else to do
                       for STILL seconds, then RATE orders/s flowing past them: WARMUP seconds (an
                       order's cycle at least, ~3.5 s on the demo floor), then SECONDS measured
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from controller.bench.measure import rss_mb
from controller.bootstrap import Controller, Settings, freeze_startup_heap
from controller.demo import OrderGenerator
from controller.domain.devices import DeviceAction
from controller.site import Site, load_site
from simulators.broker import free_port

BATCH = 1_000  # orders per intake call at most, as a WMS posts them (the API's max_batch)
TICK_S = 0.02
PARKED_SHARE = 6  # one pick light in this many (at least one) holds the parked orders


def cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def parking_lights(site: Site) -> list[str]:
    """The pick lights the parked orders wait at: the last sixth of them, at least one, never all."""
    lights = [p.id for p in site.pick_lights]
    if len(lights) < 2:
        raise ValueError("the growth step needs at least two pick lights: one to park orders at")
    return lights[-max(1, len(lights) // PARKED_SHARE):]


class Floor:
    """The parked orders and the flow past them, on one controller."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        site = controller.settings.site
        self.parking = parking_lights(site)
        parked_skus = {loc.sku for loc in site.locations if loc.pick_light in self.parking}
        self.parked = OrderGenerator(site, "parked", seed=17, skus=parked_skus)
        self.flow = OrderGenerator(site, "flow", seed=19, skus=site.skus() - parked_skus)
        self.flowing: set[int] = set()
        self.shipped = 0
        self.parked_count = 0

    @property
    def engine(self) -> Any:
        return self.controller.engine

    async def park_at_paused_lights(self) -> None:
        for light in self.parking:
            await self.engine.control(light, DeviceAction.PAUSE, "growth bench")

    async def park(self, target: int) -> None:
        while (missing := target - self.parked_count) > 0:
            received = await self.engine.receive([self.parked.next() for _ in range(min(BATCH, missing))])
            self.parked_count += len(received)

    async def run_flow(self, rate: float, seconds: float) -> None:
        """Orders at `rate` a second for `seconds`; counts those that ship (leave the engine)."""
        started, offered = time.perf_counter(), 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate) + 1 - offered
            if due > 0:
                received = await self.engine.receive([self.flow.next() for _ in range(due)])
                self.flowing.update(r.id for r in received)
                offered += due
            left = {i for i in self.flowing if i not in self.engine.orders}
            self.shipped += len(left)
            self.flowing -= left
            await asyncio.sleep(TICK_S)


async def idle(seconds: float) -> dict[str, Any]:
    before = cpu_s()
    await asyncio.sleep(seconds)
    return {"cpu_percent": round(100 * (cpu_s() - before) / seconds, 1), "rss_mb": rss_mb()}


async def hold(floor: Floor, active: int, seconds: float, rate: float, warmup_s: float,
               still_s: float) -> dict[str, Any]:
    started, cpu0 = time.perf_counter(), cpu_s()
    await floor.park(active)
    await floor.controller.writer.flush()
    park_s, park_cpu = time.perf_counter() - started, cpu_s() - cpu0
    cpu0 = cpu_s()
    await asyncio.sleep(still_s)
    still_cpu = cpu_s() - cpu0
    await floor.run_flow(rate, warmup_s)
    shipped0, exceptions0 = floor.shipped, floor.engine.counters["order_exceptions"]
    cpu0, t0 = cpu_s(), time.perf_counter()
    await floor.run_flow(rate, seconds)
    cpu, wall, shipped = cpu_s() - cpu0, time.perf_counter() - t0, floor.shipped - shipped0
    return {
        "active": len(floor.engine.orders), "parked": floor.parked_count, "window_s": round(wall, 1),
        "park_s": round(park_s, 2), "park_cpu_s": round(park_cpu, 2),
        "holding_cpu_percent": round(100 * still_cpu / still_s, 1),
        "offered_per_s": rate, "shipped": shipped, "shipped_per_s": round(shipped / wall, 1),
        "exceptions": floor.engine.counters["order_exceptions"] - exceptions0,
        "cpu_percent": round(100 * cpu / wall, 1),
        "cpu_ms_per_order": round(1000 * cpu / shipped, 2) if shipped else None,
        "rss_mb": rss_mb(), "rss_peak_mb": peak_rss_mb(),
        "writer_errors": floor.controller.writer.stats.errors,
    }


async def serve(site_path: Path, data_dir: Path, speed: float) -> None:
    from controller.bench.surge import until_online

    site = load_site(site_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(Settings(
        site=site, data_dir=data_dir, database_url=f"sqlite+aiosqlite:///{data_dir / 'floorctl.db'}",
        broker_url=site.broker.url, plc_endpoints={p.id: p.endpoint for p in site.plcs}, speed=speed,
        port=free_port(), auth=False))
    await controller.start()
    try:
        freeze_startup_heap()
        started = time.perf_counter()
        await until_online(controller, timeout=120)
        floor = Floor(controller)
        await floor.park_at_paused_lights()
        print(json.dumps({"ready": True, "devices": len(controller.engine.queues),
                          "online_after_s": round(time.perf_counter() - started, 1),
                          "parked_at": len(floor.parking)}), flush=True)
        loop = asyncio.get_running_loop()
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
            if line[0] == "idle":
                answer = await idle(float(line[1]))
            else:
                answer = await hold(floor, int(line[1]), *map(float, line[2:6]))
            print(json.dumps(answer), flush=True)
    finally:
        await controller.stop()


def main(argv: list[str]) -> int:
    asyncio.run(serve(Path(argv[0]), Path(argv[1]), float(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
