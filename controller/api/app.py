"""Build the HTTP app around an engine and a database. Nothing is created at import time."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine
from swagger_ui_bundle import swagger_ui_path

from controller.api.deps import EngineLike, SnapshotCache
from controller.api.prometheus import FloorMetrics
from controller.api.routes import devices, health, metrics, orders, panel, stats, stock, timings
from controller.domain.model import InvalidTransition, OrderNotFound

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def create_app(engine: EngineLike, db: AsyncEngine, *, lifespan: Lifespan | None = None) -> FastAPI:
    """The REST API, /metrics, /healthz and the supervisor panel at /.

    `db` is only read; the engine owns every write. The composition root passes a `lifespan` that
    starts and stops the engine with the server.
    """
    app = FastAPI(
        title="floorctl",
        summary="Warehouse control: orders, device timings, stock and floor statistics",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: a site network is often offline
    )
    app.state.engine = engine
    app.state.db = db
    app.state.snapshots = SnapshotCache(engine.stats)
    app.state.metrics = FloorMetrics()

    app.add_exception_handler(OrderNotFound, _not_found)
    app.add_exception_handler(InvalidTransition, _conflict)
    app.add_exception_handler(RequestValidationError, _invalid)

    for module in (orders, timings, stock, devices, stats, health, metrics, panel):
        app.include_router(module.router)
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")
    app.mount("/static", StaticFiles(directory=panel.STATIC_DIR), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="floorctl API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")

    return app


async def _invalid(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, counted: bad input from a WMS is something a supervisor should see."""
    request.app.state.engine.count("api_invalid_requests")
    assert isinstance(exc, RequestValidationError)
    return await request_validation_exception_handler(request, exc)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    text = str(exc)
    if not text or text.isdigit():  # raised with a bare id, or nothing at all
        text = f"order {request.path_params.get('order_id', text)} not found"
    return JSONResponse({"detail": text}, status_code=404)


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc) or "not allowed in the order's current state"}, status_code=409)
