"""Memory: the controller's resident size before and after many orders, in a fresh process.

The engine and its writer are the real ones (SQLite); the devices are the bench's instant
in-process devices (controller/bench/instant.py), because the simulated floor cannot carry 100,000
orders within the bench's time budget. They keep only the commands in flight, so that what grows is
the controller's memory and not theirs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from controller.bench.context import BenchContext
from controller.bench.instant import InstantHub
from controller.bench.measure import rss_mb
from controller.bench.processes import helper
from controller.bench.retention import retained_by_adapters
from controller.config_files import config_file
from controller.demo import OrderGenerator
from controller.engine.orders import Engine
from controller.site import load_site
from controller.store.db import create_schema, make_engine
from controller.store.tables import DeviceCommandRow, OrderRow
from controller.store.writer import StoreWriter

ACTIVE_CAP = 2_000  # orders in the engine at once: a busy floor, not an unbounded backlog
BATCH = 200  # orders per intake call, as a WMS would post them
CHECKPOINTS = 10


async def drive(total: int, directory: Path) -> dict[str, Any]:
    site = load_site(config_file("peak.yaml"))
    url = f"sqlite+aiosqlite:///{directory / 'memory.db'}"
    db = make_engine(url)
    await create_schema(db)
    writer = StoreWriter(url)
    await writer.start()
    hub = InstantHub(site, delay_s=0.0005)
    engine = Engine(site, [hub], writer, db)
    await engine.start()
    gc.collect()
    gc.freeze()  # as `floorctl run` does once started
    samples = [(0, rss_mb())]
    warmup = max(BATCH, total // 20)
    orders = OrderGenerator(site, "mem", seed=3)
    started = time.perf_counter()
    next_check = total // CHECKPOINTS
    while orders.count < total:
        while len(engine.orders) >= ACTIVE_CAP:
            await asyncio.sleep(0.005)
        await engine.receive([orders.next() for _ in range(min(BATCH, total - orders.count))])
        if orders.count >= warmup and len(samples) == 1:
            samples.append((orders.count, rss_mb()))
        if orders.count >= next_check:
            samples.append((orders.count, rss_mb()))
            next_check += total // CHECKPOINTS
    while engine.orders:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await writer.flush()
    after = rss_mb()
    adapters = retained_by_adapters(site, hub.commands)
    async with db.connect() as conn:
        shipped = (await conn.execute(select(func.count()).where(col(OrderRow.state) == "shipped"))).scalar()
        rows = (await conn.execute(select(func.count()).select_from(DeviceCommandRow))).scalar()
    await engine.stop()
    await writer.close()
    await db.dispose()
    return {"orders": total, "shipped": shipped, "timing_rows": rows, "orders_per_s": round(total / elapsed),
            "rss_mb_before": samples[0][1], "rss_mb_after_warmup": samples[1][1],
            "warmup_orders": samples[1][0],
            "rss_mb_after": after, "growth_mb": round(after - samples[1][1], 1),
            "rss_mb_peak": max(mb for _, mb in [*samples, (total, after)]), "samples": samples,
            "engine_counters": dict(engine.counters), "commands": sum(hub.commands.values()),
            "adapter_memory": adapters,
            "rss_mb_after_with_adapter_memory": round(after + adapters["rss_mb"], 1)}


async def run(ctx: BenchContext) -> dict[str, Any]:
    orders = ctx.profile.memory_orders
    async with helper("memory run", "controller.bench.memory", str(orders)) as child:
        ctx.progress(f"{orders:,} orders")
        result: dict[str, Any] = json.loads(await child.ask("go", timeout=900))
    result["devices"] = "instant in-process devices (controller/bench/instant.py): the simulated floor " \
                        "cannot carry this many orders within the time budget"
    result["note"] = f"{orders:,} orders through the engine with instant in-process devices"
    return result


def main(argv: list[str]) -> int:
    print("ready", flush=True)
    sys.stdin.readline()
    with tempfile.TemporaryDirectory(prefix="floorctl-memory-") as directory:
        result = asyncio.run(drive(int(argv[0]), Path(directory)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
