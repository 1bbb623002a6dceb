"""docs/devices.md says what a device maker implements; these tests hold the simulators and the
controller to the rules that text adds: the ZPL a printer must accept, `host_status` never waiting in
the queue, the orderly OFFLINE state, InjectFault's answers, the integer types of an index-valued
State, and a sorter honouring the target of a tote's last pass."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary, variant_to_binary

from adapters.mqtt.hub import MqttHub
from adapters.opcua import decode
from controller.domain.label import shipping_label
from controller.site import Site
from simulators.clock import SimClock
from simulators.mqtt.device import FloorContext, SimulatedDevice
from simulators.mqtt.pack_station import SimPackStation
from simulators.mqtt.pick_light import SimPickLight
from simulators.mqtt.printer import BUFFER_LABELS, SimPrinter
from simulators.mqtt.zpl import KNOWN_COMMANDS, ZplError, parse_label
from simulators.plc.server import PlcSimulator
from simulators.plc.sorter import SimSorter
from tests.conftest import eventually

DEVICES_MD = Path(__file__).resolve().parents[2] / "docs" / "devices.md"


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def _codes(text: str) -> set[str]:
    return {code.upper() for code in re.findall(r"`[\^~](A@|A|[A-Z0-9@]{2})", text)}


# ----------------------------------------------------------------------------------- printer: ZPL
def test_the_commands_a_printer_must_accept_are_exactly_those_of_floorctls_label() -> None:
    table = _section(DEVICES_MD.read_text(), "**A printer must accept**", "**A printer may accept")
    documented = {row.split("|")[1].strip() for row in table.splitlines() if row.startswith("| `")}
    documented_codes = _codes(" ".join(documented))
    label = parse_label(shipping_label(order_id=7, external_id="A-1001", carrier="DHL", tote="T00000007",
                                       lane="lane-1", items=3))
    assert documented_codes == set(label.commands)
    assert documented_codes <= KNOWN_COMMANDS  # and the simulated printer accepts every one


def test_the_commands_the_simulator_may_accept_are_listed_completely() -> None:
    text = _section(DEVICES_MD.read_text(), "**A printer may accept", "**A printer must refuse")
    must = _codes(_section(DEVICES_MD.read_text(), "**A printer must accept**", "**A printer may accept"))
    assert _codes(text) | must == KNOWN_COMMANDS


def test_a_host_command_inside_a_label_is_refused() -> None:
    with pytest.raises(ZplError, match=r"unknown command ~HS"):
        parse_label("^XA^FO1,1^FDx^FS~HS^XZ")


# --------------------------------------------------------------------- MQTT devices, without a broker
class Wire:
    """What a simulated device publishes, caught before its (never connected) link."""

    def __init__(self, device: SimulatedDevice) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        device._publish = lambda channel, body: self.sent.append((str(channel), body))  # type: ignore[method-assign]

    def of(self, channel: str, command_id: str) -> list[dict[str, Any]]:
        return [body for ch, body in self.sent if ch == channel and body.get("command_id") == command_id]


def _context(site: Site) -> FloorContext:
    return FloorContext(site, "mqtt://127.0.0.1:1", 1.0, 1, Counter())


def _command(command_id: str, action: str, **params: Any) -> bytes:
    return json.dumps({"header": {"message_id": 1}, "command_id": command_id, "action": action,
                       "params": params}).encode()


LABEL = "^XA^FO10,10^FDx^FS^XZ"


async def test_host_status_is_answered_at_once_past_the_labels_queued_and_a_full_buffer(
        demo_site: Site) -> None:
    printer = SimPrinter(demo_site.printers[0].id, _context(demo_site), media_labels=500, print_s=3600.0)
    wire = Wire(printer)
    try:
        for n in range(BUFFER_LABELS):
            printer._on_command(_command(f"p{n}", "print", zpl=LABEL))
        printer._on_command(_command("p-over", "print", zpl=LABEL))
        assert wire.of("ack", "p-over")[0]["reason"] == "buffer_full"
        printer._on_command(_command("hs", "host_status"))
        assert wire.of("ack", "hs") == [{"command_id": "hs", "status": "accepted"}]
        (done,) = wire.of("done", "hs")
        assert done["outcome"] == "done" and done["result"]["buffer_full"] is True
        assert done["result"]["labels_remaining"] == 500  # nothing printed yet: the labels still wait
        assert not wire.of("done", "p0")
    finally:
        printer._cancel_work()


async def test_the_orderly_offline_state_carries_the_state_the_device_stops_in(demo_site: Site) -> None:
    light_id = demo_site.pick_lights[0].id
    light = SimPickLight(light_id, _context(demo_site), demo_site.simulation.operator)
    Wire(light)
    hub = MqttHub(demo_site)
    try:
        light._on_command(_command("pick-1", "show", location="A-01", qty=2))
        farewell = json.loads(light._state_payload("OFFLINE"))  # type: ignore[arg-type]
        assert (farewell["connection"], farewell["state"], farewell["fault"]) == ("OFFLINE", "busy", None)
        assert farewell["display"] == {"location": "A-01", "qty": 2, "colour": "green"}
        hub._on_message(f"{demo_site.broker.topic_root}/pick_light/{light_id}/state",
                        json.dumps(farewell).encode(), True)
        status = hub.device(light_id).status
        assert (status.online, status.state) == (False, "busy")
        assert not hub.counters["malformed_payload"]
    finally:
        light._cancel_work()


# ------------------------------------------------------------------------------------ OPC UA devices
def test_inject_fault_jam_alone_an_unknown_target_and_the_refusals(demo_site: Site) -> None:
    plc = PlcSimulator(demo_site, "plc-1")  # never started: InjectFault is plain logic
    belt = demo_site.conveyors[0]
    assert plc.inject_fault("no-such-device", "jam") == "rejected:unknown_target"
    assert plc.inject_fault("no-such-device", "clear") == "rejected:unknown_target"
    assert plc.inject_fault(belt.id, "smoke") == "rejected:unknown_fault"
    assert plc.inject_fault(belt.id, "jam:no-such-segment") == "rejected:unknown_segment"
    assert plc.inject_fault(belt.id, "jam") == "accepted"
    assert plc.conveyor(belt.id).fault == f"jam:{belt.segments[0].id}"  # the first segment
    assert plc.inject_fault(belt.id, "clear") == "accepted" and plc.conveyor(belt.id).fault == ""
    assert plc.inject_fault(demo_site.sorters[0].id, "jam:") == "accepted"
    assert plc.sorter(demo_site.sorters[0].id).fault == "jam:loop"
    assert plc.inject_fault("no-such-device", "estop") == "accepted"  # Target ignored
    assert plc.conveyor(belt.id).fault == "estop"


INTEGER_TYPES = ["SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64"]


@pytest.mark.parametrize("variant_type", INTEGER_TYPES)
def test_an_index_valued_state_is_accepted_in_every_integer_type(variant_type: str) -> None:
    for index, name in enumerate(["NotAvailable", "OutOfService", "NotExecuting", "Executing"]):
        wire = variant_to_binary(ua.Variant(index, getattr(ua.VariantType, variant_type)))
        value = variant_from_binary(Buffer(wire)).Value  # as the client's subscription hands it over
        assert decode.machinery_state(value) == name
        assert decode.operation_mode(value) == ["None", "Maintenance", "Setup", "Processing"][index]


@pytest.mark.parametrize("variant",
                         [ua.Variant(True, ua.VariantType.Boolean), ua.Variant(3.0, ua.VariantType.Float),
                                     ua.Variant(3.0, ua.VariantType.Double), ua.Variant(4,
                                                                                        ua.VariantType.Int32),
                                     ua.Variant(-1, ua.VariantType.Int32)])
def test_other_state_values_are_refused(variant: ua.Variant) -> None:
    assert decode.machinery_state(variant_from_binary(Buffer(variant_to_binary(variant))).Value) is None


async def test_a_sorter_honours_the_target_of_a_totes_last_pass_whatever_the_lane(demo_site: Site) -> None:
    spec = demo_site.sorters[0]
    scans: list[str] = []
    answers: list[str] = []
    finished: list[Any] = []

    def report(event: Any) -> None:
        kind = type(event).__name__
        if kind == "Scanned":
            scans.append(event.scan_id)
            if len(scans) == spec.max_recirculations + 1:  # the last pass: answer at once
                answers.append(loop.divert("d-last", event.scan_id, spec.lanes[1]))
        elif kind == "Completed":
            finished.append(event)

    loop = SimSorter(spec, SimClock(200.0, 1), report, no_read_rate=0.0,
                     next_scan_id=lambda: f"s{len(scans) + 1}")
    loop.changed()
    assert loop.induct("i1", "TOTE-1") == "accepted"
    await eventually(lambda: bool(finished), timeout=5)
    (done,) = finished
    assert answers == ["accepted"] and len(scans) == spec.max_recirculations + 1
    assert (done.ok, done.destination, done.reason) == (True, spec.lanes[1], "")


# ------------------------------------------------------------------ reset and cancel (devices.md)
async def test_reset_clears_a_pick_lights_fault_and_names_it_and_a_healthy_unit_just_answers(
        demo_site: Site) -> None:
    light = SimPickLight(demo_site.pick_lights[0].id, _context(demo_site), demo_site.simulation.operator)
    wire = Wire(light)
    light.inject("lamp_broken")
    light._on_command(_command("pick-1", "show", location="A-01", qty=1))
    assert wire.of("ack", "pick-1")[0]["reason"] == "lamp_broken"
    light._on_command(_command("reset-1", "reset"))
    assert wire.of("ack", "reset-1") == [{"command_id": "reset-1", "status": "accepted"}]
    assert wire.of("done", "reset-1")[0]["result"] == {"fault": "lamp_broken"}
    assert light.fault is None and light.state == "idle"
    light._on_command(_command("reset-2", "reset"))
    assert wire.of("done", "reset-2")[0]["result"] == {"fault": None}
    light._on_command(_command("reset-1", "reset"))  # a repeat: answered again, not executed again
    assert len(wire.of("done", "reset-1")) == 2 and light.executions["reset-1"] == 1


async def test_a_printers_faults_need_a_person_and_its_reset_is_refused_though_it_is_silent(
        demo_site: Site) -> None:
    printer = SimPrinter(demo_site.printers[0].id, _context(demo_site), media_labels=500, print_s=3600.0)
    wire = Wire(printer)
    printer.inject("head_open")
    printer._on_command(_command("hs", "host_status"))
    assert wire.of("ack", "hs") == []  # silent
    printer._on_command(_command("reset-1", "reset"))
    assert wire.of("ack", "reset-1") == [{"command_id": "reset-1", "status": "rejected",
                                          "reason": "operator_required"}]
    assert printer.fault == "head_open" and not wire.of("done", "reset-1")


async def test_cancel_drops_the_held_and_queued_labels_of_a_faulted_printer(demo_site: Site) -> None:
    printer = SimPrinter(demo_site.printers[0].id, _context(demo_site), media_labels=500, print_s=3600.0)
    wire = Wire(printer)
    try:
        for n in range(3):
            printer._on_command(_command(f"p{n}", "print", zpl=LABEL))
        printer.inject("paper_out")  # p0 is held under the head, p1 and p2 wait
        printer._on_command(_command("cancel-1", "cancel"))
        assert wire.of("ack", "cancel-1") == [{"command_id": "cancel-1", "status": "accepted"}]
        dones = [body for channel, body in wire.sent if channel == "done"]
        assert [(d["command_id"], d["outcome"], d.get("reason")) for d in dones] == [
            ("p0", "failed", "cancelled"), ("p1", "failed", "cancelled"), ("p2", "failed", "cancelled"),
            ("cancel-1", "done", None)]
        assert dones[-1]["result"] == {"cancelled": 3}
        printer.clear()
        assert not printer.busy  # nothing cancelled comes out after the fault
        printer._on_command(_command("p1", "print", zpl=LABEL))  # finished: answered again, not printed
        assert wire.of("done", "p1")[-1]["reason"] == "cancelled" and not printer.busy
    finally:
        printer._cancel_work()


async def test_cancel_leaves_the_label_being_printed_on_a_healthy_printer(demo_site: Site) -> None:
    printer = SimPrinter(demo_site.printers[0].id, _context(demo_site), media_labels=500, print_s=3600.0)
    wire = Wire(printer)
    try:
        printer._on_command(_command("p0", "print", zpl=LABEL))
        printer._on_command(_command("p1", "print", zpl=LABEL))
        printer._on_command(_command("cancel-1", "cancel"))
        assert wire.of("done", "p1")[0]["reason"] == "cancelled" and not wire.of("done", "p0")
        assert wire.of("done", "cancel-1")[0]["result"] == {"cancelled": 1}
        assert printer.busy  # p0 still printing
    finally:
        printer._cancel_work()


async def test_reset_clears_a_pack_stations_scale_error(demo_site: Site) -> None:
    station = SimPackStation(demo_site.pack_stations[0].id, _context(demo_site), demo_site.simulation.packer)
    wire = Wire(station)
    try:
        station._on_command(_command("k1", "pack", order_id="o-1", tote_id="t-1", items=1))
        station.inject("scale_error")
        assert wire.of("done", "k1")[0]["reason"] == "scale_error"
        station._on_command(_command("reset-1", "reset"))
        assert wire.of("done", "reset-1")[0]["result"] == {"fault": "scale_error"}
        station._on_command(_command("k2", "pack", order_id="o-2", tote_id="t-2", items=1))
        assert wire.of("ack", "k2")[0]["status"] == "accepted"
    finally:
        station._cancel_work()
