"""Hand-written in-process devices for unit tests of the engine: no broker, no OPC UA server.

Each fake satisfies its port, dedupes on command ids like a real device, and can be told how to
behave (short pick, fail, stay silent). The sorter fake answers an induct with a scan and diverts
to whatever lane the engine writes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from controller.contract.reasons import NEEDS_PERSON, Reason
from controller.ports import (
    CommandRejected,
    CommandTicket,
    Completion,
    DeviceEvent,
    DeviceKind,
    DeviceStatus,
    Diverted,
    EventSink,
    ScanRead,
)
from controller.site import Site


class FakeDevice:
    """What every fake shares: status, dedupe on command ids, scripted behaviour."""

    protocol = "fake"
    kind: DeviceKind  # set by each role's fake

    def __init__(self, device_id: str, hub: FakeHub) -> None:
        self.device_id = device_id
        self.hub = hub
        self.status = DeviceStatus(device_id, self.kind, online=True, state="idle")
        self.tickets: dict[str, CommandTicket] = {}
        self.executed: Counter[str] = Counter()
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_next: str | None = None  # reason code for the next command
        self.silent = False
        self.short_by = 0  # a pick light picks this many fewer

    def set_status(self, *, online: bool = True, fault: str | None = None) -> None:
        self.status = DeviceStatus(self.device_id, self.kind, online=online, fault=fault,
                                   state="faulted" if fault else "idle")
        self.hub.emit(self.status)

    async def _command(self, command_id: str, action: str, **params: Any) -> CommandTicket:
        self.received.append((command_id, action, params))
        ticket = self.tickets.get(command_id)
        if ticket is None:
            ticket = self.tickets[command_id] = CommandTicket(command_id, self.device_id)
        ticket.mark_sent()
        if self.silent or not self.status.online:
            return ticket
        ticket.ack()
        if self.executed[command_id] == 0:
            self.executed[command_id] += 1
            asyncio.get_running_loop().call_later(self.hub.delay_s, self._complete, ticket, action, params)
        return ticket

    async def reset(self, command_id: str) -> CommandTicket:
        """Clears the fault at once (done {"fault": the code cleared}); a printer's paper, ribbon or
        head needs a person: refused with `operator_required`, the fault stays."""
        self.received.append((command_id, "reset", {}))
        ticket = CommandTicket(command_id, self.device_id)
        ticket.mark_sent()
        fault = self.status.fault
        if fault in NEEDS_PERSON:
            exc = CommandRejected(self.device_id, command_id, Reason.OPERATOR_REQUIRED)
            ticket.acked.set_exception(exc)
            ticket.acked.exception()
            ticket.finish(Completion(command_id, False, time.time(), reason=Reason.OPERATOR_REQUIRED))
            return ticket
        if fault is not None:
            self.set_status(online=self.status.online)
        ticket.finish(Completion(command_id, True, time.time(), result={"fault": fault}))
        return ticket

    def _complete(self, ticket: CommandTicket, action: str, params: dict[str, Any]) -> None:
        if self.fail_next:
            reason, self.fail_next = self.fail_next, None
            ticket.finish(Completion(ticket.command_id, False, time.time(), reason=reason))
            return
        result: dict[str, Any] = {}
        if action == "show":
            picked = max(0, params["qty"] - self.short_by)
            result = {"picked": picked, "short": picked < params["qty"]}
        if action == "induct":
            self.hub.scan(self, ticket, params["tote_id"])
            return
        ticket.finish(Completion(ticket.command_id, True, time.time(), result=result))


class FakePickLight(FakeDevice):
    kind = DeviceKind.PICK_LIGHT

    async def show(self, command_id: str, location: str, qty: int, colour: str = "green") -> CommandTicket:
        return await self._command(command_id, "show", location=location, qty=qty)

    async def clear(self, command_id: str) -> CommandTicket:
        return await self._command(command_id, "clear")


class FakePrinter(FakeDevice):
    kind = DeviceKind.PRINTER

    async def print_label(self, command_id: str, zpl: str) -> CommandTicket:
        return await self._command(command_id, "print", zpl=zpl)

    async def cancel_queued(self, command_id: str) -> CommandTicket:
        """Every `print` not finished (held while silent or offline, or still to come out) fails
        `cancelled`; done {"cancelled": n}."""
        self.received.append((command_id, "cancel", {}))
        now = time.time()
        cancelled = [t for t in self.tickets.values() if not t.done.done()]
        for held in cancelled:
            held.finish(Completion(held.command_id, False, now, reason=Reason.CANCELLED))
        ticket = CommandTicket(command_id, self.device_id)
        ticket.mark_sent()
        ticket.finish(Completion(command_id, True, now, result={"cancelled": len(cancelled)}))
        return ticket


class FakePackStation(FakeDevice):
    kind = DeviceKind.PACK_STATION

    async def pack(self, command_id: str, order_id: str, tote_id: str, items: int) -> CommandTicket:
        return await self._command(command_id, "pack", order_id=order_id, tote_id=tote_id)


class FakeConveyor(FakeDevice):
    kind = DeviceKind.CONVEYOR

    async def transport(self, command_id: str, tote_id: str, destination: str) -> CommandTicket:
        return await self._command(command_id, "transport", tote_id=tote_id, destination=destination)


class FakeSorter(FakeDevice):
    kind = DeviceKind.SORTER

    async def induct(self, command_id: str, tote_id: str) -> CommandTicket:
        return await self._command(command_id, "induct", tote_id=tote_id)

    async def divert(self, command_id: str, scan_id: str, lane: str) -> CommandTicket:
        ticket = CommandTicket(command_id, self.device_id)
        ticket.mark_sent()
        ticket.ack()
        self.hub.divert(self, ticket, scan_id, lane)
        return ticket


FAKES: dict[DeviceKind, type[FakeDevice]] = {
    cls.kind: cls for cls in (FakePickLight, FakePrinter, FakePackStation, FakeConveyor, FakeSorter)
}


class FakeHub:
    """All devices of a site as fakes. `delay_s` is every device's working time."""

    def __init__(self, site: Site, *, delay_s: float = 0.001) -> None:
        self.site = site
        self.delay_s = delay_s
        self.sink: EventSink | None = None
        self.name = "fake"
        self.counters: Counter[str] = Counter()
        self.connected = True
        self.by_id: dict[str, FakeDevice] = {}
        for kind, items in ((DeviceKind.PICK_LIGHT, site.pick_lights), (DeviceKind.PRINTER, site.printers),
                            (DeviceKind.PACK_STATION, site.pack_stations), (DeviceKind.CONVEYOR,
                                                                            site.conveyors),
                            (DeviceKind.SORTER, site.sorters)):
            for item in items:
                self.by_id[item.id] = FAKES[kind](item.id, self)
        self._scans = itertools.count(1)
        self._pending: dict[str, tuple[CommandTicket, str]] = {}  # scan id -> induct ticket, tote
        self.no_read_next = 0

    async def start(self, sink: EventSink) -> None:
        self.sink = sink

    async def stop(self) -> None:
        self.sink = None

    def devices(self) -> list[FakeDevice]:
        return list(self.by_id.values())

    def emit(self, event: DeviceEvent) -> None:
        if self.sink is not None:
            self.sink(event)

    def scan(self, sorter: FakeSorter, induct: CommandTicket, tote: str) -> None:
        scan_id = f"s{next(self._scans)}"
        self._pending[scan_id] = (induct, tote)
        point = next(s.scan_point for s in self.site.sorters if s.id == sorter.device_id)
        barcode: str | None = tote
        if self.no_read_next:
            self.no_read_next -= 1
            barcode = None
            asyncio.get_running_loop().call_later(self.delay_s, self._recirculate, sorter, scan_id)
        self.emit(ScanRead(point, scan_id, barcode, time.time()))

    def _recirculate(self, sorter: FakeSorter, scan_id: str) -> None:
        induct, tote = self._pending.pop(scan_id)
        self.emit(Diverted(sorter.device_id, scan_id, tote, None, time.time()))
        self.scan(sorter, induct, tote)

    def divert(self, sorter: FakeSorter, ticket: CommandTicket, scan_id: str, lane: str) -> None:
        induct, tote = self._pending.pop(scan_id)
        now = time.time()
        self.emit(Diverted(sorter.device_id, scan_id, tote, lane, now))
        ticket.finish(Completion(ticket.command_id, True, now, result={"lane": lane}))
        induct.finish(Completion(induct.command_id, True, now, result={"lane": lane}))


def same_ticket(a: CommandTicket, b: CommandTicket) -> bool:
    """Two tickets of one finished command say the same: a book keeps a finished command flat and
    hands back a ticket rebuilt from it (adapters/tickets.py), not the object it first handed out."""
    return ((a.command_id, a.device_id, a.sent_at, a.sends) == (b.command_id, b.device_id, b.sent_at, b.sends)
            and a.acked.done() and b.acked.done() and a.acked.result() == b.acked.result()
            and a.done.done() and b.done.done() and a.done.result() == b.done.result())
