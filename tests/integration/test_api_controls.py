"""Device controls, their audit trail and alarms over HTTP, against a real database (SQLite file and
PostgreSQL, the `db` fixture of test_api) with the real alarm monitor, repository and store writer
around test_api's fake engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.api import Gate, create_app
from controller.engine.alarms import AlarmMonitor
from controller.store.tables import AlarmRow, AuditRow
from controller.store.writer import StoreWriter
from tests.integration import test_api
from tests.integration.test_api import T0, FakeFloor, _is_engine, samples
from tests.integration.test_api_auth import gate_with_users, logged_in

db = test_api.db  # the fixtures: a database (SQLite, PostgreSQL) seeded as test_api's, and its fake engine
floor = test_api.floor


@pytest.fixture
async def app(floor: FakeFloor, db: AsyncEngine, writer: StoreWriter, monitor: AlarmMonitor) -> Any:
    """The app with two supervisors, sam and kim; the audit trail's clock stands at T0 + 60."""
    users = {"sam": "supervisor", "kim": "supervisor"}
    gate = await gate_with_users(db, writer, users, clock=lambda: T0 + 60)
    return create_app(_is_engine(floor), db, gate=gate, alarms=monitor)


@pytest.fixture
async def http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Logged in as sam."""
    async with logged_in(app, "sam") as client:
        yield client


@pytest.fixture
async def kim(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with logged_in(app, "kim") as client:
        yield client


# ---- device controls -------------------------------------------------------------------------------
async def test_a_control_answers_the_device_row_and_is_audited(
        http: httpx.AsyncClient, kim: httpx.AsyncClient, monitor: AlarmMonitor) -> None:
    out = await http.post("/api/devices/loop-1/control", json={"action": "take_out"})
    assert out.status_code == 200, out.text
    row = out.json()
    assert (row["device_id"], row["in_rotation"], row["last_progress_at"]) == (
        "loop-1", False, "2024-05-01T08:30:01.500Z")
    paused = (await kim.post("/api/devices/loop-1/control", json={"action": "pause"})).json()
    assert paused["paused"] is True
    refused = await kim.post("/api/devices/prn-1/control", json={"action": "estop_reset"})
    no_estop = "prn-1 is a printer: no e-stop to reset"
    assert (refused.status_code, refused.json()) == (409, {"detail": no_estop})
    await monitor.store.flush()
    events = (await http.get("/api/devices/loop-1/events")).json()
    assert [(e["actor"], e["action"], e["outcome"]) for e in events["items"]] == [
        ("kim", "pause", "ok"), ("sam", "take_out", "ok")]
    assert events["items"][0]["at"] == "2024-05-01T08:31:00.000Z"
    [refusal] = (await http.get("/api/devices/prn-1/events")).json()["items"]
    assert (refusal["actor"], refusal["outcome"]) == ("kim", f"refused: {no_estop}")


@pytest.mark.parametrize("path, body, headers, status", [
    ("/api/devices/nope-9/control", {"action": "pause"}, {}, 404),
    ("/api/devices/loop-1/control", {"action": "explode"}, {}, 422),
    ("/api/devices/loop-1/control", {"action": "pause", "why": "x"}, {}, 422),
    ("/api/devices/loop-1/control", {}, {}, 422),
    ("/api/devices/bad%20id!/control", {"action": "pause"}, {}, 422),
    (f"/api/devices/{'x' * 65}/control", {"action": "pause"}, {}, 422),
])
async def test_bad_controls_are_refused_without_a_500(http: httpx.AsyncClient, path: str,
                                                      body: dict[str, Any], headers: dict[str, str],
                                                      status: int) -> None:
    response = await http.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text


async def test_device_events_are_paged_newest_first(http: httpx.AsyncClient, db: AsyncEngine) -> None:
    async with AsyncSession(db) as session:
        session.add_all([AuditRow(at=T0 + n, actor="sam", role="supervisor", address="10.0.0.7",
                                  action="device.reset", target="device:prn-1", outcome="ok",
                                  detail=f"r.prn-1.{n}") for n in range(7)])
        session.add(AuditRow(at=T0, actor="sam", action="order.cancel", target="order:1", outcome="ok"))
        await session.commit()
    page = (await http.get("/api/devices/prn-1/events", params={"limit": 3, "offset": 2})).json()
    assert (page["total"], [e["detail"] for e in page["items"]]) == (
        7, ["r.prn-1.4", "r.prn-1.3", "r.prn-1.2"])
    assert (await http.get("/api/devices/nope-9/events")).status_code == 404
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 10**12}, {"limit": "x"}):
        assert (await http.get("/api/devices/prn-1/events", params=params)).status_code == 422, params


# ---- alarms ------------------------------------------------------------------------------------------
async def seed_alarms(db: AsyncEngine) -> None:
    async with AsyncSession(db) as session:
        session.add_all([
            AlarmRow(id=1, kind="device_faulted", severity="critical", source_kind="device", source="ptl-01",
                     text="pick light ptl-01 is faulted: lamp_broken", raised_at=T0, cleared_at=T0 + 30,
                     acked_at=T0 + 40, acked_by="sam"),
            AlarmRow(id=2, kind="orders_overdue", severity="warning", source_kind="orders", source="picking",
                     text="3 orders in picking for more than 600 s", raised_at=T0 + 10),
            AlarmRow(id=3, kind="device_paused", severity="info", source_kind="device", source="PS-1",
                     text="pack station PS-1 is paused (draining)", raised_at=T0 + 20, cleared_at=T0 + 25),
        ])
        await session.commit()


async def test_alarms_active_and_history_filtered(http: httpx.AsyncClient, db: AsyncEngine) -> None:
    await seed_alarms(db)

    async def ids(**params: Any) -> list[int]:
        response = await http.get("/api/alarms", params=params)
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["items"]]

    assert await ids() == [3, 2, 1]  # newest first
    assert await ids(active="true") == [2]
    assert await ids(active="false") == [3, 1]
    assert await ids(severity="critical") == [1]
    assert await ids(source="PS-1") == [3]
    assert await ids(kind="orders_overdue", active="true") == [2]
    assert await ids(limit=1, offset=1) == [2]
    first = (await http.get("/api/alarms", params={"source": "ptl-01"})).json()["items"][0]
    assert first == {"id": 1, "kind": "device_faulted", "severity": "critical", "source_kind": "device",
                     "source": "ptl-01", "text": "pick light ptl-01 is faulted: lamp_broken", "active": False,
                     "raised_at": "2024-05-01T08:30:00.000Z", "cleared_at": "2024-05-01T08:30:30.000Z",
                     "acked_at": "2024-05-01T08:30:40.000Z", "acked_by": "sam"}
    for params in ({"severity": "loud"}, {"kind": "nope"}, {"active": "maybe"}, {"limit": 0},
                   {"offset": 10**12}, {"source": ""}, {"source": "s" * 129}):
        assert (await http.get("/api/alarms", params=params)).status_code == 422, params


async def test_a_raised_alarm_is_listed_acknowledged_and_counted(
        http: httpx.AsyncClient, kim: httpx.AsyncClient, floor: FakeFloor, monitor: AlarmMonitor) -> None:
    monitor.check(T0 + 50)  # prn-1: offline, faulted, out of rotation; loop-1 busy from now on
    await monitor.store.flush()
    active = (await http.get("/api/alarms", params={"active": "true"})).json()
    assert sorted((a["kind"], a["source"]) for a in active["items"]) == [
        ("device_faulted", "prn-1"), ("device_offline", "prn-1"), ("device_out_of_rotation", "prn-1")]
    faulted = next(a for a in active["items"] if a["kind"] == "device_faulted")

    acked = await http.post(f"/api/alarms/{faulted['id']}/ack")
    assert acked.status_code == 200, acked.text
    assert (acked.json()["acked_by"], acked.json()["acked_at"], acked.json()["active"]) == (
        "sam", "2024-05-01T08:31:40.000Z", True)
    again = await kim.post(f"/api/alarms/{faulted['id']}/ack")
    assert again.json()["acked_by"] == "sam"
    stored = (await http.get("/api/alarms", params={"kind": "device_faulted"})).json()["items"]
    assert [a["acked_by"] for a in stored] == ["sam"]

    floor.rows[0]["fault"] = None  # the printer's fault clears: its alarm clears, the acknowledgement stays
    monitor.check(T0 + 60)
    await monitor.store.flush()
    [cleared] = (await http.get("/api/alarms", params={"kind": "device_faulted"})).json()["items"]
    assert (cleared["active"], cleared["cleared_at"], cleared["acked_by"]) == (
        False, "2024-05-01T08:31:00.000Z", "sam")

    got = samples((await http.get("/metrics")).text)
    assert got[("floorctl_alarms_raised_total", (("kind", "device_faulted"),))] == 1
    assert got[("floorctl_alarms_active", (("severity", "critical"),))] == 1  # prn-1 still offline
    assert got[("floorctl_alarms_active", (("severity", "warning"),))] == 1
    assert got[("floorctl_alarms_active", (("severity", "info"),))] == 0


@pytest.mark.parametrize("alarm_id, status", [("999", 404), ("0", 422), ("-1", 422), (str(2**40), 404),
                                              (str(2**63 - 1), 404), (str(2**63), 422), ("abc", 422)])
async def test_acknowledging_a_bad_id(http: httpx.AsyncClient, alarm_id: str, status: int) -> None:
    assert (await http.post(f"/api/alarms/{alarm_id}/ack")).status_code == status


async def test_without_a_monitor_alarms_still_read_and_acknowledging_is_a_503(
        floor: FakeFloor, db: AsyncEngine) -> None:
    await seed_alarms(db)
    app = create_app(_is_engine(floor), db, gate=Gate.without_auth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        assert (await client.get("/api/alarms")).json()["total"] == 3
        assert (await client.post("/api/alarms/2/ack")).status_code == 503
        assert "floorctl_alarms_active" not in (await client.get("/metrics")).text
