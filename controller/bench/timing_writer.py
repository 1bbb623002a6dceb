"""The timing writer: rows/s the StoreWriter commits on SQLite and PostgreSQL, and how long the event
loop stalls meanwhile (a ticker asks to be woken every 1 ms while rows are put as fast as the loop can).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from controller.bench.context import BenchContext
from controller.bench.measure import CpuMeter, LoopLag
from controller.store import tables  # noqa: F401  (registers the tables)
from controller.store.db import normalise_url
from controller.store.writer import StoreWriter, sync_url

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PUT_CHUNK = 200  # rows put between two yields to the loop: about 0.1 ms of work
# Past this backlog the producer waits: offering rows faster than they commit only grows memory, and
# what we want is the rate the writer keeps up with.
HIGH_WATER = 20_000


def _row(run: str, n: int, now: float) -> dict[str, Any]:
    """A timing row as DeviceQueue writes one."""
    return {"command_id": f"bench.{run}.{n}", "order_id": n // 5, "task": "pick",
            "device_id": f"ptl-{n % 240}",
            "device_kind": "pick_light", "protocol": "mqtt", "command": "show", "queued_at": now,
            "sent_at": now, "acked_at": now + 0.0003, "completed_at": now + 0.002, "outcome": "ok",
            "reason": None, "retries": 0}


class DroppedRows:
    """The control: rows are made and handed over exactly as to the writer, then let go at once. The
    loop's stalls measured with it are the machine's and the producer's own, not the writer's."""

    backlog = 0
    rows = 0

    def timing(self, row: dict[str, Any]) -> None:
        self.rows += 1


async def _put_rows(sink: StoreWriter | DroppedRows, run: str, seconds: float) -> tuple[int, float]:
    """Rows as fast as the loop makes them, waiting while the backlog is at the high-water mark."""
    put = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if sink.backlog >= HIGH_WATER:
            await asyncio.sleep(0.001)
            continue
        now = time.time()
        for _ in range(PUT_CHUNK):
            sink.timing(_row(run, put, now))
            put += 1
        await asyncio.sleep(0)
    return put, time.perf_counter() - started


async def loop_noise(run: str, seconds: float) -> dict[str, Any]:
    async with LoopLag() as lag:
        await _put_rows(DroppedRows(), run, seconds)
    stalls = lag.lags.summary()
    return {"stall_p50_ms": stalls["p50_ms"], "stall_p99_ms": stalls["p99_ms"],
            "stall_max_ms": stalls["max_ms"]}


async def measure(url: str, run: str, seconds: float, *, server: str | None = None) -> dict[str, Any]:
    """`server`: the database server's executable name, to count its CPU too."""
    writer = StoreWriter(url)
    await writer.start()
    cpu = CpuMeter(programs={"database server": server} if server else None)
    cpu.start()
    try:
        async with LoopLag() as lag:
            started = time.perf_counter()
            put, put_s = await _put_rows(writer, run, seconds)
            await writer.flush()
            total_s = time.perf_counter() - started
        # Before closing: the writer's thread and the database's backend are gone afterwards.
        shares = {s.name: s.percent for s in cpu.stop() if s.name != "controller (all threads)"}
    finally:
        await writer.close()
    stalls = lag.lags.summary()
    return {"cpu_percent": shares, "rows": writer.stats.timing_rows, "rows_put": put,
            "rows_per_s": round(writer.stats.timing_rows / total_s),
            "put_per_s": round(put / put_s), "seconds": round(total_s, 2), "batches": writer.stats.batches,
            "max_batch_ms": round(writer.stats.max_batch_ms, 1), "stall_p50_ms": stalls["p50_ms"],
            "stall_p99_ms": stalls["p99_ms"], "stall_max_ms": stalls["max_ms"], "errors": writer.stats.errors}


def _create_tables(url: str) -> None:
    engine = create_engine(sync_url(url))
    try:
        SQLModel.metadata.create_all(engine)
    finally:
        engine.dispose()


@contextlib.asynccontextmanager
async def postgres_schema(url: str, name: str) -> AsyncIterator[str]:
    """A schema of our own in the PostgreSQL database, dropped afterwards: tests may be using the
    database's public schema at the same time. Yields the URL whose connections use it."""
    base = make_url(sync_url(normalise_url(url)))
    admin = create_engine(base, connect_args={"connect_timeout": 3})

    def execute(statement: str) -> None:
        with admin.begin() as conn:
            conn.execute(text(statement))

    try:
        await asyncio.to_thread(execute, f'CREATE SCHEMA "{name}"')
    except BaseException:
        admin.dispose()
        raise
    scoped_url = base.update_query_dict({"options": f"-csearch_path={name}"})
    scoped = scoped_url.render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(_create_tables, scoped)
        yield scoped
    finally:
        await asyncio.to_thread(execute, f'DROP SCHEMA "{name}" CASCADE')
        admin.dispose()


async def run(ctx: BenchContext) -> dict[str, Any]:
    seconds = ctx.profile.writer_seconds
    ctx.progress("SQLite")
    sqlite_url = f"sqlite+aiosqlite:///{ctx.scratch / 'writer.db'}"
    await asyncio.to_thread(_create_tables, sqlite_url)
    sqlite = await measure(sqlite_url, ctx.run_id, seconds)
    ctx.progress("the loop without a writer")
    control = await loop_noise(ctx.run_id, min(seconds, 3.0))
    result: dict[str, Any] = {"sqlite_rows_per_s": sqlite["rows_per_s"],
                              "stall_p99_ms": sqlite["stall_p99_ms"],
                              "stall_max_ms": sqlite["stall_max_ms"],
                              "stall_p99_ms_without_writer": control["stall_p99_ms"], "sqlite": sqlite,
                              "without_writer": control}
    url = ctx.database_url or os.environ.get("FLOORCTL_DATABASE_URL") or DEFAULT_POSTGRES
    if not url.startswith("postgres"):
        result["postgres_skipped"] = f"not a PostgreSQL URL: {make_url(url).drivername}"
        return result
    ctx.progress("PostgreSQL")
    try:
        async with postgres_schema(url, f"floorctl_bench_{os.getpid()}") as scoped:
            postgres = await measure(scoped, ctx.run_id, seconds, server="postgres")
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, no such database: say why and carry on
        result["postgres_skipped"] = f"{make_url(url).render_as_string()}: {type(exc).__name__}: " \
                                     f"{str(exc).splitlines()[0] if str(exc) else ''}"
        return result
    result.update(postgres_rows_per_s=postgres["rows_per_s"], postgres_stall_p99_ms=postgres["stall_p99_ms"],
                  postgres=postgres)
    return result
