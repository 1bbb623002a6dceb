"""What limits the floor over a window: utilisation, queue waits, the bottleneck, capacities."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api.auth import can
from controller.api.deps import DbDep, EngineDep, EngineLike
from controller.api.instants import Instant, iso
from controller.domain.access import Permission
from controller.domain.insight import Insight
from controller.site import Site
from controller.store.insight import floor_insight

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/insight", tags=["insight"], dependencies=[can(Permission.READ)])

DEFAULT_WINDOW_S = 900.0  # the last 15 minutes of floor time (at a simulated floor's speed N: 900/N wall s)
MAX_WINDOW_S = 7 * 86400.0  # longer windows: `floorctl report`, which reads in chunks off-line
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z: the last instant ISO 8601 writes with four digits


def time_scale(engine: EngineLike) -> float:
    """Floor seconds per wall second: a simulated floor's speed, 1 on a real one."""
    speed = getattr(engine, "speed", 1.0)
    return float(speed) if isinstance(speed, int | float) and speed > 0 else 1.0


Reader = Callable[[AsyncEngine, Site, float, float, float], Awaitable[Insight]]  # floor_insight's shape


class InsightCache:
    """The last 15 minutes' insight (of floor time), shared by the panel, API clients and /metrics.

    Worked out at most once every `max_age_s`, by one caller at a time. An answer up to `stale_s` old
    is handed out at once while a fresh one is worked out in the background: on a busy floor's
    database the reading takes longer than a panel should wait, and the window's own `until` says how
    old it is. Only the first caller, or one after a long quiet spell, waits for the reading.
    """

    def __init__(self, engine: EngineLike, db: AsyncEngine, max_age_s: float = 10.0, stale_s: float = 60.0,
                 clock: Callable[[], float] = time.time, read: Reader = floor_insight) -> None:
        self.engine = engine
        self.read = read
        self.db = db
        self.max_age_s = max_age_s
        self.stale_s = stale_s
        self.clock = clock
        self.refresh_errors = 0
        self._taken_at = float("-inf")
        self._insight: Insight | None = None
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None

    def _age(self) -> float:
        age = self.clock() - self._taken_at
        return age if age >= 0 else float("inf")  # a clock set back: as good as none

    async def get(self) -> Insight:
        insight, age = self._insight, self._age()
        if insight is not None and age < self.max_age_s:
            return insight
        if insight is not None and age < self.stale_s:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._refreshed(), name="insight-refresh")
            return insight
        return await self._take()

    async def _take(self) -> Insight:
        async with self._lock:
            if self._insight is None or self._age() >= self.max_age_s:  # nobody took it meanwhile
                now = self.clock()
                scale = time_scale(self.engine)
                self._insight = await self.read(self.db, self.engine.site, now - DEFAULT_WINDOW_S / scale,
                                                now, scale)
                self._taken_at = now
            return self._insight

    async def _refreshed(self) -> None:
        try:
            await self._take()
        except Exception:  # the stale answer stays; the next caller past stale_s reads it again
            self.refresh_errors += 1
            log.exception("reading what limits the floor failed")

    async def aclose(self) -> None:
        """Stop a reading under way (the app is stopping)."""
        task, self._refresh = self._refresh, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def cache_of(request: Request) -> InsightCache:
    cache: InsightCache = request.app.state.insight
    return cache


def public(insight: Insight) -> dict[str, Any]:
    """The analysis' JSON with the API's times: ISO 8601 UTC."""
    body = insight.as_dict()
    body["since"], body["until"] = iso(insight.since), iso(insight.until)
    body["series"]["starts"] = [iso(t) for t in insight.series.starts]
    return body


def _invalid(field: str, message: str, value: Any) -> HTTPException:
    return HTTPException(422,
                         [{"type": "value_error", "loc": ["query", field], "msg": message, "input": value}])


@router.get("")
async def what_limits_the_floor(
    request: Request,
    engine: EngineDep,
    db: DbDep,
    since: Annotated[Instant | None, Query(ge=0, le=LATEST, description="window start: ISO 8601 or epoch "
                                           "seconds (default: 15 floor minutes before `until`)")] = None,
    until: Annotated[Instant | None, Query(ge=0, le=LATEST, description="window end: ISO 8601 or epoch "
                                           "seconds (default: now)")] = None,
) -> dict[str, Any]:
    """Per device, per device kind and per pick zone: utilisation, arrivals and completions per
    second, queue wait (mean, p95, whether it grows), the share of the orders' time spent waiting on
    it; the bottleneck and the runner-up with their evidence; per kind, the order rate at which it
    saturates; orders, cycle times and on-time shares; series over the window. Durations and rates
    are in floor time (`time_scale`: the floor's speed). docs/insight.md explains the figures. A
    window that ends before it starts, or lasts more than 7 days, is a 422."""
    if since is None and until is None:
        insight = await cache_of(request).get()
        return {"site": engine.site.site, **public(insight)}
    scale = time_scale(engine)
    end = until if until is not None else time.time()
    start = since if since is not None else end - DEFAULT_WINDOW_S / scale
    if start >= end:
        raise _invalid("since", "must be before until", since)
    if end - start > MAX_WINDOW_S:
        raise _invalid("since", f"a window of at most {MAX_WINDOW_S / 86400:g} days (floorctl report reads "
                                "longer ones)", since)
    insight = await floor_insight(db, engine.site, start, end, scale)
    return {"site": engine.site.site, **public(insight)}
