"""MQTT: a pick light command -> its acknowledgement, bare paho against the controller's MqttHub,
both talking to the same echoing device through the same private Mosquitto, in alternating rounds."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.mqtt import MqttHub
from adapters.mqtt.devices import MqttPickLight
from controller.bench.bare_mqtt import BareCommander
from controller.bench.command_path import CommandPath
from controller.bench.context import BenchContext
from controller.bench.gc_pauses import frozen_start_up
from controller.bench.measure import Latencies, ratio
from controller.bench.processes import helper
from controller.engine.dispatch import DeviceQueue
from controller.ports import CommandTicket, Device, DeviceEvent


async def _show(device: Device, command_id: str) -> CommandTicket:
    assert isinstance(device, MqttPickLight)
    return await device.show(command_id, "bench", 1)


def _ignore(_event: DeviceEvent) -> None:
    pass


async def _online(hub: MqttHub, window: int) -> list[MqttPickLight]:
    lights = [d for d in hub.devices() if isinstance(d, MqttPickLight)][:window]
    for _ in range(500):  # the echo's retained ONLINE states arrive just after the subscription
        if all(d.status.online for d in lights):
            return lights
        await asyncio.sleep(0.01)
    raise RuntimeError("the echoing device's pick lights did not come online")


async def run(ctx: BenchContext) -> dict[str, Any]:
    p = ctx.profile
    per_round = max(1, p.round_trips // p.rounds)
    series = {name: Latencies() for name in ("bare", "bare_pipelined", "ctl", "ctl_pipelined")}
    async with ctx.broker("mqtt") as (url, _pid), \
            helper("echo device", "controller.bench.bare_mqtt", url, str(ctx.peak_path)):
        bare = BareCommander(ctx.peak, url, ctx.run_id)
        await asyncio.to_thread(bare.connect)
        hub = MqttHub(ctx.peak, broker_url=url, client_id=f"bench-ctl-{ctx.run_id}")
        writer = await ctx.sqlite_writer("mqtt-commands")
        try:
            await hub.start(_ignore)
            path = CommandPath(writer, "show", ctx.run_id)
            queues: list[DeviceQueue] = [path.queue(d) for d in await _online(hub, p.window)]
            await asyncio.to_thread(bare.sequential, p.warmup)
            await path.sequential(queues[0], _show, p.warmup, wait_done=True)
            with frozen_start_up():
                for n in range(p.rounds):
                    ctx.progress(f"round {n + 1}/{p.rounds}: bare paho")
                    series["bare"].extend(await asyncio.to_thread(bare.sequential, per_round))
                    series["bare_pipelined"].extend(await asyncio.to_thread(bare.pipelined, per_round,
                                                                            p.window))
                    ctx.progress(f"round {n + 1}/{p.rounds}: controller")
                    series["ctl"].extend(await path.sequential(queues[0], _show, per_round, wait_done=True))
                    series["ctl_pipelined"].extend(await path.pipelined(queues, _show, per_round,
                                                                        wait_done=True))
            rows = await path.settle()
        finally:
            await asyncio.to_thread(bare.close)
            await hub.stop()
            await writer.close()
    out = {name: lat.summary() for name, lat in series.items()}
    b, c = out["bare"], out["ctl"]
    return {
        "bare_p50_ms": b["p50_ms"], "bare_p99_ms": b["p99_ms"], "bare_per_s": out["bare_pipelined"]["per_s"],
        "ctl_p50_ms": c["p50_ms"], "ctl_p99_ms": c["p99_ms"], "ctl_per_s": out["ctl_pipelined"]["per_s"],
        "p50_ratio": ratio(c["p50_ms"], b["p50_ms"]), "p99_ratio": ratio(c["p99_ms"], b["p99_ms"]),
        "series": out, "ctl": {"timing_rows_written": rows, "commands_sent": path.sent,
                               "hub_counters": dict(hub.counters)},
        "path": "pick light `show` -> ack; bare: paho by hand in one thread; ctl: DeviceQueue + MqttHub "
                "(paho on the asyncio loop) + a timing row through the StoreWriter; same echoing device",
    }
