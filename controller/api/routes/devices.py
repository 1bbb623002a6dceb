"""Devices as the engine sees them right now (a snapshot; the engine owns each device's I/O)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.api.deps import EngineDep
from controller.api.schemas import DevicePublic

router = APIRouter(prefix="/api/devices", tags=["devices"])


@router.get("", response_model=list[DevicePublic])
async def list_devices(engine: EngineDep) -> Any:
    """Online or not, state, fault, commands queued and in flight, and whether it takes new work."""
    return engine.devices()
