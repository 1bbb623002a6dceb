"""The contract's node id strings (controller/contract/opcua.py) as asyncua NodeIds of one live server.

The signal names, defaults and checks are in the contract, so that a bad mapping is refused when the
site file is loaded; here a node id string becomes a NodeId of one server (whose namespace array says
what an `nsu=` URI is) and a signal's type becomes a variant type.
"""

from __future__ import annotations

from collections.abc import Sequence

from asyncua import ua

from controller.contract.opcua import NodeMapError, Signal, indexed


def variant_type(signal: Signal) -> ua.VariantType:
    assert signal.datatype is not None, f"{signal.name} is not a variable"
    return ua.VariantType[signal.datatype]


def resolve(node: str, namespaces: Sequence[str]) -> ua.NodeId:
    """Turn a node id string into a NodeId for one server, looking `nsu=` URIs up in its namespace array."""
    try:
        parsed = ua.NodeId.from_string(indexed(node, namespaces))
    except ua.uaerrors.UaStringParsingError as exc:
        raise NodeMapError(f"{node!r} is not an OPC UA node id ({exc})") from None
    return ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)


def node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """A NodeId from plain values (asyncua types NodeId's fields as its own int and str subclasses)."""
    value = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(value, ua.Int16(namespace))
