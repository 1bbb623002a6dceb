"""The demo's closing summary (also what Ctrl-C prints) counts every order the controller holds for
the run, not only those the demo submitted, and names the ones that are not finished."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.demo import LISTED, Scope, render_summary, summarise
from controller.store.db import create_schema, make_engine
from controller.store.tables import OrderRow

T0 = 1_714_552_200.0
PREFIX = "DEMO-20240501083000-"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'floor.db'}")
    await create_schema(engine)
    yield engine
    await engine.dispose()


def row(oid: int, external_id: str, state: str) -> OrderRow:
    stamps = {"received_at": T0 + oid}
    if state == "shipped":
        stamps["shipped_at"] = T0 + oid + 2.0
    return OrderRow(id=oid, external_id=external_id, carrier="DHL", state=state, **stamps)


async def test_summary_counts_resumed_and_api_orders_and_names_the_unfinished(db: AsyncEngine) -> None:
    async with AsyncSession(db) as session:
        session.add_all([
            row(1, "OLD-1", "shipped"),  # finished in an earlier run: not this run's
            row(2, "OLD-2", "picking"),  # left unfinished by an earlier run, resumed (still unfinished)
            row(3, "OLD-3", "shipped"),  # resumed, then shipped
            row(4, f"{PREFIX}000001", "shipped"),
            row(5, "WMS-77", "conveyed"),  # posted through the API while the demo ran
            row(6, f"{PREFIX}000002", "held"),
            row(7, f"{PREFIX}000003", "allocated"),
            row(8, f"{PREFIX}000004", "exception"),  # received, but Ctrl-C cut the demo's await short
        ])
        await session.commit()
    scope = Scope(after_id=3, prefix=PREFIX, resumed=[2, 3], submitted=[4, 6, 7, 99])
    summary = await summarise(db, scope, timing_rows_written=0)

    # submitted: the 4 ids handed back (99 of them lost) and order 8, the demo's by its external id
    assert summary["orders"] == {"total": 7, "submitted": 5, "posted": 1, "resumed": 2, "shipped": 2,
                                 "exception": 1, "held": 1, "cancelled": 0, "unfinished": 3, "lost": 1}
    assert summary["unfinished_orders"] == [
        {"id": 2, "external_id": "OLD-2", "state": "picking"},
        {"id": 5, "external_id": "WMS-77", "state": "conveyed"},
        {"id": 7, "external_id": f"{PREFIX}000003", "state": "allocated"},
    ]
    assert summary["held_orders"] == [{"id": 6, "external_id": f"{PREFIX}000002", "state": "held"}]
    assert summary["cycle_time_s"]["n"] == 2

    text = render_summary(summary)
    assert "7 held by the controller: submitted by the demo 5  posted through the API 1  resumed 2" in text
    assert "unfinished 3  lost 1" in text
    assert f"Unfinished 3: 2 OLD-2 (picking), 5 WMS-77 (conveyed), 7 {PREFIX}000003 (allocated)" in text
    assert f"Held 1: 6 {PREFIX}000002 (held)" in text


async def test_a_long_list_of_unfinished_orders_is_cut_short_in_print(db: AsyncEngine) -> None:
    async with AsyncSession(db) as session:
        session.add_all([row(i, f"{PREFIX}{i:06d}", "picking") for i in range(1, LISTED + 6)])
        await session.commit()
    summary = await summarise(db, Scope(after_id=0, prefix=PREFIX, submitted=list(range(1, LISTED + 6))), 0)
    assert len(summary["unfinished_orders"]) == LISTED + 5  # --json lists every one
    text = render_summary(summary)
    assert f"Unfinished {LISTED + 5}: 1 {PREFIX}000001 (picking)" in text and "and 5 more" in text
    assert all(len(line) <= 100 for line in text.splitlines() if "(picking)" in line)


async def test_a_list_of_ids_counts_exactly_those_orders(db: AsyncEngine) -> None:
    """The benchmark summarises each surge step's own orders."""
    async with AsyncSession(db) as session:
        session.add_all([row(1, "A", "shipped"), row(2, "B", "picking"), row(3, "C", "shipped")])
        await session.commit()
    summary = await summarise(db, [2, 3, 9], 0)
    assert summary["orders"] == {"total": 2, "submitted": 3, "posted": 0, "resumed": 0, "shipped": 1,
                                 "exception": 0, "held": 0, "cancelled": 0, "unfinished": 1, "lost": 1}


async def test_the_summary_names_the_bottleneck_by_utilisation_and_waiting_not_by_duration(
        db: AsyncEngine) -> None:
    """Conveying takes long (a 24 s ride) but the pack stations limit the floor: the summary says so,
    with the evidence, and the rate at which each kind saturates."""
    from tests.integration.test_insight import SITE, saturated_run, store

    commands, orders = saturated_run(T0, time_scale=50.0)  # a demo at --speed 50
    await store(db, commands, orders, first_id=0)
    summary = await summarise(db, [o.id for o in orders], 0, site=SITE, time_scale=50.0)
    insight = summary["insight"]
    found = insight["bottleneck"]
    assert found["resource"] == "pack_station" and found["growth"]["grows"] is True
    assert insight["runner_up"]["resource"] == "conveyor"
    text = render_summary({**summary, "speed": 50.0})
    assert "Bottleneck: pack stations" in text and "Slowest stage" not in text
    assert "    - utilisation 9" in text and "growing" in text
    assert "  Runner-up: conveyors: utilisation" in text
    pack = next(line for line in text.splitlines() if line.startswith("  pack_station"))
    assert "0.333 (16.7/s wall)" in pack and "yes" in pack  # two 6 s stations, 50x faster on the clock


async def test_without_the_site_the_summary_has_no_insight(db: AsyncEngine) -> None:
    async with AsyncSession(db) as session:
        session.add(row(1, "A", "shipped"))
        await session.commit()
    summary = await summarise(db, [1], 0)
    assert summary["insight"] is None and "What limited the floor" not in render_summary(summary)
