"""Memory: the controller's resident size before and after many orders, in a fresh process.

The engine and its writer are the real ones (SQLite); the devices are the in-process fakes of
tests/fakes.py, because the simulated floor cannot carry 100,000 orders within the bench's time
budget. The fakes remember every command for test assertions; the driver makes them forget finished
ones as it goes, so that what grows is the controller's and not the fakes'.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import psutil
from sqlalchemy import func, select
from sqlmodel import col

from controller.bench.context import CONFIG, BenchContext
from controller.bench.processes import helper
from controller.bench.retention import retained_by_adapters
from controller.demo import OrderGenerator
from controller.engine.floor import Engine
from controller.ports import DeviceHub, DeviceKind
from controller.site import load_site
from controller.store.db import create_schema, make_engine
from controller.store.tables import DeviceCommandRow, OrderRow
from controller.store.writer import StoreWriter

ACTIVE_CAP = 2_000  # orders in the engine at once: a busy floor, not an unbounded backlog
BATCH = 200  # orders per intake call, as a WMS would post them
CHECKPOINTS = 10


def _rss_mb() -> float:
    gc.collect()
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _forget_finished(hub: Any, sent: Counter[str]) -> None:
    for device in hub.devices():
        # Each induct is answered by one divert, which the fake does not log: count it twice.
        sent[device.device_id] += len(device.received) * (2 if device.kind is DeviceKind.SORTER else 1)
        device.received.clear()
        device.tickets = {cid: t for cid, t in device.tickets.items() if not t.done.done()}
        for cid in [cid for cid in device.executed if cid not in device.tickets]:
            del device.executed[cid]


async def drive(total: int, directory: Path) -> dict[str, Any]:
    from tests.fakes import FakeHub  # the checkout's test fakes (see the module docstring)

    site = load_site(CONFIG / "peak.yaml")
    url = f"sqlite+aiosqlite:///{directory / 'memory.db'}"
    db = make_engine(url)
    await create_schema(db)
    writer = StoreWriter(url)
    await writer.start()
    hub = FakeHub(site, delay_s=0.0005)
    engine = Engine(site, [cast(DeviceHub, hub)], writer, db)
    await engine.start()
    gc.collect()
    gc.freeze()  # as `floorctl run` does once started
    samples = [(0, _rss_mb())]
    sent: Counter[str] = Counter()
    warmup = max(BATCH, total // 20)
    orders = OrderGenerator(site, "mem", seed=3)
    started = time.perf_counter()
    next_check = total // CHECKPOINTS
    while orders.count < total:
        while len(engine.orders) >= ACTIVE_CAP:
            await asyncio.sleep(0.005)
        await engine.receive([orders.next() for _ in range(min(BATCH, total - orders.count))])
        if orders.count % 1000 < BATCH:
            _forget_finished(hub, sent)
        if orders.count >= warmup and len(samples) == 1:
            samples.append((orders.count, _rss_mb()))
        if orders.count >= next_check:
            samples.append((orders.count, _rss_mb()))
            next_check += total // CHECKPOINTS
    while engine.orders:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    _forget_finished(hub, sent)
    await writer.flush()
    after = _rss_mb()
    adapters = retained_by_adapters(site, sent)
    async with db.connect() as conn:
        shipped = (await conn.execute(select(func.count()).where(col(OrderRow.state) == "shipped"))).scalar()
        rows = (await conn.execute(select(func.count()).select_from(DeviceCommandRow))).scalar()
    await engine.stop()
    await writer.close()
    await db.dispose()
    return {"orders": total, "shipped": shipped, "timing_rows": rows, "orders_per_s": round(total / elapsed),
            "rss_mb_before": samples[0][1], "rss_mb_after_warmup": samples[1][1], "warmup_orders": samples[1][0],
            "rss_mb_after": after, "growth_mb": round(after - samples[1][1], 1),
            "rss_mb_peak": max(mb for _, mb in [*samples, (total, after)]), "samples": samples,
            "engine_counters": dict(engine.counters), "commands": sum(sent.values()),
            "adapter_memory": adapters,
            "rss_mb_after_with_adapter_memory": round(after + adapters["rss_mb"], 1)}


async def run(ctx: BenchContext) -> dict[str, Any]:
    orders = ctx.profile.memory_orders
    async with helper("memory run", "controller.bench.memory", str(orders)) as child:
        ctx.progress(f"{orders:,} orders")
        result: dict[str, Any] = json.loads(await child.ask("go", timeout=900))
    result["devices"] = "in-process fakes (tests/fakes.py): the simulated floor cannot carry this many " \
                        "orders within the time budget"
    result["note"] = f"{orders:,} orders through the engine with in-process fake devices"
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
