"""Liveness for load balancers and supervisors."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.api.auth import can
from controller.api.deps import EngineDep
from controller.domain.access import Permission

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "the engine reports a problem (same body)"}},
            dependencies=[can(Permission.READ, open_path="/healthz")])
async def healthz(engine: EngineDep) -> JSONResponse:
    """200 when the engine says it is fine, else 503; the body says what is connected and what is not.
    Open without credentials where the site file's `api.open_paths` lists it (the default)."""
    health = engine.health()
    return JSONResponse(health, status_code=200 if health.get("ok") else 503)
