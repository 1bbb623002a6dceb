"""Logging in and out of the panel, and who the caller is.

A login answers a session cookie (HttpOnly, SameSite=Strict, Secure over TLS) and a CSRF token
(also in a cookie the panel's scripts read) that every state-changing request sends back as
X-CSRF-Token. Failed logins slow down per account and per address, and each is logged and audited.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from controller.api.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    GateDep,
    Principal,
    address_of,
    guard,
)
from controller.api.routes.panel import PANEL_DIR
from controller.api.schemas import LoginRequest, Me
from controller.domain.access import Permission, grants

log = logging.getLogger("floorctl.auth")

router = APIRouter(prefix="/api/auth", tags=["auth"])
page = APIRouter(include_in_schema=False)

Someone = Annotated[Principal, Depends(guard(None))]  # anyone logged in, whatever their role


@router.post("/login", response_model=Me, responses={
    401: {"description": "wrong name or password"},
    429: {"description": "too many failures for this account or address: wait Retry-After seconds"}})
async def login(body: LoginRequest, request: Request, response: Response, gate: GateDep) -> Any:
    """Log in to the panel: sets the session cookie and answers the CSRF token."""
    address = address_of(request)
    now = gate.clock()
    wait = gate.throttle.wait(body.name, address, now)
    if wait > 0:
        gate.record(request, "login", f"user:{body.name}", f"failed: throttled for {math.ceil(wait)} s",
                    actor=body.name)
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed logins: try again later",
                            headers={"Retry-After": str(math.ceil(wait))})
    user = await gate.accounts.check_password(body.name, body.password) if gate.accounts else None
    if user is None:
        gate.throttle.failed(body.name, address, gate.clock())
        gate.record(request, "login", f"user:{body.name}", "failed: wrong name or password", actor=body.name)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong name or password")
    gate.throttle.succeeded(body.name, address)
    secret, session = gate.open_session(user.name, user.role)
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, session.csrf, httponly=False, samesite="strict", secure=secure, path="/")
    principal = Principal(user.name, user.role, frozenset(), via="session")
    gate.record(request, "login", f"user:{user.name}", "ok", actor=principal)
    return _me(principal, gate.settings.session_idle_s, session.csrf, grants(user.role))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, response: Response, gate: GateDep, who: Someone) -> None:
    """End the panel session (a token is revoked instead: POST /api/tokens/{id}/revoke)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    session = gate.session_of(cookie) if cookie else None
    if session is not None:
        gate.end_session(session)
    gate.record(request, "logout", f"user:{who.name}", "ok")
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict", secure=request.url.scheme == "https")


@router.get("/me", response_model=Me)
async def me(request: Request, gate: GateDep, who: Someone) -> Any:
    """Who the credentials belong to, their role and permissions; a session's CSRF token."""
    cookie = request.cookies.get(SESSION_COOKIE)
    session = gate.session_of(cookie) if cookie and who.via == "session" else None
    return _me(who, gate.settings.session_idle_s if session else None, session.csrf if session else None,
               who.permissions)


def _me(who: Principal, idle_s: float | None, csrf: str | None, permissions: frozenset[Permission]) -> Me:
    return Me(name=who.name, role=who.role.value, via=who.via, csrf=csrf, idle_s=idle_s,
              permissions=sorted(p.value for p in permissions))


@page.get("/login")
async def login_page() -> FileResponse:
    return FileResponse(PANEL_DIR / "templates" / "login.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})
