"""The one composition root: settings -> adapters -> engine -> API.

Nothing is built at import time. `floorctl run`, `floorctl demo`, the tests and the benchmark all
build the controller through `Controller`, with real adapters (or fakes, for unit tests of the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api.auth import Gate
from controller.engine.alarms import AlarmMonitor
from controller.engine.dispatch import CommandGate
from controller.engine.orders import Engine
from controller.ha.leadership import Leadership
from controller.ports import DeviceHub
from controller.security.auth_users import Accounts
from controller.site import Site
from controller.store.accounts import AccountRepository
from controller.store.db import create_schema, database_url, make_engine
from controller.store.lease import Election, LeaseStore, WriteFence, create_lease_schema, one_at_a_time
from controller.store.repository import AlarmRepository
from controller.store.retention import RetentionPolicy, TimingRetention
from controller.store.writer import StoreWriter, sync_url

if TYPE_CHECKING:
    from controller.api.routes.insight import InsightCache

log = logging.getLogger(__name__)


@dataclass
class Settings:
    site: Site
    data_dir: Path = Path("data")
    database_url: str | None = None  # default: FLOORCTL_DATABASE_URL, then SQLite under data_dir
    broker_url: str | None = None  # default: the site file's
    plc_endpoints: dict[str, str] = field(default_factory=dict)  # override per PLC id
    standby: bool = False  # one of a hot-standby pair (also the site file's ha.enabled): PostgreSQL only
    instance: str | None = None  # its name in the pair (default: the site file's ha.instance, else the host)
    speed: float = 1.0  # the floor's time scale: controller time-outs are divided by it
    host: str = "127.0.0.1"
    port: int = 8000
    auth: bool = True  # False: --no-auth, every request is let in (loopback benchmarks only)


def real_hubs(settings: Settings, *, instance: str | None = None,
              gate: CommandGate | None = None) -> list[DeviceHub]:
    """The device links. One of a hot-standby pair (`instance`) names itself to the broker and the
    PLCs, starts listening only, and sends nothing while its command `gate` is closed."""
    from adapters.mqtt import MqttHub
    from adapters.opcua import OpcUaHub

    client_id = f"{settings.site.broker.client_id}-{instance}" if instance else None
    may_send = gate.is_open if gate is not None else None
    return [MqttHub(settings.site, broker_url=settings.broker_url, client_id=client_id,
                    listen_only=instance is not None, may_send=may_send),
            OpcUaHub(settings.site, endpoints=settings.plc_endpoints or None,
                     client_name=f"floorctl {instance}" if instance else None, may_send=may_send)]


def retention_policy(settings: Settings) -> RetentionPolicy:
    """The site file's retention section, its export directory under the data directory if relative."""
    kept = settings.site.retention
    export = None if kept.export_dir is None else settings.data_dir / kept.export_dir
    return RetentionPolicy(timing_days=kept.timing_days, export_dir=export, days_ahead=kept.days_ahead,
                           every_s=kept.every_s)


class StandbyError(ValueError):
    """A hot-standby pair was asked for where it cannot work (SQLite)."""


@runtime_checkable
class LeadsWhenElected(Protocol):
    """A hub that starts listening only and speaks for the controller once this instance leads."""

    async def lead(self) -> None: ...


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our own loop. The CLI owns Ctrl-C and SIGTERM and stops the server itself, so
    that the controller shuts down before the simulators it talks to."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# The collector's thresholds once a long-running process is up (CPython's are 700, 10, 10). Young
# collections every 10,000 allocations instead of 700, and a full one after 100 middle ones instead
# of 10: at 2,000 scans/s the defaults ran 650 collections in 10 s, five of them full (up to 80 ms),
# and they were the divert's p99 (103-107 ms; 5.9-6.1 ms with these). docs/benchmarks.md item 11.
GC_THRESHOLDS = (10_000, 20, 100)


def freeze_startup_heap() -> None:
    """Once a long-running process is up: collect, then freeze what is left out of the collector, so
    its full collections stop walking the imports and the asyncua address spaces (pauses of tens to
    hundreds of milliseconds otherwise), and collect less often (GC_THRESHOLDS). Collect first: what
    is frozen is never freed."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Controller:
    """Database, writer, device links, engine and API, started and stopped together."""

    def __init__(self, settings: Settings, hubs: list[DeviceHub] | None = None) -> None:
        self.settings = settings
        self.url = database_url(settings.data_dir, settings.database_url)
        self.db: AsyncEngine = make_engine(self.url)
        self.writer = StoreWriter(self.url)
        ha = settings.site.ha
        self.standby = settings.standby or ha.enabled
        self.instance = settings.instance or ha.instance or socket.gethostname()
        self.commands = CommandGate(open_=not self.standby)  # may this instance command devices now?
        self.leadership: Leadership | None = None
        if self.standby:
            self.leadership = self._pair(ha)
        self.hubs = hubs if hubs is not None else real_hubs(
            settings, instance=self.instance if self.standby else None, gate=self.commands)
        self.engine = Engine(settings.site, self.hubs, self.writer, self.db, speed=settings.speed,
                             gate=self.commands)
        if self.leadership is not None:
            self.engine.role = self.leadership.describe
        self.alarm_store = AlarmRepository(self.db, self.writer)
        self.alarms = AlarmMonitor(self.engine, self.alarm_store, speed=settings.speed)
        self.engine.status_listeners.append(lambda _status: self.alarms.poke())
        # Users, tokens, sessions and the audit trail (device controls included) of the API and panel.
        self.accounts = Accounts(AccountRepository(self.db, self.writer))
        self.gate = Gate(self.accounts, settings.site.api, enabled=settings.auth)
        # Old timing rows exported and removed, the day tables made ahead: by the leading instance only.
        self.retention = TimingRetention(sync_url(self.url), retention_policy(settings))
        self._server: Any = None
        self._serve_task: asyncio.Task[None] | None = None
        self._insight: InsightCache | None = None  # a reading under way stops with the API

    def app(self) -> Any:
        from controller.api.app import create_app

        app = create_app(self.engine, self.db, gate=self.gate, alarms=self.alarms)
        app.state.retention = self.retention.stats  # counted in /metrics
        return app

    async def start(self, *, serve_api: bool = True) -> None:
        # The store writer's thread runs Python too: hand the GIL back to the event loop sooner than
        # the default 5 ms, or a batch being prepared stalls device round trips behind it.
        sys.setswitchinterval(0.0005)
        if self.leadership is not None:
            await one_at_a_time(self.db, self._create_schemas)
        else:
            await create_schema(self.db)
        await self.writer.start()
        await self.gate.start()
        if self.leadership is None:
            await self.engine.start()
            await self.alarms.start()
            await self.retention.start()
        else:  # follow the floor; lead when elected (Controller._take_over)
            await self.engine.watch()
            await self.leadership.start()
        if serve_api:
            await self._serve()

    def _pair(self, ha: Any) -> Leadership:
        """The lease, the writer's fence and the command gate of one instance of a hot-standby pair."""
        if not self.url.startswith("postgresql"):
            raise StandbyError("a hot standby needs PostgreSQL (--database-url postgresql://...): the "
                               "instances elect their leader through it; SQLite is one machine's file")
        fence = WriteFence(self.instance, idle_in_transaction_s=max(0.5, ha.fence_margin_s))
        self.writer.fence = fence
        self.writer.on_fenced = self._fenced
        store = LeaseStore(sync_url(self.url), lease_s=ha.lease_s, timeout_s=ha.lease_s)
        return Leadership(ha, store, self.commands, fence, instance=self.instance, on_elected=self._take_over)

    async def _create_schemas(self) -> None:
        await create_schema(self.db)
        await create_lease_schema(self.db)

    def _fenced(self, why: str) -> None:
        if self.leadership is not None:
            self.leadership.step_down(why)

    async def _take_over(self, election: Election) -> None:
        """Elected: speak for the controller on the broker, load the active orders and drive them
        (every command still in flight goes out again with its own id), and watch the alarms."""
        for hub in self.hubs:
            if isinstance(hub, LeadsWhenElected):
                await hub.lead()
        await self.engine.lead()
        await self.alarms.start()
        await self.retention.start()

    async def stepped_down(self) -> str:
        """Wait until this instance stops leading for good (never, outside a hot-standby pair)."""
        if self.leadership is None:
            await asyncio.Event().wait()
        assert self.leadership is not None
        await self.leadership.lost.wait()
        return self.leadership.why or "stepped down"

    async def _serve(self) -> None:
        app = self.app()
        if self.leadership is not None:
            from controller.api.leadership import only_the_leader_changes

            only_the_leader_changes(app, self.leadership)
        config = uvicorn.Config(app, host=self.settings.host, port=self.settings.port,
                                log_level="warning", lifespan="on", access_log=False)
        self._server = EmbeddedServer(config)
        self._insight = app.state.insight
        self._serve_task = asyncio.create_task(self._server.serve(), name="api")
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()  # raises: the port is taken, most often
                raise RuntimeError(f"the API could not start on {self.settings.host}:{self.settings.port}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._serve_task, return_exceptions=True)
            if self._insight is not None:
                await self._insight.aclose()
        if self.leadership is not None:
            await self.leadership.stop()  # no take-over starting while this one stops
        await self.retention.stop()
        await self.alarms.stop()
        await self.engine.stop()
        await self.writer.close()
        if self.leadership is not None:
            await self.leadership.release()  # the last batch is in: a standby may take over now
            self.leadership.close()
        await self.db.dispose()

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"
