"""`floorctl demo`: an embedded broker, every simulator of a site, the controller and the API, fed with
generated orders; and the run's summary, computed from what the database recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.bootstrap import Controller, Settings, freeze_startup_heap
from controller.domain.model import NewOrder
from controller.engine.stats import percentile
from controller.site import Site
from controller.store.tables import DeviceCommandRow, OrderRow
from simulators.broker import embedded_broker, free_port
from simulators.floor import simulated_floor

STAGES = ("allocated", "picking", "conveyed", "packed", "labelled", "sorted", "shipped")
DONE_STATES = ("shipped", "exception", "cancelled", "held")


@dataclass
class DemoOptions:
    site: Site
    site_path: Path
    port: int = 8000
    orders: int | None = None  # None: a stream until Ctrl-C
    rate: float = 10.0  # orders offered per second
    speed: float = 50.0
    exit_when_done: bool = False
    as_json: bool = False
    data_dir: Path = Path("data/demo")
    keep_data: bool = False
    broker_url: str | None = None  # an external broker; None starts an embedded one
    database_url: str | None = None
    seed: int = 1
    timeout_s: float = 900.0


class OrderGenerator:
    """Plausible e-commerce orders for a site: 1-3 lines, mostly single items, a few rush orders."""

    def __init__(self, site: Site, run: str, seed: int) -> None:
        self.skus = sorted(site.skus())
        self.carriers = [c.id for c in site.carriers]
        self.run = run
        self.random = random.Random(seed)
        self.count = 0

    def next(self) -> NewOrder:
        self.count += 1
        r = self.random
        skus = r.sample(self.skus, k=min(len(self.skus), r.choice((1, 1, 1, 2, 2, 3))))
        lines = tuple((sku, r.choice((1, 1, 1, 2, 3))) for sku in skus)
        return NewOrder(f"DEMO-{self.run}-{self.count:06d}", lines, r.choice(self.carriers),
                        priority=5 if r.random() < 0.1 else 0)


async def run_demo(opts: DemoOptions) -> int:
    out = sys.stderr
    run = time.strftime("%Y%m%d%H%M%S")
    if not opts.keep_data:
        fresh_start(opts.data_dir)
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    broker = (contextlib.nullcontext(opts.broker_url) if opts.broker_url
              else embedded_broker(data_dir=opts.data_dir / "broker"))
    async with broker as broker_url:
        ports = {plc.id: free_port() for plc in opts.site.plcs}
        async with simulated_floor(opts.site, broker_url=broker_url, speed=opts.speed, plc_ports=ports) as floor:
            settings = Settings(site=opts.site.with_broker_url(broker_url), data_dir=opts.data_dir,
                                database_url=opts.database_url, broker_url=broker_url,
                                plc_endpoints=floor.endpoints, speed=opts.speed, port=opts.port)
            controller = Controller(settings)
            await controller.start()
            freeze_startup_heap()
            try:
                resumed = len(controller.engine.orders)
                print(f"floorctl demo: site {opts.site_path} at {opts.speed:g}x speed"
                      + (f", resuming {resumed} orders left in {opts.data_dir}" if resumed else "") + "\n"
                      f"  API and panel  {controller.api_url}/  (OpenAPI: {controller.api_url}/docs)\n"
                      f"  MQTT broker    {broker_url}\n"
                      + "".join(f"  PLC {pid:<10} {url}\n" for pid, url in floor.endpoints.items())
                      + f"  database       {_redact(controller.url)}", file=out, flush=True)
                ids = await _feed_and_watch(controller, opts, OrderGenerator(opts.site, run, opts.seed))
                summary = await summarise(controller.db, ids, controller.writer.stats.timing_rows)
                summary["speed"] = opts.speed
            finally:
                await controller.stop()
    if opts.as_json:
        print(json.dumps(summary))
    else:
        print(render_summary(summary))
    if opts.exit_when_done and (summary["orders"]["lost"] or summary["orders"]["unfinished"]):
        return 1
    return 0


def fresh_start(data_dir: Path) -> None:
    """A demo starts from the site file's stock and no orders: remove what an earlier demo left."""
    for name in ("floorctl.db", "floorctl.db-wal", "floorctl.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / "broker", ignore_errors=True)


async def _feed_and_watch(controller: Controller, opts: DemoOptions, gen: OrderGenerator) -> list[int]:
    engine = controller.engine
    ids: list[int] = []
    started = time.monotonic()
    last_print = 0.0
    interactive = sys.stderr.isatty()
    try:
        while True:
            now = time.monotonic()
            due = int((now - started) * opts.rate) + 1
            if opts.orders is not None:
                due = min(due, opts.orders)
            if due > gen.count:
                batch = [gen.next() for _ in range(due - gen.count)]
                ids.extend(r.id for r in await engine.receive(batch))
            if now - last_print >= (1.0 if interactive else 5.0):
                last_print = now
                counts = await _state_counts(controller.db, ids)
                line = _progress(len(ids), opts.orders, counts, now - started)
                print(("\r" + line + "\x1b[K") if interactive else line, end="" if interactive else "\n",
                      file=sys.stderr, flush=True)
            if opts.exit_when_done and opts.orders is not None and len(ids) >= opts.orders:
                if all(engine.orders.get(i) is None or engine.orders[i].state.value in DONE_STATES
                       for i in ids):
                    break
                if now - started > opts.timeout_s:
                    print(f"\nfloorctl demo: not done after {opts.timeout_s:.0f} s; summarising what finished",
                          file=sys.stderr)
                    break
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        pass
    if interactive:
        print(file=sys.stderr)
    await engine.writer.flush()
    return ids


async def _state_counts(db: AsyncEngine, ids: list[int]) -> dict[str, int]:
    if not ids:
        return {}
    async with db.connect() as conn:
        rows = (await conn.execute(select(OrderRow.state, func.count()).where(OrderRow.id >= min(ids))
                                   .group_by(OrderRow.state))).all()
    return {state: n for state, n in rows}


def _progress(submitted: int, total: int | None, counts: dict[str, int], elapsed: float) -> str:
    shipped = counts.get("shipped", 0)
    busy = sum(n for s, n in counts.items() if s not in DONE_STATES)
    of = f"/{total}" if total else ""
    return (f"[{elapsed:6.1f}s] submitted {submitted}{of}  in flight {busy}  shipped {shipped}  "
            f"exception {counts.get('exception', 0)}  held {counts.get('held', 0)}  "
            f"{shipped / elapsed if elapsed > 0 else 0:.1f} shipped/s")


async def summarise(db: AsyncEngine, ids: list[int], timing_rows_written: int) -> dict[str, Any]:
    """The run's figures, from the database: what was recorded is what counts."""
    orders: list[Any] = []
    commands: list[Any] = []
    async with db.connect() as conn:
        for i in range(0, len(ids), 1000):
            part = ids[i:i + 1000]
            orders += (await conn.execute(select(OrderRow).where(OrderRow.id.in_(part)))).all()
            commands += (await conn.execute(select(DeviceCommandRow).where(DeviceCommandRow.order_id.in_(part)))).all()
    states: dict[str, int] = {}
    for o in orders:
        states[o.state] = states.get(o.state, 0) + 1
    cycle = [o.shipped_at - o.received_at for o in orders if o.shipped_at]
    stages: dict[str, dict[str, float | None]] = {}
    for prev, stage in zip(("received", *STAGES), STAGES):
        stages[stage] = _pcts([getattr(o, f"{stage}_at") - getattr(o, f"{prev}_at") for o in orders
                               if getattr(o, f"{stage}_at") and getattr(o, f"{prev}_at")])
    by_device: dict[str, list[float]] = {}
    for c in commands:
        if c.completed_at is not None:
            by_device.setdefault(f"{c.device_kind}:{c.device_id}", []).append(c.completed_at - c.queued_at)
    devices = {key: _pcts(v) for key, v in sorted(by_device.items())}
    unfinished = sum(n for s, n in states.items() if s not in DONE_STATES)
    return {
        "orders": {"submitted": len(ids), "shipped": states.get("shipped", 0),
                   "exception": states.get("exception", 0), "held": states.get("held", 0),
                   "cancelled": states.get("cancelled", 0), "unfinished": unfinished,
                   "lost": len(ids) - len(orders)},
        "cycle_time_s": _pcts(cycle),
        "stages_s": stages,
        "devices_s": devices,
        "timing_rows": len(commands),
        "timing_rows_written": timing_rows_written,
        "bottleneck": {"stage": _slowest(stages), "device": _slowest(devices)},
    }


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(percentile(ordered, 50), 4), "p95": round(percentile(ordered, 95), 4),
            "max": round(ordered[-1], 4)}


def _slowest(table: dict[str, dict[str, float | None]]) -> str | None:
    timed = {k: v["p95"] for k, v in table.items() if v["p95"] is not None}
    return max(timed, key=lambda k: timed[k]) if timed else None


def render_summary(s: dict[str, Any]) -> str:
    o = s["orders"]
    c = s["cycle_time_s"]
    lines = [
        "",
        f"Orders     submitted {o['submitted']}  shipped {o['shipped']}  exception {o['exception']}  "
        f"held {o['held']}  cancelled {o['cancelled']}  unfinished {o['unfinished']}  lost {o['lost']}",
        f"Cycle time p50 {_fmt(c['p50'])}  p95 {_fmt(c['p95'])}  max {_fmt(c['max'])}  "
        f"(wall clock at {s.get('speed', 1):g}x floor speed)",
        f"Timing rows {s['timing_rows']}",
        "",
        f"{'stage (time to reach)':<28}{'n':>7}{'p50':>10}{'p95':>10}{'max':>10}",
    ]
    for name, v in s["stages_s"].items():
        lines.append(f"{name:<28}{v['n']:>7}{_fmt(v['p50']):>10}{_fmt(v['p95']):>10}{_fmt(v['max']):>10}")
    lines += ["", f"{'device (queued to completed)':<28}{'n':>7}{'p50':>10}{'p95':>10}{'max':>10}"]
    for name, v in s["devices_s"].items():
        lines.append(f"{name:<28}{v['n']:>7}{_fmt(v['p50']):>10}{_fmt(v['p95']):>10}{_fmt(v['max']):>10}")
    b = s["bottleneck"]
    lines += ["", f"Slowest stage: {b['stage']}   slowest device: {b['device']}"]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}ms" if v < 1 else f"{v:.2f}s"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
