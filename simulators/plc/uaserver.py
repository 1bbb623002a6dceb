"""What the PLC simulator adds to an asyncua server or changes in it: its one account, a quick start,
lighter events, writes that may change a value's type, and method handlers on the event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import BaseEvent
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AttributeValue, NodeData
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager

from adapters.opcua import contract
from adapters.opcua.contract import rejected
from adapters.opcua.nodemap import node_id

Handler = Callable[..., Awaitable[list[ua.Variant]]]


class Credentials(UserManager):
    """The PLC's one account, when the site file gives it one (anonymous access is then refused)."""

    def __init__(self, username: str, password: str | None) -> None:
        self._username = username
        self._password = password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username == self._username and password == self._password:
            return User(role=UserRole.User, name=username)
        return None


class QuickStartServer(InternalServer):
    """asyncua fills its ~6,000 standard nodes from generated code on every start (1-2 s). A simulated
    PLC starts often (every test, every simulated power cycle), so the first fill of the process is
    kept and later servers start from a copy of it (~70 ms). Only the node containers are copied:
    the values in them are never changed in place, a write replaces them."""

    _standard: dict[ua.NodeId, NodeData] | None = None

    async def load_standard_address_space(self, shelf_file: Any = None) -> None:
        if QuickStartServer._standard is None:
            await super().load_standard_address_space(shelf_file)
            QuickStartServer._standard = _copy_nodes(self.aspace._nodes)
        self.aspace._nodes = _copy_nodes(QuickStartServer._standard)


def _copy_nodes(nodes: dict[ua.NodeId, NodeData]) -> dict[ua.NodeId, NodeData]:
    copies = {}
    for nodeid, node in nodes.items():
        copy = copies[nodeid] = NodeData(nodeid)
        copy.attributes = {attr: AttributeValue(value.value) for attr, value in node.attributes.items()}  # type: ignore[arg-type]
        copy.references = list(node.references)
        copy.call = node.call
    return copies


class ContractEvent(BaseEvent):
    """A contract event as asyncua raises it, minus the deep copy of every field on every trigger
    (a third of a simulated sorter's CPU at 1,000 scans/s): the fields here are only ever replaced
    between triggers, never changed in place."""

    def __init__(self, event_type: ua.NodeId, fields: tuple[str, ...]) -> None:
        super().__init__()
        self.EventType = event_type
        for name in fields:
            self.add_property(name, "", contract.EVENT_FIELD_TYPE)

    def to_event_fields(self, select_clauses: list[ua.SimpleAttributeOperand]) -> list[ua.Variant]:
        fields = []
        for clause in select_clauses:
            if clause.BrowsePath:
                name = self.browse_path_to_attribute_name(clause.BrowsePath)
            else:
                name = ua.AttributeIds(clause.AttributeId).name
            value = getattr(self, name, None)
            fields.append(ua.Variant() if value is None else ua.Variant(value, self.data_types[name]))
        return fields


async def write_value(server: Server, node: ua.NodeId, value: ua.Variant) -> None:
    """Write a value; if it is of another type than the node holds (a forced value, or the proper
    value after one), change the node's DataType first, as asyncua refuses a change of type."""
    current = server.read_attribute_value(node).Value
    if current is not None and current.VariantType not in (value.VariantType, ua.VariantType.Null):
        datatype = ua.Variant(node_id(value.VariantType.value), ua.VariantType.NodeId)
        await server.write_attribute_value(node, ua.DataValue(datatype), ua.AttributeIds.DataType)
        # A bad status nulls the value, and a null value takes whatever its DataType says.
        await server.write_attribute_value(node, ua.DataValue(StatusCode=status_code(ua.StatusCodes.BadWaitingForInitialData)))
    await server.write_attribute_value(node, ua.DataValue(value))


def method_handler(action: Callable[..., str], arity: int) -> Handler:
    """An OPC UA method handler around a device action: String arguments in, one String Status out.
    Async, so asyncua runs it on the loop instead of handing it to a thread."""

    async def handler(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        values = [a.Value for a in args]
        if len(values) != arity or not all(isinstance(v, str) for v in values):
            status = rejected("bad_arguments")
        else:
            status = action(*values)
        return [ua.Variant(status, ua.VariantType.String)]

    return handler


def string_argument(name: str) -> ua.Argument:
    return ua.Argument(Name=ua.String(name), DataType=node_id(ua.ObjectIds.String), ValueRank=ua.Int32(-1))


def status_code(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))
