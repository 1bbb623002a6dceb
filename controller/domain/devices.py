"""What a supervisor can do to a device, and why a device may take no new work. Pure: no I/O.

The fault policy (docs/operations.md): a device that is offline, faulted, paused or out of rotation
gets no new commands. `Availability.of` names the first of those reasons, so the engine, the API
and the alarms all say the same thing about the same device.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeviceAction(StrEnum):
    TAKE_OUT = "take_out"  # out of rotation: no new work; what it holds finishes
    PUT_BACK = "put_back"  # back into rotation
    PAUSE = "pause"  # drain: finish what is in hand, take nothing new
    RESUME = "resume"
    RESET = "reset"  # ask the device to clear its fault (MQTT `reset`; a PLC's `Reset`)
    ESTOP_RESET = "estop_reset"  # a conveyor's or sorter's PLC: reset the e-stop and the jams


class DeviceNotFound(LookupError):
    pass


class ControlRefused(ValueError):
    """The device cannot do that now, or at all (e.g. an e-stop reset on a pick light)."""


class Unavailable(StrEnum):
    """Why a device takes no new work, in the order they are reported."""

    OFFLINE = "offline"
    OUT_OF_ROTATION = "out_of_rotation"
    PAUSED = "paused"
    FAULTED = "faulted"


@dataclass(frozen=True, slots=True)
class Availability:
    reason: Unavailable | None  # None: available
    detail: str | None = None  # the fault code, or who took it out and why

    @property
    def available(self) -> bool:
        return self.reason is None

    @classmethod
    def of(cls, *, online: bool, fault: str | None, in_rotation: bool, paused: bool,
           rotation_note: str | None = None) -> Availability:
        if not online:
            return cls(Unavailable.OFFLINE, fault)
        if not in_rotation:
            return cls(Unavailable.OUT_OF_ROTATION, rotation_note)
        if paused:
            return cls(Unavailable.PAUSED)
        if fault:
            return cls(Unavailable.FAULTED, fault)
        return cls(None)

    def __str__(self) -> str:
        if self.reason is None:
            return "available"
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


@dataclass(frozen=True, slots=True)
class WaitingOn:
    """What an order waits for: a device that takes no work now, since when, and why."""

    device_id: str
    since: float
    reason: str


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A supervisor's action on a device, as the audit trail records it."""

    at: float
    actor: str
    device_id: str
    action: DeviceAction
    outcome: str  # "ok", or "refused: <why>"
    detail: str | None = None
