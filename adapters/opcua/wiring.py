"""The node ids of one PLC as seen by one session: node maps resolved against the server's namespace
array (which may differ after a PLC restart), plus the event filter the adapter subscribes with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from asyncua import ua

from adapters.opcua.nodemap import node_id, resolve
from controller.contract import opcua
from controller.contract.opcua import NodeMap, Role

# BaseEventType fields every event is selected with, besides the contract's own.
BASE_FIELDS = ("EventType", "SourceNode", "Time")
EVENT_QUEUE = 10_000  # per device; ~5 s of 2,000 events/s if the client stalls
VALUE_QUEUE = 100  # per variable; state changes are few but none may be lost


@dataclass
class Wiring:
    nodes: dict[tuple[str, str], ua.NodeId] = field(default_factory=dict)  # (device id, signal) -> node
    variables: dict[ua.NodeId, tuple[str, str]] = field(default_factory=dict)  # node -> (device id, signal)
    sources: dict[ua.NodeId, str] = field(default_factory=dict)  # device object -> device id
    event_types: dict[ua.NodeId, opcua.EventType] = field(default_factory=dict)
    event_filter: ua.EventFilter = field(default_factory=ua.EventFilter)

    def node(self, device_id: str, signal: str) -> ua.NodeId:
        return self.nodes[(device_id, signal)]


def wire(maps: Sequence[NodeMap], namespaces: Sequence[str]) -> Wiring:
    """Raises NodeMapError when the server lacks a namespace the maps need."""
    wiring = Wiring()
    for node_map in maps:
        for name, signal in node_map.signals.items():
            node = resolve(node_map[name], namespaces)
            wiring.nodes[(node_map.device_id, name)] = node
            if node_map.kind is None:
                continue
            if signal.role is Role.VARIABLE:
                wiring.variables[node] = (node_map.device_id, name)
            elif signal.role is Role.OBJECT:
                wiring.sources[node] = node_map.device_id
    for event in opcua.EVENT_TYPES:
        wiring.event_types[resolve(opcua.event_type_node(event), namespaces)] = event
    wiring.event_filter = _event_filter(wiring, namespaces)
    return wiring


def _operand(type_id: ua.NodeId, name: str, namespace: int) -> ua.SimpleAttributeOperand:
    operand = ua.SimpleAttributeOperand()
    operand.TypeDefinitionId = type_id
    operand.BrowsePath = [ua.QualifiedName(name, namespace)]
    operand.AttributeId = ua.AttributeIds.Value
    return operand


def _event_filter(wiring: Wiring, namespaces: Sequence[str]) -> ua.EventFilter:
    return contract_event_filter(wiring.event_types.items(),
                                 list(namespaces).index(opcua.CONTRACT_NAMESPACE))


def contract_event_filter(event_types: Iterable[tuple[ua.NodeId, opcua.EventType]],
                          namespace: int) -> ua.EventFilter:
    """One filter for all contract events (their type node ids, resolved, and the contract's
    namespace index): the union of their fields (a field an event type lacks comes back null). No
    where clause: only contract events are raised by a device object."""
    selects = [_operand(node_id(ua.ObjectIds.BaseEventType), name, 0) for name in BASE_FIELDS]
    seen: set[str] = set()
    for type_id, event in event_types:
        for name in event.fields:
            if name not in seen:
                seen.add(name)
                selects.append(_operand(type_id, name, namespace))
    event_filter = ua.EventFilter()
    event_filter.SelectClauses = selects
    return event_filter
