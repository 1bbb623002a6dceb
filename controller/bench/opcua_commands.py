"""OPC UA: bare asyncua (a write; the conveyor's Transport method called by hand, with and without a
subscription to the conveyor's events) against the controller's OpcUaHub conveyor.transport through
a DeviceQueue, all to the same PLC simulator in a process of its own, in alternating rounds.

The controller consumes the events its commands cause (a transported tote passes two scanners and
arrives); a bare client does not, unless it subscribes. The "call with events" series subscribes
with the adapter's own event filter and does nothing with what arrives: the cost of asyncua
receiving the same notifications, without any of our code.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
from asyncua import Client, ua

from adapters.opcua import OpcUaHub
from adapters.opcua.devices import OpcUaConveyor
from adapters.opcua.nodemap import resolve
from adapters.opcua.wiring import wire
from controller.bench.command_path import CommandPath
from controller.bench.context import BenchContext
from controller.bench.gc_pauses import frozen_start_up
from controller.bench.measure import Latencies, ratio
from controller.bench.plc_host import ECHO_NODE
from controller.bench.processes import helper
from controller.ports import CommandTicket, Device, DeviceEvent
from controller.site import device_node_map, floor_node_maps
from controller.store.writer import StoreWriter

PLC = "plc-1"
CONVEYOR = "loop-1"
PLC_SPEED = 1000.0  # a transport rides 66 m of belt: 44 ms at this speed, so totes do not pile up
SERIES = ("write", "write_pipelined", "call", "call_pipelined", "call_with_events", "ctl", "ctl_pipelined")


async def repeat(operation: Callable[[], Awaitable[object]], count: int, workers: int) -> Latencies:
    """`count` operations by `workers` concurrent callers, each timed from call to answer."""
    result = Latencies()
    remaining = itertools.count(count, -1)

    async def worker() -> None:
        while next(remaining) > 0:
            started = time.perf_counter()
            try:
                await operation()
            except Exception:  # noqa: BLE001 - a refused or timed-out call counts as lost
                result.lost += 1
                continue
            result.add(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    result.elapsed_s = time.perf_counter() - started
    return result


class _Ignore:
    """A subscription handler that drops every notification (asyncua still decodes them)."""

    def event_notification(self, event: Any) -> None:
        pass


class BareClient:
    """asyncua alone: one session to the PLC, the echo variable and the conveyor's Transport method."""

    def __init__(self, ctx: BenchContext, endpoint: str) -> None:
        self.ctx = ctx
        self.client = Client(endpoint, timeout=5)
        self._ids = itertools.count(1)

    async def connect(self) -> None:
        await self.client.connect()
        namespaces = await self.client.get_namespace_array()
        self.echo = self.client.get_node(ua.NodeId(ua.String(ECHO_NODE),
                                                   ua.Int16(namespaces.index(f"urn:floorctl:plc:{PLC}"))))
        node_map = device_node_map(next(c for c in self.ctx.peak.conveyors if c.id == CONVEYOR))
        self.conveyor = self.client.get_node(resolve(node_map["Object"], namespaces))
        self.transport = resolve(node_map["Transport"], namespaces)
        self.event_filter = wire(floor_node_maps(self.ctx.peak, PLC), namespaces).event_filter

    async def write(self) -> None:
        await self.echo.write_value(ua.Variant(float(next(self._ids)), ua.VariantType.Double))

    async def call(self) -> None:
        n = next(self._ids)
        status = await self.conveyor.call_method(self.transport, f"bare.{self.ctx.run_id}.{n}", f"B{n}",
                                                 "PS-1")
        if status != "accepted":
            raise RuntimeError(status)

    async def calls_with_events(self, count: int) -> Latencies:
        subscription = await self.client.create_subscription(5, _Ignore())
        await subscription.subscribe_events(self.conveyor, evfilter=self.event_filter)
        try:
            return await repeat(self.call, count, 1)
        finally:
            await subscription.delete()


async def _transport(device: Device, command_id: str) -> CommandTicket:
    assert isinstance(device, OpcUaConveyor)
    return await device.transport(command_id, f"T{command_id}", "PS-1")


def _ignore(_event: DeviceEvent) -> None:
    pass


async def _controller_round(ctx: BenchContext, endpoints: dict[str, str], path: CommandPath,
                            count: int, series: dict[str, Latencies]) -> dict[str, Any]:
    """A fresh hub for the round (so none listens while the bare client is measured)."""
    hub = OpcUaHub(ctx.peak, endpoints=endpoints)
    try:
        await hub.start(_ignore)
        conveyor = hub.conveyor(CONVEYOR)
        if not conveyor.status.online:
            raise RuntimeError(f"the conveyor {CONVEYOR} did not come online: {dict(hub.counters)}")
        queue = path.queue(conveyor)
        await path.sequential(queue, _transport, ctx.profile.warmup, wait_done=False)
        series["ctl"].extend(await path.sequential(queue, _transport, count, wait_done=False))
        series["ctl_pipelined"].extend(
            await path.pipelined([queue] * ctx.profile.window, _transport, count, wait_done=False))
        await path.settle()
        return {"finished_tickets_kept": len(conveyor.tickets), "hub_counters": dict(hub.counters)}
    finally:
        await hub.stop()


async def run(ctx: BenchContext) -> dict[str, Any]:
    p = ctx.profile
    per_round = max(1, p.round_trips // p.rounds)
    series = {name: Latencies() for name in SERIES}
    me = psutil.Process(os.getpid())
    async with helper("PLC simulator", "controller.bench.plc_host", str(ctx.peak_path),
                      str(PLC_SPEED)) as plc:
        endpoints = json.loads(plc.ready_line.removeprefix("ready "))
        bare = BareClient(ctx, endpoints[PLC])
        await bare.connect()
        writer: StoreWriter = await ctx.sqlite_writer("opcua-commands")
        path = CommandPath(writer, "transport", ctx.run_id)
        try:
            await repeat(bare.write, p.warmup, 1)
            await repeat(bare.call, p.warmup, 1)
            rss_before = me.memory_info().rss
            with frozen_start_up():
                for n in range(p.rounds):
                    ctx.progress(f"round {n + 1}/{p.rounds}: bare asyncua")
                    series["write"].extend(await repeat(bare.write, per_round, 1))
                    series["write_pipelined"].extend(await repeat(bare.write, per_round, p.window))
                    series["call"].extend(await repeat(bare.call, per_round, 1))
                    series["call_pipelined"].extend(await repeat(bare.call, per_round, p.window))
                    series["call_with_events"].extend(await bare.calls_with_events(per_round))
                    ctx.progress(f"round {n + 1}/{p.rounds}: controller")
                    ctl = await _controller_round(ctx, endpoints, path, per_round, series)
            grown = me.memory_info().rss - rss_before
        finally:
            await bare.client.disconnect()
            await writer.close()
    out = {name: lat.summary() for name, lat in series.items()}
    w, call, c = out["write"], out["call"], out["ctl"]
    return {
        "bare_p50_ms": w["p50_ms"], "bare_p99_ms": w["p99_ms"], "bare_per_s": out["write_pipelined"]["per_s"],
        "bare_call_p50_ms": call["p50_ms"], "bare_call_p99_ms": call["p99_ms"],
        "bare_call_per_s": out["call_pipelined"]["per_s"],
        "bare_events_p50_ms": out["call_with_events"]["p50_ms"],
        "bare_events_p99_ms": out["call_with_events"]["p99_ms"],
        "ctl_p50_ms": c["p50_ms"], "ctl_p99_ms": c["p99_ms"], "ctl_per_s": out["ctl_pipelined"]["per_s"],
        "p50_ratio": ratio(c["p50_ms"], call["p50_ms"]), "p99_ratio": ratio(c["p99_ms"], call["p99_ms"]),
        "p50_ratio_to_write": ratio(c["p50_ms"], w["p50_ms"]), "p99_ratio_to_write": ratio(c["p99_ms"],
                                                                                           w["p99_ms"]),
        "p99_ratio_to_events": ratio(c["p99_ms"], out["call_with_events"]["p99_ms"]),
        "series": out,
        "ctl": {**ctl, "timing_rows_written": writer.stats.timing_rows, "commands_sent": path.sent,
                "rss_growth_kb_per_1k_commands": round(grown / 1024 / max(1, path.sent) * 1000, 1)},
        "path": "conveyor Transport -> accepted; bare: asyncua Node.write_value / Node.call_method; ctl: "
                "DeviceQueue + OpcUaHub conveyor.transport + a timing row through the StoreWriter",
    }
