"""Timing-row retention: each day older than `retention.timing_days` is exported, then removed.

Runs every `every_s` on its own thread with its own connection, never on the event loop. Each run:
1. on a PostgreSQL database partitioned by day (controller/store/partitions.py), makes the day tables
   of today and the next `days_ahead` days, so the writer never has to;
2. for every UTC day wholly older than the kept days, oldest first: writes the day's rows to
   `<export_dir>/device_commands-YYYY-MM-DD.csv.gz` (gzip CSV, a header line, in time order), then
   detaches and drops the day's table (each step waiting at most a second for its lock; a step that
   cannot get it is left for the next run) and deletes what is left of the day in batches (the rows of
   an unpartitioned table, of SQLite, or of the default partition), one short transaction each.
A day whose export fails is not removed. What each run did is logged and counted (`stats`, shown in
/metrics as floorctl_retention_*).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, tuple_
from sqlalchemy.engine import Engine

from controller.store import partitions
from controller.store.partitions import COMMANDS, DAY_S, day_of
from controller.store.writer import make_sync_engine

log = logging.getLogger(__name__)

DELETE_BATCH = 5000  # rows per delete transaction where a day cannot be dropped whole
EXPORT_CHUNK = 5000  # rows per read when exporting without COPY (SQLite)
COLUMNS = [c.name for c in COMMANDS.columns]


@dataclass(frozen=True)
class RetentionPolicy:
    timing_days: int | None  # whole UTC days kept before today; None: kept for ever
    export_dir: Path | None  # where a day goes before it is removed; None: removed without export
    days_ahead: int = 3  # day tables made ahead (PostgreSQL, partitioned)
    every_s: float = 3600.0


@dataclass
class RetentionStats:
    runs: int = 0
    failures: int = 0
    days_removed: int = 0
    partitions_dropped: int = 0
    partitions_made: int = 0
    rows_exported: int = 0
    export_bytes: int = 0
    rows_deleted: int = 0  # deleted row by row (batches), not counting dropped day tables
    last_run_at: float | None = None
    last_run_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DayDone:
    day: int
    rows_exported: int = 0
    export: Path | None = None
    dropped_partition: bool = False
    rows_deleted: int = 0
    complete: bool = True
    notes: list[str] = field(default_factory=list)


def day_text(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))


class TimingRetention:
    def __init__(self, url: str, policy: RetentionPolicy, *, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.policy = policy
        self.clock = clock
        self.stats = RetentionStats()
        self._engine: Engine | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floorctl-retention")
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._periodically(), name="timing-retention")

    async def stop(self) -> None:
        self._stopping.set()  # a run in progress ends after the step it is in
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._engine is not None:
            self._engine.dispose()

    async def _periodically(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._thread, self.run_once)
            except Exception:  # a failed run is logged and counted; the next one tries again
                self.stats.failures += 1
                log.exception("timing retention failed; trying again in %.0f s", self.policy.every_s)
            await asyncio.sleep(self.policy.every_s)

    # ---- one run (on the retention thread) -------------------------------------------------
    def run_once(self) -> list[DayDone]:
        """Make the days ahead, then export and remove every day past the kept ones."""
        started = time.monotonic()
        if self._engine is None:
            self._engine = make_sync_engine(self.url)
        engine = self._engine
        today = day_of(self.clock())
        partitioned = False
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                partitioned = partitions.is_partitioned(conn)
                if partitioned:
                    made = partitions.ensure_days(conn, range(today, today + self.policy.days_ahead + 1))
                    self.stats.partitions_made += len(made)
                    if made:
                        log.info("made the timing tables of %s", ", ".join(day_text(d) for d in made))
        done: list[DayDone] = []
        if self.policy.timing_days is not None:
            first_kept = today - self.policy.timing_days
            for day in self._old_days(first_kept, partitioned):
                if self._stopping.is_set():
                    break
                result = self._remove_day(day, partitioned)
                done.append(result)
                if not result.complete:
                    break  # oldest first: a day left in place is tried again on the next run
        self.stats.runs += 1
        self.stats.last_run_at = self.clock()
        self.stats.last_run_s = round(time.monotonic() - started, 3)
        return done

    def _old_days(self, first_kept: int, partitioned: bool) -> Iterator[int]:
        """Days before `first_kept` that have rows or a table, oldest first; each is asked again
        after the previous one is removed, so a day is never handed out twice."""
        assert self._engine is not None
        seen: set[int] = set()
        while True:
            with self._engine.connect() as conn:
                oldest = conn.execute(select(func.min(COMMANDS.c.queued_at))
                                      .where(COMMANDS.c.queued_at < first_kept * DAY_S)).scalar()
                tables = [d for d in partitions.day_partitions(conn) if d < first_kept] if partitioned else []
            candidates = [d for d in [*tables, *([day_of(oldest)] if oldest is not None else [])]
                          if d not in seen]
            if not candidates:
                return
            day = min(candidates)
            seen.add(day)
            yield day

    def _remove_day(self, day: int, partitioned: bool) -> DayDone:
        assert self._engine is not None
        result = DayDone(day)
        if self.policy.export_dir is not None:
            try:
                result.rows_exported, result.export = self._export(day)
            except Exception as exc:  # noqa: BLE001 - the day stays; said, counted, tried again next run
                self.stats.failures += 1
                result.complete = False
                log.error("timing rows of %s not exported, so not removed: %s", day_text(day), exc)
                return result
            self.stats.rows_exported += result.rows_exported
            if result.export is not None:
                self.stats.export_bytes += result.export.stat().st_size
        if partitioned:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                has_table = day in partitions.day_partitions(conn)
                result.dropped_partition = has_table and partitions.detach_and_drop(conn, day)
            if has_table and not result.dropped_partition:
                self.stats.failures += 1
                result.complete = False
                return result
            self.stats.partitions_dropped += result.dropped_partition
        result.rows_deleted = self._delete_day(day)
        result.complete = not self._stopping.is_set()
        if result.complete:
            self.stats.days_removed += 1
        self.stats.rows_deleted += result.rows_deleted
        log.info("timing rows of %s removed: %s", day_text(day), ", ".join(filter(None, [
            f"{result.rows_exported} exported to {result.export}" if result.export else
            ("nothing to export" if self.policy.export_dir is not None else "not exported (no export_dir)"),
            "the day's table dropped" if result.dropped_partition else "",
            f"{result.rows_deleted} rows deleted" if result.rows_deleted else ""])))
        return result

    def _delete_day(self, day: int) -> int:
        """The day's rows, DELETE_BATCH at a time, each batch its own transaction."""
        assert self._engine is not None
        c = COMMANDS.c
        in_day = [c.queued_at >= day * DAY_S, c.queued_at < (day + 1) * DAY_S]
        some = select(c.id, c.queued_at).where(*in_day).limit(DELETE_BATCH)
        stmt = COMMANDS.delete().where(tuple_(c.id, c.queued_at).in_(some), *in_day)
        deleted = 0
        while not self._stopping.is_set():
            with self._engine.begin() as conn:
                count = conn.execute(stmt).rowcount
            deleted += count
            if count < DELETE_BATCH:
                break
            if self._engine.dialect.name == "sqlite":
                time.sleep(0.02)  # one writer at a time in SQLite: let the store writer's batch in
        return deleted

    # ---- export --------------------------------------------------------------------------------
    def _export(self, day: int) -> tuple[int, Path | None]:
        """The day's rows to a gzip CSV; (rows, file), no file when the day had none."""
        assert self._engine is not None and self.policy.export_dir is not None
        self.policy.export_dir.mkdir(parents=True, exist_ok=True)
        final = self.policy.export_dir / f"{COMMANDS.name}-{day_text(day)}.csv.gz"
        partial = final.with_name(final.name + ".part")
        with self._engine.connect() as conn, gzip.open(partial, "wb") as out:
            if self._engine.dialect.name == "postgresql":
                rows = _copy_day(conn, day, out)
            else:
                rows = _write_day(conn, day, out)
        if rows == 0:
            partial.unlink()
            return 0, None
        os.replace(partial, final)
        return rows, final


def _copy_day(conn: Connection, day: int, out: Any) -> int:
    """PostgreSQL: COPY ... TO STDOUT, straight into the gzip file (no row passes through Python)."""
    query = (f"COPY (SELECT {', '.join(COLUMNS)} FROM {COMMANDS.name} WHERE queued_at >= {day * DAY_S} "
             f"AND queued_at < {(day + 1) * DAY_S} ORDER BY queued_at, id) "
             "TO STDOUT WITH (FORMAT csv, HEADER)")
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor:
        with cursor.copy(query) as copy:
            for block in copy:
                out.write(block)
        rows = cursor.rowcount
    raw.commit()
    return max(rows, 0)


def _write_day(conn: Connection, day: int, out: Any) -> int:
    """SQLite: the day's rows in keyset chunks, through the csv module."""
    c = COMMANDS.c
    text_out = io.TextIOWrapper(out, encoding="utf-8", newline="")
    writer = csv.writer(text_out, lineterminator="\n")
    writer.writerow(COLUMNS)
    rows, after = 0, (float(day * DAY_S), -1)
    while True:
        chunk = conn.execute(select(COMMANDS).where(c.queued_at < (day + 1) * DAY_S,
                                                    tuple_(c.queued_at, c.id) > tuple_(*after))
                             .order_by(c.queued_at, c.id).limit(EXPORT_CHUNK)).all()
        writer.writerows(chunk)
        rows += len(chunk)
        if len(chunk) < EXPORT_CHUNK:
            break
        after = (chunk[-1].queued_at, chunk[-1].id)
    text_out.flush()
    text_out.detach()
    conn.rollback()
    return rows
