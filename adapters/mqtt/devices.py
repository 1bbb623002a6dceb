"""The controller's view of each MQTT device: command methods that return tickets, the device's last
known status (kept by the hub), and the ack / done messages that resolve its tickets."""

from __future__ import annotations

import time
from typing import Any, Protocol

from adapters.mqtt.results import check_result
from adapters.tickets import Entry, TicketBook
from controller.contract.mqtt import Action, Topics, WireError, object_field, text_field
from controller.ports import CommandRejected, CommandTicket, Completion, DeviceKind, DeviceStatus

__all__ = ["DEVICE_CLASSES", "FINISHED_MEMORY", "CommandChannel", "CommandRejected", "MqttDevice",
           "MqttPackStation", "MqttPickLight", "MqttPrinter"]

FINISHED_MEMORY = 128  # finished tickets kept per device, so retries and late duplicates are recognised
# (a ticket with its futures is about 1 kB: 1,024 of them on each of 240 pick lights was 250 MB)

Command = tuple[str, dict[str, Any]]  # action, params: what goes on the wire again for a retry


class CommandChannel(Protocol):
    """What a device proxy needs from its hub: the topic layout and a way to put a command on the wire."""

    topics: Topics

    def send_command(self, device: MqttDevice, ticket: CommandTicket, action: str,
                     params: dict[str, Any]) -> None: ...


class MqttDevice:
    kind: DeviceKind  # set by each subclass
    protocol = "mqtt"

    def __init__(self, hub: CommandChannel, device_id: str) -> None:
        self.device_id = device_id
        self._hub = hub
        self.command_topic = hub.topics.device(self.kind, device_id, "cmd")
        self.tickets: TicketBook[Command] = TicketBook(device_id, FINISHED_MEMORY)
        self._status = DeviceStatus(device_id, self.kind, online=False)
        self._owed: set[str] = set()  # ids sent before the controller last lost sight of the device

    @property
    def status(self) -> DeviceStatus:
        return self._status

    def update_status(self, status: DeviceStatus) -> None:
        """The hub's latest word on this device (its retained state, an alert, the broker link)."""
        self._status = status

    def lost_sight(self) -> None:
        """The device, or the controller's link, went away: what was already on the wire may be lost
        with a broker that crashed (acked, then gone), so it is owed a second sending."""
        self._owed.update(entry.ticket.command_id for entry in self.tickets.unfinished()
                          if entry.ticket.sent_at is not None)

    def owed(self) -> list[Entry[Command]]:
        """Once the device is back (it said ONLINE live, so it is subscribed again): the commands it
        still owes an answer for that went out before it was lost from sight, oldest first."""
        owed, self._owed = self._owed, set()
        return [entry for entry in self.tickets.unfinished() if entry.ticket.command_id in owed]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device_id}>"

    async def reset(self, command_id: str) -> CommandTicket:
        """Clear a fault the device can clear by itself. Done result: {"fault": the code cleared or
        None}; refused with `operator_required` when the fault needs a person (a printer's paper,
        ribbon or head)."""
        return await self._submit(command_id, Action.RESET, {})

    async def _submit(self, command_id: str, action: str, params: dict[str, Any]) -> CommandTicket:
        ticket, entry = self.tickets.submit(command_id, (action, params))
        if entry is not None:  # new, or in flight: on the wire (again); the device dedupes on the id
            self._hub.send_command(self, ticket, action, params)
        return ticket

    # Called by the hub for messages on this device's ack / done topics. They return the name of a
    # counter to bump when the message was not what the controller expected, else None.
    def on_ack(self, message: dict[str, Any]) -> str | None:
        command_id = text_field(message, "command_id")
        status = message.get("status")
        if status not in ("accepted", "rejected"):
            raise WireError("status must be accepted or rejected")
        ticket = self.tickets.in_flight(command_id)
        if ticket is None:
            return "duplicate_ack" if command_id in self.tickets else "unknown_command"
        if ticket.acked.done():
            return "duplicate_ack"
        now = time.time()
        if status == "accepted":
            self.tickets.accept(command_id, now)
            return None
        reason = message.get("reason")
        self.tickets.reject(command_id, reason if type(reason) is str and reason else "rejected", now)
        return None

    def on_done(self, message: dict[str, Any]) -> str | None:
        command_id = text_field(message, "command_id")
        outcome = message.get("outcome")
        if outcome not in ("done", "failed"):
            raise WireError("outcome must be done or failed")
        result = object_field(message, "result")
        reason = message.get("reason")
        if reason is not None and type(reason) is not str:
            raise WireError("reason must be a string")
        if outcome == "failed" and not reason:
            reason = "failed"
        sent = self.tickets.command(command_id)
        if sent is not None and outcome == "done":
            check_result(*sent, result)  # WireError: counted, the ticket stays open
        if self.tickets.finish(Completion(command_id, ok=outcome == "done", at=time.time(), reason=reason,
                                          result=result)):
            return None
        return "duplicate_done" if command_id in self.tickets else "unknown_command"


class MqttPickLight(MqttDevice):
    kind = DeviceKind.PICK_LIGHT

    async def show(self, command_id: str, location: str, qty: int, colour: str = "green") -> CommandTicket:
        """Light the unit. Done result: {"picked": int, "short": bool}."""
        return await self._submit(command_id, Action.SHOW,
                                  {"location": location, "qty": qty, "colour": colour})

    async def clear(self, command_id: str) -> CommandTicket:
        """Switch the unit off; a pick still shown on it fails with reason `cleared`."""
        return await self._submit(command_id, Action.CLEAR, {})


class MqttPrinter(MqttDevice):
    kind = DeviceKind.PRINTER

    async def print_label(self, command_id: str, zpl: str) -> CommandTicket:
        return await self._submit(command_id, Action.PRINT, {"zpl": zpl})

    async def host_status(self, command_id: str) -> CommandTicket:
        """Zebra ~HS: done result carries the printer's flags. A faulted printer does not answer."""
        return await self._submit(command_id, Action.HOST_STATUS, {})

    async def cancel_queued(self, command_id: str) -> CommandTicket:
        """Zebra ~JA: drop every label not printing right now (a faulted printer's held one too);
        their `print`s fail `cancelled`. Done result: {"cancelled": n}."""
        return await self._submit(command_id, Action.CANCEL, {})


class MqttPackStation(MqttDevice):
    kind = DeviceKind.PACK_STATION

    async def pack(self, command_id: str, order_id: str, tote_id: str, items: int) -> CommandTicket:
        return await self._submit(command_id, Action.PACK,
                                  {"order_id": order_id, "tote_id": tote_id, "items": items})


DEVICE_CLASSES: dict[str, type[MqttDevice]] = {
    cls.kind: cls for cls in (MqttPickLight, MqttPrinter, MqttPackStation)
}
