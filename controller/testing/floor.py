"""A whole simulated floor for tests: a private broker, every simulator of a site file and the
controller with its API, on free ports, at a time scale, on SQLite or a fresh PostgreSQL database.

`live_floor(...)` is the floor as an async context manager, for code that runs on an event loop.
`Floor` runs the same floor on an event loop of its own, in a background thread, so that plain
(synchronous) test functions can drive it: the pytest plugin's `floor` fixture is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from controller.bootstrap import Controller, Settings
from controller.config_files import config_file
from controller.site import Site, load_site
from simulators.broker import EmbeddedBroker, free_port
from simulators.faults import FaultEntry, Played, Timeline, TimelineError, fault_steps, load_timeline, play
from simulators.faults.player import Step
from simulators.faults.timeline import LINK_CUT, parse_timeline
from simulators.site_devices import SimulatedFloor, simulated_floor

T = TypeVar("T")
START_TIMEOUT_S = 60.0


@dataclass
class LiveFloor:
    """A running floor: its broker (None when it runs on someone else's), simulators and controller."""

    site: Site
    speed: float
    broker_url: str
    broker: EmbeddedBroker | None
    sims: SimulatedFloor
    controller: Controller | None  # None: the simulators only, for a controller of the test's own

    @property
    def api_url(self) -> str:
        if self.controller is None:
            raise RuntimeError("this floor runs without a controller (controller=False): it has no API")
        return self.controller.api_url


@contextlib.asynccontextmanager
async def live_floor(site: Site, *, speed: float, data_dir: Path, database_url: str | None = None,
                     port: int | None = None, auth: bool = True, broker_url: str | None = None,
                     controller: bool = True) -> AsyncIterator[LiveFloor]:
    """Start a floor and stop it (controller first, then simulators, then broker) on leaving.
    Without `broker_url` it starts a private broker; without `database_url`, SQLite in `data_dir`;
    with `controller=False` only the broker and the simulators."""
    async with contextlib.AsyncExitStack() as stack:
        broker: EmbeddedBroker | None = None
        if broker_url is None:
            broker = await stack.enter_async_context(EmbeddedBroker(data_dir=data_dir / "broker"))
            broker_url = broker.url
        ports = {plc.id: free_port() for plc in site.plcs}
        sims = await stack.enter_async_context(
            simulated_floor(site, broker_url=broker_url, speed=speed, plc_ports=ports))
        running: Controller | None = None
        if controller:
            settings = Settings(site=site.with_broker_url(broker_url), data_dir=data_dir,
                                database_url=database_url, broker_url=broker_url,
                                plc_endpoints=sims.endpoints, speed=speed, port=port or free_port(),
                                auth=auth)
            running = Controller(settings)
            await running.start()
            stack.push_async_callback(running.stop)
        yield LiveFloor(site, speed, broker_url, broker, sims, running)


@dataclass
class FloorOptions:
    """What floor a test gets. `database`: `sqlite`, or a PostgreSQL server's URL
    (`postgresql://user@host:5432/db`) on which the floor creates a fresh database and drops it after."""

    site: Path | None = None  # None: the demo floor (config/demo.yaml)
    speed: float = 50.0
    database: str = "sqlite"
    auth: bool = True
    controller: bool = True  # False: broker and simulators only (no API: the `api` fixture fails)
    user: str = "tester"
    role: str = "admin"

    def site_path(self) -> Path:
        return self.site if self.site is not None else config_file("demo.yaml")


@dataclass
class _Running:
    loop: asyncio.AbstractEventLoop
    live: LiveFloor
    stop: asyncio.Event
    active: dict[str, Step] = field(default_factory=dict)  # target -> what ends its fault


class FloorError(RuntimeError):
    """The floor could not start, or a request to it failed."""


class Floor:
    """A live floor on its own event loop and thread, driven from plain test code.

    Times given to the floor's helpers are wall seconds (a test's time-outs); fault timelines are in
    floor time, as everywhere. `password` is the test user's, made at start (`options.user`, `role`).
    """

    def __init__(self, options: FloorOptions | None = None) -> None:
        self.options = options or FloorOptions()
        self.site: Site = load_site(self.options.site_path())
        self.speed = self.options.speed
        self.password = secrets.token_urlsafe(12)
        self.database_url: str | None = None
        self._pg_database: str | None = None
        self._dir: Path | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._running: _Running | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="floorctl-floor-"))
        self.database_url = self._database()
        self._thread = threading.Thread(target=self._serve, name="floorctl-floor", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise FloorError(f"the floor did not start within {timeout:g} s")
        if self._error is not None:
            self._cleanup()
            raise FloorError(f"the floor did not start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.loop.call_soon_threadsafe(running.stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001  reported to start(): a thread has nobody else to tell
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        assert self._dir is not None
        async with live_floor(self.site, speed=self.speed, data_dir=self._dir,
                              database_url=self.database_url, auth=self.options.auth,
                              controller=self.options.controller) as live:
            if self.options.auth and live.controller is not None:
                await live.controller.accounts.set_up_user(self.options.user, self.options.role,
                                                           self.password)
            self._running = _Running(asyncio.get_running_loop(), live, asyncio.Event())
            self._ready.set()
            await self._running.stop.wait()

    def _database(self) -> str | None:
        url = self.options.database
        if url == "sqlite":
            return None
        if not url.startswith(("postgresql://", "postgresql+")):
            raise FloorError(f"database must be `sqlite` or a postgresql:// URL, not {url!r}")
        name = f"floorctl_test_{uuid.uuid4().hex[:10]}"
        _pg(url, f'CREATE DATABASE "{name}"')
        self._pg_database = name
        return f"{url.rsplit('/', 1)[0]}/{name}"

    def _cleanup(self) -> None:
        if self._pg_database is not None:
            with contextlib.suppress(Exception):
                _pg(self.options.database, f'DROP DATABASE IF EXISTS "{self._pg_database}" WITH (FORCE)')
            self._pg_database = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # --- what a test reads ------------------------------------------------------------------------
    @property
    def live(self) -> LiveFloor:
        if self._running is None:
            raise FloorError("the floor is not running")
        return self._running.live

    @property
    def api_url(self) -> str:
        return self.live.api_url

    @property
    def broker_url(self) -> str:
        return self.live.broker_url

    @property
    def plc_endpoints(self) -> dict[str, str]:
        return self.live.sims.endpoints

    def run(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = 30.0) -> T:
        """Run `work()` on the floor's event loop and wait for its result (e.g. to read a simulator)."""
        if self._running is None:
            raise FloorError("the floor is not running")
        future: Future[T] = asyncio.run_coroutine_threadsafe(work(), self._running.loop)
        return future.result(timeout)

    # --- faults -----------------------------------------------------------------------------------
    def inject(self, target: str, fault: str, *, segment: str | None = None) -> None:
        """Break a device or a PLC now: a device's own fault code (`paper_out`, `lamp_broken`),
        `jam` (a conveyor or sorter, optionally on `segment`), `estop` on a PLC, or `link_cut`."""
        plc = target if any(p.id == target for p in self.site.plcs) else None
        entry = FaultEntry(at=0.0, fault=fault, device=None if plc else target, plc=plc, segment=segment)
        Timeline("inject", (entry,)).check(self.site)
        running = self._running
        if running is None:
            raise FloorError("the floor is not running")

        async def start() -> None:
            if target in running.active:
                raise FloorError(f"{target} already has a fault from this test: clear it first")
            begin, end = fault_steps(entry, running.live.sims)
            await begin()
            running.active[target] = end

        self.run(start)

    def clear(self, target: str) -> None:
        """End the fault `inject` started on `target` (a cut link is restored, an e-stop reset); a
        fault from elsewhere (a timeline, the wire) is cleared as a person at the device would."""
        running = self._running
        if running is None:
            raise FloorError("the floor is not running")

        async def end() -> None:
            step = running.active.pop(target, None)
            if step is not None:
                await step()
                return
            sims = running.live.sims
            if target in sims.plcs:
                sims.plcs[target].reset()
            else:
                try:
                    sims.device(target).clear()
                except KeyError:
                    raise TimelineError(f"no device or PLC {target!r} on this floor") from None

        self.run(end)

    def play(self, timeline: Timeline | str | Path, *, wait: bool = True,
             timeout: float | None = None) -> list[Played] | Future[list[Played]]:
        """Play a fault timeline (a Timeline, a file, or its YAML text) on this floor, in floor time.
        `wait=False` returns at once with a Future of what was played (cancel it to end the faults)."""
        if isinstance(timeline, Path) or (isinstance(timeline, str) and "\n" not in timeline):
            timeline = load_timeline(timeline)
        elif isinstance(timeline, str):
            timeline = parse_timeline(timeline)
        timeline.check(self.site)
        running = self._running
        if running is None:
            raise FloorError("the floor is not running")
        playing: Timeline = timeline

        def played() -> Awaitable[list[Played]]:
            return play(playing, running.live.sims, self.speed, broker=running.live.broker)

        future = asyncio.run_coroutine_threadsafe(_coroutine(played), running.loop)
        if not wait:
            return future
        if timeout is None:
            timeout = playing.length / self.speed + 30.0
        return future.result(timeout)

    def restart_broker(self, *, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop (or kill) the floor's broker and start it again after `down_s` floor seconds."""
        kill_text = ", kill: true" if kill else ""
        self.play(f"faults:\n  - {{at: 0s, fault: broker_restart, for: {down_s}{kill_text}}}\n")

    def cut_link(self, target: str) -> None:
        """Pull an MQTT device's cable, or cut a PLC off the network (its machines keep moving)."""
        self.inject(target, LINK_CUT)


async def _coroutine(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def _pg(url: str, sql: str) -> None:
    import psycopg

    plain = url.replace("+asyncpg", "").replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.encode())
