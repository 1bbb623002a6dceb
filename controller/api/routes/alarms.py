"""Alarms: the active ones and the history (from the store), and a person's acknowledgement."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from controller.api.auth import Act, acting, can
from controller.api.deps import AlarmsDep, Limit, Offset, SessionDep
from controller.api.hardening import ID_MAX
from controller.api.schemas import NO_NUL, AlarmPublic, Paged
from controller.domain.access import Permission
from controller.domain.alarms import AlarmKind, AlarmNotFound, Severity
from controller.store import queries
from controller.store.queries import AlarmFilter
from controller.store.repository import alarm_of

router = APIRouter(prefix="/api/alarms", tags=["alarms"])

AckAct = Annotated[Act, acting(Permission.ALARMS_ACK, "alarm.ack", "alarm:{alarm_id}")]
AlarmId = Annotated[int, Path(ge=1, le=ID_MAX, description="the alarm's id")]


@router.get("", response_model=Paged[AlarmPublic], dependencies=[can(Permission.READ)])
async def list_alarms(
    session: SessionDep,
    active: Annotated[bool | None, Query(description="true: not cleared yet; false: cleared")] = None,
    severity: Severity | None = None,
    kind: AlarmKind | None = None,
    source: Annotated[str | None, Query(min_length=1, max_length=128, pattern=NO_NUL,
                                        description="a device id, a stage, broker, a PLC id, writer")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Any:
    """Alarms newest first, filtered by active or cleared, severity, kind and source."""
    filt = AlarmFilter(active=active, severity=severity.value if severity else None,
                       kind=kind.value if kind else None, source=source)
    page = await queries.alarms_page(session, filt, limit=limit, offset=offset)
    return Paged[AlarmPublic](items=[AlarmPublic.of(alarm_of(row)) for row in page.items], total=page.total,
                              limit=limit, offset=offset)


@router.post("/{alarm_id}/ack", response_model=AlarmPublic,
             responses={404: {"description": "no alarm with this id"}})
async def acknowledge_alarm(
        alarm_id: AlarmId, act: AckAct, alarms: AlarmsDep) -> Any:
    """Acknowledge an alarm, active or cleared, as the logged-in user. The first acknowledgement
    stands: acknowledging again answers the alarm unchanged."""
    try:
        async with act:
            return AlarmPublic.of(await alarms.acknowledge(alarm_id, act.principal.name))
    except AlarmNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alarm {alarm_id}") from None
