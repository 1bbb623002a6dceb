"""Floor statistics: throughput, stage and device percentiles, and orders by state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.api.auth import can
from controller.api.deps import EngineDep, SessionDep, SnapshotDep
from controller.domain.access import Permission
from controller.domain.model import OrderState
from controller.store import queries

router = APIRouter(prefix="/api/stats", tags=["stats"], dependencies=[can(Permission.READ)])


async def orders_by_state(session: SessionDep) -> dict[str, int]:
    """Every state, zero included, so a client can draw the same columns every time."""
    counts = await queries.order_counts_by_state(session)
    return {state.value: counts.get(state.value, 0) for state in OrderState}


@router.get("")
async def floor_stats(session: SessionDep, engine: EngineDep, snapshot: SnapshotDep) -> dict[str, Any]:
    """The engine's rolling snapshot (durations in seconds, `recent_*` over the last minute) plus
    `orders_by_state` from the database and the site's name."""
    return {"site": engine.site.site, **snapshot, "orders_by_state": await orders_by_state(session)}
