"""A hot standby serves reads and refuses changes: one middleware for every state-changing request.

Installed by the composition root on an instance of a hot-standby pair (docs/standby.md). While the
instance does not lead, a POST, PUT, PATCH or DELETE gets 503 with a body and headers naming the
leader, so a WMS or a person knows where to send it; reads, the panel and logging in (a login lives
in the memory of the instance it was made on) are answered as on the leader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ANSWERED_ON_A_STANDBY = ("/api/auth/",)  # log in and out to read a standby's API and panel
LEADER_HEADER = "X-Floorctl-Leader"


class Leading(Protocol):
    @property
    def leading(self) -> bool: ...

    def describe(self) -> dict[str, Any]:
        """instance, role, epoch, leader, leader_epoch (controller/ha/leadership.py)."""
        ...


def standby_refusal(info: dict[str, Any]) -> JSONResponse:
    leader = info.get("leader")
    instance = info.get("instance")
    where = (f"{leader} leads the floor (epoch {info.get('leader_epoch')}): send it there"
             if leader and leader != instance else "no instance leads the floor right now: try again")
    body = {"detail": f"this instance ({instance}) is a {info.get('role')} and changes nothing; {where}",
            "role": info.get("role"), "instance": info.get("instance"), "leader": leader,
            "leader_epoch": info.get("leader_epoch")}
    headers = {"Retry-After": "1"}
    if leader:
        headers[LEADER_HEADER] = str(leader)
    return JSONResponse(body, status_code=503, headers=headers)


def only_the_leader_changes(app: FastAPI, leadership: Leading) -> None:
    @app.middleware("http")
    async def leader_only(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if (request.method in SAFE_METHODS or leadership.leading
                or request.url.path.startswith(ANSWERED_ON_A_STANDBY)):
            return await call_next(request)
        return standby_refusal(leadership.describe())
