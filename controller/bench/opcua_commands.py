"""OPC UA: bare asyncua (a write, and the conveyor's Transport method called by hand) against the
controller's OpcUaHub conveyor.transport through a DeviceQueue, all to the same PLC simulator running
in a process of its own."""

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
from adapters.opcua.nodemap import device_node_map, resolve
from controller.bench.command_path import CommandPath
from controller.bench.context import BenchContext
from controller.bench.measure import Latencies, ratio
from controller.bench.plc_host import ECHO_NODE
from controller.bench.processes import helper
from controller.ports import CommandTicket, Device, DeviceEvent

PLC = "plc-1"
CONVEYOR = "loop-1"
PLC_SPEED = 1000.0  # a transport rides 66 m of belt: 44 ms at this speed, so totes do not pile up


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


async def _bare(ctx: BenchContext, endpoint: str) -> dict[str, Any]:
    client = Client(endpoint, timeout=5)
    await client.connect()
    try:
        namespaces = await client.get_namespace_array()
        echo = client.get_node(ua.NodeId(ECHO_NODE, namespaces.index(f"urn:floorctl:plc:{PLC}")))
        node_map = device_node_map(next(c for c in ctx.peak.conveyors if c.id == CONVEYOR))
        conveyor = client.get_node(resolve(node_map["Object"], namespaces))
        transport = resolve(node_map["Transport"], namespaces)
        ids = itertools.count(1)

        async def write() -> None:
            await echo.write_value(ua.Variant(float(next(ids)), ua.VariantType.Double))

        async def call() -> None:
            n = next(ids)
            status = await conveyor.call_method(transport, f"bare.{ctx.run_id}.{n}", f"B{n}", "PS-1")
            if status != "accepted":
                raise RuntimeError(status)

        p = ctx.profile
        await repeat(write, p.warmup, 1)
        out = {"write": (await repeat(write, p.round_trips, 1)).summary(),
               "write_pipelined": (await repeat(write, p.round_trips, p.window)).summary()}
        await repeat(call, p.warmup, 1)
        out["call"] = (await repeat(call, p.round_trips, 1)).summary()
        out["call_pipelined"] = (await repeat(call, p.round_trips, p.window)).summary()
        return out
    finally:
        await client.disconnect()


async def _transport(device: Device, command_id: str) -> CommandTicket:
    assert isinstance(device, OpcUaConveyor)
    return await device.transport(command_id, f"T{command_id}", "PS-1")


async def _controller(ctx: BenchContext, endpoints: dict[str, str]) -> dict[str, Any]:
    def ignore(_event: DeviceEvent) -> None:
        pass

    hub = OpcUaHub(ctx.peak, endpoints=endpoints)
    writer = await ctx.sqlite_writer("opcua-commands")
    me = psutil.Process(os.getpid())
    try:
        await hub.start(ignore)
        conveyor = hub.conveyor(CONVEYOR)
        if not conveyor.status.online:
            raise RuntimeError(f"the conveyor {CONVEYOR} did not come online: {dict(hub.counters)}")
        path = CommandPath(writer, "transport", ctx.run_id)
        queue = path.queue(conveyor)
        p = ctx.profile
        await path.sequential(queue, _transport, p.warmup, wait_done=False)
        await path.settle()
        rss_before = me.memory_info().rss
        sequential = await path.sequential(queue, _transport, p.round_trips, wait_done=False)
        pipelined = await path.pipelined([queue] * p.window, _transport, p.round_trips, wait_done=False)
        rows = await path.settle()
        retained = len(conveyor.tickets._entries)
        grown = me.memory_info().rss - rss_before
    finally:
        await hub.stop()
        await writer.close()
    commands = 2 * p.round_trips
    return {"sequential": sequential.summary(), "pipelined": pipelined.summary(), "timing_rows_written": rows,
            "commands_sent": path.sent, "hub_counters": dict(hub.counters),
            "finished_tickets_retained": retained,
            "rss_growth_kb_per_1k_commands": round(grown / 1024 / commands * 1000, 1)}


async def run(ctx: BenchContext) -> dict[str, Any]:
    async with helper("PLC simulator", "controller.bench.plc_host", str(ctx.peak_path), str(PLC_SPEED)) as plc:
        endpoints = json.loads(plc.ready_line.removeprefix("ready "))
        ctx.progress("bare asyncua")
        bare = await _bare(ctx, endpoints[PLC])
        ctx.progress("controller")
        ctl = await _controller(ctx, endpoints)
    w, call, c = bare["write"], bare["call"], ctl["sequential"]
    return {
        "bare_p50_ms": w["p50_ms"], "bare_p99_ms": w["p99_ms"], "bare_per_s": bare["write_pipelined"]["per_s"],
        "bare_call_p50_ms": call["p50_ms"], "bare_call_p99_ms": call["p99_ms"],
        "bare_call_per_s": bare["call_pipelined"]["per_s"],
        "ctl_p50_ms": c["p50_ms"], "ctl_p99_ms": c["p99_ms"], "ctl_per_s": ctl["pipelined"]["per_s"],
        "p50_ratio": ratio(c["p50_ms"], call["p50_ms"]), "p99_ratio": ratio(c["p99_ms"], call["p99_ms"]),
        "p50_ratio_to_write": ratio(c["p50_ms"], w["p50_ms"]), "p99_ratio_to_write": ratio(c["p99_ms"], w["p99_ms"]),
        "bare": bare, "ctl": ctl,
        "path": "conveyor Transport -> accepted; bare: asyncua Node.write_value / Node.call_method; ctl: "
                "DeviceQueue + OpcUaHub conveyor.transport + timing row through the StoreWriter",
    }
