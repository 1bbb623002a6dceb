"""The controller's ports: one small Protocol per device role.

Real adapters (adapters/), simulator-backed test fakes and hand-written unit-test fakes all satisfy
these. The engine never imports an adapter; the composition root (bootstrap.py) wires them.

Every command carries a `command_id` chosen by the engine. Submitting the same id again (a retry)
re-sends the same command: the device dedupes on the id and acknowledges again without executing
twice, and the adapter hands back the ticket it already has for that id.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from controller.contract.kinds import DeviceKind  # the engine and the adapters import it from here


@dataclass(frozen=True, slots=True)
class Completion:
    """How a device finished a command. `ok=False` carries the device's reason code."""

    command_id: str
    ok: bool
    at: float  # wall clock, time.time()
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


class CommandTicket:
    """One command in flight at one device, as seen by its adapter.

    The adapter fills `sent_at` when the command is on the wire, resolves `acked` with the wall time
    of the device's acceptance (or with an exception when the device rejects it) and `done` with the
    `Completion`. Futures belong to the running loop; adapters resolve them only from the loop.
    """

    __slots__ = ("acked", "command_id", "device_id", "done", "sends", "sent_at")

    def __init__(self, command_id: str, device_id: str) -> None:
        loop = asyncio.get_running_loop()
        self.command_id = command_id
        self.device_id = device_id
        self.sent_at: float | None = None
        self.sends = 0  # how many times the command went on the wire (1 + retries)
        self.acked: asyncio.Future[float] = loop.create_future()
        self.done: asyncio.Future[Completion] = loop.create_future()

    def mark_sent(self) -> None:
        self.sends += 1
        if self.sent_at is None:
            self.sent_at = time.time()

    def ack(self, at: float | None = None) -> None:
        if not self.acked.done():
            self.acked.set_result(at if at is not None else time.time())

    def finish(self, completion: Completion) -> None:
        # A completion implies acceptance even when the ack was lost on the way.
        self.ack(completion.at)
        if not self.done.done():
            self.done.set_result(completion)


class CommandRejected(Exception):
    """The device refused the command (its acknowledgement said rejected); `reason` is its code.

    Adapters set it on `CommandTicket.acked`, and finish the ticket as failed with the same reason.
    """

    def __init__(self, device_id: str, command_id: str, reason: str) -> None:
        super().__init__(f"{device_id} rejected {command_id}: {reason}")
        self.device_id = device_id
        self.command_id = command_id
        self.reason = reason


class DeviceUnavailable(Exception):
    """The device cannot take a command now (offline, link down, faulted)."""


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    kind: DeviceKind
    online: bool
    state: str = "unknown"  # e.g. idle / busy / Executing / NotExecuting
    fault: str | None = None  # reason code while faulted, e.g. paper_out, jam, estop
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ScanRead:
    """A scanner's read at a scan point. `barcode` is None on a no-read."""

    scan_point: str
    scan_id: str  # unique per read, chosen by the PLC
    barcode: str | None
    at: float  # wall clock of the read, as stamped by the PLC


@dataclass(frozen=True, slots=True)
class Diverted:
    """A sorter's report of where a tote went after a scan: a lane, or `None` for recirculation."""

    sorter: str
    scan_id: str
    barcode: str | None
    lane: str | None
    at: float


DeviceEvent = DeviceStatus | ScanRead | Diverted
EventSink = Callable[[DeviceEvent], None]
"""Adapters report events by calling the sink on the event loop. It must not block or raise."""


@runtime_checkable
class Device(Protocol):
    device_id: str
    kind: DeviceKind
    protocol: str  # "mqtt" or "opcua"

    @property
    def status(self) -> DeviceStatus: ...


@runtime_checkable
class PickLight(Device, Protocol):
    async def show(self, command_id: str, location: str, qty: int, colour: str = "green") -> CommandTicket:
        """Light the unit with a quantity. Completion result: {"picked": int, "short": bool}."""
        ...

    async def clear(self, command_id: str) -> CommandTicket: ...

    async def reset(self, command_id: str) -> CommandTicket:
        """Ask the device to clear a fault it can clear by itself (MQTT `reset` action; on a PLC,
        `Plc.Reset`, which resets the e-stop and the jams of the whole PLC). Refused (a rejected
        ticket) when the fault needs a person."""
        ...


@runtime_checkable
class Printer(Device, Protocol):
    async def print_label(self, command_id: str, zpl: str) -> CommandTicket:
        """Print one ZPL label. Fails with a reason such as bad_zpl, paper_out, ribbon_out, head_open."""
        ...

    async def reset(self, command_id: str) -> CommandTicket:
        """Ask the device to clear a fault it can clear by itself (MQTT `reset` action; on a PLC,
        `Plc.Reset`, which resets the e-stop and the jams of the whole PLC). Refused (a rejected
        ticket) when the fault needs a person."""
        ...

    async def cancel_queued(self, command_id: str) -> CommandTicket:
        """Drop every label the printer holds and is not printing at that moment (ZPL ~JA; on a
        faulted printer the label it holds to print again too): their `print` commands fail with
        reason `cancelled`. Answered even by a faulted printer. Sent before a held label goes to
        another printer."""
        ...


@runtime_checkable
class PackStation(Device, Protocol):
    async def pack(self, command_id: str, order_id: str, tote_id: str, items: int) -> CommandTicket:
        """Ask the packer to pack a tote. Completion when the packer confirms."""
        ...

    async def reset(self, command_id: str) -> CommandTicket:
        """Ask the device to clear a fault it can clear by itself (MQTT `reset` action; on a PLC,
        `Plc.Reset`, which resets the e-stop and the jams of the whole PLC). Refused (a rejected
        ticket) when the fault needs a person."""
        ...


@runtime_checkable
class Conveyor(Device, Protocol):
    async def transport(self, command_id: str, tote_id: str, destination: str) -> CommandTicket:
        """Carry a tote to a destination (a pack station). Acked when accepted, done on arrival."""
        ...

    async def reset(self, command_id: str) -> CommandTicket:
        """Ask the device to clear a fault it can clear by itself (MQTT `reset` action; on a PLC,
        `Plc.Reset`, which resets the e-stop and the jams of the whole PLC). Refused (a rejected
        ticket) when the fault needs a person."""
        ...


@runtime_checkable
class Sorter(Device, Protocol):
    async def induct(self, command_id: str, tote_id: str) -> CommandTicket:
        """Put a tote on the sorter loop; done when the sorter reports where it went (Diverted)."""
        ...

    async def divert(self, command_id: str, scan_id: str, lane: str) -> CommandTicket:
        """Answer a scan with the lane to divert to. Acked when the target has landed in the PLC;
        done when the sorter has diverted or recirculated the tote (result {"lane": str | None})."""
        ...

    async def reset(self, command_id: str) -> CommandTicket:
        """Ask the device to clear a fault it can clear by itself (MQTT `reset` action; on a PLC,
        `Plc.Reset`, which resets the e-stop and the jams of the whole PLC). Refused (a rejected
        ticket) when the fault needs a person."""
        ...


@runtime_checkable
class ExplainsLinks(Protocol):
    """A hub that can say why links of its are down (the OPC UA hub: a refused certificate or
    password, no answer), by the id the health report names them with (a PLC id)."""

    def link_errors(self) -> dict[str, str]: ...


class DeviceHub(Protocol):
    """Owns the links to a set of devices (one broker connection, or one OPC UA session per PLC).

    `name` prefixes its `counters` in the controller's metrics (e.g. `mqtt_malformed_payload`);
    `counters` counts what the hub did not expect on the wire, never fatal; `connected` is True
    while every link it owns is up.
    """

    name: str
    counters: Counter[str]

    @property
    def connected(self) -> bool: ...

    async def start(self, sink: EventSink) -> None: ...

    async def stop(self) -> None: ...

    def devices(self) -> list[Device]: ...
