"""The measuring tools every benchmark shares: latency samples, event-loop lag, CPU per process/thread.

Nothing here asserts anything about speed; it only counts. Percentiles are nearest-rank over every
sample (no reservoir): a p99 over 20,000 samples is the 200th-worst one, which is what a reader expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self

import psutil

from controller.engine.stats import percentile


@dataclass
class Latencies:
    """Round-trip times in seconds, and the wall time they were taken over."""

    samples: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    lost: int = 0  # requests that never got their answer

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def extend(self, other: Latencies) -> None:
        """Another round of the same series."""
        self.samples += other.samples
        self.elapsed_s += other.elapsed_s
        self.lost += other.lost

    def ms(self, q: float) -> float | None:
        if not self.samples:
            return None
        return round(percentile(sorted(self.samples), q) * 1000, 3)

    @property
    def rate(self) -> float | None:
        return round(len(self.samples) / self.elapsed_s, 1) if self.elapsed_s > 0 and self.samples else None

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.samples)
        pick = (lambda q: round(percentile(ordered, q) * 1000, 3)) if ordered else (lambda q: None)
        return {"n": len(ordered), "p50_ms": pick(50), "p99_ms": pick(99),
                "max_ms": round(ordered[-1] * 1000,
                                3) if ordered else None, "per_s": self.rate, "lost": self.lost}


def rss_mb() -> float:
    """This process's resident size once the garbage is collected (what it keeps, not what it has not
    freed yet), in MB."""
    gc.collect()
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def ratio(measured: float | None, baseline: float | None) -> float | None:
    if measured is None or not baseline:
        return None
    return round(measured / baseline, 2)


class LoopLag:
    """A ticker that asks the loop to wake it every `interval_s` and records how late it woke.

    A late wake-up is a stall: for that long nothing else on the loop (acks, scans) could run.
    """

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.lags = Latencies()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._tick(), name="bench-loop-lag")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _tick(self) -> None:
        started = time.perf_counter()
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.lags.add(max(0.0, time.perf_counter() - before - self.interval_s))
            self.lags.elapsed_s = time.perf_counter() - started


@dataclass(frozen=True)
class CpuShare:
    name: str
    percent: float  # of one core: 100 means one core busy all the time


class CpuMeter:
    """CPU used between `start()` and `stop()` by whole processes and by this process's threads.

    Threads are named by their Python name where Python knows them (the loop is `MainThread`, the
    store writer `floorctl-writer_0`); the rest keep their native id. `programs` are counted by
    executable name over all their processes, including those that start meanwhile (a database
    server forks a backend per connection).
    """

    def __init__(self, processes: dict[str, int] | None = None,
                 programs: dict[str, str] | None = None) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in (processes or {}).items()}
        self._programs = programs or {}
        self._program0: dict[str, dict[int, float]] = {}
        self._own = psutil.Process(os.getpid())
        self._t0 = 0.0
        self._proc0: dict[str, float] = {}
        self._thread0: dict[int, float] = {}
        self._machine0 = 0.0
        self._family0 = 0.0

    @staticmethod
    def _busy(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    def _threads(self) -> dict[int, float]:
        try:
            return {t.id: t.user_time + t.system_time for t in self._own.threads()}
        except psutil.Error:
            return {}

    @staticmethod
    def _machine_busy() -> float:
        times = psutil.cpu_times()
        return sum(getattr(times, part, 0.0) for part in ("user", "nice", "system", "irq", "softirq"))

    def _program(self, executable: str) -> dict[int, float]:
        busy = {}
        for proc in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["name"] == executable:
                    busy[proc.pid] = self._busy(proc)
        return busy

    def _family_busy(self) -> float:
        """This process and every process it started: the live ones, and through `children_*` the
        ones that ended and were waited for (helpers of earlier benchmarks, brokers)."""
        times = self._own.cpu_times()
        busy = times.user + times.system + times.children_user + times.children_system
        for child in self._own.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                busy += self._busy(child)
        return busy

    def start(self) -> None:
        self._program0 = {name: self._program(exe) for name, exe in self._programs.items()}
        self._t0 = time.perf_counter()
        self._machine0 = self._machine_busy()
        self._family0 = self._family_busy()
        self._proc0 = {name: self._busy(p) for name, p in self._procs.items() if p.is_running()}
        self._proc0["controller (all threads)"] = self._busy(self._own)
        self._thread0 = self._threads()

    def stop(self) -> list[CpuShare]:
        wall = max(1e-6, time.perf_counter() - self._t0)
        shares = []
        for name, before in self._proc0.items():
            proc = self._own if name == "controller (all threads)" else self._procs[name]
            try:
                shares.append(CpuShare(name, round(100 * (self._busy(proc) - before) / wall, 1)))
            except psutil.Error:
                continue
        ours = 100 * (self._family_busy() - self._family0) / wall
        for name, exe in self._programs.items():
            started = self._program0.get(name, {})
            spent = sum(busy - started.get(pid, 0.0) for pid, busy in self._program(exe).items())
            shares.append(CpuShare(name, round(100 * spent / wall, 1)))
            ours += shares[-1].percent
        machine = 100 * (self._machine_busy() - self._machine0) / wall
        # Whatever else ran on the machine meanwhile competed for the same cores: a noisy neighbour.
        shares.append(CpuShare("other processes on the machine", round(max(0.0, machine - ours), 1)))
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        for tid, busy in self._threads().items():
            used = busy - self._thread0.get(tid, 0.0)
            if used / wall >= 0.01:
                shares.append(CpuShare(f"controller thread {names.get(tid, tid)}",
                                       round(100 * used / wall, 1)))
        return sorted(shares, key=lambda s: -s.percent)
