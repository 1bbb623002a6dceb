"""Logical signal names -> OPC UA node ids: the `nodes:` mapping of the site file, as plain data.

Every node the OPC UA client touches (and the simulator serves) has a signal name. A site file may
name the node id of any signal of a conveyor or sorter (`{id}` is replaced by the device id,
`{scan_point}` by the scan point id); every other signal gets the default below. The site file is
checked against these tables when it is loaded, so a bad mapping is refused with the file and key
path before anything connects. No OPC UA library here: adapters/opcua/nodemap.py turns the strings
into node ids of a live server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from controller.ports import DeviceKind

if TYPE_CHECKING:  # site.py validates with this module, so it is imported here for types only
    from controller.site import Conveyor, Site, Sorter

# Types, PLC-level nodes and event fields live in this namespace, addressed by URI (never by index),
# the way a companion specification's namespace is.
CONTRACT_NAMESPACE = "urn:floorctl:opcua:warehouse"

NODE_ID = re.compile(r"^(?:ns=(?P<ns>\d+);|nsu=(?P<nsu>[^;]+);)?(?:i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=.+)$")
SCAN_POINT = "{scan_point}"


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
    default: str
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
    Signal("InjectFault", Role.METHOD, f"nsu={CONTRACT_NAMESPACE};s=Plc.InjectFault", inputs=("Target", "Fault")),
    Signal("Reset", Role.METHOD, f"nsu={CONTRACT_NAMESPACE};s=Plc.Reset"),
)


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


def parse_node_id(node: str) -> tuple[int, str | None]:
    """(namespace index, namespace URI or None) of a node id string; ValueError if it is none."""
    match = NODE_ID.match(node)
    if match is None:
        raise ValueError(f"{node!r} is not an OPC UA node id (e.g. 'ns=2;s=Conveyor1.State')")
    return int(match["ns"] or 0), match["nsu"]


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
            errors.append(f"{owner}.nodes.{name}: unknown signal {name!r} (known: {', '.join(sorted(known))})")

    def node(name: str, signal: Signal, scan_point: str | None) -> str:
        return _node(overrides.get(name, signal.default), device_id, scan_point, f"{owner}.nodes.{name}", errors)

    nodes = {name: node(name, s, None) for name, s in signals.items()}
    points = {sp: {name: node(name, s, sp) for name, s in SCAN_POINT_SIGNALS.items()} for sp in scan_points}
    return NodeMap(owner, device_id, kind, signals, nodes, points)


def conveyor_node_map(conveyor: Conveyor, owner: str, errors: list[str]) -> NodeMap:
    return _build(owner, conveyor.id, DeviceKind.CONVEYOR, CONVEYOR_SIGNALS, conveyor.nodes,
                  [sp.id for sp in conveyor.scan_points], errors)


def sorter_node_map(sorter: Sorter, owner: str, errors: list[str]) -> NodeMap:
    return _build(owner, sorter.id, DeviceKind.SORTER, SORTER_SIGNALS, sorter.nodes, [sorter.scan_point], errors)


def plc_node_map(plc_id: str, owner: str) -> NodeMap:
    return _build(owner, plc_id, None, PLC_SIGNALS, {}, (), [])


@dataclass(slots=True)
class _Plc:
    """The node maps of one PLC (its own first) and what is wrong with them."""

    maps: list[NodeMap] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _site_maps(site: Site) -> dict[str, _Plc]:
    """Every node map of the site by PLC id; devices on an unknown PLC get one of their own."""
    plcs = {plc.id: _Plc([plc_node_map(plc.id, f"plcs.{i}")]) for i, plc in enumerate(site.plcs)}
    for i, conveyor in enumerate(site.conveyors):
        plc = plcs.setdefault(conveyor.plc, _Plc())
        plc.maps.append(conveyor_node_map(conveyor, f"conveyors.{i}", plc.errors))
    for i, sorter in enumerate(site.sorters):
        plc = plcs.setdefault(sorter.plc, _Plc())
        plc.maps.append(sorter_node_map(sorter, f"sorters.{i}", plc.errors))
    for plc in plcs.values():
        _check_unique(plc.maps, plc.errors)
    return plcs


def _check_unique(maps: Iterable[NodeMap], errors: list[str]) -> None:
    """One node id per signal on a PLC: the simulator could not build it, a client would misread it."""
    seen: dict[str, str] = {}
    for node_map in maps:
        for where, node in node_map.located():
            if node in seen:
                errors.append(f"{where}: node id {node!r} is already used by {seen[node]}")
            else:
                seen[node] = where


def node_map_errors(site: Site) -> list[str]:
    """What is wrong with the site's node mappings, one message per key path (site-file validation)."""
    # dict: a scan point signal's error comes once per scan point, and says the same each time
    return list(dict.fromkeys(error for plc in _site_maps(site).values() for error in plc.errors))


def floor_node_maps(site: Site, plc_id: str) -> list[NodeMap]:
    """The PLC's own map followed by one map per conveyor and sorter on it; no node id twice."""
    if not any(p.id == plc_id for p in site.plcs):
        raise NodeMapError(f"plcs: unknown PLC {plc_id!r} (known: {', '.join(p.id for p in site.plcs)})")
    plc = _site_maps(site)[plc_id]
    if plc.errors:
        raise NodeMapError("; ".join(dict.fromkeys(plc.errors)))
    return plc.maps


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
