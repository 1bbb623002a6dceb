"""MQTT: a pick light command -> its acknowledgement, bare paho against the controller's MqttHub,
both talking to the same echoing device through the same private Mosquitto."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.mqtt import MqttHub
from adapters.mqtt.devices import MqttPickLight
from controller.bench.bare_mqtt import BareCommander
from controller.bench.command_path import CommandPath
from controller.bench.context import BenchContext
from controller.bench.measure import ratio
from controller.bench.processes import helper
from controller.ports import CommandTicket, Device, DeviceEvent


async def _show(device: Device, command_id: str) -> CommandTicket:
    assert isinstance(device, MqttPickLight)
    return await device.show(command_id, "bench", 1)


def _bare(ctx: BenchContext, url: str) -> dict[str, Any]:
    commander = BareCommander(ctx.peak, url, ctx.run_id)
    commander.connect()
    try:
        commander.sequential(ctx.profile.warmup)
        sequential = commander.sequential(ctx.profile.round_trips)
        pipelined = commander.pipelined(ctx.profile.round_trips, ctx.profile.window)
    finally:
        commander.close()
    return {"sequential": sequential.summary(), "pipelined": pipelined.summary()}


async def _controller(ctx: BenchContext, url: str) -> dict[str, Any]:
    def ignore(_event: DeviceEvent) -> None:
        pass

    hub = MqttHub(ctx.peak, broker_url=url, client_id=f"bench-ctl-{ctx.run_id}")
    writer = await ctx.sqlite_writer("mqtt-commands")
    try:
        await hub.start(ignore)
        lights = [d for d in hub.devices() if isinstance(d, MqttPickLight)][: ctx.profile.window]
        for _ in range(200):  # the echo's retained ONLINE states arrive just after the subscription
            if all(d.status.online for d in lights):
                break
            await asyncio.sleep(0.01)
        path = CommandPath(writer, "show", ctx.run_id)
        queues = [path.queue(d) for d in lights]
        await path.sequential(queues[0], _show, ctx.profile.warmup, wait_done=True)
        sequential = await path.sequential(queues[0], _show, ctx.profile.round_trips, wait_done=True)
        pipelined = await path.pipelined(queues, _show, ctx.profile.round_trips, wait_done=True)
        rows = await path.settle()
    finally:
        await hub.stop()
        await writer.close()
    return {"sequential": sequential.summary(), "pipelined": pipelined.summary(),
            "timing_rows_written": rows, "commands_sent": path.sent, "hub_counters": dict(hub.counters)}


async def run(ctx: BenchContext) -> dict[str, Any]:
    async with ctx.broker("mqtt") as (url, _pid), \
            helper("echo device", "controller.bench.bare_mqtt", url, str(ctx.peak_path)):
        ctx.progress("bare paho")
        bare = await asyncio.to_thread(_bare, ctx, url)
        ctx.progress("controller")
        ctl = await _controller(ctx, url)
    b, c = bare["sequential"], ctl["sequential"]
    return {
        "bare_p50_ms": b["p50_ms"], "bare_p99_ms": b["p99_ms"], "bare_per_s": bare["pipelined"]["per_s"],
        "ctl_p50_ms": c["p50_ms"], "ctl_p99_ms": c["p99_ms"], "ctl_per_s": ctl["pipelined"]["per_s"],
        "p50_ratio": ratio(c["p50_ms"], b["p50_ms"]), "p99_ratio": ratio(c["p99_ms"], b["p99_ms"]),
        "bare": bare, "ctl": ctl,
        "path": "pick light `show` -> ack; bare: paho by hand in one thread; ctl: DeviceQueue + MqttHub "
                "(paho on the asyncio loop) + timing row through the StoreWriter",
    }
