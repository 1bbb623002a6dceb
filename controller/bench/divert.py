"""Divert decisions: from the sorter scanner's read to the divert target landing in the PLC, through the
whole engine path (OpcUaHub scan event -> Engine.on_event -> SortDesk.on_scan -> the sorter's DeviceQueue ->
Divert call).

The PLC simulator runs at floor speed in its own process and inducts totes at the offered rate; its
sorter stamps each scan's read time and the time its target landed (both on the PLC's clock). The
engine has a route for every tote, as if each were a labelled order's tote.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Awaitable
from typing import Any

from adapters.opcua import OpcUaHub
from controller.bench.context import BenchContext
from controller.bench.gc_pauses import GcPauses, frozen_start_up
from controller.bench.measure import CpuMeter, Latencies, LoopLag
from controller.bench.processes import Helper, helper
from controller.domain.routing import Route
from controller.engine.orders import Engine
from controller.ports import ScanRead
from controller.store.db import create_schema, make_engine

SORTER = "sorter-1"
CPYTHON_GC_THRESHOLDS = (700, 10, 10)  # the probe without gc.freeze() runs with the defaults too
LANE = "lane-1"
BUDGET_P99_MS = 10.0
MISSED_ALLOWED = 0.001  # a rate holds when at most this share of scans got no target in time


class ScanArrivals:
    """When the engine got each scan: a watcher on the engine's sort desk, called before the answer."""

    def __init__(self, engine: Engine) -> None:
        self.at: dict[str, float] = {}
        engine.sorting.watchers.append(self)

    def __call__(self, scan: ScanRead) -> None:
        self.at[scan.scan_id] = time.time()


def _held(step: dict[str, Any]) -> bool:
    return (step["p99_ms"] is not None and step["p99_ms"] <= BUDGET_P99_MS
            and step["missed"] <= MISSED_ALLOWED * step["offered"])


async def _step(ctx: BenchContext, engine: Engine, arrivals: ScanArrivals, plc: Helper, rate: int,
                tag: str = "") -> dict[str, Any]:
    prefix = f"D{ctx.run_id}r{rate}{tag}"
    seconds = ctx.profile.divert_seconds
    totes = [f"{prefix}-{n}" for n in range(int(rate * seconds))]
    for tote in totes:
        engine.sorting.route(tote, Route(0, LANE, SORTER))  # as a labelled order's tote would have
    cpu = CpuMeter({"PLC simulator": plc.pid})
    cpu.start()
    with GcPauses() as pauses:
        async with LoopLag() as lag:
            answer = json.loads(await plc.ask(f"induct {SORTER} {rate} {seconds} {prefix}",
                                              timeout=seconds + 60))
    shares = cpu.stop()
    for tote in totes:
        engine.sorting.unroute(tote)
    latencies = Latencies(elapsed_s=answer["offered_s"])
    delivery, decision = Latencies(), Latencies()
    for scan_id, read_at, landed_at in answer["scans"]:
        if landed_at is not None:
            latencies.add(landed_at - read_at)
        seen_at = arrivals.at.pop(scan_id, None)
        if seen_at is not None:
            delivery.add(seen_at - read_at)
            if landed_at is not None:
                decision.add(landed_at - seen_at)
    summary = latencies.summary()
    missed = answer["offered"] - summary["n"]
    step = {"offered_per_s": rate, "offered": answer["offered"], "answered": summary["n"], "missed": missed,
            "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"], "max_ms": summary["max_ms"],
            "answered_per_s": summary["per_s"], "budget_ms": answer["budget_ms"],
            "scan_delivery_p50_ms": delivery.ms(50), "scan_delivery_p99_ms": delivery.ms(99),
            "decision_p50_ms": decision.ms(50), "decision_p99_ms": decision.ms(99),
            "loop_lag_p99_ms": lag.lags.ms(99), "loop_lag_max_ms": lag.lags.summary()["max_ms"],
            "controller_gc": pauses.summary(), "cpu_percent": {s.name: s.percent for s in shares}}
    step["held"] = _held(step)
    return step


async def _without_freeze(step: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """The same step with the start-up heap back in the collector's sight and CPython's own
    thresholds: the controller as it was before `floorctl run` froze it and tuned the collector, for
    comparison. Run last: it leaves the heap unfrozen (frozen_start_up restores the thresholds)."""
    gc.unfreeze()
    gc.set_threshold(*CPYTHON_GC_THRESHOLDS)
    return await step


async def run(ctx: BenchContext) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{ctx.scratch / 'divert.db'}"
    db = make_engine(url)
    await create_schema(db)
    writer = await ctx.sqlite_writer("divert-timings")
    steps: list[dict[str, Any]] = []
    probe_rate = 1000 if 1000 in ctx.profile.divert_rates else ctx.profile.divert_rates[-1]
    try:
        async with helper("PLC simulator", "controller.bench.plc_host", str(ctx.peak_path), "1") as plc:
            endpoints = json.loads(plc.ready_line.removeprefix("ready "))
            hub = OpcUaHub(ctx.peak, endpoints=endpoints)
            engine = Engine(ctx.peak, [hub], writer, db, speed=1.0)
            arrivals = ScanArrivals(engine)
            await engine.start()
            try:
                with frozen_start_up():
                    for rate in ctx.profile.divert_rates:
                        ctx.progress(f"{rate} scans/s")
                        steps.append(await _step(ctx, engine, arrivals, plc, rate))
                    unfrozen: dict[str, Any] = {}
                    if ctx.profile.divert_gc_probe:
                        ctx.progress(f"{probe_rate} scans/s without gc.freeze()")
                        unfrozen = await _without_freeze(_step(ctx, engine, arrivals, plc, probe_rate, "u"))
                await writer.flush()
                counters = {**engine.counters, **hub.counters}
            finally:
                await engine.stop()
    finally:
        await writer.close()
        await db.dispose()
    held = [s["offered_per_s"] for s in steps if s["held"]]
    at_1000 = next(s for s in steps if s["offered_per_s"] == probe_rate)
    return {"held_per_s": max(held) if held else 0, "p99_ms": at_1000["p99_ms"], "p50_ms": at_1000["p50_ms"],
            "scan_delivery_p50_ms": at_1000["scan_delivery_p50_ms"],
            "decision_p50_ms": at_1000["decision_p50_ms"],
            "max_ms": at_1000["max_ms"], "at_rate": at_1000["offered_per_s"], "steps": steps,
            "p99_ms_without_gc_freeze": unfrozen.get("p99_ms"), "without_gc_freeze": unfrozen,
            "timing_rows_written": writer.stats.timing_rows, "counters": counters,
            "path": "PLC scan event -> OpcUaHub -> SortDesk.on_scan -> sorter DeviceQueue -> "
                    "Divert method call; latency = target landed - read, both stamped by the PLC simulator"}
