"""Surge: orders end to end through every simulated device of config/peak.yaml at rising offered rates.

The simulated floor (`floorctl sim`) and Mosquitto each run in a process of their own; the controller
(engine, adapters, writer; no API) runs in this one, so the CPU of each part can be told apart.
Operators, packers and printers take no time and the floor runs fast, so what limits the rate is
software: the controller, the simulators, the broker or the database.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlmodel import col

from controller.bench.context import BenchContext
from controller.bench.gc_pauses import GcPauses, frozen_start_up
from controller.bench.measure import CpuMeter, LoopLag
from controller.bench.processes import helper
from controller.bootstrap import Controller, Settings
from controller.demo import OrderGenerator, summarise
from controller.domain.model import Task
from controller.engine.dispatch import CAPACITY
from controller.engine.stats import percentile
from controller.ports import DeviceKind
from controller.site import load_site
from controller.store.tables import DeviceCommandRow, OrderLineRow, OrderRow
from simulators.broker import free_port
from simulators.plc import endpoint_with_port

SPEED = 50.0  # belts 50x: a tote crosses the peak conveyor loop in 0.9 s
GRACE_S = 5.0  # after a step's last order, how long its orders may take to finish
SHIPPED_SHARE = 0.99  # a rate is sustained when this share of its orders shipped within the grace
ONE_ROW_TASKS = tuple(t.value for t in (Task.CONVEY, Task.PACK, Task.LABEL, Task.INDUCT, Task.DIVERT))


def surge_site(ctx: BenchContext, broker_url: str) -> Path:
    """config/peak.yaml as a fast floor (`fast_site`)."""
    data = yaml.safe_load(ctx.peak_path.read_text(encoding="utf-8"))
    return fast_site(data, broker_url, ctx.scratch / "surge.yaml")


def fast_site(data: dict[str, Any], broker_url: str, path: Path) -> Path:
    """A site file's data with every human and printer delay at zero, rolls of labels that do not run
    out and the PLCs on free ports, written to `path`. What must not shrink with the speed is
    stretched by it, so that in wall-clock seconds it stays what the site file says: the
    controller's time-outs, and the sorters' scan-to-divert distance (the divert answer's budget,
    1.2 s on the peak sorters; at 50x it would otherwise be 24 ms)."""
    data["broker"]["url"] = broker_url
    data.setdefault("simulation", {}).update(operator={"mean_s": 0, "spread_s": 0},
                                              packer={"mean_s": 0, "spread_s": 0}, printer={"print_s": 0})
    for printer in data["printers"]:
        printer["media_labels"] = max(printer.get("media_labels", 0), 10_000_000)
    for plc in data["plcs"]:
        plc["endpoint"] = endpoint_with_port(plc["endpoint"], free_port())
    for sorter in data["sorters"]:
        sorter["scan_to_divert_m"] *= SPEED
        sorter["loop_length_m"] *= SPEED
    data["timeouts"] = {key: value * SPEED if key.endswith("_s") and key != "ack_s"
                        and isinstance(value, int | float) else value
                        for key, value in data.get("timeouts", {}).items()}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    load_site(path)  # still a valid site
    return path


async def _offer(controller: Controller, orders: OrderGenerator, rate: float, seconds: float) -> list[int]:
    ids: list[int] = []
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = min(int(elapsed * rate) + 1, int(rate * seconds))
        if due > len(ids):
            batch = [orders.next() for _ in range(due - len(ids))]
            ids.extend(r.id for r in await controller.engine.receive(batch))
        await asyncio.sleep(0.02)
    return ids


async def _settle(controller: Controller, ids: list[int]) -> float:
    """Wait until the step's orders have left the engine (or the grace is over); seconds waited."""
    started = time.perf_counter()
    active = controller.engine.orders
    while any(i in active for i in ids) and time.perf_counter() - started < GRACE_S:
        await asyncio.sleep(0.05)
    await controller.writer.flush()
    return time.perf_counter() - started


async def _recorded(controller: Controller, ids: list[int]) -> dict[str, Any]:
    """What the database holds for the step's orders: what was persisted is what counts. A shipped
    order must have a timing row for each pick line and for each of its other tasks."""
    shipped: list[Any] = []
    reasons: Counter[str] = Counter()
    lines: dict[int, int] = {}
    rows: dict[tuple[int, str], int] = {}  # (order, task) -> timing rows
    async with controller.db.connect() as conn:
        for i in range(0, len(ids), 1000):
            part = ids[i:i + 1000]
            found = (await conn.execute(select(col(OrderRow.id), col(OrderRow.received_at),
                                               col(OrderRow.shipped_at))
                                        .where(col(OrderRow.id).in_(part),
                                               col(OrderRow.state) == "shipped"))).all()
            shipped += found
            for (reason,) in (await conn.execute(select(col(OrderRow.reason)).where(
                    col(OrderRow.id).in_(part), col(OrderRow.state) == "exception"))).all():
                reasons[reason or "unknown"] += 1
            done = [r.id for r in found]
            for order_id, count in (await conn.execute(
                    select(col(OrderLineRow.order_id),
                           func.count()).where(col(OrderLineRow.order_id).in_(done))
                    .group_by(col(OrderLineRow.order_id)))).all():
                lines[order_id] = count
            for command_order, task, count in (await conn.execute(
                    select(col(DeviceCommandRow.order_id), col(DeviceCommandRow.task), func.count())
                    .where(col(DeviceCommandRow.order_id).in_(done), col(DeviceCommandRow.outcome) == "ok")
                    .group_by(col(DeviceCommandRow.order_id), col(DeviceCommandRow.task)))).all():
                if command_order is not None:
                    rows[(command_order, task)] = count
    missing = 0
    for order in shipped:
        missing += max(0, lines.get(order.id, 0) - rows.get((order.id, Task.PICK.value), 0))
        missing += sum(1 for task in ONE_ROW_TASKS if (order.id, task) not in rows)
    cycles = sorted(r.shipped_at - r.received_at for r in shipped)
    ends = sorted(r.shipped_at for r in shipped)
    return {"shipped": len(shipped), "exception_reasons": dict(reasons.most_common(5)),
            "timing_rows": sum(rows.values()), "timing_rows_missing": missing,
            "shipped_per_s": round((len(ends) - 1) / (ends[-1] - ends[0]), 1) if len(ends) > 1 else None,
            "cycle_p50_s": round(percentile(cycles, 50), 3) if cycles else None,
            "cycle_p99_s": round(percentile(cycles, 99), 3) if cycles else None}


async def _device_load(controller: Controller, ids: list[int]) -> dict[str, dict[str, Any]]:
    """Per device kind, from the step's timing rows: how long a command held its device (sent ->
    completed), how long it queued for it (queued -> sent), and for the kinds that do one or two
    things at a time, the share of the step their devices were busy and the hand-off gap: from a
    command's completion to the next command going out to the same device when that one was
    already waiting. A kind near 100% busy is the floor's bottleneck; a kind with long queues but
    idle devices loses its time in the hand-offs."""
    rows: dict[str, dict[str, list[Timing]]] = {}
    async with controller.db.connect() as conn:
        for i in range(0, len(ids), 1000):
            for kind, device, queued, sent, completed in (await conn.execute(
                    select(col(DeviceCommandRow.device_kind), col(DeviceCommandRow.device_id),
                           col(DeviceCommandRow.queued_at), col(DeviceCommandRow.sent_at),
                           col(DeviceCommandRow.completed_at))
                    .where(col(DeviceCommandRow.order_id).in_(ids[i:i + 1000]),
                           col(DeviceCommandRow.completed_at).is_not(None)))).all():
                rows.setdefault(kind, {}).setdefault(device, []).append(
                    Timing(queued, sent or queued, completed or queued))
    devices = {kind: len(queues) for kind, queues in _by_kind(controller).items()}
    return {kind: _load(timings, CAPACITY[DeviceKind(kind)], devices.get(kind, 1))
            for kind, timings in sorted(rows.items())}


@dataclass(frozen=True, slots=True)
class Timing:
    queued: float
    sent: float
    completed: float


def _load(by_device: dict[str, list[Timing]], capacity: int, devices: int) -> dict[str, Any]:
    every = [t for timings in by_device.values() for t in timings]
    service = sorted(t.completed - t.sent for t in every)
    waits = sorted(t.sent - t.queued for t in every)
    load: dict[str, Any] = {"commands": len(every), "service_p50_ms": _ms(service, 50),
                            "queue_wait_p50_ms": _ms(waits, 50), "queue_wait_p99_ms": _ms(waits, 99)}
    if capacity == 1:
        gaps = []
        for timings in by_device.values():
            timings.sort(key=lambda t: t.sent)
            gaps += [b.sent - a.completed for a, b in pairwise(timings) if b.queued < a.completed]
        load["handoff_gap_p50_ms"] = _ms(sorted(gaps), 50)
    span = max(t.completed for t in every) - min(t.queued for t in every)
    if capacity <= 2 and span > 0:
        load["busy_percent"] = round(100 * sum(service) / (devices * capacity * span), 1)
    return load


def _ms(ordered: list[float], q: float) -> float | None:
    return round(percentile(ordered, q) * 1000, 1) if ordered else None


def _busiest_kind(devices: dict[str, dict[str, Any]]) -> str | None:
    busy = {kind: load["busy_percent"] for kind, load in devices.items() if "busy_percent" in load}
    if not busy:
        return None
    kind = max(busy, key=lambda k: busy[k])
    return f"{kind} ({busy[kind]:.0f}% busy)"


def _by_kind(controller: Controller) -> dict[str, list[Any]]:
    kinds: dict[str, list[Any]] = {}
    for queue in controller.engine.queues.values():
        kinds.setdefault(queue.device.kind.value, []).append(queue)
    return kinds


SATURATED_PERCENT = 90.0  # of one core: each part is single-threaded where it matters


def _busiest(cpu: dict[str, float]) -> str:
    """The single-threaded part nearest to a full core: the loop, the writer, the broker, the simulators."""
    parts = {name: pct for name, pct in cpu.items()
             if name not in ("controller (all threads)", "other processes on the machine")}
    if not parts:
        return "unknown"
    name = max(parts, key=lambda n: parts[n])
    if parts[name] >= SATURATED_PERCENT:
        return f"{name} ({parts[name]:.0f}% of a core)"
    return f"none saturated (busiest: {name}, {parts[name]:.0f}% of a core)"


async def _step(ctx: BenchContext, controller: Controller, orders: OrderGenerator, rate: int,
                pids: dict[str, int]) -> dict[str, Any]:
    seconds = ctx.profile.surge_seconds
    cpu = CpuMeter(pids)
    cpu.start()
    with GcPauses() as pauses:
        async with LoopLag() as lag:
            ids = await _offer(controller, orders, rate, seconds)
            cpu_shares = {s.name: s.percent for s in cpu.stop()}
            waited = await _settle(controller, ids)
    summary = await summarise(controller.db, ids, controller.writer.stats.timing_rows)
    recorded = await _recorded(controller, ids)
    devices = await _device_load(controller, ids)
    step: dict[str, Any] = {
        "offered_per_s": rate, "offered": len(ids), **recorded,
        "exceptions": summary["orders"]["exception"], "unfinished": summary["orders"]["unfinished"],
        "drain_s": round(waited, 2), "loop_lag_p99_ms": lag.lags.ms(99),
        "loop_lag_max_ms": lag.lags.summary()["max_ms"],
        "controller_gc": pauses.summary(),
        "writer_max_batch_ms": round(controller.writer.stats.max_batch_ms, 1),
        "cpu_percent": cpu_shares, "busiest": _busiest(cpu_shares),
        "slowest_stage": summary["slowest"]["stage"], "slowest_device": summary["slowest"]["device"],
        "devices": devices, "busiest_devices": _busiest_kind(devices),
    }
    step["sustained"] = (recorded["shipped"] >= SHIPPED_SHARE * len(ids) and step["exceptions"] == 0
                         and recorded["timing_rows_missing"] == 0 and controller.writer.stats.errors == 0)
    return step


async def run(ctx: BenchContext) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    async with ctx.broker("surge") as (url, broker_pid):
        site_path = surge_site(ctx, url)
        site = load_site(site_path)
        async with helper("simulated floor", "controller.cli", "sim", "--site", str(site_path),
                          "--speed", str(SPEED), ready="floorctl sim:") as sims:
            controller = Controller(Settings(
                site=site, data_dir=ctx.scratch / "surge",
                database_url=f"sqlite+aiosqlite:///{ctx.scratch / 'surge.db'}",
                broker_url=url, plc_endpoints={p.id: p.endpoint for p in site.plcs}, speed=SPEED))
            await controller.start(serve_api=False)
            try:
                await until_online(controller)
                orders = OrderGenerator(site, f"surge{ctx.run_id}", seed=5)
                pids = {"broker (mosquitto)": broker_pid, "simulators (floorctl sim)": sims.pid}
                with frozen_start_up():
                    for rate in ctx.profile.surge_rates:
                        ctx.progress(f"{rate} orders/s")
                        steps.append(await _step(ctx, controller, orders, rate, pids))
                        if not steps[-1]["sustained"]:
                            break  # past saturation: higher rates only pile up more
            finally:
                await controller.stop()
    sustained = [s for s in steps if s["sustained"]]
    best = sustained[-1] if sustained else None
    first_miss = next((s for s in steps if not s["sustained"]), None)
    # The floor's own travel time: the cycle p50 at the lowest rate, where nothing queues.
    travel_s = steps[0]["cycle_p50_s"] if steps else None
    over = (round(best["cycle_p99_s"] - travel_s, 2)
            if best and best["cycle_p99_s"] is not None and travel_s is not None else None)
    return {
        "orders_per_s": best["offered_per_s"] if best else 0,
        "shipped_per_s": best["shipped_per_s"] if best else None,
        "cycle_p99_s": best["cycle_p99_s"] if best else None,
        "travel_s": travel_s, "cycle_p99_over_travel_s": over,
        "saturates_first": first_miss["busiest"] if first_miss else None,
        "steps": steps, "speed": SPEED,
        "site": "config/peak.yaml; operator, packer and printer delays 0; belts at 50x; time-outs and "
                "the sorters' scan-to-divert distance stretched by the speed (real-time budgets)",
    }


async def until_online(controller: Controller, timeout: float = 30.0) -> None:
    """The simulators publish their state as they connect; wait until the engine sees every device."""
    deadline = time.monotonic() + timeout
    while not all(q.usable for q in controller.engine.queues.values()):
        if time.monotonic() > deadline:
            offline = [d for d, q in controller.engine.queues.items() if not q.usable]
            raise RuntimeError(f"{len(offline)} devices still offline after {timeout:.0f} s: {offline[:5]}")
        await asyncio.sleep(0.1)
