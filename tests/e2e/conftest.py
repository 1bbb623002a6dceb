"""End-to-end fixtures: a private broker, every simulator of the demo floor over real MQTT and OPC UA,
and the controller with its real adapters, on SQLite or on a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from controller.bootstrap import Controller, Settings
from controller.domain.breakdown import Breakdown, breakdown
from controller.domain.model import OrderState
from controller.site import Site, parse_site
from controller.store.repository import command_times_of, stamps_of
from controller.store.tables import DeviceCommandRow, OrderRow
from simulators.broker import free_port
from simulators.site_devices import SimulatedFloor, simulated_floor

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("FLOORCTL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPEED = 100.0


def demo_site(**simulation: Any) -> Site:
    """config/demo.yaml, optionally with other simulation settings (e.g. short_pick_rate)."""
    path = ROOT / "config" / "demo.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in simulation.items():
        section, _, field = key.partition("__")
        data["simulation"].setdefault(section, {})[field] = value
    # At 100x a metre of sorter belt lasts 5 ms: give the divert answer the budget of a real sorter
    # at real speed (a 2 m scan-to-divert gap at 2 m/s is a 1 s budget, 10 ms here), plus margin for
    # a loaded 2-core test machine (60 ms: at 40 ms, runs beside other test processes missed a few).
    # An answer late all the same sends the tote round again, as on a real sorter; five rounds
    # instead of two let it ride out a neighbour's burst of CPU (a round is 0.15 s here) where two
    # sent a few totes to the exception lane, while a tote of a controller that is down for seconds
    # still goes there.
    for sorter in data["sorters"]:
        sorter["scan_to_divert_m"] = 12.0
        sorter["max_recirculations"] = 5
    return parse_site(data, path)


def process_site(site: Site, broker_url: str, endpoints: dict[str, str],
                 sorter_fields: tuple[str, ...] = ("scan_to_divert_m",)) -> dict[str, Any]:
    """config/demo.yaml as a `floorctl run` process of the test floor reads it: the test's broker and
    simulated PLCs, 5 s device time-outs, and `sorter_fields` of each sorter taken from `site`."""
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    data["broker"]["url"] = broker_url
    for plc in data["plcs"]:
        plc["endpoint"] = endpoints[plc["id"]]
    data["timeouts"].update(pick_s=5, transport_s=5, pack_s=5, print_s=5, divert_s=5)
    data["sorters"] = [{**s, **{f: getattr(sorter, f) for f in sorter_fields}}
                       for s, sorter in zip(data["sorters"], site.sorters, strict=True)]
    return data


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL.replace("+asyncpg", "").replace("+psycopg", ""), autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute(sql)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite in the test's directory, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'floor.db'}"
        return
    import psycopg

    name = f"floorctl_e2e_{uuid.uuid4().hex[:10]}"
    try:
        _pg(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RunningFloor:
    """Broker + simulators + controller. The controller can be stopped and started again."""

    def __init__(self, site: Site, broker_url: str, db_url: str, sims: SimulatedFloor,
                 data_dir: Path) -> None:
        self.site, self.broker_url, self.db_url = site, broker_url, db_url
        self.sims, self.data_dir = sims, data_dir
        self.controller: Controller | None = None

    async def start_controller(self) -> Controller:
        settings = Settings(site=self.site.with_broker_url(self.broker_url), data_dir=self.data_dir,
                            database_url=self.db_url, broker_url=self.broker_url,
                            plc_endpoints=self.sims.endpoints, speed=SPEED)
        self.controller = Controller(settings)
        await self.controller.start(serve_api=False)
        return self.controller

    async def stop_controller(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
            self.controller = None

    async def wait_finished(self, ids: list[int], timeout: float = 60.0) -> None:
        """Until every order is shipped, in exception or cancelled (held counts as unfinished)."""
        assert self.controller is not None
        engine = self.controller.engine

        async def done() -> None:
            while any(i in engine.orders and engine.orders[i].state.value != "exception" for i in ids):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(done(), timeout)
        await engine.writer.flush()

    async def orders(self) -> list[Any]:
        assert self.controller is not None
        async with self.controller.db.connect() as conn:
            return list((await conn.execute(select(OrderRow).order_by(OrderRow.id))).all())

    async def commands(self) -> list[Any]:
        assert self.controller is not None
        async with self.controller.db.connect() as conn:
            query = select(DeviceCommandRow).order_by(DeviceCommandRow.queued_at)
            return list((await conn.execute(query)).all())


@pytest.fixture
def floor_factory(tmp_path: Path, broker: Any):  # type: ignore[no-untyped-def]
    """`async with floor_factory(site, db_url) as floor:` a running floor on the test's private broker."""
    import contextlib

    @contextlib.asynccontextmanager
    async def make(site: Site, db_url: str) -> AsyncIterator[RunningFloor]:
        ports = {plc.id: free_port() for plc in site.plcs}
        async with simulated_floor(site, broker_url=broker.url, speed=SPEED, plc_ports=ports) as sims:
            floor = RunningFloor(site, broker.url, db_url, sims, tmp_path)
            await floor.start_controller()
            try:
                yield floor
            finally:
                await floor.stop_controller()

    return make


EXPECTED_TASKS = {"pick", "convey", "pack", "label", "induct", "divert"}


def check_timelines(orders: list[Any], commands: list[Any]) -> dict[int, list[Any]]:
    """Every shipped order has one ok row per device command of every stage, in a consistent order."""
    ids = [c.command_id for c in commands]
    assert len(ids) == len(set(ids)), "duplicate command rows"
    by_order: dict[int, list[Any]] = {}
    for c in commands:
        by_order.setdefault(c.order_id, []).append(c)
        if c.outcome == "ok":
            assert c.queued_at <= c.sent_at <= c.acked_at <= c.completed_at, c
    for o in orders:
        if o.state != "shipped":
            continue
        rows = by_order.get(o.id, [])
        ok = [c for c in rows if c.outcome == "ok"]
        assert EXPECTED_TASKS <= {c.task for c in ok}, (o.id, sorted(c.task for c in rows))
        kinds = {c.device_kind for c in ok}
        assert kinds == {"pick_light", "conveyor", "pack_station", "printer", "sorter"}, (o.id, kinds)
        assert o.received_at <= o.allocated_at <= o.picking_at <= o.conveyed_at <= o.packed_at \
            <= o.labelled_at <= o.sorted_at <= o.shipped_at
    return by_order


def check_breakdowns(orders: list[Any], by_order: dict[int, list[Any]]) -> dict[int, Breakdown]:
    """Every order's time breakdown adds up to its cycle time (received -> shipped, cancelled or now)
    within 1 ms, and no part is negative."""
    now = time.time()
    found = {}
    for o in orders:
        commands = [command_times_of(c) for c in by_order.get(o.id, [])]
        split = breakdown(OrderState(o.state), stamps_of(o), commands, now=now)
        cycle = (o.shipped_at or o.cancelled_at or now) - o.received_at
        parts = {p.value: t.seconds for p, t in split.parts.items()}
        assert abs(sum(parts.values()) - cycle) < 1e-3, (o.id, cycle, parts)
        assert min(parts.values()) >= 0, (o.id, parts)
        found[o.id] = split
    return found


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The floorctl wheel in a fresh venv outside the checkout (tests/e2e/wheel.py), built once for
    the session: the tests that use it only read it. Its bin/."""
    from tests.e2e.wheel import install_wheel

    return install_wheel(tmp_path_factory.mktemp("wheel"))
