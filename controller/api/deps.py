"""What the routes depend on: the engine (for commands), a read session (for queries), shared params."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Protocol

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.domain.model import NewOrder, OrderState, Received
from controller.engine.stats import FloorStats
from controller.site import Site


class EngineLike(Protocol):
    """The order engine as the API sees it. The engine owns every write; the API only asks."""

    site: Site
    stats: FloorStats
    counters: collections.Counter[str]  # bad input and other events, exported by /metrics
    command_counts: collections.Counter[tuple[str, str]]  # (device kind, outcome) since start

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


class SnapshotCache:
    """`FloorStats.snapshot` costs milliseconds at peak and runs on the event loop: every panel, API
    client and scraper polling within `max_age_s` shares one."""

    def __init__(self, stats: FloorStats, max_age_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
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


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Reads only: nothing is committed, the session's transaction ends when the request does.
    async with AsyncSession(get_db(request), expire_on_commit=False) as session:
        yield session


async def get_snapshot(request: Request) -> dict[str, Any]:
    # async: FastAPI runs a plain def on a worker thread, racing the engine's writes to the stats
    cache: SnapshotCache = request.app.state.snapshots
    return cache.get()


EngineDep = Annotated[EngineLike, Depends(get_engine)]
DbDep = Annotated[AsyncEngine, Depends(get_db)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SnapshotDep = Annotated[dict[str, Any], Depends(get_snapshot)]

MAX_PAGE = 1000
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]
