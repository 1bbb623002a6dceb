"""Conveyors and sorters behind a PLC, as the engine sees them (controller.ports.Conveyor / Sorter).

A device keeps its last known state and its tickets. Its PLC's session (PlcLink) pushes the link
state, values and events to it (adapters.opcua.session.SessionDevice); the device calls the session
only to put its commands on the wire (MethodCalls). Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from adapters.opcua import decode
from adapters.opcua.session import MethodCalls, MethodRefused
from adapters.tickets import Entry, TicketBook
from controller.contract import opcua as contract
from controller.contract.opcua import ACCEPTED, REJECTED, MachineryItemState, MachineryOperationMode, NodeMap
from controller.contract.reasons import Reason
from controller.ports import (
    CommandTicket,
    Completion,
    DeviceKind,
    DeviceStatus,
    DeviceUnavailable,
    Diverted,
    EventSink,
    ScanRead,
)

log = logging.getLogger(__name__)

FINISHED_MEMORY = 2048  # finished tickets kept per device: a late re-submit gets its ticket back

Call = tuple[str, tuple[str, ...]]  # the method and its arguments (CommandId first)
RESET = "Reset"  # the PLC's method (the node map's PLC signal), no arguments, no command id


class PlcDevice:
    protocol = "opcua"

    def __init__(self, node_map: NodeMap, plc_id: str, calls: MethodCalls, counters: Counter[str]) -> None:
        assert node_map.kind is not None
        self.device_id = node_map.device_id
        self.kind: DeviceKind = node_map.kind
        self.node_map = node_map
        self.plc_id = plc_id
        self.tickets: TicketBook[Call] = TicketBook(self.device_id, FINISHED_MEMORY)
        self._calls = calls
        self._counters = counters
        self._online = False
        self._state: MachineryItemState | None = None
        self._mode: MachineryOperationMode | None = None
        self._fault = ""
        self._estop = False
        self._status = DeviceStatus(self.device_id, self.kind, online=False)

    @property
    def status(self) -> DeviceStatus:
        return self._status

    def _bad(self, what: str, detail: object) -> None:
        """Count and log something off-contract from the PLC; the caller then ignores it."""
        self._counters[what] += 1
        log.warning("%s: %s: %r", self.device_id, what, detail)

    # --- state ---------------------------------------------------------------------------------
    def _refresh(self) -> DeviceStatus | None:
        """The new status if anything the engine sees has changed, else None."""
        online = self._online
        status = DeviceStatus(
            self.device_id, self.kind, online=online,
            state=self._state.value if online and self._state else "unknown",
            fault=(self._fault or None) if online else None,
            detail={"plc": self.plc_id, "mode": self._mode.value if self._mode else None,
                    "estop": self._estop} if online else {"plc": self.plc_id},
        )
        old = self._status
        if (status.online, status.state, status.fault, status.detail) == (
                old.online, old.state, old.fault, old.detail):
            return None
        self._status = status
        return status

    def link_changed(self, online: bool) -> DeviceStatus | None:
        self._online = online
        return self._refresh()

    def value_changed(self, signal: str, value: Any) -> DeviceStatus | None:
        if signal == "State":
            if (state := decode.machinery_state(value)) is None:
                self._bad("bad_value", (signal, value))
                return None
            self._state = state
        elif signal == "OperationMode":
            if (mode := decode.operation_mode(value)) is None:
                self._bad("bad_value", (signal, value))
                return None
            self._mode = mode
        elif signal == "Fault":
            if (fault := decode.text(value)) is None:
                self._bad("bad_value", (signal, value))
                return None
            self._fault = fault
        elif signal == "EStop":
            if (estop := decode.flag(value)) is None:
                self._bad("bad_value", (signal, value))
                return None
            self._estop = estop
        return self._refresh()

    # --- events from the PLC -----------------------------------------------------------------
    def event(self, kind: contract.EventType, fields: dict[str, Any], sink: EventSink) -> None:
        at = decode.wall_time(fields.get("Time"))
        values = {name: decode.text(fields.get(name)) for name in kind.fields}
        if at is None or any(v is None for v in values.values()):
            self._bad("bad_event", (kind.name, fields))
        elif kind is contract.SCAN_EVENT:
            if not values["ScanId"] or not values["ScanPoint"]:
                self._bad("bad_event", (kind.name, fields))
                return
            sink(ScanRead(values["ScanPoint"], values["ScanId"], values["Barcode"] or None, at))
        elif kind is contract.TRANSPORT_COMPLETED_EVENT:
            self._completed(values, at)
        elif kind is contract.DIVERTED_EVENT:
            self._diverted(values, at, sink)

    def _completed(self, values: dict[str, Any], at: float) -> None:
        outcome = values["Outcome"]
        if outcome not in (contract.Outcome.DONE, contract.Outcome.FAILED) or not values["CommandId"]:
            self._bad("bad_event", values)
            return
        ok = outcome == contract.Outcome.DONE
        completion = Completion(values["CommandId"], ok=ok, at=at,
                                reason=None if ok else values["Reason"] or None,
                                result=self.completion_result(values["ToteId"], values["Destination"]))
        self._finish(completion)

    def _finish(self, completion: Completion) -> None:
        # A finished id's completion comes again when the command was repeated: that one is expected.
        if not self.tickets.finish(completion) and completion.command_id not in self.tickets:
            self._counters["unmatched_completion"] += 1

    def completion_result(self, tote_id: str, destination: str) -> dict[str, Any]:
        return {"tote_id": tote_id, "destination": destination}

    def _diverted(self, values: dict[str, Any], at: float, sink: EventSink) -> None:
        self._bad("bad_event", values)  # only a sorter diverts

    # --- commands ------------------------------------------------------------------------------
    async def command(self, method: str, command_id: str, *args: str) -> CommandTicket:
        ticket = self.tickets.get(command_id)
        if ticket is not None and not self._online:
            return ticket  # finished; or in flight, and it goes out again by itself when the link is back
        if not self._online:
            raise DeviceUnavailable(f"{self.device_id}: PLC {self.plc_id} is not connected")
        ticket, entry = self.tickets.submit(command_id, (method, (command_id, *args)))
        if entry is not None:
            await self._send(entry)
        return ticket

    async def reset(self, command_id: str) -> CommandTicket:
        """Press the PLC's reset button (`Plc.Reset`): it clears the e-stop and every jam of the
        whole PLC, so every conveyor and sorter on it. The call carries no id: the ticket is acked
        and done when the PLC answers `accepted`. A call that may not have reached the PLC fails
        the ticket with `not_delivered` and is never sent again by itself: a reset that lands
        after a reconnect could release an e-stop pressed since it was asked for."""
        ticket = self.tickets.get(command_id)
        if ticket is not None:
            return ticket  # finished, or its call is still out: the same ticket
        if not self._online:
            raise DeviceUnavailable(f"{self.device_id}: PLC {self.plc_id} is not connected")
        ticket, _ = self.tickets.submit(command_id, (RESET, ()))
        ticket.mark_sent()
        try:
            reply = await self._calls.call(self.plc_id, RESET, ())
        except MethodRefused as exc:
            self.tickets.reject(command_id, f"opcua:{exc}")
            return ticket
        except DeviceUnavailable:
            self.tickets.reject(command_id, Reason.NOT_DELIVERED)
            return ticket
        if (reason := self._refusal(reply)) is None:
            self.tickets.finish(Completion(command_id, ok=True, at=time.time(), result={"plc": self.plc_id}))
        else:
            self.tickets.reject(command_id, reason)
        return ticket

    async def send_unfinished(self) -> None:
        """After a (re)connect: after a PLC restart its memory may be empty, and a completion raised
        while the link was down is only heard again this way (the PLC repeats a finished one's).
        A `Reset` still out is not among them (see `reset`)."""
        entries = [entry for entry in self.tickets.unfinished() if entry.command[0] != RESET]
        if entries:
            self._counters["resent"] += len(entries)
            log.info("%s: sending %d unfinished commands again", self.device_id, len(entries))
            await asyncio.gather(*(self._send(entry) for entry in entries))

    async def _send(self, entry: Entry[Call]) -> None:
        """Put a command on the wire and settle its acknowledgement. A call that fails in transit
        leaves the ticket waiting: it goes out again after a reconnect, or when the engine retries."""
        ticket, (method, args) = entry.ticket, entry.command
        ticket.mark_sent()
        try:
            reply = await self._calls.call(self.device_id, method, args)
        except MethodRefused as exc:
            self.tickets.reject(ticket.command_id, f"opcua:{exc}")
            return
        except DeviceUnavailable:
            return
        if (reason := self._refusal(reply)) is None:
            self.tickets.accept(ticket.command_id)
        else:
            self.tickets.reject(ticket.command_id, reason)

    def _refusal(self, reply: Any) -> str | None:
        """None when a method's Status says `accepted`, else the reason to reject its ticket with."""
        status = decode.text(reply)
        if status == ACCEPTED:
            return None
        if status is not None and status.startswith(REJECTED):
            self._counters["rejected"] += 1
            return status.removeprefix(REJECTED) or "unspecified"
        self._bad("bad_reply", reply)
        return "bad_reply"


class OpcUaConveyor(PlcDevice):
    async def transport(self, command_id: str, tote_id: str, destination: str) -> CommandTicket:
        return await self.command("Transport", command_id, tote_id, destination)


class OpcUaSorter(PlcDevice):
    async def induct(self, command_id: str, tote_id: str) -> CommandTicket:
        return await self.command("Induct", command_id, tote_id)

    async def divert(self, command_id: str, scan_id: str, lane: str) -> CommandTicket:
        return await self.command("Divert", command_id, scan_id, lane)

    def completion_result(self, tote_id: str, destination: str) -> dict[str, Any]:
        return {"tote_id": tote_id, "destination": destination, "lane": destination or None}

    def _diverted(self, values: dict[str, Any], at: float, sink: EventSink) -> None:
        if not values["ScanId"]:
            self._bad("bad_event", values)
            return
        lane = values["Lane"] or None
        sink(Diverted(self.device_id, values["ScanId"], values["ToteId"] or None, lane, at))
        if values["CommandId"]:
            self._finish(Completion(values["CommandId"], ok=True, at=at,
                                    result={"lane": lane, "scan_id": values["ScanId"]}))


def make_device(node_map: NodeMap, plc_id: str, calls: MethodCalls, counters: Counter[str]) -> PlcDevice:
    kind = OpcUaConveyor if node_map.kind is DeviceKind.CONVEYOR else OpcUaSorter
    return kind(node_map, plc_id, calls, counters)
