"""The PLCs' contract (docs/devices.md, OPC UA devices): the contract namespace and version, the
OPC 40001 value sets, the event types and method answers, and the signals every conveyor, sorter,
scan point and PLC has, each with the node id it gets unless the site file names another.

A node id is a string here (`ns=2;s=loop-1.State`, `nsu=<uri>;s=Plc`), checked by the grammar below
when the site file is loaded, so a bad mapping is refused before anything connects; the adapter and
the PLC simulator turn the strings into their OPC UA library's node ids of one live server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from controller.contract.kinds import DeviceKind

CONTRACT_VERSION = "1.0"
# Types, PLC-level nodes and event fields live in this namespace, addressed by URI (never by index),
# the way a companion specification's namespace is.
CONTRACT_NAMESPACE = "urn:floorctl:opcua:warehouse"
OPCUA_KINDS: frozenset[DeviceKind] = frozenset({DeviceKind.CONVEYOR, DeviceKind.SORTER})

# What every method answers in its one String output, `Status`.
ACCEPTED = "accepted"
REJECTED = "rejected:"


def rejected(reason: str) -> str:
    return f"{REJECTED}{reason}"


class MachineryItemState(StrEnum):
    """OPC 40001 MachineryItemState; the index is the value a PLC may publish as an Int32."""

    NOT_AVAILABLE = "NotAvailable"
    OUT_OF_SERVICE = "OutOfService"
    NOT_EXECUTING = "NotExecuting"
    EXECUTING = "Executing"


class MachineryOperationMode(StrEnum):
    """OPC 40001 MachineryOperationMode; the index is the value a PLC may publish as an Int32."""

    NONE = "None"
    MAINTENANCE = "Maintenance"
    SETUP = "Setup"
    PROCESSING = "Processing"


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"


# --- events ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EventType:
    """A custom event type (subtype of BaseEventType) and its String fields, in CONTRACT_NAMESPACE."""

    name: str
    fields: tuple[str, ...]


# Modelled on OPC 30010 AutoIdScanEventType, flattened so no structured type is needed:
# ScanPoint is AutoID's DeviceName, Barcode is ScanResult.ScanData ("" on a no-read),
# the standard Time field is ScanResult.Timestamp (the moment of the read).
SCAN_EVENT = EventType("ScanEventType", ("ScanPoint", "ScanId", "Barcode"))
# A Transport (conveyor) or an Induct (sorter) finished; Time is the moment of arrival / exit.
TRANSPORT_COMPLETED_EVENT = EventType(
    "TransportCompletedEventType", ("CommandId", "ToteId", "Destination", "Outcome", "Reason")
)
# A sorter decided what to do with a scanned tote: Lane "" means recirculated. CommandId is the Divert
# command that set the lane, "" when the sorter decided by itself (no target, recirculation limit).
DIVERTED_EVENT = EventType("DivertedEventType", ("ScanId", "ToteId", "Lane", "CommandId"))

EVENT_TYPES = (SCAN_EVENT, TRANSPORT_COMPLETED_EVENT, DIVERTED_EVENT)
EVENT_FIELD_TYPE = "String"  # the OPC UA built-in type of every event field, by name


def event_type_node(event: EventType) -> str:
    return f"nsu={CONTRACT_NAMESPACE};s={event.name}"


def event_field_node(event: EventType, field: str) -> str:
    return f"nsu={CONTRACT_NAMESPACE};s={event.name}.{field}"


# --- signals -----------------------------------------------------------------------------------

class NodeMapError(ValueError):
    """A node mapping that cannot be used; the message names the site key."""


class Role(StrEnum):
    OBJECT = "object"  # the device itself (the source of its events), or one of its scan points
    VARIABLE = "variable"
    METHOD = "method"  # String inputs, one String output named Status


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    role: Role
    default: str  # the node id unless the site file names another; `{id}`, `{scan_point}` filled in
    datatype: str | None = None  # variables only: the OPC UA built-in type, by name
    inputs: tuple[str, ...] = ()  # methods only


def _table(*signals: Signal) -> Mapping[str, Signal]:
    return {s.name: s for s in signals}


_MACHINERY = (
    Signal("Object", Role.OBJECT, "ns=2;s={id}"),
    Signal("State", Role.VARIABLE, "ns=2;s={id}.State", "String"),
    Signal("OperationMode", Role.VARIABLE, "ns=2;s={id}.OperationMode", "String"),
    Signal("Fault", Role.VARIABLE, "ns=2;s={id}.Fault", "String"),
    Signal("EStop", Role.VARIABLE, "ns=2;s={id}.EStop", "Boolean"),
)
CONVEYOR_SIGNALS = _table(
    *_MACHINERY,
    Signal("Transport", Role.METHOD, "ns=2;s={id}.Transport", inputs=("CommandId", "ToteId", "Destination")),
)
SORTER_SIGNALS = _table(
    *_MACHINERY,
    Signal("Induct", Role.METHOD, "ns=2;s={id}.Induct", inputs=("CommandId", "ToteId")),
    Signal("Divert", Role.METHOD, "ns=2;s={id}.Divert", inputs=("CommandId", "ScanId", "Lane")),
)
DEVICE_SIGNALS: Mapping[DeviceKind, Mapping[str, Signal]] = {
    DeviceKind.CONVEYOR: CONVEYOR_SIGNALS,
    DeviceKind.SORTER: SORTER_SIGNALS,
}
# One set per scan point of a conveyor or sorter: an AutoID-like reader (OPC 30010) under its device.
SCAN_POINT_SIGNALS = _table(
    Signal("ScanPoint", Role.OBJECT, "ns=2;s={id}.{scan_point}"),
    Signal("LastBarcode", Role.VARIABLE, "ns=2;s={id}.{scan_point}.LastBarcode", "String"),
    Signal("LastScanId", Role.VARIABLE, "ns=2;s={id}.{scan_point}.LastScanId", "String"),
    Signal("LastReadAt", Role.VARIABLE, "ns=2;s={id}.{scan_point}.LastReadAt", "DateTime"),
    Signal("ReadCount", Role.VARIABLE, "ns=2;s={id}.{scan_point}.ReadCount", "UInt64"),
    Signal("NoReadCount", Role.VARIABLE, "ns=2;s={id}.{scan_point}.NoReadCount", "UInt64"),
)
PLC_SIGNALS = _table(
    Signal("Object", Role.OBJECT, f"nsu={CONTRACT_NAMESPACE};s=Plc"),
    Signal("ContractVersion", Role.VARIABLE, f"nsu={CONTRACT_NAMESPACE};s=Plc.ContractVersion", "String"),
    Signal("InjectFault", Role.METHOD, f"nsu={CONTRACT_NAMESPACE};s=Plc.InjectFault",
           inputs=("Target", "Fault")),
    Signal("Reset", Role.METHOD, f"nsu={CONTRACT_NAMESPACE};s=Plc.Reset"),
)


# --- node ids ----------------------------------------------------------------------------------

NODE_ID = re.compile(r"^(?:ns=(?P<ns>\d+);|nsu=(?P<nsu>[^;]+);)?(?P<id>i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=.+)$")
SCAN_POINT = "{scan_point}"


def parse_node_id(node: str) -> tuple[int, str | None]:
    """(namespace index, namespace URI or None) of a node id string; ValueError if it is none."""
    match = NODE_ID.match(node)
    if match is None:
        raise ValueError(f"{node!r} is not an OPC UA node id (e.g. 'ns=2;s=Conveyor1.State')")
    return int(match["ns"] or 0), match["nsu"]


def indexed(node: str, namespaces: Sequence[str]) -> str:
    """The node id with its `nsu=` URI replaced by that URI's index in a server's namespace array."""
    match = NODE_ID.match(node)
    if match is None or match["nsu"] is None:
        return node
    try:
        index = list(namespaces).index(match["nsu"])
    except ValueError:
        raise NodeMapError(f"{node!r}: the server has no namespace {match['nsu']!r}") from None
    return f"ns={index};{match['id']}"


@dataclass(frozen=True, slots=True)
class NodeMap:
    """The node id (as a string, possibly `nsu=`) of every signal of one device or PLC."""

    owner: str  # the site key path, for messages: "conveyors.0"
    device_id: str
    kind: DeviceKind | None  # None for the PLC itself
    signals: Mapping[str, Signal]
    nodes: Mapping[str, str]
    scan_points: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # scan point -> signal -> node

    def __getitem__(self, signal: str) -> str:
        return self.nodes[signal]

    def of_role(self, role: Role) -> list[Signal]:
        return [s for s in self.signals.values() if s.role is role]

    def located(self) -> Iterator[tuple[str, str]]:
        """(site key path, node id) of every node, the scan points' included."""
        for name, node in self.nodes.items():
            yield f"{self.owner}.nodes.{name}", node
        for scan_point, nodes in self.scan_points.items():
            for name, node in nodes.items():
                yield f"{self.owner}.nodes.{name} (scan point {scan_point!r})", node


def _node(template: str, device_id: str, scan_point: str | None, where: str, errors: list[str]) -> str:
    node = template.replace("{id}", device_id)
    if scan_point is not None:
        node = node.replace(SCAN_POINT, scan_point)
    elif SCAN_POINT in node:
        errors.append(f"{where}: {SCAN_POINT} only belongs in the node ids of scan point signals "
                      f"({', '.join(SCAN_POINT_SIGNALS)})")
        return node
    try:
        namespace, uri = parse_node_id(node)
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
        return node
    if uri is None and namespace == 0:
        errors.append(f"{where}: {node!r} is in namespace 0, which belongs to the OPC UA standard")
    return node


def _build(owner: str, device_id: str, kind: DeviceKind | None, signals: Mapping[str, Signal],
           overrides: Mapping[str, str], scan_points: Sequence[str], errors: list[str]) -> NodeMap:
    known = {**signals, **SCAN_POINT_SIGNALS} if kind is not None else signals
    for name in overrides:
        if name not in known:
            known_list = ", ".join(sorted(known))
            errors.append(f"{owner}.nodes.{name}: unknown signal {name!r} (known: {known_list})")

    def node(name: str, signal: Signal, scan_point: str | None) -> str:
        return _node(overrides.get(name, signal.default), device_id, scan_point, f"{owner}.nodes.{name}",
                     errors)

    nodes = {name: node(name, s, None) for name, s in signals.items()}
    points = {sp: {name: node(name, s, sp) for name, s in SCAN_POINT_SIGNALS.items()} for sp in scan_points}
    return NodeMap(owner, device_id, kind, signals, nodes, points)


def device_node_map(owner: str, device_id: str, kind: DeviceKind, overrides: Mapping[str, str],
                    scan_points: Sequence[str], errors: list[str]) -> NodeMap:
    """A conveyor's or sorter's map: the defaults, with `overrides` (signal -> node id) from the site
    file; what is wrong is appended to `errors`, one message per site key path under `owner`."""
    return _build(owner, device_id, kind, DEVICE_SIGNALS[kind], overrides, scan_points, errors)


def plc_node_map(plc_id: str, owner: str) -> NodeMap:
    return _build(owner, plc_id, None, PLC_SIGNALS, {}, (), [])


def duplicate_nodes(maps: Iterable[NodeMap]) -> list[str]:
    """One node id per signal on a PLC: a server could not serve it, a client would misread it."""
    errors: list[str] = []
    seen: dict[str, str] = {}
    for node_map in maps:
        for where, node in node_map.located():
            if node in seen:
                errors.append(f"{where}: node id {node!r} is already used by {seen[node]}")
            else:
                seen[node] = where
    return errors


def namespace_indexes(maps: Iterable[NodeMap]) -> tuple[int, set[str]]:
    """The highest numeric namespace index and the namespace URIs the maps refer to."""
    highest, uris = 0, set()
    for node_map in maps:
        for _, node in node_map.located():
            namespace, uri = parse_node_id(node)
            if uri:
                uris.add(uri)
            else:
                highest = max(highest, namespace)
    return highest, uris
