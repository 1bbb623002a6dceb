"""How the controller's MQTT device proxies turn ack / done messages into tickets (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.mqtt.devices import FINISHED_MEMORY, CommandRejected, MqttDevice, MqttPickLight, MqttPrinter
from adapters.mqtt.wire import Topics, WireError
from controller.ports import CommandTicket

HEADER = {"message_id": 1, "timestamp": "2025-01-01T00:00:00.000Z", "device_id": "x", "version": "1.0"}


class RecordingHub:
    """Stands in for MqttHub: records what would go on the wire."""

    def __init__(self) -> None:
        self.topics = Topics("floorctl/v1")
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    def send_command(self, device: MqttDevice, ticket: CommandTicket, action: str, params: dict[str, Any]) -> None:
        self.sent.append((device.command_topic, ticket.command_id, action, params))
        ticket.mark_sent()


def ack(command_id: str, status: str = "accepted", **extra: Any) -> dict[str, Any]:
    return {"header": HEADER, "command_id": command_id, "status": status, **extra}


def done(command_id: str, outcome: str = "done", **extra: Any) -> dict[str, Any]:
    return {"header": HEADER, "command_id": command_id, "outcome": outcome, "result": {}, **extra}


async def test_ack_then_done_resolve_the_ticket() -> None:
    hub = RecordingHub()
    light = MqttPickLight(hub, "ptl-01")
    ticket = await light.show("c-1", "A-01", 2, "red")
    assert hub.sent == [("floorctl/v1/pick_light/ptl-01/cmd", "c-1", "show",
                         {"location": "A-01", "qty": 2, "colour": "red"})]
    assert light.on_ack(ack("c-1")) is None and ticket.acked.done() and not ticket.done.done()
    assert light.on_done(done("c-1", result={"picked": 2, "short": False})) is None
    completion = ticket.done.result()
    assert completion.ok and completion.result == {"picked": 2, "short": False}


async def test_resubmitting_a_pending_id_resends_and_returns_the_same_ticket() -> None:
    hub = RecordingHub()
    printer = MqttPrinter(hub, "prn-1")
    first = await printer.print_label("p-1", "^XA^XZ")
    again = await printer.print_label("p-1", "^XA^XZ")
    assert again is first and first.sends == 2 and len(hub.sent) == 2
    printer.on_done(done("p-1"))
    assert await printer.print_label("p-1", "^XA^XZ") is first
    assert len(hub.sent) == 2  # a finished command is not sent again


async def test_rejection_fails_ack_and_done_with_the_device_reason() -> None:
    printer = MqttPrinter(RecordingHub(), "prn-1")
    ticket = await printer.print_label("p-bad", "nonsense")
    printer.on_ack(ack("p-bad", "rejected", reason="bad_zpl: empty label"))
    with pytest.raises(CommandRejected) as rejected:
        ticket.acked.result()
    assert rejected.value.reason == "bad_zpl: empty label"
    completion = ticket.done.result()
    assert not completion.ok and completion.reason == "bad_zpl: empty label"


async def test_a_done_without_its_ack_still_counts_as_accepted() -> None:
    light = MqttPickLight(RecordingHub(), "ptl-01")
    ticket = await light.clear("c-clear")
    light.on_done(done("c-clear", "failed"))
    assert ticket.acked.done() and ticket.done.result().reason == "failed"


async def test_duplicates_and_strangers_are_named_for_the_counters() -> None:
    light = MqttPickLight(RecordingHub(), "ptl-01")
    await light.show("c-1", "A-01", 1)
    assert light.on_ack(ack("c-1")) is None
    assert light.on_ack(ack("c-1")) == "duplicate_ack"
    assert light.on_done(done("c-1")) is None
    assert light.on_done(done("c-1")) == "duplicate_done"
    assert light.on_ack(ack("c-1")) == "duplicate_ack"
    assert light.on_ack(ack("c-unknown")) == "unknown_command"
    assert light.on_done(done("c-unknown")) == "unknown_command"


@pytest.mark.parametrize("message", [
    {"header": HEADER, "status": "accepted"},
    {"header": HEADER, "command_id": "", "status": "accepted"},
    {"header": HEADER, "command_id": "c-1", "status": "maybe"},
])
async def test_malformed_acks_raise_wire_errors(message: dict[str, Any]) -> None:
    light = MqttPickLight(RecordingHub(), "ptl-01")
    ticket = await light.show("c-1", "A-01", 1)
    with pytest.raises(WireError):
        light.on_ack(message)
    assert not ticket.acked.done()


@pytest.mark.parametrize("message", [
    {"header": HEADER, "command_id": "c-1", "outcome": "finished", "result": {}},
    {"header": HEADER, "command_id": "c-1", "outcome": "done", "result": [1]},
    {"header": HEADER, "command_id": "c-1", "outcome": "failed", "reason": 7},
])
async def test_malformed_dones_raise_wire_errors(message: dict[str, Any]) -> None:
    light = MqttPickLight(RecordingHub(), "ptl-01")
    ticket = await light.show("c-1", "A-01", 1)
    with pytest.raises(WireError):
        light.on_done(message)
    assert not ticket.done.done()


async def test_finished_tickets_are_remembered_up_to_a_bound() -> None:
    light = MqttPickLight(RecordingHub(), "ptl-01")
    for n in range(FINISHED_MEMORY + 1):
        await light.clear(f"c-{n}")
        light.on_done(done(f"c-{n}"))
    assert light.on_done(done(f"c-{FINISHED_MEMORY}")) == "duplicate_done"
    assert light.on_done(done("c-0")) == "unknown_command"  # forgotten: the oldest went first
