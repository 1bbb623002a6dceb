"""The floor pushed to the panel as Server-Sent Events: one snapshot per tick, shared by every client.

A supervisor's screen, a wall display and a phone each hold one stream. What they receive is taken
once per tick (the stats snapshot costs milliseconds at peak, the counts one database query) and the
same bytes go to all of them; a client too slow for a tick skips to the newest snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.auth import can
from controller.api.deps import AlarmDesk, EngineDep, EngineLike, Limit, SessionDep, SnapshotCache
from controller.api.instants import iso
from controller.api.routes.stats import orders_by_state
from controller.api.schemas import AlarmPublic, DevicePublic, OrderSummary, WaitingOnPublic
from controller.domain.access import Permission
from controller.domain.model import OrderState
from controller.store import queries
from controller.store.queries import AlarmFilter
from controller.store.repository import alarm_of

router = APIRouter(prefix="/api/events", tags=["events"], dependencies=[can(Permission.READ)])

TICK_S = 1.0
ATTENTION = ["exception", "held"]  # the orders a supervisor must see without asking
ATTENTION_LIMIT = 100
ALARMS_LIMIT = 200  # active alarms; more than this on one floor is a floor that has stopped
# uvicorn's graceful shutdown waits for every open response to end. A stream that ends by itself
# after a while lets a stopping controller go; the browser's EventSource reconnects at once and the
# panel sees no gap (the newest snapshot is sent first).
STREAM_LIFETIME_S = 15.0
RECONNECT_MS = 1000


class FloorFeed:
    """The newest floor snapshot as JSON, retaken at most once per `tick_s`, whoever asks.

    No background task: the first reader to find the snapshot due takes it (under a lock, so
    concurrent readers wait for that one and share it). With no reader, nothing is computed.
    """

    def __init__(self, take: Callable[[], Awaitable[dict[str, Any]]], tick_s: float = TICK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.take = take
        self.tick_s = tick_s
        self.clock = clock
        self.seq = 0  # counts snapshots taken; a stream sends each one at most once
        self._body = b""
        self._taken_at = float("-inf")
        self._lock = asyncio.Lock()
        self._nudged = asyncio.Event()  # replaced at each nudge: every stream waiting on it wakes

    def nudge(self) -> None:
        """Something a supervisor must see at once (an alarm): retake now and wake every stream."""
        self._taken_at = float("-inf")
        self._nudged.set()
        self._nudged = asyncio.Event()

    async def current(self) -> tuple[int, bytes]:
        """The snapshot, retaken when older than a tick."""
        if self._due() > 0:
            return self.seq, self._body
        async with self._lock:
            if self._due() <= 0:  # nobody retook it while this reader waited for the lock
                body = await self._take_json()
                self.seq, self._body, self._taken_at = self.seq + 1, body, self.clock()
        return self.seq, self._body

    async def after(self, seen: int) -> tuple[int, bytes]:
        """The first snapshot newer than `seen`, waiting for the next tick when there is none."""
        while True:
            if self.seq > seen and self._due() > 0:
                return self.seq, self._body
            wait = self._due()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudged.wait(), wait)
            seq, body = await self.current()
            if seq > seen:
                return seq, body

    async def stream(self, lifetime_s: float = STREAM_LIFETIME_S) -> AsyncIterator[bytes]:
        """Server-Sent Events: `floor` events, each one whole snapshot, for `lifetime_s`."""
        yield f"retry: {RECONNECT_MS}\n\n".encode()
        ends = self.clock() + lifetime_s
        seen = -1
        while self.clock() < ends:
            seen, body = await self.after(seen)
            yield b"event: floor\ndata: " + body + b"\n\n"

    def _due(self) -> float:
        """Seconds until the snapshot should be retaken (0 or less: now)."""
        return self._taken_at + self.tick_s - self.clock()

    async def _take_json(self) -> bytes:
        try:
            snapshot = await self.take()
        except Exception as exc:  # noqa: BLE001 - one bad tick must not end every client's stream
            snapshot = {"at": time.time(), "error": f"{type(exc).__name__}: {exc}"}
        return json.dumps(jsonable_encoder(snapshot), separators=(",", ":")).encode()


def board_rows(engine: EngineLike, rows: list[Any]) -> list[dict[str, Any]]:
    """Order rows as the board lists them: the summary and what each order waits on now."""
    def waiting(order_id: int) -> dict[str, Any] | None:
        found = engine.waiting_on(order_id)
        return None if found is None else WaitingOnPublic(
            device=found.device_id, since=iso(found.since) or "", reason=found.reason).model_dump()

    return [{**OrderSummary.of(row).model_dump(), "waiting_on": waiting(row.id)} for row in rows]


async def floor_now(engine: EngineLike, snapshots: SnapshotCache, session: AsyncSession,
                    monitor: AlarmDesk | None = None) -> dict[str, Any]:
    """What the panel draws: health, stats with orders by state, devices, orders needing attention
    and the active alarms (as `GET /api/alarms?active=true` lists them). A running alarm monitor's own
    list is taken, not the store's: an alarm is shown the moment it is raised, not once written."""
    attention = await queries.orders_page(session, states=ATTENTION, limit=ATTENTION_LIMIT)
    if monitor is not None and monitor.running:
        active = sorted(monitor.active(), key=lambda a: (a.raised_at, a.id), reverse=True)[:ALARMS_LIMIT]
    else:
        active = [alarm_of(row) for row in
                  (await queries.alarms_page(session, AlarmFilter(active=True), limit=ALARMS_LIMIT)).items]
    return {
        "at": time.time(),
        "site": engine.site.site,
        "speed": getattr(engine, "speed", 1.0),
        "health": engine.health(),
        "stats": {**snapshots.get(), "orders_by_state": await orders_by_state(session)},
        "devices": [DevicePublic.model_validate(d).model_dump() for d in engine.devices()],
        "attention": {"items": board_rows(engine, attention.items), "total": attention.total},
        "alarms": [AlarmPublic.of(alarm).model_dump() for alarm in active],
    }


def feed_of(app: FastAPI) -> FloorFeed:
    """The app's one feed, made on first use: every client of this app shares it."""
    feed: FloorFeed | None = getattr(app.state, "floor_feed", None)
    if feed is None:
        async def take() -> dict[str, Any]:
            async with AsyncSession(app.state.db, expire_on_commit=False) as session:
                return await floor_now(app.state.engine, app.state.snapshots, session, monitor)

        monitor: AlarmDesk | None = getattr(app.state, "alarms", None)
        feed = app.state.floor_feed = FloorFeed(take)
        if monitor is not None:
            monitor.listeners.append(lambda _changes: feed.nudge())
    return feed


@router.get("/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`floor` events, one whole snapshot each (as `/latest`)"}})
async def floor_stream(request: Request) -> StreamingResponse:
    """Server-Sent Events: the floor snapshot of `/api/events/latest`, pushed about once a second.

    Every client gets the same snapshot, taken once per tick. A stream ends after a few seconds and
    the browser's EventSource reconnects by itself."""
    return StreamingResponse(feed_of(request.app).stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/latest")
async def floor_latest(request: Request) -> Response:
    """The newest floor snapshot (for clients that cannot hold a stream): `health`, `stats` (with
    `orders_by_state`), `devices`, `attention` (orders in exception or held), `alarms` (the active
    ones), `speed`, `site`, `at`."""
    _, body = await feed_of(request.app).current()
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})


@router.get("/board")
async def board(session: SessionDep, engine: EngineDep, state: OrderState,
                limit: Limit = 100) -> dict[str, Any]:
    """The orders in one state, oldest first, as the panel's board lists them: each order's summary
    (as in `GET /api/orders`) and `waiting_on` (as in `GET /api/orders/{id}`); `total` counts them all."""
    page = await queries.orders_page(session, states=[state.value], limit=limit)
    return {"items": board_rows(engine, page.items), "total": page.total, "limit": limit}
