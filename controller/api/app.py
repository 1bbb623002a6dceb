"""Build the HTTP app around an engine and a database. Nothing is created at import time."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api import hardening
from controller.api.auth import Gate, can
from controller.api.deps import AlarmDesk, EngineLike, SnapshotCache
from controller.api.prometheus import FloorMetrics
from controller.api.routes import (
    accounts,
    audit,
    auth,
    devices,
    events,
    health,
    insight,
    metrics,
    orders,
    panel,
    stats,
    stock,
    timings,
)
from controller.api.routes import alarms as alarm_routes
from controller.domain.access import Permission
from controller.domain.model import InvalidTransition, OrderConflict, OrderNotFound

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def create_app(engine: EngineLike, db: AsyncEngine, *, gate: Gate, alarms: AlarmDesk | None = None,
               lifespan: Lifespan | None = None) -> FastAPI:
    """The REST API, /metrics, /healthz and the supervisor panel at /.

    `db` is only read; the engine owns every write. `gate` says who may do what (`Gate(accounts,
    site.api)`; `Gate.without_auth()` for --no-auth). The composition root passes a `lifespan` that
    starts and stops the engine with the server.
    """
    app = FastAPI(
        title="floorctl",
        summary="Warehouse control: orders, device timings, stock and floor statistics",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # both served below from local files: a site network is often offline
        redoc_url=None,
        openapi_url=None,  # served below, to readers only
    )
    app.state.gate = gate
    app.state.engine = engine
    app.state.db = db
    app.state.alarms = alarms  # without a monitor the alarm history still reads; acknowledging is a 503
    app.state.snapshots = SnapshotCache(engine.stats)
    app.state.metrics = FloorMetrics()
    app.state.insight = insight.InsightCache(engine, db)  # what limits the floor, the last 15 floor minutes

    app.add_exception_handler(OrderNotFound, _not_found)
    app.add_exception_handler(InvalidTransition, _conflict)
    app.add_exception_handler(OrderConflict, _order_conflict)
    app.add_exception_handler(RequestValidationError, _invalid)

    for module in (orders, timings, stock, devices, alarm_routes, stats, insight, events, health, metrics,
                   panel, audit, auth):
        app.include_router(module.router)
    app.include_router(auth.page)
    app.include_router(accounts.users)
    app.include_router(accounts.tokens)
    # fastapi-offline's copies of Swagger UI 5 (FastAPI's OpenAPI 3.1 needs 5.x) and ReDoc's standalone file
    apidocs = StaticFiles(directory=str(files("fastapi_offline") / "static"))
    app.mount("/static/apidocs", apidocs, name="apidocs")
    app.mount("/static", StaticFiles(directory=panel.STATIC_DIR), name="static")

    reader = [can(Permission.READ)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=reader)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=reader)
    async def docs() -> HTMLResponse:
        return hardening.with_nonce(get_swagger_ui_html(
            openapi_url="/openapi.json", title="floorctl API",
            swagger_js_url="/static/apidocs/swagger-ui-bundle.js",
            swagger_css_url="/static/apidocs/swagger-ui.css",
            swagger_favicon_url="/static/apidocs/favicon.png"))

    @app.get("/redoc", include_in_schema=False, dependencies=reader)
    async def redoc() -> HTMLResponse:
        return hardening.with_nonce(get_redoc_html(
            openapi_url="/openapi.json", title="floorctl API",
            redoc_js_url="/static/apidocs/redoc.standalone.js",
            redoc_favicon_url="/static/apidocs/favicon.png", with_google_fonts=False))

    # Body and batch limits, security headers, CORS only for the site's origins, no trace in a 500
    hardening.install(app, hardening.HttpLimits.of(getattr(engine, "site", None)))
    return app


async def _invalid(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, counted: bad input from a WMS is something a supervisor should see."""
    request.app.state.engine.count("api_invalid_requests")
    assert isinstance(exc, RequestValidationError)
    # FastAPI's own 422, with any string that is not UTF-8 (a lone surrogate) made printable
    return JSONResponse({"detail": hardening.utf8_safe(jsonable_encoder(exc.errors()))}, status_code=422)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    text = str(exc)
    if not text or text.isdigit():  # raised with a bare id, or nothing at all
        text = f"order {request.path_params.get('order_id', text)} not found"
    return JSONResponse({"detail": text}, status_code=404)


async def _order_conflict(request: Request, exc: Exception) -> JSONResponse:
    """A re-posted external id with other content: 409 naming what differs, per external id."""
    assert isinstance(exc, OrderConflict)
    request.app.state.engine.count("api_order_conflicts")
    return JSONResponse({"detail": str(exc), "conflicts": exc.conflicts}, status_code=409)


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc) or "not allowed in the order's current state"}, status_code=409)
