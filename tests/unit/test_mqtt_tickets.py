"""How the controller's MQTT device proxies turn ack / done messages into tickets (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.mqtt.devices import (
    FINISHED_MEMORY,
    CommandRejected,
    MqttDevice,
    MqttPackStation,
    MqttPickLight,
    MqttPrinter,
)
from controller.contract.mqtt import Topics, WireError
from controller.ports import CommandTicket
from tests.fakes import same_ticket

PICKED_ONE = {"picked": 1, "short": False}
HEADER = {"message_id": 1, "timestamp": "2025-01-01T00:00:00.000Z", "device_id": "x", "version": "1.0"}


class RecordingHub:
    """Stands in for MqttHub: records what would go on the wire."""

    def __init__(self) -> None:
        self.topics = Topics("floorctl/v1")
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    def send_command(self, device: MqttDevice, ticket: CommandTicket, action: str,
                     params: dict[str, Any]) -> None:
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
    printer.on_done(done("p-1", result={"labels_remaining": 99}))
    assert same_ticket(await printer.print_label("p-1", "^XA^XZ"), first)
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


async def test_a_rejected_id_submitted_again_is_a_fresh_command_on_the_wire() -> None:
    hub = RecordingHub()
    light = MqttPickLight(hub, "ptl-01")
    refused = await light.show("c-1", "A-01", 1)
    assert light.on_ack(ack("c-1", "rejected", reason="display_fault")) is None
    assert refused.done.result().reason == "display_fault"
    retried = await light.show("c-1", "A-01", 1)  # the fault has cleared: the same id again
    assert retried is not refused and len(hub.sent) == 2 and retried.sends == 1
    assert light.on_ack(ack("c-1")) is None and light.on_done(done("c-1", result=PICKED_ONE)) is None
    assert retried.done.result().ok


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
    assert light.on_done(done("c-1", result=PICKED_ONE)) is None
    assert light.on_done(done("c-1", result=PICKED_ONE)) == "duplicate_done"
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


@pytest.mark.parametrize("picked", ["2", None, [2], 1.5, True, 3, -1, 2.0],
                         ids=["string", "null", "list", "1.5", "true", "above-qty", "negative", "2.0"])
async def test_a_done_whose_picked_is_not_a_count_up_to_the_qty_is_malformed_and_leaves_the_pick_open(
        picked: Any) -> None:
    light = MqttPickLight(RecordingHub(), "ptl-01")
    ticket = await light.show("c-1", "A-01", 2)
    with pytest.raises(WireError):
        light.on_done(done("c-1", result={"picked": picked, "short": False}))
    assert not ticket.done.done()
    assert light.on_done(done("c-1", result={"picked": 0, "short": True})) is None  # answered properly
    assert ticket.done.result().result["picked"] == 0


@pytest.mark.parametrize(("action", "result"), [
    ("print", {}), ("print", {"labels_remaining": -1}), ("print", {"labels_remaining": "9"}),
    ("pack", {"order_id": "o-1", "tote_id": "t-other", "items": 1}),
    ("pack", {"order_id": "o-1", "tote_id": "t-1", "items": 1.0}),
    ("pack", {"order_id": "o-1", "tote_id": "t-1", "items": True}),
    ("cancel", {"cancelled": None}), ("reset", {}), ("reset", {"fault": 5}),
    ("host_status", {"paper_out": 0, "ribbon_out": False, "head_open": False, "paused": False,
                     "labels_remaining": 1, "buffer_full": False}),
    ("show", {"picked": 1}),  # no `short`
])
async def test_results_of_the_wrong_shape_are_malformed_per_action(action: str,
                                                                  result: dict[str, Any]) -> None:
    hub = RecordingHub()
    printer, station, light = MqttPrinter(hub, "prn-1"), MqttPackStation(hub, "PS-1"), MqttPickLight(hub, "p")
    tickets = {"print": (printer, await printer.print_label("print", "^XA^XZ")),
               "cancel": (printer, await printer.cancel_queued("cancel")),
               "host_status": (printer, await printer.host_status("host_status")),
               "pack": (station, await station.pack("pack", "o-1", "t-1", 1)),
               "reset": (station, await station.reset("reset")),
               "show": (light, await light.show("show", "A-01", 1))}
    device, ticket = tickets[action]
    with pytest.raises(WireError):
        device.on_done(done(action, result=result))
    assert not ticket.done.done()


async def test_results_of_the_right_shape_finish_their_tickets() -> None:
    hub = RecordingHub()
    printer, station = MqttPrinter(hub, "prn-1"), MqttPackStation(hub, "PS-1")
    cancel, reset = await printer.cancel_queued("x-1"), await station.reset("r-1")
    pack = await station.pack("k-1", "o-1", "t-1", 3)
    assert hub.sent[0][2:] == ("cancel", {}) and hub.sent[1][2:] == ("reset", {})
    assert printer.on_done(done("x-1", result={"cancelled": 2})) is None
    assert station.on_done(done("r-1", result={"fault": "scale_error"})) is None
    assert station.on_done(done("k-1", result={"order_id": "o-1", "tote_id": "t-1", "items": 3})) is None
    assert cancel.done.result().ok and reset.done.result().ok and pack.done.result().ok
    failed = await printer.print_label("p-1", "^XA^XZ")
    assert printer.on_done(done("p-1", "failed", reason="cancelled")) is None  # a failure's result: {}
    assert failed.done.result().reason == "cancelled"


async def test_what_was_on_the_wire_when_the_device_was_lost_from_sight_is_owed_once() -> None:
    hub = RecordingHub()
    light = MqttPickLight(hub, "ptl-01")
    lost = await light.show("c-1", "A-01", 1)
    finished = await light.clear("c-2")
    light.on_done(done("c-2"))
    light.lost_sight()
    await light.show("c-3", "A-01", 1)  # sent while away: the broker queues it, nothing is owed
    assert [entry.ticket for entry in light.owed()] == [lost]
    assert light.owed() == [] and finished.done.done()
