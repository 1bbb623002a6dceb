"""What a PLC's session (PlcLink, the owner of its I/O) and the device objects behind it know of each other.

The link pushes: link state, variable values and events go to each device through `SessionDevice`.
A device calls the link only to put a method call on the wire, through `MethodCalls`. Neither module
imports the other; the hub wires them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from controller.contract.opcua import EventType
from controller.ports import DeviceStatus, EventSink


class MethodRefused(Exception):
    """The server refused a method call itself (bad node id, bad arguments): a configuration fault.
    `str(exc)` is the OPC UA status code's name."""


class MethodCalls(Protocol):
    async def call(self, device_id: str, method: str, args: Sequence[str]) -> Any:
        """Call a device method and return its reply (the Status output) for the device to judge.

        Raises MethodRefused, or controller.ports.DeviceUnavailable when the call may not have
        reached the PLC (link down, time-out, connection lost)."""
        ...


class SessionDevice(Protocol):
    """A device object as its PLC's session sees it."""

    device_id: str

    def link_changed(self, online: bool) -> DeviceStatus | None:
        """The session came up or went down; the device's new status if it changed."""
        ...

    def value_changed(self, signal: str, value: Any) -> DeviceStatus | None:
        """A state variable's new value; the device's new status if it changed."""
        ...

    def event(self, kind: EventType, fields: dict[str, Any], sink: EventSink) -> None:
        """An event raised by the device's object on the PLC."""
        ...

    async def send_unfinished(self) -> None:
        """Send again every command still waiting for an answer (after a (re)connect)."""
        ...
