"""`floorctl bench`: every benchmark in turn, a progress bar on stderr, the table or one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TextIO

from controller.bench import (
    data_scale,
    divert,
    growth,
    machine,
    memory,
    mqtt_commands,
    opcua_commands,
    standby,
    surge,
    timing_writer,
    whatif,
)
from controller.bench.context import BenchContext, Profile
from controller.bench.measure import CpuMeter
from controller.bench.report import render, targets

TINY_ENV = "FLOORCTL_BENCH_TINY"
NOISY_PERCENT = 20.0  # other processes' CPU, in % of one core, past which the run is flagged
QUIET_LOGGERS = ("asyncua", "adapters", "simulators", "controller.engine")


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    run: Callable[[BenchContext], Awaitable[dict[str, Any]]]
    expected_s: Callable[[Profile], float]  # for the progress bar only


BENCHMARKS = (
    Benchmark("mqtt", "MQTT command -> ack", mqtt_commands.run, lambda p: 2 + p.round_trips / 400),
    Benchmark("opcua", "OPC UA command -> ack", opcua_commands.run, lambda p: 3 + p.round_trips / 350),
    Benchmark("divert", "divert decisions", divert.run,
              lambda p: len(p.divert_rates) * (p.divert_seconds + 4) + 3),
    Benchmark("surge", "order surge", surge.run, lambda p: len(p.surge_rates) * (p.surge_seconds + 4) + 5),
    Benchmark("writer", "timing writer", timing_writer.run, lambda p: 2 * p.writer_seconds + 2),
    Benchmark("memory", "memory", memory.run, lambda p: 3 + p.memory_orders / 800),
    Benchmark("standby", "hot-standby take-over", standby.run,
              lambda p: {"tiny": 15, "quick": 20}.get(p.name, 45)),
    Benchmark("whatif", "what-if, the demo floor", whatif.run,
              lambda p: {"full": 200, "quick": 12}.get(p.name, 6)),
)


class Progress:
    """A bar on stderr, redrawn in place on a terminal and one line per step otherwise."""

    def __init__(self, total_s: float, out: TextIO = sys.stderr) -> None:
        self.total_s = total_s
        self.out = out
        self.tty = out.isatty()
        self.done_s = 0.0
        self.step = ""
        self.note = ""
        self._step_started = time.monotonic()
        self._step_expected = 0.0
        self._task: asyncio.Task[None] | None = None

    def begin(self, step: str, expected_s: float) -> None:
        self.step, self.note = step, ""
        self._step_started = time.monotonic()
        self._step_expected = expected_s
        self._draw(force_line=True)

    def noted(self, note: str) -> None:
        self.note = note
        self._draw(force_line=True)

    def end(self) -> None:
        self.done_s += self._step_expected

    def _fraction(self) -> float:
        within = min(time.monotonic() - self._step_started, self._step_expected * 0.95)
        return min(1.0, (self.done_s + within) / self.total_s) if self.total_s else 1.0

    def _draw(self, force_line: bool = False) -> None:
        fraction = self._fraction()
        bar = "#" * int(fraction * 30)
        note = f": {self.note}" if self.note else ""
        text = f"bench [{bar:<30}] {fraction * 100:3.0f}%  {self.step}{note}"
        if self.tty:
            self.out.write("\r" + text + "\x1b[K")
            self.out.flush()
        elif force_line:
            self.out.write(text + "\n")
            self.out.flush()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._redraw())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.done_s = self.total_s
        self.step, self.note = "done", ""
        self._draw(force_line=True)
        if self.tty:
            self.out.write("\n")

    async def _redraw(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._draw()


def data_scale_step(rows: int) -> Benchmark:
    """`--data-scale ROWS`: this step alone (its own data set, minutes to fill; not in the full run)."""
    return Benchmark("data_scale", "data at scale", lambda ctx: data_scale.run(ctx, rows),
                     lambda _p: 120 + rows / 60_000)


def growth_step() -> Benchmark:
    """`--growth`: this step alone (three floors up to 1,000 devices, 20,000 active orders: minutes)."""
    def expected_s(p: Profile) -> float:
        start_s = 25  # broker, simulators and controller started, every device online
        per_level_s = p.growth_idle_seconds + p.growth_warmup_seconds + p.growth_seconds + 2
        return len(p.growth_floors) * (start_s + p.growth_idle_seconds + max(p.growth_active) / 1_000
                                       + len(p.growth_active) * per_level_s)

    return Benchmark("growth", "how cost grows", growth.run, expected_s)


def profile_for(args: argparse.Namespace) -> Profile:
    if os.environ.get(TINY_ENV, "") not in ("", "0"):
        return Profile.named("tiny")
    return Profile.named("quick" if args.quick else "full")


async def run_bench(args: argparse.Namespace) -> int:
    profile = profile_for(args)
    rows = getattr(args, "data_scale", None)
    only = getattr(args, "only", None)
    steps = (data_scale_step(rows),) if rows else (growth_step(),) if getattr(args, "growth", False) \
        else tuple(b for b in BENCHMARKS if only is None or b.key in only)
    for name in QUIET_LOGGERS:  # warnings such as asyncua's revised session values would tear the bar
        logging.getLogger(name).setLevel(logging.ERROR)
    results: dict[str, Any] = {"profile": profile.name, "machine": await asyncio.to_thread(machine.describe)}
    failed = False
    started = time.monotonic()
    machine_cpu = CpuMeter()
    machine_cpu.start()
    with tempfile.TemporaryDirectory(prefix="floorctl-bench-") as scratch:
        ctx = BenchContext(profile, Path(scratch), getattr(args, "database_url", None))
        async with Progress(sum(b.expected_s(profile) for b in steps)) as progress:
            ctx.progress = progress.noted
            for bench in steps:
                progress.begin(bench.title, bench.expected_s(profile))
                step_started = time.monotonic()
                try:
                    results[bench.key] = await bench.run(ctx)
                except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
                    failed = True
                    results[bench.key] = {"error": f"{type(exc).__name__}: {exc}"}
                    logging.getLogger(__name__).debug("%s failed:\n%s", bench.key, traceback.format_exc())
                results[bench.key]["seconds"] = round(time.monotonic() - step_started, 1)
                progress.end()
    results["seconds"] = round(time.monotonic() - started, 1)
    others = next(s.percent for s in machine_cpu.stop() if s.name == "other processes on the machine")
    results["machine"]["other_processes_cpu_percent"] = others
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if others > NOISY_PERCENT:
        results["machine"]["warning"] = (f"other processes used {others:.0f}% of a core on average during "
                                         "the run: they competed for the same cores, so latencies are "
                                         "inflated")
    results["targets"] = targets(results)
    if args.json:
        print(json.dumps(results))
    else:
        print(render(results))
        if "warning" in results["machine"]:
            print(f"\nwarning: {results['machine']['warning']}")
        print(f"\n{profile.name} run, {results['seconds']:.0f} s on {results['machine']['nproc']} cores "
              f"({results['machine']['cpu']}); `floorctl bench --json` for every figure.")
    return 1 if failed else 0
