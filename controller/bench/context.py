"""What every benchmark of one `floorctl bench` run shares: its size, a scratch directory, the sites."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from controller.bench.command_path import sqlite_writer
from controller.config_files import config_file
from controller.site import Site, load_site
from controller.store.writer import StoreWriter
from simulators.broker import EmbeddedBroker


@dataclass(frozen=True)
class Profile:
    """How much of each benchmark a run does. `quick` is about a minute, `full` at most ten."""

    name: str
    warmup: int  # round trips thrown away before measuring
    round_trips: int  # per measured series
    window: int  # commands in flight when pipelined
    rounds: int  # bare and controller series alternate this many times, so both see the same machine
    divert_rates: tuple[int, ...]
    divert_seconds: float
    surge_rates: tuple[int, ...]
    surge_seconds: float
    writer_seconds: float
    memory_orders: int
    divert_gc_probe: bool = True  # repeat the 1,000/s divert step without gc.freeze() to show what it buys
    # `--growth`: the floors (a shipped site file, or a number of devices to generate), the active
    # orders held on each, the orders/s flowing past them, the measured window at each after a
    # warm-up, and the window with no flow (idle, and holding the orders).
    growth_floors: tuple[str, ...] = ("demo.yaml", "peak.yaml", "1000")
    growth_active: tuple[int, ...] = (1_000, 10_000, 20_000)
    growth_rate: float = 20.0
    growth_seconds: float = 12.0
    growth_warmup_seconds: float = 5.0
    growth_idle_seconds: float = 3.0

    @classmethod
    def named(cls, name: str) -> Profile:
        return PROFILES[name]


PROFILES = {
    "full": Profile("full", warmup=500, round_trips=10_000, window=32, rounds=5,
                    divert_rates=(300, 1000, 2000),
                    divert_seconds=10.0, surge_rates=(50, 100, 200, 400), surge_seconds=20.0,
                    writer_seconds=10.0, memory_orders=100_000),
    # The rates the targets name, shorter windows, one take-over, three floor minutes of what-if.
    "quick": Profile("quick", warmup=200, round_trips=2_000, window=32, rounds=2,
                     divert_rates=(1000, 2000), divert_gc_probe=False,
                     divert_seconds=2.0, surge_rates=(200, 400), surge_seconds=3.0,
                     writer_seconds=2.0, memory_orders=5_000, growth_seconds=5.0,
                     growth_idle_seconds=2.0),
    # For the smoke test: every code path, a few seconds in all; the figures mean nothing.
    "tiny": Profile("tiny", warmup=10, round_trips=50, window=4, rounds=1, divert_rates=(100,),
                    divert_seconds=0.5,
                    surge_rates=(20,), surge_seconds=1.0, writer_seconds=0.5, memory_orders=300,
                    divert_gc_probe=False, growth_floors=("demo.yaml", "30"), growth_active=(20, 60),
                    growth_seconds=1.0, growth_warmup_seconds=1.5, growth_idle_seconds=0.5),
}


@dataclass
class BenchContext:
    profile: Profile
    scratch: Path
    database_url: str | None  # PostgreSQL for the writer benchmark, None to skip
    run_id: str = ""
    progress: Callable[[str], None] = lambda _note: None

    def __post_init__(self) -> None:
        self.run_id = self.run_id or time.strftime("%H%M%S")
        self.peak_path = config_file("peak.yaml")
        self.peak: Site = load_site(self.peak_path)

    async def sqlite_writer(self, name: str) -> StoreWriter:
        return await sqlite_writer(self.scratch, name)

    @contextlib.asynccontextmanager
    async def broker(self, name: str) -> AsyncIterator[tuple[str, int]]:
        """A private Mosquitto with config/mosquitto.conf for one benchmark: (url, broker pid)."""
        data = self.scratch / f"broker-{name}"
        async with EmbeddedBroker(data_dir=data) as broker:
            yield broker.url, _child_listening_on(broker.port)


def _child_listening_on(port: int) -> int:
    """The pid of our child process that listens on `port` (the broker), for its CPU figures."""
    for child in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in child.net_connections("tcp")):
                return child.pid
    return 0
