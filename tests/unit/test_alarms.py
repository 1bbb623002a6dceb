"""Alarms: the model (one alarm per condition while it lasts), the monitor's conditions against a
hand-written engine state, and the monitor's book-keeping against a store in memory. No I/O."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.domain.alarms import Alarm, AlarmBook, AlarmKind, AlarmNotFound, Condition, Severity
from controller.domain.model import Order, OrderLine, OrderState
from controller.engine.alarms import AlarmMonitor, FloorConditions
from controller.site import AlarmLimits, Site, SiteError, load_site, parse_site

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_714_552_200.0
K = AlarmKind


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(ROOT / "config" / "demo.yaml")


# ---- the model ---------------------------------------------------------------------------------
def test_a_condition_is_one_alarm_while_it_lasts_and_a_new_one_when_it_returns() -> None:
    book = AlarmBook(next_id=7)
    jam = Condition(K.DEVICE_FAULTED, "loop-1", "conveyor loop-1 is faulted: jam")
    first = book.evaluate([jam], T0)
    assert [(a.id, a.key, a.severity, a.raised_at) for a in first.raised] == [
        (7, "device_faulted:loop-1", Severity.CRITICAL, T0)]
    assert book.evaluate([jam, jam], T0 + 1).changed == []  # still the same alarm, nothing to write
    cleared = book.evaluate([], T0 + 2).cleared
    assert [(a.id, a.active, a.cleared_at) for a in cleared] == [(7, False, T0 + 2)]
    again = book.evaluate([jam], T0 + 3).raised
    assert [a.id for a in again] == [8]


def test_a_new_wording_is_the_same_alarm_retexted() -> None:
    book = AlarmBook()
    book.evaluate([Condition(K.ORDERS_OVERDUE, "picking", "2 orders")], T0)
    changes = book.evaluate([Condition(K.ORDERS_OVERDUE, "picking", "3 orders")], T0 + 1)
    assert (changes.raised, [a.text for a in changes.retexted]) == ([], ["3 orders"])


def test_the_first_acknowledgement_stands_and_a_cleared_alarm_can_be_acknowledged() -> None:
    alarm = Alarm(1, K.DEVICE_PAUSED, "prn-1", "paused", T0)
    alarm.clear(T0 + 5)
    assert alarm.acknowledge(T0 + 9, "sam") is True
    assert alarm.acknowledge(T0 + 10, "kim") is False
    assert (alarm.acked_at, alarm.acked_by, alarm.cleared_at) == (T0 + 9, "sam", T0 + 5)


def test_a_book_carries_over_only_active_alarms() -> None:
    gone = Alarm(1, K.DEVICE_OFFLINE, "ptl-01", "offline", T0, cleared_at=T0 + 1)
    live = Alarm(2, K.DEVICE_OFFLINE, "ptl-02", "offline", T0)
    book = AlarmBook([gone, live], next_id=3)
    assert list(book.active) == ["device_offline:ptl-02"] and book.by_id(2) is live and book.by_id(1) is None


# ---- the conditions ----------------------------------------------------------------------------------
def device(device_id: str, kind: str, protocol: str = "mqtt", **row: Any) -> dict[str, Any]:
    return {"device_id": device_id, "kind": kind, "protocol": protocol, "online": True, "state": "idle",
            "fault": None, "queue_length": 0, "in_flight": 0, "in_rotation": True, "paused": False,
            "available": True, "unavailable": None, "unavailable_since": None, "waiting_orders": 0,
            "last_progress_at": None, **row}


HEALTHY: dict[str, Any] = {"ok": True, "broker": True, "plcs": {"plc-1": True}, "faults": {},
                           "writer_backlog": 0, "active_orders": 0}


def order(order_id: int, state: OrderState, entered: float, due_at: float | None = None) -> Order:
    return Order(id=order_id, external_id=f"E{order_id}", carrier="DHL", priority=0,
                 lines=[OrderLine(1, "SKU-0001", 1)], state=state, due_at=due_at,
                 stamps={"received": entered, state.value: entered})


def keys(conditions: list[Condition]) -> list[str]:
    return sorted(c.key for c in conditions)


def test_each_device_condition_on_its_own_key(site: Site) -> None:
    rows = [device("prn-1", "printer", fault="paper_out", in_rotation=False,
                   unavailable="out_of_rotation: taken out by sam"),
            device("PS-1", "pack_station", paused=True),
            device("ptl-01", "pick_light", online=False),
            device("ptl-02", "pick_light")]
    held = FloorConditions(site, site.alarms).evaluate(rows, HEALTHY, [], T0)
    assert keys(held) == ["device_faulted:prn-1", "device_offline:ptl-01", "device_out_of_rotation:prn-1",
                          "device_paused:PS-1"]
    texts = {c.key: c.text for c in held}
    assert texts["device_faulted:prn-1"] == "printer prn-1 is faulted: paper_out"
    assert texts["device_out_of_rotation:prn-1"] == "printer prn-1 is out of rotation: taken out by sam"


def test_a_link_down_is_one_alarm_not_one_per_device(site: Site) -> None:
    rows = [device("ptl-01", "pick_light", online=False), device("prn-1", "printer", online=False),
            device("loop-1", "conveyor", "opcua", online=False),
            device("sorter-1", "sorter", "opcua", online=False)]
    down = {**HEALTHY, "broker": False, "plcs": {"plc-1": False}}
    held = FloorConditions(site, site.alarms).evaluate(rows, down, [], T0)
    assert keys(held) == ["broker_unreachable:broker", "plc_unreachable:plc-1"]
    # The health check says a PLC is down while any of its devices is offline: with the sorter back
    # online, the PLC answers, and the conveyor is one device offline.
    rows[3]["online"] = True
    one_off = FloorConditions(site, site.alarms).evaluate(rows, {**down, "broker": True}, [], T0)
    assert keys(one_off) == ["device_offline:loop-1", "device_offline:prn-1", "device_offline:ptl-01"]


def test_a_conveyor_is_stuck_only_after_the_limit_with_commands_in_flight(site: Site) -> None:
    watch = FloorConditions(site, AlarmLimits(no_progress_s=30))
    idle_for_an_hour = T0 - 3600

    def at(now: float, in_flight: int) -> list[str]:
        row = device("loop-1", "conveyor", "opcua", in_flight=in_flight, last_progress_at=idle_for_an_hour)
        return keys(watch.evaluate([row], HEALTHY, [], now))

    assert at(T0, 3) == []  # busy from now: the last progress an hour ago says nothing
    assert at(T0 + 30, 3) == []
    assert at(T0 + 31, 3) == ["no_progress:loop-1"]
    assert at(T0 + 32, 0) == []  # nothing in flight: nothing is stuck
    assert at(T0 + 100, 1) == []  # a new busy spell starts the count again


def test_progress_resets_the_count_and_pick_lights_are_never_stuck(site: Site) -> None:
    watch = FloorConditions(site, AlarmLimits(no_progress_s=30))
    rows = [device("sorter-1", "sorter", "opcua", in_flight=5, last_progress_at=T0 + 50),
            device("ptl-01", "pick_light", in_flight=1, last_progress_at=T0)]
    assert keys(watch.evaluate(rows, HEALTHY, [], T0)) == []
    assert keys(watch.evaluate(rows, HEALTHY, [], T0 + 80)) == []
    assert keys(watch.evaluate(rows, HEALTHY, [], T0 + 81)) == ["no_progress:sorter-1"]


def test_the_floor_time_scale_shortens_every_limit(site: Site) -> None:
    watch = FloorConditions(site, AlarmLimits(no_progress_s=30), speed=10)
    row = device("loop-1", "conveyor", "opcua", in_flight=1)
    watch.evaluate([row], HEALTHY, [], T0)
    assert keys(watch.evaluate([row], HEALTHY, [], T0 + 3.1)) == ["no_progress:loop-1"]


def test_orders_over_their_stage_limit_are_one_alarm_per_stage(site: Site) -> None:
    limits = AlarmLimits.model_validate({"stage_s": {"picking": 600, "held": None}})
    orders = [order(1, OrderState.PICKING, T0 - 700), order(2, OrderState.PICKING, T0 - 900),
              order(3, OrderState.PICKING, T0 - 10), order(4, OrderState.HELD, T0 - 99_999),
              order(5, OrderState.PACKED, T0 - 301)]
    held = FloorConditions(site, limits).evaluate([], HEALTHY, orders, T0)
    texts = {c.key: c.text for c in held}
    assert texts == {
        "orders_overdue:picking": "2 orders in picking for more than 600 s (oldest first: 2, 1)",
        "orders_overdue:packed": "1 order in packed for more than 300 s (oldest first: 5)"}


def test_orders_due_soon_and_not_labelled_are_at_risk(site: Site) -> None:
    limits = AlarmLimits(due_at_risk_s=600)
    orders = [order(1, OrderState.PICKING, T0, due_at=T0 + 500),
              order(2, OrderState.EXCEPTION, T0, due_at=T0 - 5),  # past due
              order(3, OrderState.LABELLED, T0, due_at=T0 + 10),  # labelled: it will make it
              order(4, OrderState.PICKING, T0, due_at=T0 + 700),  # not yet
              order(5, OrderState.RECEIVED, T0)]  # no due time
    more = [order(10 + n, OrderState.HELD, T0, due_at=T0 + 100 + n) for n in range(6)]
    held = FloorConditions(site, limits).evaluate([], HEALTHY, orders + more, T0)
    assert [c.text for c in held if c.kind is K.ORDERS_DUE_AT_RISK] == [
        ("8 orders due within 600 s or past due and not yet labelled "
         "(soonest first: 2, 10, 11, 12, 13 and 3 more)")]


def test_the_writer_backlog(site: Site) -> None:
    watch = FloorConditions(site, AlarmLimits(writer_backlog=1000))
    assert keys(watch.evaluate([], {**HEALTHY, "writer_backlog": 1000}, [], T0)) == []
    assert keys(watch.evaluate([], {**HEALTHY, "writer_backlog": 1001}, [], T0)) == ["writer_backlog:writer"]


def test_the_site_file_takes_alarm_limits_and_refuses_bad_ones(site: Site) -> None:
    data = site.model_dump(mode="json")
    tuned = parse_site({**data, "alarms": {"no_progress_s": 45, "stage_s": {"picking": 120}}}, Path("s.yaml"))
    assert (tuned.alarms.no_progress_s, tuned.alarms.stage_s["picking"], tuned.alarms.stage_s["packed"]) == (
        45, 120, 300)
    with pytest.raises(SiteError, match=r"alarms\.stage_s\.shipped"):
        parse_site({**data, "alarms": {"stage_s": {"shipped": 5}}}, Path("s.yaml"))
    with pytest.raises(SiteError, match=r"alarms\.no_progress_s"):
        parse_site({**data, "alarms": {"no_progress_s": 0}}, Path("s.yaml"))


# ---- the monitor ----------------------------------------------------------------------------------
class FakeFloor:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.orders: dict[int, Order] = {}
        self.rows = [device("prn-1", "printer"), device("loop-1", "conveyor", "opcua")]
        self.links: dict[str, Any] = dict(HEALTHY)

    def devices(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]

    def health(self) -> dict[str, Any]:
        return self.links


class MemoryStore:
    def __init__(self, rows: list[Alarm] | None = None) -> None:
        self.rows = {a.id: a for a in rows or []}
        self.saved: list[tuple[int, bool, str | None]] = []
        self.flushes = 0

    async def active(self) -> tuple[list[Alarm], int]:
        return [a for a in self.rows.values() if a.active], max(self.rows, default=0) + 1

    async def get(self, alarm_id: int) -> Alarm | None:
        return self.rows.get(alarm_id)

    def save(self, alarm: Alarm) -> None:
        self.rows[alarm.id] = alarm
        self.saved.append((alarm.id, alarm.active, alarm.acked_by))

    async def flush(self) -> None:
        self.flushes += 1


async def test_the_monitor_raises_clears_counts_and_acknowledges(site: Site) -> None:
    floor, store = FakeFloor(site), MemoryStore([Alarm(4, K.DEVICE_OFFLINE, "old", "x", T0, cleared_at=T0)])
    monitor = AlarmMonitor(floor, store, clock=lambda: T0 + 100)
    await monitor.start()
    try:
        floor.rows[0]["fault"] = "paper_out"
        heard: list[int] = []
        monitor.listeners.append(lambda changes: heard.extend(a.id for a in changes.changed))
        assert [a.id for a in monitor.check(T0 + 1).raised] == [5]
        monitor.check(T0 + 2)
        assert monitor.raised_counts == {"device_faulted": 1}
        assert monitor.active_by_severity() == {"critical": 1}
        floor.rows[0]["fault"] = None
        assert [a.id for a in monitor.check(T0 + 3).cleared] == [5]
        assert heard == [5, 5] and store.saved == [(5, True, None), (5, False, None)]
        acked = await monitor.acknowledge(5, "sam")  # cleared: read back from the store
        assert (acked.acked_by, acked.acked_at, store.saved[-1]) == ("sam", T0 + 100, (5, False, "sam"))
        await monitor.acknowledge(5, "kim")
        assert store.rows[5].acked_by == "sam" and len(store.saved) == 3
        with pytest.raises(AlarmNotFound):
            await monitor.acknowledge(99, "sam")
    finally:
        await monitor.stop()


async def test_a_restarted_monitor_keeps_an_active_alarm_and_clears_it_when_the_condition_is_gone(
        site: Site) -> None:
    store = MemoryStore([Alarm(3, K.BROKER_UNREACHABLE, "broker", "down", T0)])
    floor = FakeFloor(site)
    floor.links = {**HEALTHY, "broker": False}
    monitor = AlarmMonitor(floor, store)
    await monitor.start()
    try:
        first = monitor.check(T0 + 5)  # the same alarm, not a second one (in this version's words)
        assert (first.raised, [a.id for a in first.retexted]) == ([], [3])
        floor.links = dict(HEALTHY)
        assert [(a.id, a.cleared_at) for a in monitor.check(T0 + 6).cleared] == [(3, T0 + 6)]
    finally:
        await monitor.stop()


async def test_the_monitor_checks_on_its_own_and_survives_a_bad_check(site: Site) -> None:
    fast = site.model_copy(update={"alarms": AlarmLimits(check_every_s=0.1)})
    floor, store = FakeFloor(fast), MemoryStore()
    floor.rows.append({"no": "device_id"})  # a row the monitor cannot read
    monitor = AlarmMonitor(floor, store)
    await monitor.start()
    try:
        await asyncio.sleep(0.25)
        assert monitor.check_errors >= 1
        floor.rows.pop()
        floor.rows[1]["online"] = False
        await asyncio.sleep(0.25)
        assert [a.key for a in monitor.active()] == ["device_offline:loop-1"]
    finally:
        await monitor.stop()
    assert monitor._task is None


async def test_a_poke_checks_at_once_instead_of_at_the_next_tick(site: Site) -> None:
    slow = site.model_copy(update={"alarms": AlarmLimits(check_every_s=60)})
    floor, store = FakeFloor(slow), MemoryStore()
    monitor = AlarmMonitor(floor, store)
    await monitor.start()
    try:
        assert monitor.running
        floor.rows[0]["fault"] = "paper_out"
        for _ in range(20):  # several status changes at once: one check
            monitor.poke()
        await asyncio.sleep(0.05)
        assert [a.key for a in monitor.active()] == [f"device_faulted:{floor.rows[0]['device_id']}"]
    finally:
        await monitor.stop()
    assert not monitor.running
