"""The controller's view of each MQTT device: command methods that return tickets, and the
bookkeeping that turns the device's ack / done messages into resolved tickets."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

from adapters.mqtt.wire import Topics, WireError, object_field, text_field
from controller.ports import CommandRejected, CommandTicket, Completion, DeviceKind, DeviceStatus

FINISHED_MEMORY = 128  # finished tickets kept per device, so retries and late duplicates are recognised
# (a ticket with its futures is about 1 kB: 1,024 of them on each of 240 pick lights was 250 MB)


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
        self._pending: dict[str, CommandTicket] = {}
        self._finished: OrderedDict[str, CommandTicket] = OrderedDict()
        self._status = DeviceStatus(device_id, self.kind, online=False)

    @property
    def status(self) -> DeviceStatus:
        return self._status

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device_id}>"

    async def _submit(self, command_id: str, action: str, params: dict[str, Any]) -> CommandTicket:
        ticket = self._pending.get(command_id)
        if ticket is None:
            finished = self._finished.get(command_id)
            if finished is not None:
                return finished  # the device already answered; its dedupe would only repeat that answer
            ticket = self._pending[command_id] = CommandTicket(command_id, self.device_id)
        self._hub.send_command(self, ticket, action, params)
        return ticket

    # Called by the hub for messages on this device's ack / done topics. They return the name of a
    # counter to bump when the message was not what the controller expected, else None.
    def on_ack(self, message: dict[str, Any]) -> str | None:
        command_id = text_field(message, "command_id")
        status = message.get("status")
        if status not in ("accepted", "rejected"):
            raise WireError("status must be accepted or rejected")
        ticket = self._pending.get(command_id)
        if ticket is None:
            return "duplicate_ack" if command_id in self._finished else "unknown_command"
        if ticket.acked.done():
            return "duplicate_ack"
        now = time.time()
        if status == "accepted":
            ticket.ack(now)
            return None
        reason = message.get("reason")
        reason = reason if type(reason) is str and reason else "rejected"
        ticket.acked.set_exception(CommandRejected(self.device_id, command_id, reason))
        ticket.acked.exception()  # the engine may await only `done`; do not warn about an unread exception
        self._close(ticket, Completion(command_id, ok=False, at=now, reason=reason))
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
        ticket = self._pending.get(command_id)
        if ticket is None:
            return "duplicate_done" if command_id in self._finished else "unknown_command"
        if outcome == "failed" and not reason:
            reason = "failed"
        self._close(ticket, Completion(command_id, ok=outcome == "done", at=time.time(), reason=reason,
                                       result=result))
        return None

    def _close(self, ticket: CommandTicket, completion: Completion) -> None:
        ticket.finish(completion)
        del self._pending[ticket.command_id]
        self._finished[ticket.command_id] = ticket
        if len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)


class MqttPickLight(MqttDevice):
    kind = DeviceKind.PICK_LIGHT

    async def show(self, command_id: str, location: str, qty: int, colour: str = "green") -> CommandTicket:
        """Light the unit. Done result: {"picked": int, "short": bool}."""
        return await self._submit(command_id, "show", {"location": location, "qty": qty, "colour": colour})

    async def clear(self, command_id: str) -> CommandTicket:
        """Switch the unit off; a pick still shown on it fails with reason `cleared`."""
        return await self._submit(command_id, "clear", {})


class MqttPrinter(MqttDevice):
    kind = DeviceKind.PRINTER

    async def print_label(self, command_id: str, zpl: str) -> CommandTicket:
        return await self._submit(command_id, "print", {"zpl": zpl})

    async def host_status(self, command_id: str) -> CommandTicket:
        """Zebra ~HS: done result carries the printer's flags. A faulted printer does not answer."""
        return await self._submit(command_id, "host_status", {})


class MqttPackStation(MqttDevice):
    kind = DeviceKind.PACK_STATION

    async def pack(self, command_id: str, order_id: str, tote_id: str, items: int) -> CommandTicket:
        return await self._submit(command_id, "pack", {"order_id": order_id, "tote_id": tote_id, "items": items})


DEVICE_CLASSES: dict[str, type[MqttDevice]] = {
    cls.kind: cls for cls in (MqttPickLight, MqttPrinter, MqttPackStation)
}
