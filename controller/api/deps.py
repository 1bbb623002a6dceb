"""What the routes depend on: the engine (for commands), a read session (for queries), shared params."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Protocol

from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.domain.alarms import Alarm
from controller.domain.devices import DeviceAction, WaitingOn
from controller.domain.model import NewOrder, Order, OrderState, Received
from controller.engine.stats import FloorStats
from controller.site import Site


class EngineLike(Protocol):
    """The order engine as the API sees it. The engine owns every write; the API only asks.

    The attributes are read-only here (properties), so a plain attribute and a computed property
    both satisfy the protocol: the engine's `counters` sums its own and the devices' counts.
    """

    @property
    def site(self) -> Site: ...

    @property
    def stats(self) -> FloorStats: ...

    @property
    def counters(self) -> collections.Counter[str]:
        """Bad input and other events, exported by /metrics."""
        ...

    @property
    def command_counts(self) -> collections.Counter[tuple[str, str]]:
        """(device kind, outcome) since start."""
        ...

    def count(self, event: str) -> None:
        """Count an event (e.g. a rejected request) under `counters`."""
        ...

    async def receive(self, orders: list[NewOrder]) -> list[Received]:
        """Raises OrderRejected naming each unknown SKU / carrier."""
        ...

    async def cancel(self, order_id: int) -> OrderState:
        """Raises OrderNotFound, InvalidTransition."""
        ...

    async def resolve(self, order_id: int) -> OrderState:
        """Retry the stage an exception stopped. Raises OrderNotFound, InvalidTransition."""
        ...

    def devices(self) -> list[dict[str, Any]]: ...

    def health(self) -> dict[str, Any]: ...

    async def control(self, device_id: str, action: DeviceAction | str, actor: str) -> dict[str, Any]:
        """A supervisor's action on a device; answers the device's row as in `devices()`.
        Raises DeviceNotFound, ControlRefused (the reason for a person)."""
        ...

    def waiting_on(self, order_id: int) -> WaitingOn | None:
        """The device an active order's work waits on, while that device takes no work."""
        ...

    def in_hand(self, order_id: int) -> list[dict[str, Any]]:
        """Timing rows (as dicts) of the order's commands queued or in flight now, not yet written:
        `outcome` is queued, sent or acked."""
        ...

    @property
    def orders(self) -> Mapping[int, Order]:
        """The active orders as they stand (the database lags them by a batch)."""
        ...


class AlarmDesk(Protocol):
    """The alarm monitor as the API sees it: the alarms themselves are read from the store."""

    @property
    def raised_counts(self) -> collections.Counter[str]:
        """Alarms raised since start, by kind."""
        ...

    def active_by_severity(self) -> collections.Counter[str]: ...

    @property
    def running(self) -> bool:
        """Checking the floor; when not (a standby), the store's alarms are the ones to show."""
        ...

    @property
    def listeners(self) -> list[Callable[[Any], None]]:
        """Called after every check that raised, cleared or acknowledged an alarm."""
        ...

    def active(self) -> list[Alarm]:
        """The alarms not cleared yet, as the store will hold them once written."""
        ...

    async def acknowledge(self, alarm_id: int, actor: str) -> Alarm:
        """Raises AlarmNotFound."""
        ...


class SnapshotCache:
    """`FloorStats.snapshot` costs milliseconds at peak and runs on the event loop: every panel, API
    client and scraper polling within `max_age_s` shares one."""

    def __init__(self, stats: FloorStats, max_age_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.stats = stats
        self.max_age_s = max_age_s
        self.clock = clock
        self._taken_at = float("-inf")
        self._snapshot: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        now = self.clock()
        if not (0 <= now - self._taken_at < self.max_age_s):
            self._snapshot = self.stats.snapshot(now)
            self._taken_at = now
        return self._snapshot


def get_engine(request: Request) -> EngineLike:
    engine: EngineLike = request.app.state.engine
    return engine


def get_db(request: Request) -> AsyncEngine:
    db: AsyncEngine = request.app.state.db
    return db


def get_alarms(request: Request) -> AlarmDesk:
    alarms: AlarmDesk | None = request.app.state.alarms
    if alarms is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the alarm monitor is not running")
    return alarms


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Reads only: nothing is committed, the session's transaction ends when the request does.
    async with AsyncSession(get_db(request), expire_on_commit=False) as session:
        yield session


async def get_snapshot(request: Request) -> dict[str, Any]:
    # async: FastAPI runs a plain def on a worker thread, racing the engine's writes to the stats
    cache: SnapshotCache = request.app.state.snapshots
    return cache.get()


EngineDep = Annotated[EngineLike, Depends(get_engine)]
AlarmsDep = Annotated[AlarmDesk, Depends(get_alarms)]
DbDep = Annotated[AsyncEngine, Depends(get_db)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SnapshotDep = Annotated[dict[str, Any], Depends(get_snapshot)]

MAX_PAGE = 1000
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}")]
MAX_OFFSET = 1_000_000_000  # beyond any table here, and inside every database's integer range
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]

# Who did it, for the audit trail. The security work replaces this header with the logged-in user.
ANONYMOUS = "anonymous"
Actor = Annotated[str, Header(alias="X-Actor", min_length=1, max_length=128,
                              description="who acts (recorded in the audit trail); default anonymous")]
DeviceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                               description="a device id of the site file")]
