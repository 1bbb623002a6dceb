"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from controller.api.deps import EngineDep, SessionDep, SnapshotDep
from controller.api.prometheus import FloorMetrics, Reading
from controller.api.routes.stats import orders_by_state

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request, session: SessionDep, engine: EngineDep, snapshot: SnapshotDep) -> Response:
    """Orders by state, commands by device kind and outcome, device gauges, engine counters, writer
    backlog, rolling stage quantiles and the process's own metrics, in Prometheus text format."""
    reading = Reading(
        orders_by_state=await orders_by_state(session),
        commands=[(kind, outcome, n) for (kind, outcome), n in sorted(engine.command_counts.items())],
        devices=engine.devices(),
        health=engine.health(),
        counters=dict(engine.counters),
        snapshot=snapshot,
    )
    floor_metrics: FloorMetrics = request.app.state.metrics
    return Response(floor_metrics.render(reading), media_type=CONTENT_TYPE_LATEST)
