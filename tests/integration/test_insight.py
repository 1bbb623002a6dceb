"""What limits the floor, read from a real database (SQLite file and PostgreSQL, test_api's `db`):
the store's reads for a window, GET /api/insight, the /metrics gauges and `floorctl report`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.api import Gate, create_app
from controller.cli import main as cli_main
from controller.domain.insight import CommandRecord, OrderRecord
from controller.site import load_site
from controller.store.db import create_schema, make_engine
from controller.store.insight import floor_insight, floor_resources
from controller.store.tables import DeviceCommandRow, OrderLineRow, OrderRow
from tests.integration import test_api
from tests.integration.test_api import ROOT, FakeFloor, _is_engine, samples
from tests.unit.test_insight import demo_floor, every, run

db = test_api.db
floor = test_api.floor

T1 = 1_714_640_000.0  # a day after test_api's rows
SITE = load_site(ROOT / "config" / "demo.yaml")


def as_rows(commands: list[CommandRecord], orders: list[OrderRecord], first_id: int = 10_000
            ) -> tuple[list[OrderRow], list[DeviceCommandRow]]:
    order_rows = [OrderRow(id=first_id + o.id, external_id=f"INS-{first_id + o.id}", carrier=o.carrier,
                           priority=o.priority, due_at=o.due_at, state=o.state, received_at=o.received_at,
                           shipped_at=o.shipped_at) for o in orders]
    command_rows = [DeviceCommandRow(command_id=f"ins.{first_id + (c.order_id or 0)}.{c.task}.{n}",
                                     order_id=first_id + (c.order_id or 0), task=c.task, command=c.task,
                                     device_id=c.device_id, device_kind=c.kind, protocol="mqtt",
                                     queued_at=c.queued_at, sent_at=c.sent_at, acked_at=c.sent_at,
                                     completed_at=c.completed_at, outcome=c.outcome)
                    for n, c in enumerate(commands)]
    return order_rows, command_rows


async def store(engine: AsyncEngine, commands: list[CommandRecord], orders: list[OrderRecord],
                first_id: int = 10_000) -> None:
    order_rows, command_rows = as_rows(commands, orders, first_id)
    async with AsyncSession(engine) as session:
        session.add_all(order_rows)
        await session.flush()
        session.add_all(command_rows)
        await session.commit()


def saturated_run(start: float, count: int = 200, time_scale: float = 1.0
                  ) -> tuple[list[CommandRecord], list[OrderRecord]]:
    """0.4 orders/s against two 6 s pack stations, on the demo site's devices: their queue grows. The
    rows stamped as a floor running `time_scale` times faster than the clock would stamp them."""
    commands, orders = run(demo_floor(), every(2.5, count, start=start))

    def wall(t: float | None) -> float | None:
        return None if t is None else start + (t - start) / time_scale

    return ([CommandRecord(c.device_id.replace("ptl-", "ptl-0"), c.kind, c.task, c.order_id,
                           wall(c.queued_at) or 0.0, wall(c.sent_at), wall(c.completed_at), c.outcome)
             for c in commands],
            [OrderRecord(o.id, o.state, o.priority, o.carrier, wall(o.due_at), wall(o.received_at),
                         wall(o.shipped_at)) for o in orders])


# ---- the store ---------------------------------------------------------------------------------------
def test_the_site_file_gives_every_device_with_its_zone_and_belts_their_rated_flow() -> None:
    resources = {r.device_id: r for r in floor_resources(SITE)}
    assert len(resources) == 12 + 2 + 2 + 1 + 1
    assert resources["ptl-03"].zone == "Z1" and resources["ptl-03"].kind == "pick_light"
    assert resources["loop-1"].rated_s == pytest.approx(1.0)  # 1 m tote pitch at 1 m/s
    assert resources["sorter-1"].rated_s == pytest.approx(0.5)  # at 2 m/s
    assert all(r.servers == 1 for r in resources.values())


async def test_floor_insight_reads_a_window_and_what_reached_into_it(db: AsyncEngine) -> None:
    await store(db, *saturated_run(T1))
    insight = await floor_insight(db, SITE, T1 + 100, T1 + 400)
    assert insight.bottleneck is not None and insight.bottleneck.resource == "pack_station"
    assert insight.orders.received == 120  # 300 s at one order every 2.5 s
    # Pack commands queued before the window and sent in it count: the stations were busy all along.
    pack = next(k for k in insight.kinds if k.kind == "pack_station")
    assert pack.utilisation == pytest.approx(1.0, abs=0.02)
    # test_api's rows, a day earlier, are not in it; the site's idle devices are, at 0.
    assert {d.resource for d in insight.devices} == {r.device_id for r in floor_resources(SITE)}
    assert next(d for d in insight.devices if d.resource == "ptl-05").utilisation == 0


async def test_the_orders_lines_say_which_pick_lights_they_need(db: AsyncEngine) -> None:
    commands, orders = saturated_run(T1)
    await store(db, commands, orders)
    lines = [[(f"SKU-000{o.id % 4 + 1}", f"A-0{o.id % 4 + 1}"), ("SKU-0012", None)] for o in orders]
    async with AsyncSession(db) as session:  # two lines an order: the light it picked at, and ptl-12
        session.add_all([OrderLineRow(order_id=10_000 + o.id, line_no=n + 1, sku=sku, qty=1, location=loc)
                         for o, two in zip(orders, lines, strict=True) for n, (sku, loc) in enumerate(two)])
        await session.commit()
    insight = await floor_insight(db, SITE, T1, T1 + 500)
    picks = next(c for c in insight.capacities if c.kind == "pick_light")
    assert picks.commands_per_order == pytest.approx(2.0)  # asked for, though ptl-12 did nothing
    sorter = next(c for c in insight.capacities if c.kind == "sorter")
    assert sorter.commands_per_order == pytest.approx(1.0)  # every order's carrier is on sorter-1


# ---- GET /api/insight and /metrics -----------------------------------------------------------------------
@pytest.fixture
async def client(floor: FakeFloor, db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_is_engine(floor), db, gate=Gate.without_auth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as http:
        yield http


async def test_api_names_the_bottleneck_of_a_window(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    await store(db, *saturated_run(T1))
    for since, until in (("2024-05-02T08:53:20Z", "2024-05-02T09:01:40Z"), (T1, T1 + 500)):
        answer = await client.get("/api/insight", params={"since": since, "until": until})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["site"] == "demo"
        assert (body["since"], body["until"]) == ("2024-05-02T08:53:20.000Z", "2024-05-02T09:01:40.000Z")
        assert body["window_s"] == 500 and body["time_scale"] == 1
        found = body["bottleneck"]
        assert found["resource"] == "pack_station" and found["growth"]["grows"] is True
        assert any(line.startswith("utilisation") for line in found["evidence"])
        assert body["series"]["starts"][0] == "2024-05-02T08:53:20.000Z"
        kinds = {"pick_light", "conveyor", "pack_station", "printer", "sorter"}
        assert {c["kind"] for c in body["capacities"]} == kinds


async def test_api_defaults_to_the_last_15_minutes(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/insight")).json()
    assert body["window_s"] == 900
    assert body["bottleneck"] is None and body["verdict"] == "No bottleneck: no device command in the window."
    only_until = (await client.get("/api/insight", params={"until": T1})).json()
    assert only_until["window_s"] == 900 and only_until["until"] == "2024-05-02T08:53:20.000Z"


@pytest.mark.parametrize("params", [
    {"since": "yesterday"}, {"until": "nan"}, {"since": T1, "until": T1}, {"since": T1 + 10, "until": T1},
    {"since": T1 - 8 * 86400, "until": T1}, {"since": 1e300}, {"until": -5},
])
async def test_api_refuses_a_bad_window_with_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    answer = await client.get("/api/insight", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][0] == "query"


async def test_metrics_carry_utilisation_capacity_and_the_bottleneck(client: httpx.AsyncClient,
                                                                     db: AsyncEngine) -> None:
    await store(db, *saturated_run(time.time() - 600))
    got = samples((await client.get("/metrics")).text)
    assert got[("floorctl_bottleneck", (("kind", "pack_station"),))] == 1
    assert got[("floorctl_bottleneck", (("kind", "printer"),))] == 0
    assert got[("floorctl_device_utilisation", (("device_id", "PS-1"), ("kind", "pack_station")))] > 0.5
    pack = got[("floorctl_kind_capacity_orders_per_second", (("kind", "pack_station"),))]
    assert pack == pytest.approx(1 / 3, rel=0.01)
    assert got[("floorctl_kind_queue_wait_seconds", (("kind", "pack_station"), ("stat", "p95")))] > 60
    assert got[("floorctl_insight_window_seconds", ())] == 900


# ---- floorctl report ---------------------------------------------------------------------------------------
def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "report", *args], check=False,
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


async def test_report_writes_html_with_charts_and_json(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'floor.db'}")
    await create_schema(engine)
    await store(engine, *saturated_run(T1, time_scale=50.0))  # 600 floor seconds in 12 wall seconds
    await engine.dispose()
    out = tmp_path / "report"
    done = report("--database-url", f"sqlite:///{tmp_path / 'floor.db'}", "--site", "config/demo.yaml",
                  "--since", "2024-05-02T08:53:20Z", "--until", str(T1 + 12), "--time-scale", "50",
                  "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Bottleneck: pack stations")
    assert "read 240 device commands" in done.stderr or "device commands" in done.stderr
    page = (out / "report.html").read_text()
    assert "Bottleneck: pack stations" in page and "Runner-up" in page
    # self-contained: nothing fetched, nothing run
    assert page.count("<svg") >= 5 and "<script" not in page
    assert " src=" not in page and 'href="http' not in page
    data = json.loads((out / "report.json").read_text())
    assert data["site"] == "demo" and data["time_scale"] == 50
    assert data["bottleneck"]["resource"] == "pack_station"
    assert data["orders"]["cycle"]["p95_s"] > 0 and data["on_time"]["without_due"] > 0
    pack = next(c for c in data["capacities"] if c["kind"] == "pack_station")
    assert pack["orders_per_s"] == pytest.approx(1 / 3, rel=0.01)  # floor time
    assert pack["orders_per_s_wall"] == pytest.approx(50 / 3, rel=0.01)


def test_report_refuses_bad_input_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the command's own entry point in this process: a refusal is decided before any import of weight
    monkeypatch.chdir(ROOT)

    def refused(*args: str) -> str:
        try:
            code = cli_main(["report", *args])
        except SystemExit as exit_:  # argparse refuses what it cannot parse with its usage line
            code = int(exit_.code or 0)
        assert code == 2
        return capsys.readouterr().err

    assert "no database at" in refused("--database-url", f"sqlite:///{tmp_path / 'none.db'}", "--site",
                                       "config/demo.yaml", "--since", "2h", "--out", str(tmp_path / "r"))
    assert "--since must be before --until" in refused(
        "--database-url", f"sqlite:///{tmp_path / 'none.db'}", "--site", "config/demo.yaml",
        "--since", str(T1), "--until", str(T1 - 1), "--out", str(tmp_path / "r"))
    garbled = refused("--database-url", "sqlite:///x.db", "--site", "config/demo.yaml", "--since", "soon",
                      "--out", str(tmp_path / "r"))
    assert "Traceback" not in garbled and garbled.strip()
    assert not (tmp_path / "none.db").exists()
