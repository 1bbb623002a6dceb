"""An older database is brought up to date in place by create_schema. Ids are 64-bit in every table
that counts: a new database has bigint id columns, an old PostgreSQL database (int4 ids, as made
before) is widened, and SQLite keeps its rowid primary keys (they count up by themselves). Columns
added since (the timing rows' `ended_at` and waits on a down device) are added, null in old rows."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlmodel import col

from controller.store.db import add_missing_columns, create_schema, make_engine, widen_ids
from controller.store.repository import command_times_of
from controller.store.tables import AlarmRow, DeviceCommandRow, OrderLineRow, OrderRow
from controller.store.writer import StoreWriter
from tests.conftest import throwaway_database

PG_URL = os.environ.get("FLOORCTL_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BIG = 2**63 - 1
WIDE = {("orders", "id"), ("order_lines", "order_id"), ("device_commands", "id"),
        ("device_commands", "order_id"), ("alarms", "id")}


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_database("floorctl_ids", PG_URL) as url:
        yield url


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_url)
    yield engine
    await engine.dispose()


async def _store_big_ids(db: AsyncEngine) -> None:
    async with AsyncSession(db) as session:
        session.add(OrderRow(id=BIG, external_id="BIG-1", carrier="DHL", state="received"))
        await session.flush()
        session.add_all([
            OrderLineRow(order_id=BIG, line_no=1, sku="SKU-0001", qty=1),
            DeviceCommandRow(command_id="o.big", order_id=BIG, task="pick", device_id="ptl-01",
                             device_kind="pick_light", protocol="mqtt", command="pick", queued_at=1.0,
                             outcome="ok"),
            DeviceCommandRow(command_id="o.big.2", order_id=BIG, task="pick", device_id="ptl-01",
                             device_kind="pick_light", protocol="mqtt", command="pick", queued_at=2.0,
                             outcome="ok"),
            AlarmRow(id=BIG, kind="device_faulted", severity="critical", source_kind="device",
                     source="ptl-01", text="x", raised_at=1.0)])
        await session.commit()
        lines = select(OrderLineRow.order_id).where(OrderLineRow.sku == "SKU-0001", OrderLineRow.qty == 1)
        assert BIG in (await session.execute(lines)).scalars().all()
        ids = (await session.execute(select(DeviceCommandRow.id).order_by(DeviceCommandRow.id))).scalars()
        assert list(ids) == [1, 2]  # still counted by the database


async def _int_columns(db: AsyncEngine) -> dict[tuple[str, str], str]:
    async with db.connect() as conn:
        rows = await conn.execute(text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema()"))
        return {(r[0], r[1]): r[2] for r in rows}


async def test_sqlite_takes_64_bit_ids_and_still_counts_command_rows(tmp_path: Path) -> None:
    db = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ids.db'}")
    try:
        await create_schema(db)
        async with db.connect() as conn:
            ddl = (await conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'device_commands'"))
                   ).scalar_one()
        assert "id INTEGER NOT NULL" in ddl  # INTEGER PRIMARY KEY: the rowid
        await _store_big_ids(db)
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_new_postgresql_database_has_bigint_ids(pg: AsyncEngine) -> None:
    await create_schema(pg)
    columns = await _int_columns(pg)
    assert {pair: columns[pair] for pair in WIDE} == dict.fromkeys(WIDE, "bigint")
    await _store_big_ids(pg)
    async with pg.begin() as conn:
        assert await widen_ids(conn) == []


@pytest.mark.postgres
async def test_an_old_postgresql_database_is_widened_in_place(pg: AsyncEngine) -> None:
    await create_schema(pg)
    async with pg.begin() as conn:  # back to int4 ids and sequences, as databases were made before
        for table, column in sorted(WIDE):
            await conn.execute(text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE integer'))
        for sequence in ("orders_id_seq", "device_commands_id_seq", "alarms_id_seq"):
            await conn.execute(text(f"ALTER SEQUENCE {sequence} AS integer"))
        await conn.execute(text("INSERT INTO orders (id, external_id, carrier, priority, state, attempt, "
                                "label_attempt) VALUES (7, 'OLD-7', 'DHL', 0, 'shipped', 0, 0)"))
        await conn.execute(text("INSERT INTO order_lines VALUES (7, 1, 'SKU-0001', 1, NULL, 1, true)"))
    assert {pair: t for pair, t in (await _int_columns(pg)).items() if pair in WIDE} == dict.fromkeys(
        WIDE, "integer")
    await create_schema(pg)
    columns = await _int_columns(pg)
    assert {pair: columns[pair] for pair in WIDE} == dict.fromkeys(WIDE, "bigint")
    async with pg.connect() as conn:
        sequences = dict((await conn.execute(text("SELECT sequencename, data_type FROM pg_sequences"))).all())
        assert [sequences[s] for s in ("orders_id_seq", "device_commands_id_seq", "alarms_id_seq")] == [
            "bigint"] * 3
        old = (await conn.execute(text("SELECT o.external_id, l.order_id FROM orders o JOIN order_lines l "
                                       "ON l.order_id = o.id"))).one()
        assert tuple(old) == ("OLD-7", 7)
    await _store_big_ids(pg)


# ---- columns added since ---------------------------------------------------------------------------------
ADDED = ("ended_at", "down_queued_s", "down_in_hand_s")


async def _timing_columns_added_to_an_older_database(db: AsyncEngine, url: str) -> None:
    await create_schema(db)
    async with db.begin() as conn:  # back to the timing table as it was made before
        for column in ADDED:
            await conn.execute(text(f"ALTER TABLE device_commands DROP COLUMN {column}"))
        await conn.execute(text(
            "INSERT INTO device_commands (command_id, order_id, task, device_id, device_kind, protocol, "
            "command, queued_at, sent_at, acked_at, completed_at, outcome, retries) VALUES "
            "('o7.pick.1.a0', 7, 'pick', 'ptl-01', 'pick_light', 'mqtt', 'show', 1.0, 1.5, 1.6, 4.0, "
            "'ok', 0)"))
    await create_schema(db)
    async with db.begin() as conn:
        assert await conn.run_sync(add_missing_columns) == []  # up to date now: nothing more to add
    writer = StoreWriter(url, interval_s=0.01)
    await writer.start()
    try:
        writer.timing({"command_id": "o8.pick.1.a0", "order_id": 8, "task": "pick", "device_id": "ptl-01",
                       "device_kind": "pick_light", "protocol": "mqtt", "command": "show", "queued_at": 2.0,
                       "sent_at": 2.1, "acked_at": 2.2, "completed_at": 3.0, "outcome": "ok", "reason": None,
                       "retries": 0, "ended_at": 3.001, "down_queued_s": 0.05, "down_in_hand_s": 0.0})
        await writer.flush()
    finally:
        await writer.close()
    async with AsyncSession(db) as session:
        query = select(DeviceCommandRow).order_by(col(DeviceCommandRow.queued_at))
        old, new = list((await session.execute(query)).scalars())
    assert (old.ended_at, old.down_queued_s, old.down_in_hand_s) == (None, None, None)
    assert (new.ended_at, new.down_queued_s, new.down_in_hand_s) == (3.001, 0.05, 0.0)
    # An old row ended, as far as the breakdown knows, at the last instant it tells; it waited on nothing.
    times = command_times_of(old)
    assert (times.ended_at, times.down_queued_s, times.down_in_hand_s) == (4.0, 0.0, 0.0)


async def test_an_older_sqlite_database_gets_the_timing_columns_added_since(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    db = make_engine(url)
    try:
        await _timing_columns_added_to_an_older_database(db, url)
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_an_older_postgresql_database_gets_the_timing_columns_added_since(pg: AsyncEngine,
                                                                                 pg_url: str) -> None:
    await _timing_columns_added_to_an_older_database(pg, pg_url)
