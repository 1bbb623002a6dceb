"""Instant in-process devices for the memory benchmark: every device of a site, no broker, no PLC.

One class per role, each satisfying its port in controller/ports.py, and a hub satisfying
`DeviceHub`. A device acknowledges at once and finishes after `delay_s`; a pick light picks the full
quantity; the sorter answers an induct with a scan and diverts to the lane the engine writes. They
remember only the commands still in flight (a re-submitted id gets the same ticket) and count what
they were sent, so that what grows during a run is the controller's memory, not theirs.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from controller.ports import (
    CommandTicket,
    Completion,
    Device,
    DeviceKind,
    DeviceStatus,
    Diverted,
    EventSink,
    ScanRead,
)
from controller.site import Site


class InstantDevice:
    protocol = "instant"
    kind: DeviceKind  # set by each role

    def __init__(self, device_id: str, hub: InstantHub) -> None:
        self.device_id = device_id
        self.hub = hub
        self.status = DeviceStatus(device_id, self.kind, online=True, state="idle")
        self.in_flight: dict[str, CommandTicket] = {}

    def _command(self, command_id: str, result: dict[str, Any] | None = None, *,
                 then: Callable[[CommandTicket], None] | None = None) -> CommandTicket:
        """Ack now; after the hub's delay finish with `result`, or call `then(ticket)` instead."""
        self.hub.commands[self.device_id] += 1
        ticket = self.in_flight.get(command_id)
        if ticket is not None:  # a retry: the same command, executed once
            ticket.mark_sent()
            ticket.ack()
            return ticket
        ticket = self.in_flight[command_id] = CommandTicket(command_id, self.device_id)
        ticket.mark_sent()
        ticket.ack()
        ticket.done.add_done_callback(lambda _: self.in_flight.pop(command_id, None))
        if then is None:
            def then(t: CommandTicket) -> None:
                t.finish(Completion(command_id, True, time.time(), result=result or {}))
        asyncio.get_running_loop().call_later(self.hub.delay_s, then, ticket)
        return ticket


    async def reset(self, command_id: str) -> CommandTicket:
        """Nothing is ever faulted here: done, with no fault cleared."""
        return self._command(command_id, {"fault": None})


class InstantPickLight(InstantDevice):
    kind = DeviceKind.PICK_LIGHT

    async def show(self, command_id: str, location: str, qty: int, colour: str = "green") -> CommandTicket:
        return self._command(command_id, {"picked": qty, "short": False})

    async def clear(self, command_id: str) -> CommandTicket:
        return self._command(command_id)


class InstantPrinter(InstantDevice):
    kind = DeviceKind.PRINTER

    async def print_label(self, command_id: str, zpl: str) -> CommandTicket:
        return self._command(command_id)

    async def cancel_queued(self, command_id: str) -> CommandTicket:
        return self._command(command_id, {"cancelled": 0})


class InstantPackStation(InstantDevice):
    kind = DeviceKind.PACK_STATION

    async def pack(self, command_id: str, order_id: str, tote_id: str, items: int) -> CommandTicket:
        return self._command(command_id)


class InstantConveyor(InstantDevice):
    kind = DeviceKind.CONVEYOR

    async def transport(self, command_id: str, tote_id: str, destination: str) -> CommandTicket:
        return self._command(command_id)


class InstantSorter(InstantDevice):
    kind = DeviceKind.SORTER

    def __init__(self, device_id: str, hub: InstantHub, scan_point: str) -> None:
        super().__init__(device_id, hub)
        self.scan_point = scan_point
        self.waiting: dict[str, tuple[CommandTicket, str]] = {}  # scan id -> induct ticket, tote

    async def induct(self, command_id: str, tote_id: str) -> CommandTicket:
        return self._command(command_id, then=lambda ticket: self._scan(ticket, tote_id))

    async def divert(self, command_id: str, scan_id: str, lane: str) -> CommandTicket:
        self.hub.commands[self.device_id] += 1
        ticket = CommandTicket(command_id, self.device_id)
        ticket.mark_sent()
        ticket.ack()
        induct, tote = self.waiting.pop(scan_id)
        now = time.time()
        self.hub.emit(Diverted(self.device_id, scan_id, tote, lane, now))
        ticket.finish(Completion(command_id, True, now, result={"lane": lane}))
        induct.finish(Completion(induct.command_id, True, now, result={"lane": lane}))
        return ticket

    def _scan(self, induct: CommandTicket, tote: str) -> None:
        scan_id = f"s{next(self.hub.scan_ids)}"
        self.waiting[scan_id] = (induct, tote)
        self.hub.emit(ScanRead(self.scan_point, scan_id, tote, time.time()))


class InstantHub:
    """Every device of `site`; `delay_s` is each command's working time. `commands` counts the
    commands each device was sent (retries included)."""

    name = "instant"

    def __init__(self, site: Site, *, delay_s: float = 0.0005) -> None:
        self.delay_s = delay_s
        self.counters: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.scan_ids = itertools.count(1)
        self._sink: EventSink | None = None
        self._devices: list[InstantDevice] = [
            *(InstantPickLight(d.id, self) for d in site.pick_lights),
            *(InstantPrinter(d.id, self) for d in site.printers),
            *(InstantPackStation(d.id, self) for d in site.pack_stations),
            *(InstantConveyor(d.id, self) for d in site.conveyors),
            *(InstantSorter(d.id, self, d.scan_point) for d in site.sorters),
        ]

    @property
    def connected(self) -> bool:
        return True

    async def start(self, sink: EventSink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        self._sink = None

    def devices(self) -> list[Device]:
        return list(self._devices)

    def emit(self, event: ScanRead | Diverted) -> None:
        if self._sink is not None:
            self._sink(event)
