"""Operating a shift on the real floor (private Mosquitto, OPC UA PLC simulators, the controller):
devices fault and recover while orders flow, and the orders wait instead of failing; a fault that
lasts past its kind's wait limit sends the orders that need the device to a person, naming it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from controller.demo import OrderGenerator
from controller.domain.alarms import AlarmKind
from controller.store.tables import AlarmRow
from tests.e2e.conftest import check_timelines, demo_site

pytestmark = pytest.mark.slow


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _submit(floor: Any, n: int, run: str) -> list[int]:
    gen = OrderGenerator(floor.site, run, seed=5)
    received = await floor.controller.engine.receive([gen.next() for _ in range(n)])
    return [r.id for r in received]


async def _alarms(floor: Any) -> list[Any]:
    await floor.controller.writer.flush()
    async with floor.controller.db.connect() as conn:
        return list((await conn.execute(select(AlarmRow))).all())


async def test_devices_fault_and_recover_and_no_order_fails(floor_factory: Any, db_url: str) -> None:
    site = demo_site(operator__short_pick_rate=0.0)
    async with floor_factory(site, db_url) as floor:
        engine = floor.controller.engine
        ids = await _submit(floor, 200, "operate")
        done = lambda: sum(1 for i in ids if i not in engine.orders)
        await _until(lambda: done() >= 20, 60, "the first orders to ship")

        faults = [("ptl-01", "lamp_broken"), ("PS-1", "scale_error"), ("prn-1", "paper_out")]
        for device_id, fault in faults:
            floor.sims.device(device_id).inject(fault)
        floor.sims.device("loop-1").inject_jam("main")
        # while they last: nothing new goes to a faulted device, orders that need it wait visibly
        await _until(lambda: any(engine.waiting_on(i) for i in ids if i in engine.orders), 10,
                     "an order waiting on a faulted device")
        await _until(lambda: {a.source for a in floor.controller.alarms.active()
                              if a.kind is AlarmKind.DEVICE_FAULTED} >= {"ptl-01", "PS-1", "prn-1", "loop-1"},
                     10, "an alarm for each faulted device")
        await asyncio.sleep(1.0)
        for device_id, _ in faults:
            floor.sims.device(device_id).clear()
        floor.sims.device("loop-1").clear()

        await floor.wait_finished(ids, timeout=180)
        orders = await floor.orders()
        assert [(o.id, o.state, o.reason) for o in orders if o.state != "shipped"] == []
        check_timelines(orders, await floor.commands())

        await _until(lambda: not [a for a in floor.controller.alarms.active()
                                  if a.kind is AlarmKind.DEVICE_FAULTED], 10, "the fault alarms to clear")
        faulted = [a for a in await _alarms(floor) if a.kind == AlarmKind.DEVICE_FAULTED.value]
        by_device: dict[str, int] = {}
        for alarm in faulted:
            by_device[alarm.source] = by_device.get(alarm.source, 0) + 1
            assert alarm.cleared_at is not None
        assert by_device == {"ptl-01": 1, "PS-1": 1, "prn-1": 1, "loop-1": 1}


async def test_a_fault_past_the_wait_limit_sends_its_orders_to_a_person(floor_factory: Any,
                                                                        db_url: str) -> None:
    site = demo_site(operator__short_pick_rate=0.0)
    limits = site.timeouts.wait_on_device_s.model_copy(update={"pick_light": 1.0})
    site = site.model_copy(update={"timeouts": site.timeouts.model_copy(update={"wait_on_device_s": limits})})
    async with floor_factory(site, db_url) as floor:
        engine = floor.controller.engine
        floor.sims.device("ptl-03").inject("lamp_broken")
        await _until(lambda: not engine.queues["ptl-03"].usable, 5, "the controller to see the fault")
        [held] = await engine.receive([_one(site, "WAIT-1", "SKU-0003")])
        [other] = await engine.receive([_one(site, "WAIT-2", "SKU-0004")])
        await floor.wait_finished([held.id, other.id], timeout=30)
        orders = {o.id: o for o in await floor.orders()}
        assert orders[other.id].state == "shipped"
        assert orders[held.id].state == "exception"
        assert "on ptl-03 (faulted: lamp_broken)" in orders[held.id].reason
        floor.sims.device("ptl-03").clear()
        await engine.resolve(held.id)
        await floor.wait_finished([held.id], timeout=30)
        assert {o.id: o for o in await floor.orders()}[held.id].state == "shipped"


def _one(site: Any, external_id: str, sku: str) -> Any:
    from controller.domain.model import NewOrder

    return NewOrder(external_id, ((sku, 1),), site.carriers[0].id)
