"""How cost grows: the controller's CPU per order shipped and its resident size against the number
of devices on the floor and the number of orders active at once, so that a site can size its machine.

For each floor (config/demo.yaml, config/peak.yaml, a generated site of 1,000 devices) the step runs
a private Mosquitto, the floor's simulators (`floorctl sim`, real MQTT and OPC UA, in a process of
their own) and the controller in a fresh process of its own (controller/bench/held_orders.py), which
measures only itself. The floor runs fast with no human delays (the surge step's `fast_site`); the
active orders wait at paused pick lights while a steady flow of others ships past them.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from controller.bench.context import BenchContext
from controller.bench.generated_floor import floor_devices, generated_floor
from controller.bench.processes import helper
from controller.bench.surge import SPEED, fast_site
from controller.config_files import config_file

ONLINE_TIMEOUT_S = 180.0  # 1,000 devices: the simulators' connections, then the controller's


def floor_data(floor: str) -> dict[str, Any]:
    """A shipped site file by name (demo.yaml), or a generated floor of that many devices ("1000")."""
    if floor.isdigit():
        return generated_floor(int(floor))
    data: dict[str, Any] = yaml.safe_load(config_file(floor).read_text(encoding="utf-8"))
    return data


def parked_floor(data: dict[str, Any]) -> dict[str, Any]:
    """Orders parked at a paused pick light wait there for the whole step, not the site's wait limit."""
    timeouts = data.setdefault("timeouts", {})
    timeouts["wait_on_device_s"] = {**timeouts.get("wait_on_device_s", {}), "pick_light": 86_400.0}
    return data


async def measure_floor(ctx: BenchContext, floor: str) -> dict[str, Any]:
    profile = ctx.profile
    data = parked_floor(floor_data(floor))
    devices = floor_devices(data)
    name = f"growth-{devices}"
    async with ctx.broker(name) as (url, _broker_pid):
        site_path = fast_site(data, url, ctx.scratch / f"{name}.yaml")
        ctx.progress(f"{devices:,} devices: starting the simulators")
        async with helper("simulated floor", "controller.cli", "sim", "--site", str(site_path),
                          "--speed", str(SPEED), ready="floorctl sim:", ready_timeout=ONLINE_TIMEOUT_S):
            ctx.progress(f"{devices:,} devices: starting the controller")
            async with helper("controller", "controller.bench.held_orders", str(site_path),
                              str(ctx.scratch / name), str(SPEED), ready='{"ready"',
                              ready_timeout=ONLINE_TIMEOUT_S) as controller:
                started = json.loads(controller.ready_line)
                idle = json.loads(await controller.ask(f"idle {profile.growth_idle_seconds}"))
                points = []
                for active in profile.growth_active:
                    ctx.progress(f"{devices:,} devices, {active:,} active orders")
                    points.append(json.loads(await controller.ask(
                        f"hold {active} {profile.growth_seconds} {profile.growth_rate} "
                        f"{profile.growth_warmup_seconds} {profile.growth_idle_seconds}",
                        timeout=300 + active / 50)))
    source = f"generated ({floor} devices)" if floor.isdigit() else f"config/{floor}"
    return {"devices": devices, "site": source, "online_after_s": started["online_after_s"],
            "parked_at_pick_lights": started["parked_at"],
            "idle_cpu_percent": idle["cpu_percent"], "idle_rss_mb": idle["rss_mb"], "points": points}


async def run(ctx: BenchContext) -> dict[str, Any]:
    floors = [await measure_floor(ctx, floor) for floor in ctx.profile.growth_floors]
    return {
        "floors": floors, "speed": SPEED, "rate": ctx.profile.growth_rate,
        "note": f"controller process only; the active orders parked at paused pick lights, "
                f"{ctx.profile.growth_rate:g} orders/s shipping past them: CPU per order shipped over "
                f"{ctx.profile.growth_seconds:g} s of that flow, RSS after it (garbage collected)",
        "how": "operator, packer and printer delays 0, belts at 50x; orders handed to the engine in "
               "batches as the API does; SQLite; the API served",
    }

