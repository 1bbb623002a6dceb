"""One what-if scenario on the simulated floor: the real controller, the simulators over the real
protocols, faster than real time; and what the database recorded, turned into the scenario's result.

`python -m controller.whatif.run SCENARIO --out FILE` runs one scenario in a process of its own and
prints its progress as JSON lines (the way `floorctl whatif` runs several at once)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from controller.bootstrap import Controller, Settings
from controller.domain.model import NewOrder
from controller.engine.stats import percentile
from controller.site import SiteError
from controller.store.tables import OrderRow
from controller.whatif.profile import PlannedOrder, plan_orders
from controller.whatif.scenario import Scenario, load_scenario
from simulators.broker import EmbeddedBroker, free_port
from simulators.faults import Played, play
from simulators.site_devices import simulated_floor

DONE = frozenset({"shipped", "exception", "cancelled"})
# The simulators share the controller's process and core: at 20x the demo floor's devices, broker
# traffic and controller together keep floor time (at 50x a 3x peak stretched the packers' 6 s to 9 s),
# and the demo sorter's 6 m from scan to divert leave the controller 150 ms.
MAX_SPEED = 20.0
WARM_UP_S = 300.0  # floor seconds, at most, left out of the analysis at the start of a run
WALL_RATE = 15.0  # orders per wall second the auto speed keeps the floor at, at most

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class RunOptions:
    speed: float | None = None  # None: the scenario's, else chosen from its peak rate
    data_dir: Path | None = None  # None: a temporary directory, removed after the run
    database_url: str | None = None  # None: SQLite in data_dir


def choose_speed(planned: list[PlannedOrder], duration: float) -> float:
    """As fast as the floor's physics and the controller allow: at most MAX_SPEED, and slow enough
    that the busiest floor minute arrives at no more than WALL_RATE orders per wall second."""
    window = min(60.0, duration)
    times = [o.at_s for o in planned]
    busiest, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        busiest = max(busiest, i - j + 1)
    peak_rate = busiest / window if window else 0.0
    return float(max(1, int(min(MAX_SPEED, WALL_RATE / peak_rate if peak_rate else MAX_SPEED))))


async def run_scenario(scenario: Scenario, options: RunOptions = RunOptions(), *,
                       broker_url: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the scenario to its end (every order finished, or the drain time over) and return its result."""
    planned = await plan_orders(scenario)
    spec = scenario.spec
    timeline = scenario.faults()
    speed = options.speed or spec.speed or choose_speed(planned, spec.duration)
    with contextlib.ExitStack() as stack:
        data_dir = options.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="whatif-")))
        async with _broker(broker_url, data_dir) as (url, broker):
            ports = {plc.id: free_port() for plc in scenario.site.plcs}
            async with simulated_floor(scenario.site, broker_url=url, speed=speed, seed=spec.seed,
                                       plc_ports=ports) as floor:
                settings = Settings(site=scenario.site.with_broker_url(url), data_dir=data_dir,
                                    database_url=options.database_url, broker_url=url,
                                    plc_endpoints=floor.endpoints, speed=speed, port=free_port(), auth=False)
                controller = Controller(settings)
                await controller.start(serve_api=False)
                faults = (asyncio.create_task(play(timeline, floor, speed, broker=broker))
                          if timeline is not None else None)
                try:
                    window = await _feed(controller, scenario, planned, speed, progress)
                    played = await _stop(faults)
                    await controller.engine.writer.flush()
                    result = await summarise_run(controller.db, scenario, speed, window)
                    result["faults"] = [str(step) for step in played]
                    return result
                finally:
                    await _stop(faults)
                    await controller.stop()


@contextlib.asynccontextmanager
async def _broker(url: str | None, data_dir: Path) -> AsyncIterator[tuple[str, EmbeddedBroker | None]]:
    """The broker to use: the given one, or one of the run's own (which a fault timeline may restart)."""
    if url is not None:
        yield url, None
    else:
        async with EmbeddedBroker(data_dir=data_dir / "broker") as started:
            yield started.url, started


async def _stop(faults: asyncio.Task[list[Played]] | None) -> list[Played]:
    """The fault timeline's steps so far; a timeline still playing is stopped (its faults end)."""
    if faults is None:
        return []
    if not faults.done():
        faults.cancel()
    try:
        return await faults
    except asyncio.CancelledError:
        return []


@dataclass(frozen=True, slots=True)
class Window:
    started: float  # wall clock of floor time 0
    arrivals_end: float  # wall clock when the scenario's duration ended
    finished: float  # wall clock when the last order finished, or the drain time ran out


async def _feed(controller: Controller, scenario: Scenario, planned: list[PlannedOrder], speed: float,
                progress: Progress | None) -> Window:
    engine = controller.engine
    spec = scenario.spec
    prefix = f"WI-{spec.seed}-"
    started_mono, started = time.monotonic(), time.time()
    drain = spec.drain if spec.drain is not None else spec.duration
    last_report = 0.0
    i = 0
    while True:
        floor_now = (time.monotonic() - started_mono) * speed
        batch: list[NewOrder] = []
        now = time.time()
        while i < len(planned) and planned[i].at_s <= floor_now:
            o = planned[i]
            due = None if o.due_in_s is None else now + o.due_in_s / speed
            batch.append(NewOrder(f"{prefix}{i + 1:07d}", o.lines, o.carrier, priority=o.priority,
                                  due_at=due))
            i += 1
        if batch:
            await engine.receive(batch)
        active = sum(1 for order in list(engine.orders.values()) if order.state.value not in DONE)
        if progress is not None and floor_now - last_report >= max(1.0, spec.duration / 200):
            last_report = floor_now
            progress({"floor_s": round(floor_now, 1), "duration_s": spec.duration, "offered": i,
                      "planned": len(planned), "active": active, "speed": speed})
        if i >= len(planned) and floor_now >= spec.duration and (
                active == 0 or floor_now >= spec.duration + drain):
            break
        await asyncio.sleep(0.02)
    finished = time.time()
    return Window(started, started + spec.duration / speed, finished)


async def summarise_run(db: AsyncEngine, scenario: Scenario, speed: float, window: Window) -> dict[str, Any]:
    """What the database says of the run, in floor time: throughput, cycle times, due times kept,
    utilisation and the bottleneck."""
    async with db.connect() as conn:
        rows = (await conn.execute(select(
            col(OrderRow.id), col(OrderRow.state), col(OrderRow.priority), col(OrderRow.carrier),
            col(OrderRow.due_at), col(OrderRow.received_at), col(OrderRow.shipped_at), col(OrderRow.reason))
            .where(col(OrderRow.received_at) >= window.started))).all()  # the run's own orders
    duration = scenario.spec.duration
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    shipped = [r for r in rows if r.state == "shipped" and r.shipped_at is not None]
    cycles = sorted((r.shipped_at - r.received_at) * speed for r in shipped)
    in_window = sum(1 for r in shipped if r.shipped_at <= window.arrivals_end)
    half = window.started + (window.arrivals_end - window.started) / 2
    late_half = sum(1 for r in shipped if half <= r.shipped_at <= window.arrivals_end)
    backlog = sum(1 for r in rows if r.received_at <= window.arrivals_end
                  and (r.shipped_at is None or r.shipped_at > window.arrivals_end))
    offered_rate = len(rows) / duration
    # What arrived one median cycle time before the second half (the floor needs that long to ship it).
    lag = (cycles[len(cycles) // 2] / speed) if cycles else 0.0
    late_arrivals = sum(1 for r in rows if half - lag <= r.received_at <= window.arrivals_end - lag)
    result: dict[str, Any] = {
        "scenario": scenario.name, "file": str(scenario.path), "seed": scenario.spec.seed, "speed": speed,
        "release": scenario.site.release, "duration_s": duration,
        "wall_s": round(window.finished - window.started, 2),
        "floor_s": round((window.finished - window.started) * speed, 1),
        "orders": {"offered": len(rows), "states": states, "shipped": len(shipped),
                   "unfinished": sum(n for s, n in states.items() if s not in DONE),
                   "exception_reasons": _reasons(r.reason for r in rows if r.state == "exception")},
        "offered_per_s": offered_rate,
        "shipped_per_hour": in_window / duration * 3600,
        # Completions in the second half of the arrival window: the floor's pace once it settled.
        "throughput_per_s": late_half / (duration / 2),
        "backlog_at_end": backlog,
        # Kept up: in the second half of the arrival window the floor shipped at least 90% of what
        # arrived a median cycle time earlier (an overloaded floor ships at its ceiling while the
        # backlog grows).
        "kept_up": late_half >= 0.9 * late_arrivals,
        "cycle_s": {f"p{q}": percentile(cycles, q) if cycles else None for q in (50, 95, 99)},
        "on_time": _on_time(rows),
    }
    result["insight"] = await _insight(db, scenario, window, speed)
    return result


def _reasons(reasons: Iterable[str | None]) -> dict[str, int]:
    """Exception reasons counted by their first words (ids and numbers left out)."""
    counted: dict[str, int] = {}
    for reason in reasons:
        key = " ".join(w for w in (reason or "no reason").split()[:6] if not any(c.isdigit() for c in w))
        counted[key] = counted.get(key, 0) + 1
    return dict(sorted(counted.items(), key=lambda kv: -kv[1]))


def _on_time(rows: Sequence[Any]) -> dict[str, Any]:
    """Share of orders with a due time that shipped by it, per priority and per carrier."""
    def share(group: list[Any]) -> dict[str, Any]:
        due = [r for r in group if r.due_at is not None]
        kept = sum(1 for r in due if r.shipped_at is not None and r.shipped_at <= r.due_at)
        return {"orders": len(due), "on_time": kept, "share": kept / len(due) if due else None}
    by_priority = {str(p): share([r for r in rows if r.priority == p])
                   for p in sorted({r.priority for r in rows})}
    by_carrier = {c: share([r for r in rows if r.carrier == c]) for c in sorted({r.carrier for r in rows})}
    return {"all": share(list(rows)), "by_priority": by_priority, "by_carrier": by_carrier}


async def _insight(db: AsyncEngine, scenario: Scenario, window: Window, speed: float) -> dict[str, Any]:
    from controller.store.insight import floor_insight  # the analysis of what limits the floor

    # The floor starts empty: the first orders reach packing only after their pick and conveying. The
    # analysis leaves out that warm-up (a quarter of the arrival window, at most 5 minutes of floor time).
    warm_up = min(0.25 * (window.arrivals_end - window.started), WARM_UP_S / speed)
    insight = await floor_insight(db, scenario.site, window.started + warm_up, window.arrivals_end,
                                  time_scale=speed)
    return insight.as_dict()


# ---- one scenario in a process of its own ------------------------------------------------------------
def _seeds(text: str) -> list[int]:
    """`7` or `1-10`."""
    first, _, last = text.partition("-")
    try:
        seeds = list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds look like 7 or 1-10, not {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seed in {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.whatif.run")
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int)
    group.add_argument("--seeds", type=_seeds,
                       help="run the scenario once per seed, one after the other (e.g. 1-10); "
                            "--out gets a list")
    parser.add_argument("--speed", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    def report(event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    async def runs() -> Any:
        if args.seeds is None:
            scenario = load_scenario(args.scenario, seed=args.seed)
            return await run_scenario(scenario, RunOptions(speed=args.speed), progress=report)
        return [await run_scenario(load_scenario(args.scenario, seed=seed), RunOptions(speed=args.speed))
                for seed in args.seeds]

    try:
        result = asyncio.run(runs())
    except SiteError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 2
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({"done": str(args.out)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
