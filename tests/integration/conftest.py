"""Fixtures the API integration tests share: the store writer on the test's database and the alarm
monitor over the test's fake engine (each test module provides `db` and `floor`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.engine.alarms import AlarmMonitor
from controller.store.repository import AlarmRepository
from controller.store.writer import StoreWriter
from tests.integration.test_api import T0, FakeFloor


async def writer_for(db: AsyncEngine) -> StoreWriter:
    """The store writer on the test's database (on PostgreSQL: in the test's own schema)."""
    url = db.url.render_as_string(hide_password=False)
    if db.dialect.name == "postgresql":
        async with db.connect() as conn:
            schema = (await conn.execute(text("SHOW search_path"))).scalar_one()
        in_schema = db.url.set(drivername="postgresql+psycopg", query={"options": f"-csearch_path={schema}"})
        url = in_schema.render_as_string(hide_password=False)
    writer = StoreWriter(url, interval_s=0.01)
    await writer.start()
    return writer


@pytest.fixture
async def writer(db: AsyncEngine) -> AsyncIterator[StoreWriter]:
    writer = await writer_for(db)
    yield writer
    await writer.close()


@pytest.fixture
async def monitor(floor: FakeFloor, db: AsyncEngine, writer: StoreWriter) -> AsyncIterator[AlarmMonitor]:
    alarms = AlarmMonitor(floor, AlarmRepository(db, writer), clock=lambda: T0 + 100)
    # The tests check when they mean to (monitor.check): logins hash passwords, which takes long
    # enough for a periodic check to raise alarms under rows a test is about to seed.
    alarms.limits = alarms.limits.model_copy(update={"check_every_s": 60.0})
    await alarms.start()
    yield alarms
    await alarms.stop()
