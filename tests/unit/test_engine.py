"""The order engine against hand-written fake devices and a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.domain.model import InvalidTransition, NewOrder, OrderRejected, OrderState
from controller.engine.floor import Engine
from controller.site import Site, load_site
from controller.store.db import create_schema, make_engine
from controller.store.tables import DeviceCommandRow, OrderRow, StockRow
from controller.store.writer import StoreWriter
from tests.fakes import FakeHub

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site() -> Site:
    return load_site(ROOT / "config" / "demo.yaml")


class Floor:
    def __init__(self, site: Site, url: str) -> None:
        self.site, self.url = site, url

    async def start(self) -> Engine:
        self.db = make_engine(self.url)
        await create_schema(self.db)
        self.writer = StoreWriter(self.url, interval_s=0.01)
        await self.writer.start()
        self.hub = FakeHub(self.site)
        self.engine = Engine(self.site, [self.hub], self.writer, self.db, speed=1.0)
        await self.engine.start()
        return self.engine

    async def stop(self) -> None:
        await self.engine.stop()
        await self.writer.close()
        await self.db.dispose()


@pytest.fixture
async def floor(site: Site, tmp_path: Path):
    f = Floor(site, f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    await f.start()
    yield f
    await f.stop()


def orders(n: int, *, prefix: str = "E", qty: int = 1, sku: str = "SKU-0001", carrier: str = "DHL") -> list[NewOrder]:
    return [NewOrder(f"{prefix}{i}", ((sku, qty), ("SKU-0002", 1)), carrier, priority=i % 3) for i in range(n)]


async def settle(engine: Engine, timeout: float = 10.0) -> None:
    async def idle() -> None:
        while any(o.state not in (OrderState.EXCEPTION, OrderState.HELD) for o in engine.orders.values()):
            await asyncio.sleep(0.01)
    await asyncio.wait_for(idle(), timeout)
    await engine.writer.flush()


async def rows(floor: Floor, table, *where):  # type: ignore[no-untyped-def]
    async with floor.db.connect() as conn:
        return (await conn.execute(select(table).where(*where))).all()


async def test_orders_ship_with_a_full_consistent_timeline(floor: Floor) -> None:
    received = await floor.engine.receive(orders(20))
    assert [r.created for r in received] == [True] * 20
    await settle(floor.engine)
    shipped = await rows(floor, OrderRow, OrderRow.state == "shipped")
    assert len(shipped) == 20
    cmds = await rows(floor, DeviceCommandRow)
    kinds = {c.device_kind for c in cmds}
    assert kinds == {"pick_light", "conveyor", "pack_station", "printer", "sorter"}
    for c in cmds:
        assert c.outcome == "ok"
        assert c.queued_at <= c.sent_at <= c.acked_at <= c.completed_at
    per_order = {r.id: [c for c in cmds if c.order_id == r.id] for r in shipped}
    for commands in per_order.values():
        # two picks, transport, pack, print, induct, divert: one row each
        assert sorted(c.task for c in commands) == sorted(["pick", "pick", "convey", "pack", "label", "induct", "divert"])
    assert shipped[0].shipped_at >= shipped[0].sorted_at >= shipped[0].labelled_at >= shipped[0].received_at


async def test_receive_is_idempotent_and_rejects_unknowns(floor: Floor) -> None:
    first = await floor.engine.receive(orders(2))
    again = await floor.engine.receive(orders(2))
    assert [r.id for r in first] == [r.id for r in again]
    assert [r.created for r in again] == [False, False]
    with pytest.raises(OrderRejected) as err:
        await floor.engine.receive([NewOrder("X1", (("NOPE", 1),), "ACME")])
    assert err.value.problems == {"carrier": "unknown carrier 'ACME' (known: DHL, DPD, UPS)",
                                  "lines.0.sku": "unknown SKU 'NOPE'"}


async def test_insufficient_stock_holds_and_reserves_nothing(floor: Floor) -> None:
    [held] = await floor.engine.receive([NewOrder("BIG", (("SKU-0003", 1), ("SKU-0001", 10**9)), "UPS")])
    await settle(floor.engine)
    order = floor.engine.orders[held.id]
    assert order.state is OrderState.HELD
    assert "insufficient stock for SKU-0001" in (order.reason or "")
    stock = {r.location: r for r in await rows(floor, StockRow)}
    assert stock["A-03"].reserved == 0 and stock["A-01"].reserved == 0
    assert await floor.engine.cancel(held.id) is OrderState.CANCELLED


async def test_short_pick_goes_to_exception_and_resolves(floor: Floor) -> None:
    floor.hub.by_id["ptl-01"].short_by = 1
    [r] = await floor.engine.receive([NewOrder("S1", (("SKU-0001", 3),), "DPD")])
    await settle(floor.engine)
    order = floor.engine.orders[r.id]
    assert order.state is OrderState.EXCEPTION and "short pick" in (order.reason or "")
    floor.hub.by_id["ptl-01"].short_by = 0
    assert await floor.engine.resolve(r.id) is OrderState.PICKING
    await settle(floor.engine)
    [row] = await rows(floor, OrderRow, OrderRow.id == r.id)
    assert row.state == "shipped"
    shows = [c for c in floor.hub.by_id["ptl-01"].received if c[1] == "show"]
    assert [s[2]["qty"] for s in shows] == [3, 1]  # the remainder only
    with pytest.raises(InvalidTransition):
        await floor.engine.cancel(r.id)


async def test_failed_printer_is_taken_out_of_rotation(floor: Floor) -> None:
    for p in ("prn-1", "prn-2"):
        floor.hub.by_id[p].fail_next = "paper_out"
    floor.hub.by_id["prn-2"].fail_next = None
    await floor.engine.receive(orders(4, prefix="P"))
    await settle(floor.engine)
    assert len(await rows(floor, OrderRow, OrderRow.state == "shipped")) == 4
    failed = await rows(floor, DeviceCommandRow, DeviceCommandRow.outcome == "failed")
    # labels queued behind the failure are handed back unsent (and recorded as such)
    assert [(c.device_id, c.reason) for c in failed if c.sent_at is not None] == [("prn-1", "paper_out")]
    assert all(c.reason.startswith("rerouted") for c in failed if c.sent_at is None)
    assert not floor.engine.queues["prn-1"].in_rotation


async def test_no_read_recirculates_then_sorts(floor: Floor) -> None:
    floor.hub.no_read_next = 1
    [r] = await floor.engine.receive(orders(1, prefix="N"))
    await settle(floor.engine)
    [row] = await rows(floor, OrderRow, OrderRow.id == r.id)
    assert row.state == "shipped" and row.lane == "lane-1"
    assert floor.engine.counters["no_reads"] == 1


async def test_restart_resumes_without_asking_twice(site: Site, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    first = Floor(site, url)
    engine = await first.start()
    first.hub.by_id["PS-1"].silent = first.hub.by_id["PS-2"].silent = True  # packers never confirm
    received = await engine.receive(orders(6, prefix="R"))
    async def at_packing() -> None:
        while any(engine.orders[r.id].state is not OrderState.CONVEYED for r in received):
            await asyncio.sleep(0.01)
    await asyncio.wait_for(at_packing(), 10)
    await first.stop()
    second = Floor(site, url)
    engine = await second.start()
    await settle(engine)
    assert len(await rows(second, OrderRow, OrderRow.state == "shipped")) == 6
    # picks were all confirmed before the restart: no light is asked again
    assert sum(len(d.received) for d in second.hub.devices() if d.kind.value == "pick_light") == 0
    ids = [c.command_id for c in await rows(second, DeviceCommandRow)]
    assert len(ids) == len(set(ids)) == 6 * 7
    assert {r.id for r in received} == {r.id for r in await rows(second, OrderRow)}
