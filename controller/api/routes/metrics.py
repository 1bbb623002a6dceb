"""Prometheus scrape endpoint."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from controller.api.auth import can
from controller.api.deps import EngineDep, SessionDep, SnapshotDep
from controller.api.prometheus import FloorMetrics, Reading
from controller.api.routes.insight import cache_of
from controller.api.routes.stats import orders_by_state
from controller.domain.access import Permission

log = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
            dependencies=[can(Permission.READ, open_path="/metrics")])
async def metrics(request: Request, session: SessionDep, engine: EngineDep,
                  snapshot: SnapshotDep) -> Response:
    """Orders by state, commands by device kind and outcome, device gauges, engine counters, writer
    backlog, rolling stage quantiles, alarms raised and active, utilisation, capacity and the bottleneck
    over the last 15 minutes (docs/insight.md), and the process's own metrics, in
    Prometheus text format. Open without credentials only where the site file's `api.open_paths` lists
    it; else a scraper sends a `read` token (`bearer_token_file` in Prometheus)."""
    reading = Reading(
        orders_by_state=await orders_by_state(session),
        commands=[(kind, outcome, n) for (kind, outcome), n in sorted(engine.command_counts.items())],
        devices=engine.devices(),
        health=engine.health(),
        counters=dict(engine.counters),
        snapshot=snapshot,
    )
    alarms = request.app.state.alarms
    if alarms is not None:
        reading.alarms_raised = dict(alarms.raised_counts)
        reading.alarms_active = dict(alarms.active_by_severity())
    try:
        reading.insight = (await cache_of(request).get()).as_dict()
    except Exception:  # the rest of the scrape is worth having without it
        log.exception("the insight gauges could not be worked out")
    retention = getattr(request.app.state, "retention", None)  # set by the composition root
    if retention is not None:
        reading.retention = retention.as_dict()
    floor_metrics: FloorMetrics = request.app.state.metrics
    return Response(floor_metrics.render(reading), media_type=CONTENT_TYPE_LATEST)
