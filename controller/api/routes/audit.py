"""The audit trail: every state-changing request, who made it, from where, and what came of it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controller.api.auth import can
from controller.api.deps import Limit, Offset, SessionDep
from controller.api.schemas import AuditPublic, Paged
from controller.domain.access import Permission
from controller.store import queries
from controller.store.queries import AuditFilter

router = APIRouter(prefix="/api/audit", tags=["audit"], dependencies=[can(Permission.AUDIT_READ)])

Actor = Annotated[str | None, Query(min_length=1, max_length=128, description="a user's name, token:<id>")]
Action = Annotated[str | None, Query(min_length=1, max_length=64, description=(
    "exact (order.cancel), or every action of a kind with a trailing dot (device.)"))]
Target = Annotated[str | None, Query(min_length=1, max_length=160, description=(
    "order:42, device:loop-1, alarm:17, user:sam, token:<id>"))]


@router.get("", response_model=Paged[AuditPublic])
async def audit_trail(session: SessionDep, actor: Actor = None, action: Action = None, target: Target = None,
                      limit: Limit = 50, offset: Offset = 0) -> Any:
    """Newest first; filtered by actor, action and target."""
    page = await queries.audit_page(session, AuditFilter(actor=actor, action=action, target=target),
                                    limit=limit, offset=offset)
    return Paged[AuditPublic](items=[AuditPublic.of(row) for row in page.items], total=page.total,
                              limit=limit, offset=offset)
