"""Conveyors and sorters behind a PLC, as the engine sees them (controller.ports.Conveyor / Sorter).

A device keeps its last known state, its tickets, and turns the PLC's events into port events. All
I/O goes through its PlcLink; everything here runs on the event loop and never blocks.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from adapters.opcua import contract, decode
from adapters.opcua.contract import ACCEPTED, REJECTED, MachineryItemState, MachineryOperationMode
from adapters.opcua.nodemap import NodeMap
from adapters.opcua.tickets import Entry, TicketBook
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

if TYPE_CHECKING:
    from adapters.opcua.link import PlcLink

log = logging.getLogger(__name__)


class PlcDevice:
    protocol = "opcua"

    def __init__(self, node_map: NodeMap, link: PlcLink, counters: Counter[str]) -> None:
        assert node_map.kind is not None
        self.device_id = node_map.device_id
        self.kind: DeviceKind = node_map.kind
        self.node_map = node_map
        self.tickets = TicketBook(self.device_id)
        self._link = link
        self._counters = counters
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
        online = self._link.online
        status = DeviceStatus(
            self.device_id, self.kind, online=online,
            state=self._state.value if online and self._state else "unknown",
            fault=(self._fault or None) if online else None,
            detail={"plc": self._link.plc.id, "mode": self._mode.value if self._mode else None,
                    "estop": self._estop} if online else {"plc": self._link.plc.id},
        )
        old = self._status
        if (status.online, status.state, status.fault, status.detail) == (old.online, old.state, old.fault, old.detail):
            return None
        self._status = status
        return status

    def link_changed(self) -> DeviceStatus | None:
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
        completion = Completion(values["CommandId"], ok=ok, at=at, reason=None if ok else values["Reason"] or None,
                                result=self.completion_result(values["ToteId"], values["Destination"]))
        if not self.tickets.finish(completion):
            self._counters["unmatched_completion"] += 1

    def completion_result(self, tote_id: str, destination: str) -> dict[str, Any]:
        return {"tote_id": tote_id, "destination": destination}

    def _diverted(self, values: dict[str, Any], at: float, sink: EventSink) -> None:
        self._bad("bad_event", values)  # only a sorter diverts

    # --- commands ------------------------------------------------------------------------------
    async def command(self, method: str, command_id: str, *args: str) -> CommandTicket:
        entry = self.tickets.get(command_id)
        if entry is not None and (entry.ticket.done.done() or not self._link.online):
            return entry.ticket  # finished; or it goes out again by itself when the link is back
        if not self._link.online:
            raise DeviceUnavailable(f"{self.device_id}: PLC {self._link.plc.id} is not connected")
        if entry is None:
            entry = self.tickets.open(command_id, method, (command_id, *args))
        await self._link.send(self, entry)
        return entry.ticket

    def answered(self, entry: Entry, reply: Any) -> None:
        status = decode.text(reply)
        if status == ACCEPTED:
            entry.ticket.ack()
        elif status is not None and status.startswith(REJECTED):
            self._counters["rejected"] += 1
            self.tickets.reject(entry.ticket, status.removeprefix(REJECTED) or "unspecified")
        else:
            self._bad("bad_reply", reply)
            self.tickets.reject(entry.ticket, "bad_reply")


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
        if values["CommandId"] and not self.tickets.finish(Completion(
                values["CommandId"], ok=True, at=at, result={"lane": lane, "scan_id": values["ScanId"]})):
            self._counters["unmatched_completion"] += 1


def make_device(node_map: NodeMap, link: PlcLink, counters: Counter[str]) -> PlcDevice:
    kind = OpcUaConveyor if node_map.kind is DeviceKind.CONVEYOR else OpcUaSorter
    return kind(node_map, link, counters)
