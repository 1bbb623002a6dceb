"""The REST API, /metrics, /healthz and the panel, against a real database (SQLite file and
PostgreSQL) filled with rows as the engine's writer would leave them, and a hand-written fake engine."""

from __future__ import annotations

import csv
import io
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from controller.api import EngineLike, Gate, create_app
from controller.api.deps import SnapshotCache
from controller.api.routes import timings as timings_route
from controller.domain.devices import ControlEvent, ControlRefused, DeviceAction, DeviceNotFound, WaitingOn
from controller.domain.model import (
    TERMINAL,
    InvalidTransition,
    NewOrder,
    Order,
    OrderConflict,
    OrderNotFound,
    OrderState,
    Received,
    check_new_orders,
)
from controller.engine.stats import FloorStats
from controller.site import Site, load_site
from controller.store import order_counts, queries
from controller.store.db import create_schema, make_engine
from controller.store.tables import DeviceCommandRow, OrderLineRow, OrderRow, StockRow

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("FLOORCTL_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
T0 = 1_714_552_200.0  # 2024-05-01T08:30:00Z
RECEIVED = 60  # plain received orders, ids 101..160, for paging


# ---- the fake engine ------------------------------------------------------------------------------
class FakeFloor:
    """Just enough engine: knows the demo site's SKUs and carriers, keeps order states in memory."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.stats = FloorStats()
        self.counters: Counter[str] = Counter()
        # as the engine counts them when the timing rows inserted by `seeded` were written
        self.command_counts: Counter[tuple[str, str]] = Counter(
            {("printer", "ok"): 1, ("printer", "timed_out"): 1, ("pick_light", "ok"): 2})
        self.states: dict[int, OrderState] = {1: OrderState.SHIPPED, 2: OrderState.EXCEPTION,
                                              3: OrderState.HELD}
        self.by_external: dict[str, Received] = {}
        self.received: list[NewOrder] = []
        self.healthy = True
        self.waiting: dict[int, WaitingOn] = {}
        self.live: list[dict[str, Any]] = []  # commands in hand, as the engine's queues hold them
        self._next_id = 1000
        self.rows: list[dict[str, Any]] = [
            {"device_id": "prn-1", "kind": "printer", "protocol": "mqtt", "online": False, "state": "faulted",
             "fault": "paper_out", "queue_length": 3, "in_flight": 0, "in_rotation": False},
            {"device_id": "loop-1", "kind": "conveyor", "protocol": "opcua", "online": True,
             "state": "Executing",
             "fault": None, "queue_length": 0, "in_flight": 2, "in_rotation": True, "paused": False,
             "available": True, "unavailable": None, "unavailable_since": None, "waiting_orders": 0,
             "last_progress_at": T0 + 1.5},
        ]
        self.control_listeners: list[Callable[[ControlEvent], None]] = []
        self.orders: dict[int, Order] = {}  # active orders, as the alarm monitor reads them

    def count(self, event: str) -> None:
        self.counters[event] += 1

    async def receive(self, orders: list[NewOrder]) -> list[Received]:
        check_new_orders(orders, self.site.skus(), {c.id for c in self.site.carriers})
        out = []
        for order in orders:
            known = self.by_external.get(order.external_id)
            if known is not None:
                out.append(Received(known.id, known.external_id, self.states[known.id], created=False))
                continue
            self._next_id += 1
            self.states[self._next_id] = OrderState.RECEIVED
            self.by_external[order.external_id] = Received(self._next_id, order.external_id,
                                                           OrderState.RECEIVED, True)
            self.received.append(order)
            out.append(self.by_external[order.external_id])
        return out

    async def cancel(self, order_id: int) -> OrderState:
        state = self._state(order_id)
        if state in TERMINAL:
            raise InvalidTransition(f"order {order_id} is {state.value}: it cannot be cancelled")
        self.states[order_id] = OrderState.CANCELLED
        return OrderState.CANCELLED

    async def resolve(self, order_id: int) -> OrderState:
        if self._state(order_id) is not OrderState.EXCEPTION:
            raise InvalidTransition(f"order {order_id} is not in exception")
        self.states[order_id] = OrderState.LABELLED
        return OrderState.LABELLED

    def _state(self, order_id: int) -> OrderState:
        if order_id not in self.states:
            raise OrderNotFound(order_id)  # a bare id: the API words the message
        return self.states[order_id]

    def devices(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows]

    async def control(self, device_id: str, action: DeviceAction | str, actor: str) -> dict[str, Any]:
        """Rotation and pause change the row; an e-stop reset off a PLC is refused, as the engine does."""
        row = next((r for r in self.rows if r["device_id"] == device_id), None)
        if row is None:
            raise DeviceNotFound(f"no device {device_id}")
        act = DeviceAction(action)
        outcome = "ok"
        if act is DeviceAction.ESTOP_RESET and row["kind"] not in ("conveyor", "sorter"):
            outcome = f"refused: {device_id} is a {row['kind']}: no e-stop to reset"
        elif act in (DeviceAction.TAKE_OUT, DeviceAction.PUT_BACK):
            row["in_rotation"] = act is DeviceAction.PUT_BACK
        elif act in (DeviceAction.PAUSE, DeviceAction.RESUME):
            row["paused"] = act is DeviceAction.PAUSE
        for listener in self.control_listeners:
            listener(ControlEvent(T0 + 60, actor, device_id, act, outcome))
        if outcome != "ok":
            raise ControlRefused(outcome.removeprefix("refused: "))
        return dict(row)

    def health(self) -> dict[str, Any]:
        return {"ok": self.healthy, "broker": self.healthy, "plcs": {"plc-1": True}, "writer_backlog": 17,
                "active_orders": 4}

    def waiting_on(self, order_id: int) -> WaitingOn | None:
        return self.waiting.get(order_id)

    def in_hand(self, order_id: int) -> list[dict[str, Any]]:
        return [dict(row) for row in self.live if row["order_id"] == order_id]


def _is_engine(floor: FakeFloor) -> EngineLike:
    return floor  # mypy checks the fake against the Protocol the app needs


# ---- databases --------------------------------------------------------------------------------------
_pg_problem: list[str] = []  # once PostgreSQL proved unreachable, skip the rest without waiting again


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'floor.db'}")
        await create_schema(engine)
        await seed(engine)
        yield engine
        await engine.dispose()
        return
    if _pg_problem:
        pytest.skip(_pg_problem[0])
    # A schema of its own per test: other suites may use the same database at the same time.
    schema = f"api_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_URL, connect_args={"timeout": 5})
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001  (refused, unknown host, auth: all mean "no PostgreSQL here")
        await admin.dispose()
        _pg_problem.append(f"PostgreSQL not reachable at {PG_URL} (set FLOORCTL_TEST_PG_URL): {exc}")
        pytest.skip(_pg_problem[0])
    engine = create_async_engine(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await create_schema(engine)
        await seed(engine)
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


def timing(command_id: str, order_id: int | None, task: str, device_id: str, kind: str, queued: float,
           outcome: str = "ok", command: str = "", protocol: str = "mqtt", done: bool = True,
           reason: str | None = None) -> DeviceCommandRow:
    return DeviceCommandRow(command_id=command_id, order_id=order_id, task=task, device_id=device_id,
                            device_kind=kind, protocol=protocol, command=command or task, queued_at=queued,
                            sent_at=queued + 0.002, acked_at=queued + 0.003 if done else None,
                            completed_at=queued + 1.5 if done else None, outcome=outcome, reason=reason)


async def seed(engine: AsyncEngine) -> None:
    """Rows as the engine's writer leaves them."""
    stamps: dict[str, Any] = {f"{state}_at": T0 + i for i, state in enumerate(
        ("received", "allocated", "picking", "conveyed", "packed", "labelled", "sorted", "shipped"))}
    orders = [
        OrderRow(id=1, external_id="WEB-1", carrier="DHL", state="shipped", tote="T-7", pack_station="PS-1",
                 printer="prn-2", lane="lane-1", due_at=T0 + 3600, **stamps),
        OrderRow(id=2, external_id="WEB-2", carrier="UPS", state="exception", reason="prn-1: paper_out",
                 resume_state="labelled", received_at=T0, exception_at=T0 + 9),
        OrderRow(id=3, external_id="WEB-3", carrier="DHL", state="held",
                 reason="insufficient stock for SKU-0003: 0 available, 2 wanted", received_at=T0,
                 held_at=T0 + 1),
    ]
    orders += [OrderRow(id=100 + n, external_id=f"BULK-{n}", carrier=("DHL", "DPD")[n % 2], state="received",
                        received_at=T0 + n) for n in range(1, RECEIVED + 1)]
    lines = [OrderLineRow(order_id=1, line_no=1, sku="SKU-0001", qty=2, location="A-01", picked_qty=2,
                          picked=True),
             OrderLineRow(order_id=1, line_no=2, sku="SKU-0002", qty=1, location="A-02", picked_qty=1,
                          picked=True),
             OrderLineRow(order_id=3, line_no=1, sku="SKU-0003", qty=2)]
    # Inserted out of time order (as retries and batches do), with two commands queued at the same instant.
    commands = [
        timing("o1.label.0.a0", 1, "label", "prn-2", "printer", T0 + 5,
               command="^XA^FO50,50^FDWEB-1, DHL^FS\n^XZ"),
        timing("o1.pick.1.a0", 1, "pick", "ptl-01", "pick_light", T0 + 2),
        timing("o1.pick.2.a0", 1, "pick", "ptl-02", "pick_light", T0 + 2),
        timing("o1.convey.0.a0", 1, "convey", "loop-1", "conveyor", T0 + 3, protocol="opcua"),
        timing("o1.pack.0.a0", 1, "pack", "PS-1", "pack_station", T0 + 4),
        timing("o1.divert.0.a0", 1, "divert", "sorter-1", "sorter", T0 + 6, protocol="opcua"),
        timing("o2.label.0.a0", 2, "label", "prn-1", "printer", T0 + 8, outcome="failed", reason="paper_out"),
        timing("o2.label.0.a1", 2, "label", "prn-1", "printer", T0 + 8.5, outcome="timed_out", done=False),
    ]
    stock = [StockRow(location="A-01", sku="SKU-0001", on_hand=100, reserved=7),
             StockRow(location="A-02", sku="SKU-0002", on_hand=5, reserved=5),
             StockRow(location="A-03", sku="SKU-0003", on_hand=0, reserved=0)]
    async with AsyncSession(engine) as session:
        session.add_all(orders)
        await session.flush()
        session.add_all([*lines, *commands, *stock])
        await session.commit()
    async with engine.begin() as conn:  # written past the writer, which keeps orders by state counted
        await conn.run_sync(order_counts.recount)


# ---- the app ----------------------------------------------------------------------------------------
@pytest.fixture
def floor() -> FakeFloor:
    return FakeFloor(load_site(ROOT / "config" / "demo.yaml"))


@pytest.fixture
async def client(floor: FakeFloor, db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_is_engine(floor), db, gate=Gate.without_auth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as http:
        yield http


def order_body(external_id: str, **changes: Any) -> dict[str, Any]:
    return {"external_id": external_id, "lines": [{"sku": "SKU-0001", "qty": 2}], "carrier": "DHL", **changes}


def errors_by_loc(response: httpx.Response) -> dict[tuple[Any, ...], str]:
    assert response.status_code == 422, response.text
    return {tuple(err["loc"]): err["msg"] for err in response.json()["detail"]}


# ---- POST /api/orders ---------------------------------------------------------------------------------
async def test_post_one_order_is_idempotent(client: httpx.AsyncClient, floor: FakeFloor) -> None:
    first = await client.post("/api/orders", json=order_body("SHOP-1", priority=5))
    assert first.status_code == 201
    assert first.json() == {"id": 1001, "external_id": "SHOP-1", "state": "received", "created": True}
    again = await client.post("/api/orders", json=order_body("SHOP-1", priority=5))
    assert again.status_code == 200
    assert again.json()["id"] == 1001 and again.json()["created"] is False
    assert floor.received == [NewOrder("SHOP-1", (("SKU-0001", 2),), "DHL", priority=5)]


async def test_post_a_list_gets_a_list(client: httpx.AsyncClient, floor: FakeFloor) -> None:
    await client.post("/api/orders", json=order_body("SHOP-1"))
    response = await client.post("/api/orders", json=[order_body("SHOP-1"), order_body("SHOP-2")])
    assert response.status_code == 201  # one of them is new
    assert [(o["external_id"], o["created"]) for o in response.json()] == [("SHOP-1", False),
                                                                           ("SHOP-2", True)]
    repeat = await client.post("/api/orders", json=[order_body("SHOP-2")])
    assert repeat.status_code == 200
    assert isinstance(repeat.json(), list)


async def test_due_at_is_iso_and_zoneless_means_utc(client: httpx.AsyncClient, floor: FakeFloor) -> None:
    await client.post("/api/orders", json=[order_body("A", due_at="2024-05-01T10:30:00+02:00"),
                                           order_body("B", due_at="2024-05-01T08:30:00")])
    assert [o.due_at for o in floor.received] == [T0, T0]


async def test_invalid_orders_get_a_message_per_field(client: httpx.AsyncClient) -> None:
    bad = {"external_id": "", "lines": [{"sku": "SKU-0001", "qty": 0}, {"sku": "SKU-0002", "qty": "2"},
                                        {"sku": "SKU-0003", "quantity": 1}],
           "carrier": "DHL", "priority": "high", "due_at": "next tuesday"}
    errors = errors_by_loc(await client.post("/api/orders", json=bad))
    assert errors[("body", "order", "external_id")] == "String should have at least 1 character"
    assert errors[("body", "order", "lines", 0, "qty")] == "Input should be greater than 0"
    assert errors[("body", "order", "lines", 1, "qty")] == "Input should be a valid integer"
    assert errors[("body", "order", "lines", 2, "qty")] == "Field required"
    assert errors[("body", "order", "lines", 2, "quantity")] == "Extra inputs are not permitted"
    assert errors[("body", "order", "priority")] == "Input should be a valid integer"
    assert ("body", "order", "due_at") in errors

    in_a_list = errors_by_loc(await client.post("/api/orders", json=[order_body("OK"), {"external_id": "X"}]))
    assert in_a_list == {("body", "orders", 1, "lines"): "Field required",
                         ("body", "orders", 1, "carrier"): "Field required"}

    no_lines = errors_by_loc(await client.post("/api/orders", json=order_body("X", lines=[])))
    assert no_lines == {("body", "order",
                         "lines"): "List should have at least 1 item after validation, not 0"}
    assert (await client.post("/api/orders", json="WEB-9")).status_code == 422


async def test_an_empty_list_is_refused(client: httpx.AsyncClient, floor: FakeFloor) -> None:
    response = await client.post("/api/orders", json=[])
    assert response.status_code == 422
    assert "at least 1" in response.text
    assert floor.counters["api_invalid_requests"] == 1


async def test_unknown_sku_and_carrier_are_422_naming_them(client: httpx.AsyncClient,
                                                           floor: FakeFloor) -> None:
    body = order_body("X", carrier="FEDEX", lines=[{"sku": "SKU-0001", "qty": 1}, {"sku": "NOPE", "qty": 1}])
    response = await client.post("/api/orders", json=body)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "order_rejected", "loc": ["body", "order", "carrier"],
         "msg": "unknown carrier 'FEDEX' (known: DHL, DPD, UPS)", "input": "FEDEX"},
        {"type": "order_rejected", "loc": ["body", "order", "lines", 1, "sku"], "msg": "unknown SKU 'NOPE'",
         "input": "NOPE"},
    ]
    in_a_list = errors_by_loc(await client.post("/api/orders", json=[order_body("Y"), body]))
    assert in_a_list[("body", "orders", 1, "lines", 1, "sku")] == "unknown SKU 'NOPE'"
    assert in_a_list[("body", "orders", 1, "carrier")] == "unknown carrier 'FEDEX' (known: DHL, DPD, UPS)"
    list_of_one = errors_by_loc(await client.post("/api/orders", json=[body]))
    assert list_of_one[("body", "orders", 0, "lines", 1, "sku")] == "unknown SKU 'NOPE'"
    assert floor.received == []


# ---- reading orders -------------------------------------------------------------------------------------
async def test_orders_are_paged(client: httpx.AsyncClient) -> None:
    first = (await client.get("/api/orders", params={"limit": 25})).json()
    assert (first["total"], first["limit"], first["offset"]) == (3 + RECEIVED, 25, 0)
    assert [o["id"] for o in first["items"][:4]] == [1, 2, 3, 101]
    last = (await client.get("/api/orders", params={"limit": 25, "offset": 50})).json()
    assert [o["id"] for o in last["items"]] == list(range(148, 161))
    assert last["total"] == 3 + RECEIVED
    beyond = (await client.get("/api/orders", params={"offset": 500})).json()
    assert beyond["items"] == [] and beyond["total"] == 3 + RECEIVED

    too_big = errors_by_loc(await client.get("/api/orders", params={"limit": 1001}))
    assert too_big == {("query", "limit"): "Input should be less than or equal to 1000"}
    assert (await client.get("/api/orders", params={"limit": 0})).status_code == 422
    assert (await client.get("/api/orders", params={"offset": -1})).status_code == 422


async def test_orders_are_filtered(client: httpx.AsyncClient) -> None:
    stuck = (await client.get("/api/orders?state=exception&state=held")).json()
    assert [(o["id"], o["reason"]) for o in stuck["items"]] == [
        (2, "prn-1: paper_out"), (3, "insufficient stock for SKU-0003: 0 available, 2 wanted")]
    dpd = (await client.get("/api/orders", params={"carrier": "DPD", "state": "received", "limit": 5})).json()
    assert dpd["total"] == RECEIVED // 2 and {o["carrier"] for o in dpd["items"]} == {"DPD"}
    by_external = (await client.get("/api/orders", params={"external_id": "WEB-2"})).json()
    assert [o["id"] for o in by_external["items"]] == [2]

    bad_state = errors_by_loc(await client.get("/api/orders", params={"state": "lost"}))
    assert "'received'" in bad_state[("query", "state", 0)] and "'shipped'" in bad_state[("query", "state",
                                                                                          0)]


async def test_one_order_in_detail(client: httpx.AsyncClient) -> None:
    order = (await client.get("/api/orders/1")).json()
    assert (order["state"], order["tote"], order["pack_station"], order["printer"], order["lane"]) == (
        "shipped", "T-7", "PS-1", "prn-2", "lane-1")
    assert order["due_at"] == "2024-05-01T09:30:00.000Z"
    assert [(ln["sku"], ln["qty"], ln["picked"]) for ln in order["lines"]] == [("SKU-0001", 2, True),
                                                                               ("SKU-0002", 1, True)]
    assert order["stages"]["received"] == "2024-05-01T08:30:00.000Z"
    assert order["stages"]["shipped"] == "2024-05-01T08:30:07.000Z"
    assert order["stages"]["exception"] is None
    assert list(order["stages"]) == [s.value for s in OrderState]

    stuck = (await client.get("/api/orders/2")).json()
    assert (stuck["state"], stuck["reason"], stuck["resume_state"]) == ("exception", "prn-1: paper_out",
                                                                        "labelled")

    missing = await client.get("/api/orders/99999")
    assert (missing.status_code, missing.json()) == (404, {"detail": "order 99999 not found"})
    assert (await client.get("/api/orders/abc")).status_code == 422


async def test_timeline_is_in_queued_order_with_durations(client: httpx.AsyncClient) -> None:
    timeline = (await client.get("/api/orders/1/timeline")).json()
    assert timeline["order_id"] == 1
    items = timeline["items"]
    assert [i["command_id"] for i in items] == ["o1.pick.1.a0", "o1.pick.2.a0", "o1.convey.0.a0",
                                                "o1.pack.0.a0",
                                               "o1.label.0.a0", "o1.divert.0.a0"]
    pick = items[0]
    assert (pick["task"], pick["device_id"], pick["device_kind"], pick["protocol"]) == (
        "pick", "ptl-01", "pick_light", "mqtt")
    assert (pick["queued_at"], pick["sent_at"]) == ("2024-05-01T08:30:02.000Z", "2024-05-01T08:30:02.002Z")
    assert pick["wait_ms"] == pytest.approx(2, abs=0.01)
    assert pick["ack_ms"] == pytest.approx(1, abs=0.01)
    assert pick["exec_ms"] == pytest.approx(1497, abs=0.01)
    assert pick["total_ms"] == pytest.approx(1500, abs=0.01)
    assert (pick["outcome"], pick["reason"], pick["retries"]) == ("ok", None, 0)

    failed = (await client.get("/api/orders/2/timeline")).json()["items"]
    assert [(i["outcome"], i["reason"]) for i in failed] == [("failed", "paper_out"), ("timed_out", None)]
    assert failed[1]["completed_at"] is None
    assert failed[1]["exec_ms"] is None and failed[1]["total_ms"] is None

    assert (await client.get("/api/orders/3/timeline")).json() == {"order_id": 3, "items": []}
    assert (await client.get("/api/orders/99999/timeline")).status_code == 404


async def test_an_order_shows_what_it_waits_on_and_its_commands_in_hand(client: httpx.AsyncClient,
                                                                         floor: FakeFloor) -> None:
    assert (await client.get("/api/orders/3")).json()["waiting_on"] is None
    floor.waiting[3] = WaitingOn("loop-1", T0 + 20, "faulted: jam:main")
    floor.live.append({"command_id": "o3.convey.0.a0", "order_id": 3, "task": "convey", "device_id": "loop-1",
                       "device_kind": "conveyor", "protocol": "opcua", "command": "transport",
                       "queued_at": T0 + 19, "sent_at": T0 + 19.001, "acked_at": T0 + 19.002,
                       "completed_at": None, "outcome": "acked", "reason": None, "retries": 0})
    order = (await client.get("/api/orders/3")).json()
    assert order["waiting_on"] == {"device": "loop-1", "since": "2024-05-01T08:30:20.000Z",
                                   "reason": "faulted: jam:main"}
    [live] = (await client.get("/api/orders/3/timeline")).json()["items"]
    assert (live["command_id"], live["outcome"], live["completed_at"], live["ack_ms"]) == (
        "o3.convey.0.a0", "acked", None, pytest.approx(1, abs=0.01))


def _parts(breakdown: dict[str, Any]) -> dict[str, float]:
    return {p["part"]: p["seconds"] for p in breakdown["parts"]}


async def test_breakdown_splits_the_cycle_time_into_parts_that_add_up(client: httpx.AsyncClient,
                                                                      floor: FakeFloor) -> None:
    shipped = (await client.get("/api/orders/1/breakdown")).json()
    assert (shipped["order_id"], shipped["state"], shipped["finished"]) == (1, "shipped", True)
    assert (shipped["received_at"], shipped["until"], shipped["cycle_s"]) == (
        "2024-05-01T08:30:00.000Z", "2024-05-01T08:30:07.000Z", 7.0)
    parts = _parts(shipped)
    assert list(parts) == ["held", "queued", "device_down", "transmission", "execution", "transit",
                           "exception", "controller"]
    assert sum(parts.values()) == pytest.approx(7.0, abs=1e-5)
    assert sum(p["share"] for p in shipped["parts"]) == pytest.approx(1.0, abs=1e-5)
    assert parts["held"] == parts["exception"] == parts["device_down"] == 0
    # both pick lines queued at once, 2 ms each; the divert answer is sorter travel
    queued = {p["part"]: p for p in shipped["parts"]}["queued"]
    assert queued["devices"][:2] == [{"device_id": "ptl-01", "seconds": pytest.approx(0.002, abs=1e-5)},
                                     {"device_id": "ptl-02", "seconds": pytest.approx(0.002, abs=1e-5)}]
    assert {p["part"]: p for p in shipped["parts"]}["transit"]["devices"][-1]["device_id"] == "sorter-1"

    stuck = (await client.get("/api/orders/2/breakdown")).json()  # in exception since T0 + 9: until now
    assert not stuck["finished"] and stuck["state"] == "exception"
    assert _parts(stuck)["exception"] == pytest.approx(stuck["cycle_s"] - 9, abs=1)

    # An active order as the engine holds it: picking, a line queued at a faulted light for 3 s so far.
    now = time.time()
    floor.orders[3] = Order(3, "WEB-3", "DHL", 0, [], OrderState.PICKING,
                            stamps={"received": now - 10, "allocated": now - 4, "picking": now - 4})
    floor.live.append({"command_id": "o3.pick.1@A-03.a0", "order_id": 3, "task": "pick",
                       "device_id": "ptl-03", "device_kind": "pick_light", "protocol": "mqtt",
                       "command": "show", "queued_at": now - 4, "sent_at": None, "acked_at": None,
                       "completed_at": None, "outcome": "queued", "reason": None, "retries": 0,
                       "ended_at": None, "down_queued_s": 3.0, "down_in_hand_s": 0.0})
    live = (await client.get("/api/orders/3/breakdown")).json()
    assert not live["finished"] and live["state"] == "picking"
    parts = _parts(live)
    assert live["cycle_s"] == pytest.approx(10, abs=0.5)
    assert parts["device_down"] == pytest.approx(3.0, abs=0.01)
    assert parts["queued"] == pytest.approx(1.0, abs=0.5)
    assert parts["controller"] == pytest.approx(6.0, abs=0.5)
    assert sum(parts.values()) == pytest.approx(live["cycle_s"], abs=1e-5)
    assert {p["part"]: p for p in live["parts"]}["device_down"]["devices"] == [
        {"device_id": "ptl-03", "seconds": pytest.approx(3.0, abs=0.01)}]

    missing = await client.get("/api/orders/99999/breakdown")
    assert (missing.status_code, missing.json()) == (404, {"detail": "order 99999 not found"})
    for bad in ("abc", "0", "-1", str(2**63)):
        assert (await client.get(f"/api/orders/{bad}/breakdown")).status_code == 422, bad


async def test_a_repost_with_other_content_is_a_409_naming_the_difference(client: httpx.AsyncClient,
                                                                          floor: FakeFloor) -> None:
    def conflict(orders: list[NewOrder]) -> None:
        raise OrderConflict({"SHOP-1": ["lines [SKU-0001 x2] instead of [SKU-0001 x1]"]})

    floor.receive = conflict  # type: ignore[assignment,method-assign]
    response = await client.post("/api/orders", json=order_body("SHOP-1"))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "order SHOP-1 was already received with other content: lines [SKU-0001 x2] instead of "
                  "[SKU-0001 x1]",
        "conflicts": {"SHOP-1": ["lines [SKU-0001 x2] instead of [SKU-0001 x1]"]}}


async def test_cancel_and_resolve(client: httpx.AsyncClient, floor: FakeFloor) -> None:
    resolved = await client.post("/api/orders/2/resolve")
    assert (resolved.status_code, resolved.json()) == (200, {"id": 2, "state": "labelled"})
    not_stuck = await client.post("/api/orders/2/resolve")
    assert (not_stuck.status_code, not_stuck.json()) == (409, {"detail": "order 2 is not in exception"})

    cancelled = await client.post("/api/orders/3/cancel")
    assert (cancelled.status_code, cancelled.json()) == (200, {"id": 3, "state": "cancelled"})
    shipped = await client.post("/api/orders/1/cancel")
    assert shipped.status_code == 409 and "shipped" in shipped.json()["detail"]

    for action in ("cancel", "resolve"):
        missing = await client.post(f"/api/orders/424242/{action}")
        assert (missing.status_code, missing.json()) == (404, {"detail": "order 424242 not found"})


# ---- timings ----------------------------------------------------------------------------------------
async def test_timings_filtered_and_paged(client: httpx.AsyncClient) -> None:
    printers = (await client.get("/api/timings", params={"device_kind": "printer"})).json()
    assert [t["command_id"] for t in printers["items"]] == ["o1.label.0.a0", "o2.label.0.a0", "o2.label.0.a1"]
    assert printers["total"] == 3

    page = (await client.get("/api/timings", params={"limit": 2, "offset": 2})).json()
    assert [t["command_id"] for t in page["items"]] == ["o1.convey.0.a0", "o1.pack.0.a0"]
    assert page["total"] == 8

    failed = (await client.get("/api/timings", params={"outcome": "failed", "device_id": "prn-1"})).json()
    assert [t["command_id"] for t in failed["items"]] == ["o2.label.0.a0"]
    picks = (await client.get("/api/timings", params={"task": "pick"})).json()
    assert picks["total"] == 2

    # since is inclusive, until exclusive; ISO and epoch seconds both work.
    window = (await client.get("/api/timings",
                               params={"since": "2024-05-01T08:30:03Z", "until": str(T0 + 6)})).json()
    assert [t["task"] for t in window["items"]] == ["convey", "pack", "label"]

    bad = errors_by_loc(await client.get("/api/timings", params={"since": "yesterday"}))
    assert "ISO 8601" in bad[("query", "since")]
    assert (await client.get("/api/timings", params={"format": "xml"})).status_code == 422


async def test_timings_refuse_unknown_filter_values(client: httpx.AsyncClient) -> None:
    for query in ("device_kind=robot", "outcome=fine", "task=dance"):
        response = await client.get(f"/api/timings?{query}")
        assert response.status_code == 422, query
        assert query.split("=")[0] in response.text


@pytest.mark.parametrize("read, slice_", [(2000, 200), (3, 2)])
async def test_timings_as_csv(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, read: int,
                              slice_: int) -> None:
    # Small reads and slices put chunk edges everywhere, ties in queued_at included.
    monkeypatch.setattr(timings_route, "CSV_READ", read)
    monkeypatch.setattr(timings_route, "CSV_SLICE", slice_)
    response = await client.get("/api/timings", params={"format": "csv", "limit": 1})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 8  # all of them: limit/offset do not apply to the export
    assert rows[0]["command_id"] == "o1.pick.1.a0" and rows[-1]["command_id"] == "o2.label.0.a1"
    assert list(rows[0]) == ["command_id", "order_id", "task", "device_id", "device_kind", "protocol",
                             "command", "queued_at", "sent_at", "acked_at", "completed_at", "wait_ms",
                             "ack_ms", "exec_ms", "total_ms", "outcome", "reason", "retries"]
    label = next(r for r in rows if r["command_id"] == "o1.label.0.a0")
    assert label["command"] == "^XA^FO50,50^FDWEB-1, DHL^FS\n^XZ"  # commas and newlines survive
    assert float(label["total_ms"]) == pytest.approx(1500, abs=0.01)

    only = await client.get("/api/timings", params={"format": "csv", "device_id": "prn-1"})
    assert [r["command_id"] for r in csv.DictReader(io.StringIO(only.text))] == ["o2.label.0.a0",
                                                                                 "o2.label.0.a1"]
    none = await client.get("/api/timings", params={"format": "csv", "device_id": "nobody"})
    assert none.text.count("\n") == 1  # the header alone


async def test_csv_chunks_walk_every_row_once_in_time_order(db: AsyncEngine) -> None:
    async with AsyncSession(db) as session:
        everything = (await queries.timings_page(session, queries.TimingFilter(), limit=1000)).items
    expected = [row.command_id for row in everything]
    for chunk in (1, 2, 3, 8, 100):  # chunk edges fall on and between the two commands queued together
        seen = [row.command_id async for rows in queries.timings_in_chunks(db, queries.TimingFilter(),
                                                                           chunk=chunk)
                for row in rows]
        assert seen == expected, chunk
    assert expected[:2] == ["o1.pick.1.a0", "o1.pick.2.a0"]


# ---- stock, devices, stats --------------------------------------------------------------------------
async def test_stock(client: httpx.AsyncClient) -> None:
    stock = (await client.get("/api/stock")).json()
    assert stock["items"][0] == {"location": "A-01", "sku": "SKU-0001", "on_hand": 100, "reserved": 7,
                                 "available": 93}
    assert stock["total"] == 3
    one = (await client.get("/api/stock", params={"sku": "SKU-0002"})).json()
    assert [(s["location"], s["available"]) for s in one["items"]] == [("A-02", 0)]


async def test_devices(client: httpx.AsyncClient) -> None:
    devices = (await client.get("/api/devices")).json()
    assert [(d["device_id"], d["online"], d["fault"], d["in_rotation"]) for d in devices] == [
        ("prn-1", False, "paper_out", False), ("loop-1", True, None, True)]


async def test_stats_combine_the_engine_and_the_database(client: httpx.AsyncClient, floor: FakeFloor) -> None:
    now = datetime.now(UTC).timestamp()
    floor.stats.record_stage("picking", 4.0, at=now - 1)
    floor.stats.record_device("prn-2", "printer", 0.6, at=now - 1)
    floor.stats.record_order(120.0, at=now - 1, outcome="shipped")
    stats = (await client.get("/api/stats")).json()
    assert stats["site"] == "demo"
    assert stats["orders_by_state"] == {**{s.value: 0 for s in OrderState},
                                        "shipped": 1, "exception": 1, "held": 1, "received": RECEIVED}
    assert stats["throughput"]["last_minute"] == 1
    assert stats["stages"]["picking"]["p95_s"] == 4.0
    assert stats["slowest_device"]["device_id"] == "prn-2"


def test_snapshots_are_shared_for_a_second() -> None:
    clock = [T0]
    stats = FloorStats()
    cache = SnapshotCache(stats, max_age_s=1.0, clock=lambda: clock[0])
    first = cache.get()
    stats.record_stage("picking", 1.0, at=T0)
    clock[0] = T0 + 0.5
    assert cache.get() is first
    clock[0] = T0 + 1.0
    assert cache.get()["stages"]["picking"]["count"] == 1


# ---- health, metrics, panel, docs ------------------------------------------------------------------------
async def test_healthz(client: httpx.AsyncClient, floor: FakeFloor) -> None:
    ok = await client.get("/healthz")
    assert (ok.status_code, ok.json()["ok"]) == (200, True)
    floor.healthy = False
    down = await client.get("/healthz")
    assert down.status_code == 503
    assert down.json() == {"ok": False, "broker": False, "plcs": {"plc-1": True}, "writer_backlog": 17,
                           "active_orders": 4}


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


async def test_metrics_parse_and_count(client: httpx.AsyncClient, floor: FakeFloor, db: AsyncEngine) -> None:
    floor.counters["bad_payload"] += 3
    floor.stats.record_stage("picking", 4.0, at=datetime.now(UTC).timestamp())
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("floorctl_orders", (("state", "exception"),))] == 1
    assert got[("floorctl_orders", (("state", "received"),))] == RECEIVED
    assert got[("floorctl_orders", (("state", "cancelled"),))] == 0
    assert got[("floorctl_device_commands_total", (("kind", "printer"), ("outcome", "ok")))] == 1
    assert got[("floorctl_device_commands_total", (("kind", "printer"), ("outcome", "timed_out")))] == 1
    assert got[("floorctl_device_commands_total", (("kind", "pick_light"), ("outcome", "ok")))] == 2
    assert got[("floorctl_device_online",
                (("device_id", "prn-1"), ("kind", "printer"), ("protocol", "mqtt")))] == 0
    assert got[("floorctl_device_queue_length", (("device_id", "prn-1"), ("kind", "printer")))] == 3
    assert got[("floorctl_engine_events_total", (("event", "bad_payload"),))] == 3
    assert got[("floorctl_writer_backlog", ())] == 17
    assert got[("floorctl_healthy", ())] == 1
    assert got[("floorctl_health_check", (("check", "broker"),))] == 1
    assert got[("floorctl_health_check", (("check", "plcs.plc-1"),))] == 1
    assert got[("floorctl_health_value", (("name", "active_orders"),))] == 4
    assert got[("floorctl_stage_seconds", (("quantile", "0.95"), ("stage", "picking")))] == 4.0

    # A second app in the same process has its own registry: no "Duplicated timeseries" error.
    other = create_app(_is_engine(FakeFloor(floor.site)), db, gate=Gate.without_auth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://other") as http:
        second = samples((await http.get("/metrics")).text)
    assert ("floorctl_engine_events_total", (("event", "bad_payload"),)) not in second


async def test_panel_and_docs_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/panel.js" in page.text and "/static/panel.css" in page.text
    for asset in ("/static/panel.js", "/static/panel.css"):
        assert (await client.get(asset)).status_code == 200, asset
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "cdn." not in docs.text  # works on an offline site network
    assert (await client.get("/static/apidocs/swagger-ui-bundle.js")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/api/orders", "/api/orders/{order_id}/timeline", "/api/orders/{order_id}/breakdown",
            "/api/timings", "/api/stock", "/api/devices", "/api/stats", "/healthz", "/metrics"} <= set(paths)
