"""What-if speed: an hour of the demo floor at its usual load (config/whatif/demo-1x.yaml) on the
simulated floor with the real controller, and how long that takes in wall time. The quick run plays
three minutes of it, the smoke run one, and scale the wall time to the hour."""

from __future__ import annotations

import time
from typing import Any

from controller.bench.context import BenchContext
from controller.config_files import config_file
from controller.whatif.run import RunOptions, run_scenario
from controller.whatif.scenario import Scenario, load_scenario

MINUTES = {"full": 60.0, "quick": 3.0}


async def run(ctx: BenchContext) -> dict[str, Any]:
    minutes = MINUTES.get(ctx.profile.name, 1.0)
    loaded = load_scenario(config_file("whatif/demo-1x.yaml"))
    scenario = Scenario(loaded.path, loaded.spec.model_copy(update={"duration": minutes * 60}), loaded.site)
    ctx.progress(f"{minutes:g} min of the demo floor")
    started = time.monotonic()
    result = await run_scenario(scenario, RunOptions(data_dir=ctx.scratch / "whatif"))
    wall = time.monotonic() - started
    return {"floor_minutes": minutes, "orders": result["orders"]["offered"],
            "shipped": result["orders"]["shipped"], "speed": result["speed"], "wall_s": round(wall, 1),
            "hour_wall_s": round(wall * 60 / minutes, 1),
            "bottleneck": (result["insight"].get("bottleneck") or {}).get("label")}
