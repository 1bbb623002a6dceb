"""Logical signal names -> OPC UA node ids, for every node the adapter touches.

A site file may name the node id of any signal of a conveyor or sorter (`nodes:`, `{id}` is replaced
by the device id); every other signal gets the default below. The PLC simulator builds its address
space from the same maps, so a site file with other node ids yields a server with other node ids
and the adapter follows: a real PLC's own node ids are configuration, not code.

PLC-level nodes (contract version, fault injection) live in the contract namespace and are fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from asyncua import ua

from adapters.opcua.contract import CONTRACT_NAMESPACE
from controller.ports import DeviceKind
from controller.site import Conveyor, Site, Sorter


class NodeMapError(ValueError):
    """A node mapping that cannot be used; the message names the site key."""


class Role(StrEnum):
    OBJECT = "object"  # the device itself; the source of its events
    VARIABLE = "variable"
    METHOD = "method"  # String inputs, one String output named Status


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    role: Role
    default: str
    datatype: ua.VariantType | None = None  # variables only
    inputs: tuple[str, ...] = ()  # methods only


_MACHINERY = (
    Signal("Object", Role.OBJECT, "ns=2;s={id}"),
    Signal("State", Role.VARIABLE, "ns=2;s={id}.State", ua.VariantType.String),
    Signal("OperationMode", Role.VARIABLE, "ns=2;s={id}.OperationMode", ua.VariantType.String),
    Signal("Fault", Role.VARIABLE, "ns=2;s={id}.Fault", ua.VariantType.String),
    Signal("EStop", Role.VARIABLE, "ns=2;s={id}.EStop", ua.VariantType.Boolean),
)


def _table(*signals: Signal) -> Mapping[str, Signal]:
    return {s.name: s for s in signals}


CONVEYOR_SIGNALS = _table(
    *_MACHINERY,
    Signal("Transport", Role.METHOD, "ns=2;s={id}.Transport", inputs=("CommandId", "ToteId", "Destination")),
)
SORTER_SIGNALS = _table(
    *_MACHINERY,
    Signal("Induct", Role.METHOD, "ns=2;s={id}.Induct", inputs=("CommandId", "ToteId")),
    Signal("Divert", Role.METHOD, "ns=2;s={id}.Divert", inputs=("CommandId", "ScanId", "Lane")),
)
PLC_SIGNALS = _table(
    Signal("Object", Role.OBJECT, f"nsu={CONTRACT_NAMESPACE};s=Plc"),
    Signal("ContractVersion", Role.VARIABLE, f"nsu={CONTRACT_NAMESPACE};s=Plc.ContractVersion",
           ua.VariantType.String),
    Signal("InjectFault", Role.METHOD, f"nsu={CONTRACT_NAMESPACE};s=Plc.InjectFault", inputs=("Target", "Fault")),
    Signal("Reset", Role.METHOD, f"nsu={CONTRACT_NAMESPACE};s=Plc.Reset"),
)


@dataclass(frozen=True, slots=True)
class NodeMap:
    """The node id (as a string, possibly `nsu=`) of every signal of one device or PLC."""

    owner: str  # the site key, for messages: "conveyors.loop-1"
    device_id: str
    kind: DeviceKind | None  # None for the PLC itself
    signals: Mapping[str, Signal]
    nodes: Mapping[str, str]

    def __getitem__(self, signal: str) -> str:
        return self.nodes[signal]

    def of_role(self, role: Role) -> list[Signal]:
        return [s for s in self.signals.values() if s.role is role]


def _parse(node: str, where: str) -> ua.NodeId:
    try:
        parsed = ua.NodeId.from_string(node)
    except ua.uaerrors.UaStringParsingError as exc:
        raise NodeMapError(f"{where}: {node!r} is not an OPC UA node id ({exc})") from None
    if not getattr(parsed, "NamespaceUri", None) and parsed.NamespaceIndex == 0:
        raise NodeMapError(f"{where}: {node!r} is in namespace 0, which belongs to the OPC UA standard")
    return parsed


def _build(owner: str, device_id: str, kind: DeviceKind | None, signals: Mapping[str, Signal],
           overrides: Mapping[str, str]) -> NodeMap:
    unknown = sorted(set(overrides) - set(signals))
    if unknown:
        raise NodeMapError(
            f"{owner}.nodes: unknown signal {', '.join(map(repr, unknown))} (known: {', '.join(sorted(signals))})"
        )
    nodes = {name: overrides.get(name, s.default).replace("{id}", device_id) for name, s in signals.items()}
    for name, node in nodes.items():
        _parse(node, f"{owner}.nodes.{name}")
    return NodeMap(owner, device_id, kind, signals, nodes)


def device_node_map(device: Conveyor | Sorter) -> NodeMap:
    if isinstance(device, Conveyor):
        return _build(f"conveyors.{device.id}", device.id, DeviceKind.CONVEYOR, CONVEYOR_SIGNALS, device.nodes)
    return _build(f"sorters.{device.id}", device.id, DeviceKind.SORTER, SORTER_SIGNALS, device.nodes)


def plc_node_map(plc_id: str) -> NodeMap:
    return _build(f"plcs.{plc_id}", plc_id, None, PLC_SIGNALS, {})


def plc_devices(site: Site, plc_id: str) -> list[Conveyor | Sorter]:
    if not any(p.id == plc_id for p in site.plcs):
        raise NodeMapError(f"plcs: unknown PLC {plc_id!r} (known: {', '.join(p.id for p in site.plcs)})")
    devices: list[Conveyor | Sorter] = [*site.conveyors, *site.sorters]
    return [d for d in devices if d.plc == plc_id]


def floor_node_maps(site: Site, plc_id: str) -> list[NodeMap]:
    """The PLC's own map followed by one map per conveyor and sorter on it; no node id twice."""
    maps = [plc_node_map(plc_id), *(device_node_map(d) for d in plc_devices(site, plc_id))]
    _check_unique(maps)
    return maps


def _check_unique(maps: Iterable[NodeMap]) -> None:
    seen: dict[str, str] = {}
    for m in maps:
        for name, node in m.nodes.items():
            where = f"{m.owner}.nodes.{name}"
            if node in seen:
                raise NodeMapError(f"{where}: node id {node!r} is already used by {seen[node]}")
            seen[node] = where


def namespace_indexes(maps: Iterable[NodeMap]) -> tuple[int, set[str]]:
    """The highest numeric namespace index and the namespace URIs the maps refer to."""
    highest, uris = 0, set()
    for m in maps:
        for name, node in m.nodes.items():
            parsed = _parse(node, f"{m.owner}.nodes.{name}")
            uri = getattr(parsed, "NamespaceUri", None)
            if uri:
                uris.add(uri)
            else:
                highest = max(highest, parsed.NamespaceIndex)
    return highest, uris


def resolve(node: str, namespaces: Sequence[str]) -> ua.NodeId:
    """Turn a node id string into a NodeId for one server, looking `nsu=` URIs up in its namespace array."""
    parsed = _parse(node, node)
    uri = getattr(parsed, "NamespaceUri", None)
    if not uri:
        return ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)
    try:
        index = list(namespaces).index(uri)
    except ValueError:
        raise NodeMapError(f"{node!r}: the server has no namespace {uri!r}") from None
    return ua.NodeId(parsed.Identifier, ua.Int16(index), parsed.NodeIdType)


def node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """A NodeId from plain values (asyncua types NodeId's fields as its own int and str subclasses)."""
    value = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(value, ua.Int16(namespace))
