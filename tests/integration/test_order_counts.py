"""Orders by state as the writer keeps them (controller/store/order_counts.py): always what counting
`orders` says, through inserts, state changes in one batch and across batches, a restart, a database
made before the counts and one whose counts went wrong; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.domain.model import OrderState
from controller.store import order_counts, queries
from controller.store.db import create_schema, make_engine
from controller.store.tables import OrderRow
from controller.store.writer import StoreWriter
from tests.conftest import throwaway_database

PG_URL = os.environ.get("FLOORCTL_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ORDERS = OrderRow.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'counts.db'}"
        return
    with throwaway_database("floorctl_counts", PG_URL) as made:
        yield made


def order(order_id: int, state: str) -> dict[str, Any]:
    return {"id": order_id, "external_id": f"C-{order_id}", "carrier": "DHL", "priority": 0, "state": state,
            "attempt": 0, "label_attempt": 0, "received_at": 1000.0 + order_id}


async def kept_and_counted(db: AsyncEngine) -> tuple[dict[str, int], dict[str, int]]:
    async with AsyncSession(db) as session:
        kept = await queries.order_counts_by_state(session)
        counted = {s: n for s, n in (await session.execute(
            select(ORDERS.c.state, func.count()).group_by(ORDERS.c.state))).all()}
    return kept, counted


async def started(url: str) -> tuple[AsyncEngine, StoreWriter]:
    db = make_engine(url)
    await create_schema(db)
    writer = StoreWriter(url, interval_s=0.01)
    await writer.start()
    return db, writer


async def test_the_writer_keeps_the_counts_exact_across_batches_and_a_restart(url: str) -> None:
    db, writer = await started(url)
    try:
        for n in range(1, 31):
            writer.insert_order(order(n, "received"), [])
        writer.update_order(3, state="allocated")  # changed in the batch that inserts it
        writer.update_order(3, state="picking")
        await writer.flush()
        kept, counted = await kept_and_counted(db)
        assert kept == counted == {"received": 29, "picking": 1}
        for n in range(1, 21):
            writer.update_order(n, state="allocated")
        for n in range(1, 11):
            writer.update_order(n, state="picking")  # two changes of one order in one batch
            writer.update_order(n, tote=f"T-{n}")  # not its state
        writer.update_order(21, state="received", reason="again")  # the same state again
        writer.update_order(999, state="shipped")  # no such order: changes nothing
        await writer.flush()
        kept, counted = await kept_and_counted(db)
        assert kept == counted == {"received": 10, "allocated": 10, "picking": 10}
    finally:
        await writer.close()
        await db.dispose()

    db, writer = await started(url)  # a restart: the counts carry on from the database
    try:
        for n in range(1, 11):
            writer.update_order(n, state="shipped")
        for n in range(11, 14):
            writer.update_order(n, state="cancelled")
        writer.insert_order(order(31, "held"), [])
        await writer.flush()
        kept, counted = await kept_and_counted(db)
        assert kept == counted == {"received": 10, "allocated": 7, "shipped": 10, "cancelled": 3, "held": 1}
        async with AsyncSession(db) as session:
            assert await order_counts.in_states(session, ["shipped", "cancelled"]) == 13
            page = await queries.orders_page(session, states=["shipped"], limit=4)
            assert [r.id for r in page.items] == [1, 2, 3, 4] and page.total == 10
    finally:
        await writer.close()
        await db.dispose()


async def test_a_database_without_counts_or_with_wrong_ones_is_counted_at_start(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    db = make_engine(url)
    try:
        await create_schema(db)
        async with db.begin() as conn:  # orders written past the writer, as by an older floorctl
            await conn.execute(ORDERS.insert(), [order(n, ("shipped", "picking", "held")[n % 3])
                                                 for n in range(1, 13)])
            await conn.execute(text("DELETE FROM order_counts"))
        await create_schema(db)
        kept, counted = await kept_and_counted(db)
        assert kept == counted == {"shipped": 4, "picking": 4, "held": 4}
        async with db.begin() as conn:  # changed by hand: the active states no longer match
            await conn.execute(update(ORDERS).where(ORDERS.c.id <= 2).values(state="cancelled"))
        with caplog.at_level(logging.WARNING, logger="controller.store.order_counts"):
            await create_schema(db)
        assert "did not match" in caplog.text
        kept, counted = await kept_and_counted(db)
        assert kept == counted and kept["cancelled"] == 2
        async with AsyncSession(db) as session:  # every state has its row, zeros too
            rows = (await session.execute(text("SELECT count(*) FROM order_counts"))).scalar_one()
        assert rows == len(OrderState)
    finally:
        await db.dispose()


async def test_postgres_start_up_holds_the_leaders_batches_off_the_counts_while_it_checks_them() -> None:
    """An instance starting beside a leading one: the leader's batch waits for the check to end, then
    its changes count once, on top of what the check found."""
    with throwaway_database("floorctl_counts", PG_URL) as url:
        db, writer = await started(url)
        starting = make_engine(url)
        try:
            writer.insert_order(order(1, "received"), [])
            await writer.flush()
            async with starting.begin() as conn:
                await conn.run_sync(order_counts.ensure)  # its transaction still open
                writer.update_order(1, state="allocated")
                flushed = asyncio.ensure_future(writer.flush())
                await asyncio.sleep(0.5)
                assert not flushed.done()
            await asyncio.wait_for(flushed, 10)
            kept, counted = await kept_and_counted(db)
            assert kept == counted == {"allocated": 1}
        finally:
            await writer.close()
            await starting.dispose()
            await db.dispose()
