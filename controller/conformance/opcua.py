"""The PLCs' conformance checks (docs/devices.md, OPC UA devices): the contract namespace and version,
every mapped node and its type, the method signatures and answers, the event types and fields, and,
with --allow-motion, a transport to each destination, an induct and a divert, the dedupe of repeated
command ids and the re-raising of finished ones, the e-stop and the reset.

Every check is a small function registered in CHECKS; `plc` checks run once per PLC, the others on
each conveyor or sorter, after their PLC's.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

from asyncua import ua

from adapters.opcua.nodemap import node_id
from controller.conformance.checks import CheckList, Failed, Skipped
from controller.conformance.opcua_probe import Event, PlcProbe
from controller.contract import opcua
from controller.contract.kinds import DeviceKind
from controller.contract.opcua import (
    ACCEPTED,
    REJECTED,
    MachineryItemState,
    MachineryOperationMode,
    NodeMap,
    Role,
    rejected,
)
from controller.contract.reasons import Reason
from controller.site import ConveyorSpec, Site, SorterSpec

PLC = "plc"
CONVEYOR, SORTER = DeviceKind.CONVEYOR, DeviceKind.SORTER
MACHINES = (CONVEYOR, SORTER)
INTEGERS = frozenset({ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
                      ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64,
                      ua.VariantType.UInt64})
TEXT = frozenset({ua.VariantType.String, ua.VariantType.LocalizedText})
NODE_CLASS = {Role.OBJECT: ua.NodeClass.Object, Role.VARIABLE: ua.NodeClass.Variable,
              Role.METHOD: ua.NodeClass.Method}
STRING = node_id(ua.ObjectIds.String)
BASE_EVENT = node_id(ua.ObjectIds.BaseEventType)


@dataclass(frozen=True, slots=True)
class PlcOptions:
    allow_motion: bool = False
    quiet_s: float = 1.0  # how long a PLC must stay quiet to show it raised nothing more


class PlcDevice:
    """A PLC, or one conveyor or sorter on it, as the checks see it."""

    def __init__(self, probe: PlcProbe, site: Site, device_id: str, options: PlcOptions, run_id: str,
                 notes: dict[str, Any]) -> None:
        self.probe = probe
        self.site = site
        self.device_id = device_id
        self.options = options
        self.map: NodeMap = probe.maps[device_id]
        self.kind = self.map.kind or PLC
        machines: list[ConveyorSpec | SorterSpec] = [*site.conveyors, *site.sorters]
        self.spec = next((d for d in machines if d.id == device_id), None)
        self.notes = notes  # what one check leaves for a later one of the same device
        self._ids = itertools.count(1)
        self._run_id = run_id

    def new_id(self, what: str) -> str:
        return f"conformance.{self._run_id}.{self.device_id}.{what}.{next(self._ids)}"

    async def call(self, method: str, *args: Any, device_id: str | None = None) -> Any:
        return await self.probe.call(device_id or self.device_id, method, *args)

    async def expect(self, answer: str, method: str, *args: Any) -> None:
        status = await self.call(method, *args)
        if status != answer:
            shown = ", ".join(repr(a) for a in args)
            raise Failed(f"{method}({shown}) must answer {answer!r}, got {status!r}")

    def object_id(self) -> ua.NodeId:
        return self.probe.node_id(self.map["Object"])

    async def event(self, event_type: opcua.EventType, timeout: float, since: int = 0,
                    **fields: str) -> Event:
        """The next event of `event_type` from this device whose fields equal `fields`."""
        type_id = self.probe.node_id(opcua.event_type_node(event_type))
        source = self.object_id()

        def match(event: Event) -> bool:
            return (event.value("EventType") == type_id and event.value("SourceNode") == source
                    and all(event.value(k) == v for k, v in fields.items()))

        found = await self.probe.wait_event(match, timeout, since)
        if found is None:
            shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
            raise Failed(f"no {event_type.name} ({shown}) from {self.device_id} within {timeout:g} s")
        _raise(check_event(found, event_type), event_type.name)
        return found

    def count(self, event_type: opcua.EventType, since: int = 0, **fields: str) -> int:
        type_id = self.probe.node_id(opcua.event_type_node(event_type))
        return sum(1 for e in self.probe.events[since:] if e.value("EventType") == type_id
                   and e.value("SourceNode") == self.object_id()
                   and all(e.value(k) == v for k, v in fields.items()))

    async def read(self, signal: str) -> ua.DataValue:
        (value,) = await self.probe.client.read_attributes([self.probe.node(self.map[signal])])
        return value


CHECKS: CheckList[PlcDevice] = CheckList()


# --- the PLC ---------------------------------------------------------------------------------------

@CHECKS.add("plc.namespace", kinds=[PLC])
async def plc_namespace(device: PlcDevice) -> str:
    """The server's NamespaceArray holds the contract namespace urn:floorctl:opcua:warehouse."""
    index = device.probe.contract_index
    if index is None:
        raise Failed(f"no {opcua.CONTRACT_NAMESPACE} in the NamespaceArray {device.probe.namespaces}")
    return f"index {index}"


@CHECKS.add("plc.contract_version", kinds=[PLC])
async def plc_contract_version(device: PlcDevice) -> str:
    """Plc.ContractVersion is a String of major version 1."""
    value = await device.read("ContractVersion")
    variant = value.Value
    if not _good(value) or variant is None:
        raise Failed(f"cannot read {device.map['ContractVersion']}: {_status(value)}")
    if variant.VariantType is not ua.VariantType.String:
        raise Failed(f"ContractVersion must be a String, it is a {variant.VariantType.name}")
    if str(variant.Value).split(".")[0] != opcua.CONTRACT_VERSION.split(".")[0]:
        raise Failed(f"ContractVersion is {variant.Value!r}; floorctl speaks {opcua.CONTRACT_VERSION}")
    return f"{variant.Value}"


@CHECKS.add("events.types", kinds=[PLC])
async def event_types(device: PlcDevice) -> str:
    """ScanEventType, TransportCompletedEventType, DivertedEventType: subtypes of BaseEventType, String
    fields."""
    problems = []
    index = device.probe.contract_index
    if index is None:
        raise Failed(f"the server has no namespace {opcua.CONTRACT_NAMESPACE}")
    for event in opcua.EVENT_TYPES:
        node = device.probe.node(opcua.event_type_node(event))
        try:
            if await node.read_node_class() != ua.NodeClass.ObjectType:
                problems.append(f"{event.name} is not an ObjectType")
                continue
        except ua.UaError:
            problems.append(f"no {event.name} at {opcua.event_type_node(event)}")
            continue
        if not await _subtype_of_base_event(node):
            problems.append(f"{event.name} is not a subtype of BaseEventType")
        for name in event.fields:
            try:
                child = await node.get_child(ua.QualifiedName(name, index))
                datatype = await child.read_data_type()
            except ua.UaError:
                problems.append(f"{event.name} has no field {name} in the contract namespace")
                continue
            if datatype != STRING:
                problems.append(f"{event.name}.{name} must be a String, its DataType is "
                                f"{datatype.to_string()}")
    _raise(problems, "event types")
    return "3 event types, " + ", ".join(f"{e.name}({len(e.fields)})" for e in opcua.EVENT_TYPES)


async def _subtype_of_base_event(node: Any) -> bool:
    for _ in range(10):
        parents = await node.get_referenced_nodes(refs=ua.ObjectIds.HasSubtype,
                                                  direction=ua.BrowseDirection.Inverse)
        if not parents:
            return False
        node = parents[0]
        if node.nodeid == BASE_EVENT:
            return True
    return False


@CHECKS.add("plc.inject_fault", kinds=[PLC])
async def plc_inject_fault(device: PlcDevice) -> str:
    """Plc.InjectFault (simulators): refuses an unknown target, an unknown fault and bad arguments."""
    node = device.probe.node(device.map["InjectFault"])
    try:
        await node.read_node_class()
    except ua.UaError:
        raise Skipped("the PLC has no Plc.InjectFault (simulators only)") from None
    await device.expect(rejected(Reason.UNKNOWN_TARGET), "InjectFault", "conformance-nothing", "jam")
    machine = next((m for m in device.probe.maps.values() if m.kind is not None), None)
    if machine is not None:
        await device.expect(rejected(Reason.UNKNOWN_FAULT), "InjectFault", machine.device_id, "conformance")
        await device.expect(rejected(Reason.UNKNOWN_SEGMENT), "InjectFault", machine.device_id,
                            "jam:conformance-nowhere")
    await device.expect(rejected(Reason.BAD_ARGUMENTS), "InjectFault", ua.Variant(1, ua.VariantType.Int32),
                        "jam")
    return "rejected:unknown_target, unknown_fault, unknown_segment, bad_arguments"


@CHECKS.add("plc.estop_and_reset", kinds=[PLC], motion=True)
async def plc_estop_and_reset(device: PlcDevice) -> str:
    """E-stop (by InjectFault): every device OutOfService, Fault estop, EStop true, new work refused; Reset
    recovers."""
    try:
        await device.probe.node(device.map["InjectFault"]).read_node_class()
    except ua.UaError:
        raise Skipped("the PLC has no Plc.InjectFault to press its e-stop (simulators only)") from None
    machines = [m for m in device.probe.maps.values() if m.kind is not None]
    await device.expect(ACCEPTED, "InjectFault", machines[0].device_id if machines else "", Reason.ESTOP)
    try:
        await asyncio.sleep(0.2)
        problems = []
        for machine in machines:
            values = await _values(device, machine)
            if values != (MachineryItemState.OUT_OF_SERVICE, Reason.ESTOP, True):
                problems.append(f"{machine.device_id} shows State, Fault, EStop = {values} during an e-stop")
            method, args = (("Transport", ("conformance-tote", _destination(device, machine.device_id)))
                            if machine.kind == CONVEYOR else ("Induct", ("conformance-tote",)))
            command_id = device.new_id("estop")
            status = await device.call(method, command_id, *args, device_id=machine.device_id)
            if status != rejected(Reason.ESTOP):
                problems.append(f"{machine.device_id}.{method} during an e-stop answered {status!r}, "
                                f"not {rejected(Reason.ESTOP)!r}")
        _raise(problems, "e-stop")
    finally:
        status = await device.call("Reset")
    if status != ACCEPTED:
        raise Failed(f"Plc.Reset answered {status!r}")
    await asyncio.sleep(0.2)
    stuck = [f"{m.device_id}: {values}" for m in machines
             if (values := await _values(device, m))[1:] != ("", False)]
    _raise(stuck, "after Plc.Reset the fault and the e-stop must be gone")
    return f"{len(machines)} devices out of service and refusing estop, back after Reset"


async def _values(device: PlcDevice, machine: NodeMap) -> tuple[Any, Any, Any]:
    nodes = [device.probe.node(machine[s]) for s in ("State", "Fault", "EStop")]
    values = await device.probe.client.read_attributes(nodes)
    state, fault, estop = (v.Value.Value if v.Value is not None else None for v in values)
    if isinstance(state, int) and not isinstance(state, bool) and 0 <= state < len(MachineryItemState):
        state = list(MachineryItemState)[state]
    if isinstance(fault, ua.LocalizedText):
        fault = fault.Text
    if isinstance(state, ua.LocalizedText):
        state = state.Text
    return state, fault, estop


def _destination(device: PlcDevice, conveyor_id: str) -> str:
    return next(c.destinations[0] for c in device.site.conveyors if c.id == conveyor_id)


# --- nodes ---------------------------------------------------------------------------------------

@CHECKS.add("nodes.resolve", kinds=MACHINES)
async def nodes_resolve(device: PlcDevice) -> str:
    """Every node of the site file's node map (scan points included) exists, of the right node class."""
    located = [(name, node, device.map.signals.get(name) or opcua.SCAN_POINT_SIGNALS[name.split(" ")[0]])
               for name, node in _located(device.map)]
    nodes = [device.probe.node(node) for _, node, _ in located]
    values = await device.probe.client.read_attributes(nodes, ua.AttributeIds.NodeClass)
    problems = []
    for (name, node, signal), value in zip(located, values, strict=True):
        node_class = value.Value.Value if value.Value is not None else None
        if not _good(value) or node_class is None:
            problems.append(f"{name} ({node}): {_status(value)}")
        elif node_class != NODE_CLASS[signal.role]:
            problems.append(f"{name} ({node}) is a {ua.NodeClass(node_class).name}, "
                            f"not a {NODE_CLASS[signal.role].name}")
    _raise(problems, "node map")
    return f"{len(located)} nodes"


def _located(node_map: NodeMap) -> list[tuple[str, str]]:
    found = list(node_map.nodes.items())
    for scan_point, nodes in node_map.scan_points.items():
        found += [(f"{name} ({scan_point})", node) for name, node in nodes.items()]
    return found


@CHECKS.add("nodes.types", kinds=MACHINES)
async def nodes_types(device: PlcDevice) -> str:
    """State, OperationMode (name or integer index), Fault (String), EStop (Boolean) and the scan point
    variables."""
    problems = []
    for name in ("State", "OperationMode", "Fault", "EStop"):
        value = await device.read(name)
        problems += _variable_problem(name, device.map[name], value)
    for scan_point, nodes in device.map.scan_points.items():
        for name, signal in opcua.SCAN_POINT_SIGNALS.items():
            if signal.role is not Role.VARIABLE:
                continue
            (value,) = await device.probe.client.read_attributes([device.probe.node(nodes[name])])
            problems += _variable_problem(f"{scan_point}.{name}", nodes[name], value, signal.datatype)
    _raise(problems, "variables")
    state = _raw(await device.read("State"))
    return f"State {state!r}, {len(device.map.scan_points)} scan point(s)"


def _variable_problem(name: str, node: str, value: ua.DataValue, datatype: str | None = None) -> list[str]:
    variant = value.Value
    if not _good(value) or variant is None:
        return [f"{name} ({node}) cannot be read: {_status(value)}"]
    kind, raw = variant.VariantType, variant.Value
    label = f"{name} ({node}) is a {kind.name} {raw!r}"
    if datatype is not None:
        return [] if kind is ua.VariantType[datatype] else [f"{label}; the contract says {datatype}"]
    base = name.split(".")[-1]
    if base in ("State", "OperationMode"):
        values = list(MachineryItemState if base == "State" else MachineryOperationMode)
        if kind in INTEGERS:
            return [] if 0 <= raw < len(values) else [f"{label}: not an index 0-{len(values) - 1}"]
        if kind in TEXT:
            text = raw.Text if isinstance(raw, ua.LocalizedText) else raw
            return [] if text in values else [f"{label}: not one of {', '.join(values)}"]
        return [f"{label}; the contract says a String name or an integer index"]
    if base == "Fault":
        return [] if kind in TEXT else [f"{label}; the contract says String"]
    return [] if kind is ua.VariantType.Boolean else [f"{label}; the contract says Boolean"]


@CHECKS.add("nodes.scan_points", kinds=MACHINES)
async def nodes_scan_points(device: PlcDevice) -> str:
    """Each scan point is an Object under its device's Object, browse name = the scan point id."""
    if not device.map.scan_points:
        return "no scan points"
    children = await device.probe.node(device.map["Object"]).get_children()
    names = {(await child.read_browse_name()).Name: child.nodeid for child in children}
    problems = []
    for scan_point, nodes in device.map.scan_points.items():
        expected = device.probe.node_id(nodes["ScanPoint"])
        if names.get(ua.String(scan_point)) != expected:
            problems.append(f"no child {scan_point!r} ({nodes['ScanPoint']}) under {device.map['Object']}")
    _raise(problems, "scan points")
    return ", ".join(device.map.scan_points)


@CHECKS.add("methods.signatures", kinds=MACHINES)
async def methods_signatures(device: PlcDevice) -> str:
    """Every method takes the contract's String arguments and returns one String, Status."""
    problems = []
    for signal in device.map.of_role(Role.METHOD):
        method = device.probe.node(device.map[signal.name])
        inputs = await _arguments(method, "InputArguments")
        outputs = await _arguments(method, "OutputArguments")
        if inputs is None or len(inputs) != len(signal.inputs) or any(a.DataType != STRING for a in inputs):
            problems.append(f"{signal.name} must take {len(signal.inputs)} String arguments "
                            f"({', '.join(signal.inputs)}), it declares {_describe(inputs)}")
        if outputs is None or len(outputs) != 1 or outputs[0].DataType != STRING:
            problems.append(f"{signal.name} must return one String (Status), "
                            f"it declares {_describe(outputs)}")
    _raise(problems, "methods")
    return ", ".join(f"{s.name}({', '.join(s.inputs)}) -> Status" for s in device.map.of_role(Role.METHOD))


async def _arguments(method: Any, name: str) -> list[ua.Argument] | None:
    try:
        child = await method.get_child(ua.QualifiedName(name, 0))
        value = await child.read_value()
    except ua.UaError:
        return None
    return list(value or [])


def _describe(arguments: list[ua.Argument] | None) -> str:
    if arguments is None:
        return "no arguments property"
    names = {STRING: "String"}
    return "(" + ", ".join(f"{a.Name}: {names.get(a.DataType, a.DataType.to_string())}"
                           for a in arguments) + ")"


@CHECKS.add("methods.refusals", kinds=MACHINES)
async def methods_refusals(device: PlcDevice) -> str:
    """Bad commands are refused with the contract's `rejected:<reason>` (nothing moves)."""
    new = device.new_id
    if device.kind == CONVEYOR:
        destination = _destination(device, device.device_id)
        cases: list[tuple[str, str, tuple[Any, ...]]] = [
            (rejected(Reason.BAD_ARGUMENTS), "Transport", ("", "CONF-T1", destination)),
            (rejected(Reason.BAD_ARGUMENTS), "Transport", (new("t"), "", destination)),
            (rejected(Reason.BAD_ARGUMENTS), "Transport", (new("t"), ua.Variant(7, ua.VariantType.Int32),
                                                           destination)),
            (rejected(Reason.UNKNOWN_DESTINATION), "Transport", (new("t"), "CONF-T1", "conformance-nowhere")),
        ]
    else:
        cases = [
            (rejected(Reason.BAD_ARGUMENTS), "Induct", ("", "CONF-T1")),
            (rejected(Reason.BAD_ARGUMENTS), "Induct", (new("i"), "")),
            (rejected(Reason.BAD_ARGUMENTS), "Divert", (new("d"), "", "x")),
            (rejected(Reason.UNKNOWN_LANE), "Divert", (new("d"), "conformance-scan", "conformance-lane")),
            (rejected(Reason.UNKNOWN_SCAN), "Divert", (new("d"), "conformance-scan", _lane(device))),
        ]
    problems = []
    for answer, method, args in cases:
        try:
            await device.expect(answer, method, *args)
        except Failed as exc:
            problems.append(str(exc))
    _raise(problems, "refusals")
    return ", ".join(sorted({answer.removeprefix(REJECTED) for answer, _, _ in cases}))


def _lane(device: PlcDevice) -> str:
    assert isinstance(device.spec, SorterSpec)
    return device.spec.lanes[0]


# --- motion ----------------------------------------------------------------------------------------

@CHECKS.add("conveyor.transport", kinds=[CONVEYOR], motion=True)
async def conveyor_transport(device: PlcDevice) -> str:
    """A tote to each destination: every scan point reads it, TransportCompleted done; a repeated id runs
    once."""
    assert isinstance(device.spec, ConveyorSpec)
    await device.probe.ensure_events()
    since = device.probe.mark()
    timeout = device.site.timeouts.transport_s
    rides = {}
    for destination in device.spec.destinations:
        command_id, tote = device.new_id("transport"), f"CONF-{destination}"
        await device.expect(ACCEPTED, "Transport", command_id, tote, destination)
        rides[destination] = (command_id, tote)
    first_id, first_tote = rides[device.spec.destinations[0]]
    await device.expect(ACCEPTED, "Transport", first_id, first_tote, device.spec.destinations[0])  # in flight

    async def arrive(destination: str) -> None:
        command_id, tote = rides[destination]
        for scan_point in device.spec.scan_point_ids():  # type: ignore[union-attr]
            scan = await device.event(opcua.SCAN_EVENT, timeout, since, ScanPoint=scan_point,
                                      Barcode=tote)
            if not scan.value("ScanId"):
                raise Failed(f"{scan_point} read {tote} with an empty ScanId")
        await device.event(opcua.TRANSPORT_COMPLETED_EVENT, timeout, since, CommandId=command_id, ToteId=tote,
                           Destination=destination, Outcome=opcua.Outcome.DONE, Reason="")

    await asyncio.gather(*(arrive(d) for d in device.spec.destinations))
    await asyncio.sleep(device.options.quiet_s)  # a second execution of the repeated id would end meanwhile
    completions = device.count(opcua.TRANSPORT_COMPLETED_EVENT, since, CommandId=first_id)
    if completions != 1:
        raise Failed(f"Transport {first_id} sent twice completed {completions} times: it was executed twice")
    device.notes["finished_transport"] = (first_id, first_tote, device.spec.destinations[0])
    read_at = ", ".join(device.spec.scan_point_ids()) or "no scan point"
    return f"to {', '.join(device.spec.destinations)}: read at {read_at}, done"


@CHECKS.add("conveyor.finished_id_again", kinds=[CONVEYOR], motion=True)
async def conveyor_finished_again(device: PlcDevice) -> str:
    """A finished Transport sent again is accepted, not run, and its TransportCompleted is raised again."""
    finished = device.notes.get("finished_transport")
    if finished is None:
        raise Skipped("needs the transport of conveyor.transport, which did not finish")
    command_id, tote, destination = finished
    since = device.probe.mark()
    await device.expect(ACCEPTED, "Transport", command_id, tote, destination)
    await device.event(opcua.TRANSPORT_COMPLETED_EVENT, device.site.timeouts.ack_s, since,
                       CommandId=command_id,
                       Outcome=opcua.Outcome.DONE)
    await asyncio.sleep(device.options.quiet_s)
    scans = device.count(opcua.SCAN_EVENT, since, Barcode=tote)
    again = device.count(opcua.TRANSPORT_COMPLETED_EVENT, since, CommandId=command_id)
    if scans or again != 1:
        raise Failed(f"the finished Transport sent again raised {again} completion(s) and {scans} scan(s): "
                     "it must raise its completion once and move nothing")
    return "accepted, completion raised again, nothing moved"


@CHECKS.add("sorter.induct_divert", kinds=[SORTER], motion=True)
async def sorter_induct_divert(device: PlcDevice) -> str:
    """Induct a tote, answer its scan with Divert: Diverted down that lane, the Induct done there."""
    assert isinstance(device.spec, SorterSpec)
    await device.probe.ensure_events()
    since = device.probe.mark()
    lane, timeout = device.spec.lanes[0], device.site.timeouts.divert_s
    induct, tote = device.new_id("induct"), "CONF-SORT"
    await device.expect(ACCEPTED, "Induct", induct, tote)
    await device.expect(ACCEPTED, "Induct", induct, tote)  # the same id again: one tote
    scan = await device.event(opcua.SCAN_EVENT, timeout, since, ScanPoint=device.spec.scan_point,
                              Barcode=tote)
    scan_id = scan.value("ScanId")
    if not scan_id:
        raise Failed("the scan carries an empty ScanId")
    divert = device.new_id("divert")
    await device.expect(ACCEPTED, "Divert", divert, scan_id, lane)
    await device.expect(ACCEPTED, "Divert", divert, scan_id, lane)  # the same id again
    await device.expect(rejected(Reason.TARGET_EXISTS), "Divert", device.new_id("divert"), scan_id, lane)
    await device.event(opcua.DIVERTED_EVENT, timeout, since, ScanId=scan_id, ToteId=tote, Lane=lane,
                       CommandId=divert)
    await device.event(opcua.TRANSPORT_COMPLETED_EVENT, timeout, since, CommandId=induct, ToteId=tote,
                       Destination=lane, Outcome=opcua.Outcome.DONE, Reason="")
    await device.expect(rejected(Reason.LATE), "Divert", device.new_id("divert"), scan_id, lane)
    await asyncio.sleep(device.options.quiet_s)
    inducted = device.count(opcua.TRANSPORT_COMPLETED_EVENT, since, CommandId=induct)
    scans = device.count(opcua.SCAN_EVENT, since, Barcode=tote)
    if inducted != 1 or scans != 1:
        raise Failed(f"Induct {induct} sent twice gave {scans} scans and {inducted} completions: "
                     "it was executed twice")
    device.notes["finished_sort"] = (induct, tote, divert, scan_id, lane)
    return f"scanned, diverted to {lane}, done; target_exists and late refused"


@CHECKS.add("sorter.finished_ids_again", kinds=[SORTER], motion=True)
async def sorter_finished_again(device: PlcDevice) -> str:
    """A finished Induct and Divert sent again are accepted, not run, and their final events raised again."""
    finished = device.notes.get("finished_sort")
    if finished is None:
        raise Skipped("needs the tote of sorter.induct_divert, which did not leave the sorter")
    induct, tote, divert, scan_id, lane = finished
    since = device.probe.mark()
    ack_s = device.site.timeouts.ack_s
    await device.expect(ACCEPTED, "Induct", induct, tote)
    await device.event(opcua.TRANSPORT_COMPLETED_EVENT, ack_s, since, CommandId=induct, Destination=lane)
    await device.expect(ACCEPTED, "Divert", divert, scan_id, lane)
    await device.event(opcua.DIVERTED_EVENT, ack_s, since, CommandId=divert, Lane=lane)
    await asyncio.sleep(device.options.quiet_s)
    if device.count(opcua.SCAN_EVENT, since, Barcode=tote):
        raise Failed("the finished Induct sent again put the tote on the loop again")
    return "both accepted, final events raised again, nothing moved"


# --- events --------------------------------------------------------------------------------------------

def check_event(event: Event, event_type: opcua.EventType) -> list[str]:
    problems = []
    if event.value("Time") is None:
        problems.append("no Time")
    for name in event_type.fields:
        variant = event.fields.get(name)
        if variant is None or variant.VariantType is not ua.VariantType.String:
            kind = "nothing" if variant is None else variant.VariantType.name
            problems.append(f"{name} must be a String, it is {kind}")
    return problems


def _good(value: ua.DataValue) -> bool:
    return value.StatusCode is None or value.StatusCode.is_good()


def _status(value: ua.DataValue) -> str:
    return "no value" if value.StatusCode is None else value.StatusCode.name


def _raw(value: ua.DataValue) -> Any:
    return None if value.Value is None else value.Value.Value


def _raise(problems: list[str], what: str) -> None:
    if problems:
        raise Failed(f"{what}: " + "; ".join(problems[:10]))
