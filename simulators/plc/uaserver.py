"""What the PLC simulator adds to an asyncua server or changes in it: its accounts, a quick start,
lighter events, writes that may change a value's type, method handlers on the event loop, and the
contract's node id strings as this server's NodeIds."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import BaseEvent
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AttributeValue, NodeData
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager

from controller.contract import opcua
from controller.contract.opcua import Signal, indexed, rejected
from controller.contract.reasons import Reason
from controller.security.opcua_trust import TrustList

Handler = Callable[..., Awaitable[list[ua.Variant]]]
Heard = Callable[[str, str, Sequence[Any]], None]  # (the calling session's name, method, arguments)

ANONYMOUS = User(role=UserRole.Anonymous)

# The name of the session whose CallRequest is being answered (the client's SessionName): method
# handlers record who sent each command, e.g. which instance of a hot-standby pair.
CALLER: ContextVar[str] = ContextVar("caller", default="unknown")


def resolve(node: str, namespaces: Sequence[str]) -> ua.NodeId:
    """A node id string of the contract (checked when the site file was loaded) as a NodeId of this
    server, an `nsu=` URI looked up in its namespace array."""
    return ua.NodeId.from_string(indexed(node, namespaces))


def node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """A NodeId from plain values (asyncua types NodeId's fields as its own int and str subclasses)."""
    value = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(value, ua.Int16(namespace))


def variant_type(signal: Signal) -> ua.VariantType:
    assert signal.datatype is not None, f"{signal.name} is not a variable"
    return ua.VariantType[signal.datatype]


class PlcAccounts(UserManager):
    """Who may open a session on the simulated PLC: the site file's one account (anonymous is then
    refused), or anonymous only when it gives none. With a trust list (a security policy), only over a
    secure channel whose client certificate the list trusts: the session's own certificate was checked
    when it was created, this checks the channel's, which a client need not repeat in CreateSession.
    Never asyncua's PermissiveUserManager, which takes any password and makes `admin` an Admin."""

    def __init__(self, username: str | None, password: str | None, trust: TrustList | None = None) -> None:
        self._username = username
        self._password = password or ""
        self._trust = trust

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if self._trust is not None and not self._trust.trusts(certificate):
            return None
        if self._username is None:
            return User(role=UserRole.User) if username is None else None
        if username is None or password is None:
            return None
        same_name = hmac.compare_digest(username.encode(), self._username.encode())
        same_password = hmac.compare_digest(password.encode(), self._password.encode())
        return User(role=UserRole.User, name=username) if same_name and same_password else None


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

    def create_session(self, name: str, user: User = ANONYMOUS, external: bool = False) -> InternalSession:
        session = super().create_session(name, user=user, external=external)
        opened, call = session.create_session, session.call
        client = {"name": name}

        async def create_session(params: ua.CreateSessionParameters, sockname: Any = None) -> Any:
            client["name"] = params.SessionName or name
            return await opened(params, sockname=sockname)

        async def traced_call(params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
            token = CALLER.set(client["name"])
            try:
                return await call(params)
            finally:
                CALLER.reset(token)

        session.create_session = create_session  # type: ignore[method-assign]
        session.call = traced_call  # type: ignore[method-assign]
        return session


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
            self.add_property(name, "", ua.VariantType[opcua.EVENT_FIELD_TYPE])

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
        waiting = ua.DataValue(StatusCode=status_code(ua.StatusCodes.BadWaitingForInitialData))
        await server.write_attribute_value(node, waiting)
    await server.write_attribute_value(node, ua.DataValue(value))


def method_handler(action: Callable[..., str], arity: int, *, name: str = "",
                   heard: Heard | None = None) -> Handler:
    """An OPC UA method handler around a device action: String arguments in, one String Status out.
    Async, so asyncua runs it on the loop instead of handing it to a thread. `heard` is told who
    called (the session's name), before the action runs."""

    async def handler(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        values = [a.Value for a in args]
        if heard is not None:
            heard(CALLER.get(), name, values)
        if len(values) != arity or not all(isinstance(v, str) for v in values):
            status = rejected(Reason.BAD_ARGUMENTS)
        else:
            status = action(*values)
        return [ua.Variant(status, ua.VariantType.String)]

    return handler


def string_argument(name: str) -> ua.Argument:
    return ua.Argument(Name=ua.String(name), DataType=node_id(ua.ObjectIds.String), ValueRank=ua.Int32(-1))


def status_code(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))
