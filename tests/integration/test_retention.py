"""Timing rows by day: on PostgreSQL a new database partitions them by UTC day, the writer makes a
day's table when a batch needs it and keeps a command id to one row; retention makes the days ahead,
exports each old day to gzip CSV and drops or deletes it. An unpartitioned database (made before)
keeps working; SQLite deletes in batches. The site setting is validated."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from controller.api.prometheus import FloorMetrics, Reading
from controller.site import SiteError, load_site
from controller.store import partitions
from controller.store.db import create_schema, make_engine, normalise_url
from controller.store.lease import WriteFence
from controller.store.partitions import DAY_S, DEFAULT_PARTITION, partition_name
from controller.store.retention import RetentionPolicy, TimingRetention
from controller.store.writer import StoreWriter, sync_url
from tests.conftest import throwaway_database

PG_URL = os.environ.get("FLOORCTL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]
TODAY = 20_000  # a UTC day number: 2024-10-04
NOW = TODAY * DAY_S + 3600.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_database("floorctl_ret", PG_URL) as url:
        yield normalise_url(url)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    yield engine
    await engine.dispose()


def _row(command_id: str, queued_at: float, **more: Any) -> dict[str, Any]:
    return {"command_id": command_id, "order_id": 1, "task": "pick", "device_id": "ptl-01",
            "device_kind": "pick_light", "protocol": "mqtt", "command": "show", "queued_at": queued_at,
            "sent_at": queued_at + 0.1, "acked_at": None, "completed_at": queued_at + 1, "outcome": "ok",
            "reason": None, "retries": 0, "ended_at": queued_at + 1, "down_queued_s": 0.0,
            "down_in_hand_s": 0.0, **more}


async def _write(url: str, rows: list[dict[str, Any]]) -> StoreWriter:
    writer = StoreWriter(url, interval_s=0.01)
    await writer.start()
    for row in rows:
        writer.timing(row)
    await writer.flush()
    await writer.close()
    return writer


def _four_days() -> list[dict[str, Any]]:
    """Ten rows on each of the days TODAY-3 .. TODAY."""
    return [_row(f"c.{day}.{n}", day * DAY_S + 60.0 * n) for day in range(TODAY - 3, TODAY + 1)
            for n in range(10)]


def _rows_by_day(url: str) -> dict[int, int]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            day = ("floor(queued_at / 86400)::int" if engine.dialect.name == "postgresql"
                   else "CAST(queued_at / 86400 AS INTEGER)")
            found = conn.execute(text(f"SELECT {day}, count(*) FROM device_commands GROUP BY 1")).all()
        return {day: count for day, count in found}
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return set(partitions.day_partitions(conn).values())
    finally:
        engine.dispose()


def _insert_directly(command_id: str, queued_at: float) -> Any:
    return text("INSERT INTO device_commands (command_id, task, device_id, device_kind, protocol, command, "
                f"queued_at, outcome, retries) VALUES ('{command_id}', 'pick', 'ptl-01', 'pick_light', "
                f"'mqtt', 'show', {queued_at}, 'ok', 0)")


def _exported(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


@pytest.mark.postgres
async def test_postgresql_partitions_by_day_and_retention_exports_then_drops(pg: AsyncEngine, pg_url: str,
                                                                              tmp_path: Path) -> None:
    await create_schema(pg)
    async with pg.connect() as conn:
        assert await conn.run_sync(partitions.is_partitioned)
    writer = await _write(pg_url, _four_days())
    assert writer.partitioned and writer.stats.errors == 0
    assert _tables(pg_url) == {partition_name(d) for d in range(TODAY - 3, TODAY + 1)}
    # A row no day's table is there for lands in the default partition instead of being refused.
    async with pg.begin() as conn:
        await conn.execute(_insert_directly("stray", (TODAY - 9) * DAY_S + 5))
        in_default = (await conn.execute(text(f'SELECT count(*) FROM "{DEFAULT_PARTITION}"'))).scalar()
    assert in_default == 1
    # A command queued again (sent again after a restart) keeps one row: the newer one.
    await _write(pg_url, [_row(f"c.{TODAY - 1}.3", TODAY * DAY_S + 7.0, outcome="failed")])
    assert _rows_by_day(pg_url) == {TODAY - 9: 1, TODAY - 3: 10, TODAY - 2: 10, TODAY - 1: 9, TODAY: 11}

    retention = TimingRetention(sync_url(pg_url), RetentionPolicy(timing_days=1, export_dir=tmp_path / "out",
                                                                  days_ahead=2), clock=lambda: NOW)
    try:
        done = await _in_thread(retention.run_once)
    finally:
        await retention.stop()
    assert [d.day for d in done] == [TODAY - 9, TODAY - 3, TODAY - 2]
    assert _rows_by_day(pg_url) == {TODAY - 1: 9, TODAY: 11}
    # Yesterday and today kept, two days ahead made, the old days' tables gone.
    assert _tables(pg_url) == {partition_name(d) for d in range(TODAY - 1, TODAY + 3)}
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["device_commands-2024-09-25.csv.gz", "device_commands-2024-10-01.csv.gz",
                     "device_commands-2024-10-02.csv.gz"]
    day = _exported(tmp_path / "out" / "device_commands-2024-10-01.csv.gz")
    assert [r["command_id"] for r in day] == [f"c.{TODAY - 3}.{n}" for n in range(10)]
    assert float(day[0]["queued_at"]) == (TODAY - 3) * DAY_S and day[0]["outcome"] == "ok"
    stats = retention.stats
    assert (stats.days_removed, stats.partitions_dropped, stats.rows_exported, stats.rows_deleted,
            stats.partitions_made, stats.failures) == (3, 2, 21, 1, 2, 0)
    # The counts are in /metrics.
    body = FloorMetrics().render(Reading(orders_by_state={}, commands=[], devices=[], health={"ok": True},
                                         counters={}, retention=stats.as_dict())).decode()
    assert "floorctl_retention_days_removed_total 3.0" in body
    assert "floorctl_retention_rows_exported_total 21.0" in body


@pytest.mark.postgres
async def test_a_day_table_the_writer_needs_takes_its_rows_out_of_the_default_partition(
        pg: AsyncEngine, pg_url: str) -> None:
    await create_schema(pg)
    async with pg.begin() as conn:
        await conn.execute(_insert_directly("early", TODAY * DAY_S + 5))
    await _write(pg_url, [_row("late", TODAY * DAY_S + 50)])
    async with pg.connect() as conn:
        here = await conn.execute(text(f'SELECT command_id FROM "{partition_name(TODAY)}" ORDER BY 1'))
        assert list(here.scalars()) == ["early", "late"]
        assert (await conn.execute(text(f'SELECT count(*) FROM "{DEFAULT_PARTITION}"'))).scalar() == 0


@pytest.mark.postgres
async def test_an_unpartitioned_postgresql_database_keeps_working(pg: AsyncEngine, pg_url: str,
                                                                  tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    old = create_engine(sync_url(pg_url))
    SQLModel.metadata.create_all(old)  # as an earlier floorctl made it
    old.dispose()
    await create_schema(pg)
    assert "not partitioned by day" in caplog.text
    writer = await _write(pg_url, _four_days())
    await _write(pg_url, [_row(f"c.{TODAY - 1}.3", TODAY * DAY_S + 7.0)])  # replaced, not added
    assert not writer.partitioned
    assert _rows_by_day(pg_url) == {TODAY - 3: 10, TODAY - 2: 10, TODAY - 1: 9, TODAY: 11}
    retention = TimingRetention(sync_url(pg_url), RetentionPolicy(timing_days=2, export_dir=tmp_path),
                                clock=lambda: NOW)
    try:
        done = await _in_thread(retention.run_once)
    finally:
        await retention.stop()
    assert [(d.day, d.rows_exported, d.rows_deleted, d.dropped_partition) for d in done] == [
        (TODAY - 3, 10, 10, False)]
    assert _rows_by_day(pg_url) == {TODAY - 2: 10, TODAY - 1: 9, TODAY: 11}


async def test_sqlite_retention_deletes_old_days_in_batches(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.store import retention as module

    monkeypatch.setattr(module, "DELETE_BATCH", 4)  # several batches per day
    url = f"sqlite+aiosqlite:///{tmp_path / 'floor.db'}"
    db = make_engine(url)
    await create_schema(db)
    await db.dispose()
    await _write(url, _four_days())
    forever = RetentionPolicy(timing_days=None, export_dir=tmp_path / "x")
    kept_for_ever = TimingRetention(sync_url(url), forever, clock=lambda: NOW)
    retention = TimingRetention(sync_url(url), RetentionPolicy(timing_days=1, export_dir=None),
                                clock=lambda: NOW)
    try:
        assert await _in_thread(kept_for_ever.run_once) == []
        assert _rows_by_day(url) == {TODAY - 3: 10, TODAY - 2: 10, TODAY - 1: 10, TODAY: 10}
        done = await _in_thread(retention.run_once)
    finally:
        await kept_for_ever.stop()
        await retention.stop()
    assert [(d.day, d.rows_deleted, d.export) for d in done] == [(TODAY - 3, 10, None), (TODAY - 2, 10, None)]
    assert _rows_by_day(url) == {TODAY - 1: 10, TODAY: 10}
    assert not (tmp_path / "x").exists()


async def test_sqlite_retention_exports_a_day_first(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'floor.db'}"
    db = make_engine(url)
    await create_schema(db)
    await db.dispose()
    await _write(url, _four_days())
    retention = TimingRetention(sync_url(url), RetentionPolicy(timing_days=2, export_dir=tmp_path / "out"),
                                clock=lambda: NOW)
    try:
        done = await _in_thread(retention.run_once)
    finally:
        await retention.stop()
    assert [(d.day, d.rows_exported) for d in done] == [(TODAY - 3, 10)]
    rows = _exported(tmp_path / "out" / "device_commands-2024-10-01.csv.gz")
    assert [r["command_id"] for r in rows] == [f"c.{TODAY - 3}.{n}" for n in range(10)]
    assert _rows_by_day(url) == {TODAY - 2: 10, TODAY - 1: 10, TODAY: 10}


async def _in_thread(fn: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn)


def _site_with(tmp_path: Path, retention: Any) -> Path:
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    data["retention"] = retention
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("retention", "message"), [
    ({"timing_days": 0}, "retention.timing_days: Input should be greater than or equal to 1"),
    ({"timing_days": -3}, "retention.timing_days: Input should be greater than or equal to 1"),
    ({"timing_days": "7"}, "retention.timing_days: Input should be a valid integer"),
    ({"timing_days": 1.5}, "retention.timing_days: Input should be a valid integer"),
    ({"export_dir": ""}, "retention.export_dir: String should have at least 1 character"),
    ({"every_s": 1}, "retention.every_s: Input should be greater than or equal to 60"),
    ({"timing_day": 7}, "retention.timing_day: unknown key"),
])
def test_the_retention_setting_is_validated(tmp_path: Path, retention: Any, message: str) -> None:
    with pytest.raises(SiteError) as err:
        load_site(_site_with(tmp_path, retention))
    assert message in str(err.value)


def test_the_retention_setting_defaults_to_keeping_everything(tmp_path: Path) -> None:
    assert load_site(ROOT / "config" / "demo.yaml").retention.timing_days is None
    site = load_site(_site_with(tmp_path, {"timing_days": 30, "export_dir": None}))
    assert (site.retention.timing_days, site.retention.export_dir, site.retention.days_ahead) == (30, None, 3)


async def test_a_fenced_writer_s_every_connection_ends_a_frozen_batch(pg: AsyncEngine, pg_url: str) -> None:
    """A leader's writer learns the partitions on its first connection, which the pool keeps for the
    batches: that connection too has the idle-in-transaction time-out, or a frozen leader's open batch
    would hold the lease row against a take-over for as long as it stays frozen."""
    await create_schema(pg)
    writer = StoreWriter(pg_url, interval_s=0.01)
    writer.fence = WriteFence("a", idle_in_transaction_s=0.75)
    await writer.start()
    try:
        assert writer.partitioned
        engine = writer._engine
        assert engine is not None

        def timeout_of_the_pooled_connection() -> str:
            with engine.connect() as conn:
                return str(conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar_one())

        assert await asyncio.get_running_loop().run_in_executor(
            writer._thread, timeout_of_the_pooled_connection) == "750ms"
    finally:
        await writer.close()
