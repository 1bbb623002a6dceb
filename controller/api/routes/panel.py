"""The supervisor's page: one static HTML file and its scripts; the floor is pushed to it by
`routes/events.py`. Without a login the page sends the browser to /login."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response

from controller.api.auth import GateDep
from controller.domain.access import Permission

PANEL_DIR = Path(__file__).resolve().parents[2] / "panel"
STATIC_DIR = PANEL_DIR / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def panel(request: Request, gate: GateDep) -> Response:
    try:
        who = await gate.principal(request)
    except HTTPException:
        who = None  # an ended session: log in again
    if who is None:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(back, safe='')}", status_code=status.HTTP_303_SEE_OTHER)
    if not who.may(Permission.READ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{who.name} may not read the floor")
    return FileResponse(PANEL_DIR / "templates" / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # The page names its icon; this is for the clients that ask at the conventional place anyway.
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")
