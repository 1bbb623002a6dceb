"""Devices as the engine sees them right now (a snapshot; the engine owns each device's I/O), a
supervisor's controls on one, and the audit trail of those controls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, status

from controller.api.auth import Act, acting, can
from controller.api.deps import DeviceId, EngineDep, Limit, Offset, SessionDep
from controller.api.schemas import DeviceControl, DeviceControlPublic, DevicePublic, Paged
from controller.domain.access import Permission
from controller.domain.devices import ControlRefused, DeviceNotFound
from controller.store import queries
from controller.store.queries import AuditFilter

router = APIRouter(prefix="/api/devices", tags=["devices"])

ControlAct = Annotated[Act, acting(Permission.DEVICES_CONTROL, "device.control", "device:{device_id}")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no device with this id"}}


@router.get("", response_model=list[DevicePublic], dependencies=[can(Permission.READ)])
async def list_devices(engine: EngineDep) -> Any:
    """Online or not, state, fault, commands queued and in flight, whether it takes new work and why
    not, and how many orders wait on it."""
    return engine.devices()


@router.post("/{device_id}/control", response_model=DevicePublic,
             responses={**NOT_FOUND, 409: {"description": "the device cannot do that now, or at all"}})
async def control_device(
        device_id: DeviceId, body: DeviceControl, engine: EngineDep,
        act: ControlAct) -> Any:
    """Take a device out of rotation or put it back, pause (drain) or resume it, reset its fault, or
    reset a conveyor's or sorter's e-stop. Answers the device's row after the change. Every control,
    refused ones too, is recorded in the audit trail with who asked (the device's events)."""
    act.action = f"device.{body.action.value}"
    try:
        async with act:
            return await engine.control(device_id, body.action, act.principal.name)
    except DeviceNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}") from None
    except ControlRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc) or "refused") from None


@router.get("/{device_id}/events", response_model=Paged[DeviceControlPublic], responses=NOT_FOUND,
            dependencies=[can(Permission.READ)])
async def device_events(device_id: DeviceId, engine: EngineDep, session: SessionDep, limit: Limit = 50,
                        offset: Offset = 0) -> Any:
    """The controls asked of the device (time, actor, action, outcome), newest first: the audit
    trail's `device.*` rows of this device."""
    filt = AuditFilter(action="device.", target=f"device:{device_id}")
    page = await queries.audit_page(session, filt, limit=limit, offset=offset)
    if page.total == 0 and all(d["device_id"] != device_id for d in engine.devices()):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}")
    return Paged[DeviceControlPublic](items=[DeviceControlPublic.of(row) for row in page.items],
                                      total=page.total, limit=limit, offset=offset)
