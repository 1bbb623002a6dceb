"""Indexes a database made by an older floorctl lacks: made at start where the table is small, logged
with the statement to run by hand where it is not; on PostgreSQL's day tables one by one, and every
day table made afterwards has its own."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.store import db as store_db
from controller.store import partitions
from controller.store.db import create_schema, make_engine
from controller.store.partitions import DAY_S
from tests.conftest import throwaway_database

PG_URL = os.environ.get("FLOORCTL_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
INDEX = "ix_device_commands_device_id_queued_at"
DAY = 20_000  # a day number: 2024-10-04


async def add_commands(db: AsyncEngine, day: int, n: int) -> None:
    async with db.begin() as conn:
        for k in range(n):
            await conn.execute(text(
                "INSERT INTO device_commands (command_id, task, device_id, device_kind, protocol, command, "
                "queued_at, outcome, retries) VALUES (:id, 'pick', 'ptl-1', 'pick_light', 'mqtt', 'show', "
                ":at, 'ok', 0)"), {"id": f"c{day}.{k}", "at": day * DAY_S + k})


async def index_names(db: AsyncEngine) -> set[str]:
    async with db.connect() as conn:
        if conn.dialect.name == "postgresql":
            found = await conn.execute(text("SELECT indexname FROM pg_indexes WHERE schemaname = "
                                            "current_schema()"))
        else:
            found = await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))
        return set(found.scalars())


async def test_sqlite_gets_a_missing_index_at_start_when_the_table_is_small(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    db = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await create_schema(db)
        await add_commands(db, DAY, 3)
        async with db.begin() as conn:
            await conn.execute(text(f"DROP INDEX {INDEX}"))  # as an older floorctl made it
        monkeypatch.setattr(store_db, "SMALL_TABLE_ROWS", 2)
        with caplog.at_level(logging.WARNING, logger="controller.store.db"):
            await create_schema(db)
        assert INDEX not in await index_names(db)
        assert f"CREATE INDEX {INDEX} ON device_commands (device_id, queued_at)" in caplog.text
        monkeypatch.setattr(store_db, "SMALL_TABLE_ROWS", 3)
        await create_schema(db)
        assert INDEX in await index_names(db)
    finally:
        await db.dispose()


async def test_postgres_day_tables_get_a_missing_index_when_small_and_every_new_day_has_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with throwaway_database("floorctl_indexes", PG_URL) as url:
        db = make_engine(url)
        try:
            await create_schema(db)
            async with db.connect() as conn:
                await conn.run_sync(lambda c: partitions.ensure_days(c, [DAY, DAY + 1]))
            await add_commands(db, DAY, 3)
            await add_commands(db, DAY + 1, 1)
            async with db.begin() as conn:
                await conn.execute(text(f"DROP INDEX {INDEX}"))  # the parent's and every day's
            monkeypatch.setattr(store_db, "SMALL_TABLE_ROWS", 2)
            with caplog.at_level(logging.WARNING, logger="controller.store.partitions"):
                await create_schema(db)
            big, small = partitions.partition_name(DAY), partitions.partition_name(DAY + 1)
            have = await index_names(db)
            assert {INDEX, f"{small}_device_id_queued_at_idx",
                    "device_commands_default_device_id_queued_at_idx"} <= have
            assert f"{big}_device_id_queued_at_idx" not in have
            assert f'CREATE INDEX CONCURRENTLY "{big}_device_id_queued_at_idx" ON "{big}"' in caplog.text
            async with db.connect() as conn:
                await conn.run_sync(lambda c: partitions.ensure_days(c, [DAY + 2]))
            assert f"{partitions.partition_name(DAY + 2)}_device_id_queued_at_idx" in await index_names(db)
            monkeypatch.setattr(store_db, "SMALL_TABLE_ROWS", 3)
            await create_schema(db)
            assert f"{big}_device_id_queued_at_idx" in await index_names(db)
            async with db.connect() as conn:  # every day has it: the partitioned index is whole
                valid = await conn.execute(text("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                                                f"to_regclass('{INDEX}')"))
                assert valid.scalar_one() is True
        finally:
            await db.dispose()
