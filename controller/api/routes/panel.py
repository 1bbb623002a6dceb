"""The supervisor's page: one static HTML file; its script polls the JSON API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

PANEL_DIR = Path(__file__).resolve().parents[2] / "panel"
STATIC_DIR = PANEL_DIR / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def panel() -> FileResponse:
    return FileResponse(PANEL_DIR / "templates" / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})
