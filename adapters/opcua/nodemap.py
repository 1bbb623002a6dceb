"""The site file's node mapping (controller/nodemap.py) meeting a live OPC UA server.

The signal names, defaults and checks are in controller/nodemap.py, so that a bad mapping is refused
when the site file is loaded; here the node id strings become asyncua NodeIds of one server (whose
namespace array says what an `nsu=` URI is) and the signal types become variant types. Both the
adapter and the PLC simulator use this module, so a site file with other node ids yields a server
with other node ids and the adapter follows: a real PLC's own node ids are configuration, not code.
"""

from __future__ import annotations

from collections.abc import Sequence

from asyncua import ua

from controller.nodemap import (
    CONVEYOR_SIGNALS,
    PLC_SIGNALS,
    SCAN_POINT_SIGNALS,
    SORTER_SIGNALS,
    NodeMap,
    NodeMapError,
    Role,
    Signal,
    conveyor_node_map,
    floor_node_maps,
    namespace_indexes,
    sorter_node_map,
)
from controller.site import Conveyor, Sorter

__all__ = [
    "CONVEYOR_SIGNALS", "PLC_SIGNALS", "SCAN_POINT_SIGNALS", "SORTER_SIGNALS", "NodeMap", "NodeMapError", "Role",
    "Signal", "device_node_map", "floor_node_maps", "namespace_indexes", "node_id", "resolve", "variant_type",
]


def device_node_map(device: Conveyor | Sorter) -> NodeMap:
    """One device's map on its own (owner `conveyors.<id>` / `sorters.<id>`); NodeMapError if it is bad."""
    errors: list[str] = []
    if isinstance(device, Conveyor):
        node_map = conveyor_node_map(device, f"conveyors.{device.id}", errors)
    else:
        node_map = sorter_node_map(device, f"sorters.{device.id}", errors)
    if errors:
        raise NodeMapError("; ".join(errors))
    return node_map


def variant_type(signal: Signal) -> ua.VariantType:
    assert signal.datatype is not None, f"{signal.name} is not a variable"
    return ua.VariantType[signal.datatype]


def _parse(node: str) -> ua.NodeId:
    try:
        return ua.NodeId.from_string(node)
    except ua.uaerrors.UaStringParsingError as exc:
        raise NodeMapError(f"{node!r} is not an OPC UA node id ({exc})") from None


def resolve(node: str, namespaces: Sequence[str]) -> ua.NodeId:
    """Turn a node id string into a NodeId for one server, looking `nsu=` URIs up in its namespace array."""
    parsed = _parse(node)
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
