"""The controller's side of one PLC for the OPC UA checks: a plain asyncua session opened with the
site file's account and security, the node maps resolved against the server's namespace array, and
every event of every device Object recorded as it came (field values with their OPC UA types).
Nothing here judges what the PLC sent: that is the checks' job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncua import Client, Node, ua
from asyncua.common.subscription import OpcEvent, Subscription

from adapters.opcua.link import new_client, refusal, secure
from adapters.opcua.wiring import contract_event_filter
from controller.conformance.checks import Failed, Unreachable
from controller.contract import opcua
from controller.contract.opcua import NodeMap, NodeMapError, indexed
from controller.site import PlcSpec, Site, floor_node_maps

CLIENT_NAME = "floorctl conformance"


@dataclass(frozen=True, slots=True)
class Event:
    """One event as the server sent it: every selected field as a Variant (Null when the type lacks it)."""

    fields: dict[str, ua.Variant]
    at: float  # the loop's clock when it arrived

    def value(self, name: str) -> Any:
        variant = self.fields.get(name)
        return None if variant is None else variant.Value


class PlcProbe:
    def __init__(self, site: Site, plc: PlcSpec, endpoint: str) -> None:
        self.plc = plc
        self.endpoint = endpoint
        self.maps: dict[str, NodeMap] = {m.device_id: m for m in floor_node_maps(site, plc.id)}
        self.namespaces: list[str] = []
        self.events: list[Event] = []
        self._client: Client | None = None
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._calls = asyncio.Semaphore(16)
        self._subscribing = asyncio.Lock()

    @property
    def client(self) -> Client:
        assert self._client is not None, "not connected"
        return self._client

    async def connect(self) -> None:
        """Raises Unreachable with the reason in words."""
        where = f"PLC {self.plc.id} at {self.endpoint}"
        client = new_client(self.plc, self.endpoint, name=CLIENT_NAME)
        try:
            await asyncio.wait_for(secure(client, self.plc, self.endpoint), self.plc.timeout_s * 2)
            await asyncio.wait_for(client.connect(), self.plc.timeout_s * 2)
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, security: said in words
            with contextlib.suppress(Exception):
                client.disconnect_socket()  # nothing to close in order: no session came up
            raise Unreachable(f"cannot reach {where}: {refusal(exc)}") from None
        self._client = client
        self.namespaces = await client.get_namespace_array()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.disconnect(), self.plc.timeout_s)

    # --- nodes -----------------------------------------------------------------------------------
    def node_id(self, node: str) -> ua.NodeId:
        """A node id string of the contract or the site file as a NodeId of this server."""
        try:
            return ua.NodeId.from_string(indexed(node, self.namespaces))
        except NodeMapError as exc:
            raise Failed(str(exc)) from None

    def node(self, node: str) -> Node:
        return self.client.get_node(self.node_id(node))

    @property
    def contract_index(self) -> int | None:
        uri = opcua.CONTRACT_NAMESPACE
        return self.namespaces.index(uri) if uri in self.namespaces else None

    # --- methods --------------------------------------------------------------------------------
    async def call(self, device_id: str, method: str, *args: Any) -> Any:
        """Call a mapped method on its device's Object; the Status output as sent (any type).
        A call the server refuses itself (bad node, bad arguments) is Failed, naming its status code."""
        node_map = self.maps[device_id]
        request = ua.CallMethodRequest()
        request.ObjectId = self.node_id(node_map["Object"])
        request.MethodId = self.node_id(node_map[method])
        request.InputArguments = [a if isinstance(a, ua.Variant) else ua.Variant(a, ua.VariantType.String)
                                  for a in args]
        async with self._calls:
            (result,) = await asyncio.wait_for(self.client.uaclient.call([request]), self.plc.timeout_s)
        if not result.StatusCode.is_good():
            raise Failed(f"{device_id}.{method}: the server refused the call itself "
                         f"({result.StatusCode.name})")
        outputs = result.OutputArguments or []
        if len(outputs) != 1:
            raise Failed(f"{device_id}.{method} returned {len(outputs)} outputs; the contract says one "
                         "String, Status")
        return outputs[0].Value

    # --- events ---------------------------------------------------------------------------------
    async def ensure_events(self) -> None:
        async with self._subscribing:
            if self._subscription is None:
                await self.subscribe_events()

    async def subscribe_events(self) -> None:
        """One subscription with the contract's events of every device Object (as the floorctl client)."""
        index = self.contract_index
        if index is None:
            raise Failed(f"the server has no namespace {opcua.CONTRACT_NAMESPACE}")
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = max(1.0, self.plc.publishing_interval_ms)
        params.RequestedMaxKeepAliveCount = ua.UInt32(1000)
        params.RequestedLifetimeCount = ua.UInt32(3000)
        params.MaxNotificationsPerPublish = ua.UInt32(0)
        params.PublishingEnabled = True
        subscription = await self.client.create_subscription(params, None, queue_maxsize=0)
        event_filter = self._event_filter(index)
        for node_map in self.maps.values():
            if node_map.kind is not None:
                await subscription.subscribe_events(self.node(node_map["Object"]), evfilter=event_filter,
                                                    queuesize=10_000)
        self._subscription = subscription
        self._reader = asyncio.create_task(self._read(subscription), name=f"conformance-{self.plc.id}-events")

    def _event_filter(self, index: int) -> ua.EventFilter:
        return contract_event_filter(
            ((self.node_id(opcua.event_type_node(event)), event) for event in opcua.EVENT_TYPES), index)

    async def _read(self, subscription: Subscription) -> None:
        loop = asyncio.get_running_loop()
        async for item in subscription:
            if isinstance(item, OpcEvent):
                event = item.event
                fields = {op.BrowsePath[0].Name: value for op, value
                          in zip(event.select_clauses or (), event.event_fields or ())}
                self.events.append(Event(fields, loop.time()))
                self._arrived.set()

    def mark(self) -> int:
        return len(self.events)

    async def wait_event(self, match: Callable[[Event], bool], timeout: float,
                         since: int = 0) -> Event | None:
        try:
            async with asyncio.timeout(timeout):
                seen = since
                while True:
                    for event in self.events[seen:]:
                        if match(event):
                            return event
                    seen = len(self.events)
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            return None

