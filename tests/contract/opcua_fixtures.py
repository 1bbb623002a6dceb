"""Fixtures for the OPC UA contract tests: every PLC of a site simulated on a free port, and an
OpcUaHub connected to them.

Test modules load this with `pytest_plugins = ["tests.contract.opcua_fixtures"]` and import from it
only under TYPE_CHECKING, so that pytest imports it first (and rewrites its asserts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Self

import pytest
from asyncua import Client, ua

from adapters.opcua import OpcUaHub
from adapters.opcua.nodemap import node_id
from controller.contract.opcua import CONTRACT_NAMESPACE
from controller.ports import CommandTicket, DeviceEvent, DeviceStatus, ScanRead
from controller.site import Site
from simulators.plc import PlcSimulator, plc_floor
from tests.conftest import EventLog

SPEED = 50.0  # demo conveyor (24 m at 1 m/s): 0.5 s of test time


def quick_sorter(site: Site, **changes: Any) -> Site:
    """`site` with a short sorter loop and a roomy divert budget at SPEED: a pass takes 0.1 s of test
    time, a divert has 50 ms to land (the adapter needs well under 1 ms)."""
    sorters = [s.model_copy(update={"loop_length_m": 10.0, "scan_to_divert_m": 5.0, "speed_mps": 2.0,
                                    **changes})
               for s in site.sorters]
    return site.model_copy(update={"sorters": sorters})


class OpcUaRig:
    """A simulated PLC floor and the controller's OpcUaHub, on free ports."""

    def __init__(self, site: Site, events: EventLog, speed: float = SPEED) -> None:
        self.site = site
        self.events = events
        self.speed = speed
        self.sims: dict[str, PlcSimulator] = {}
        self._hub: OpcUaHub | None = None
        self._stack = AsyncExitStack()
        self.diverts: list[asyncio.Task[CommandTicket]] = []
        self._divert_to: str | None = None

    @property
    def hub(self) -> OpcUaHub:
        assert self._hub is not None, "the rig was started without a hub"
        return self._hub

    def sink(self, event: DeviceEvent) -> None:
        self.events(event)
        if self._divert_to is not None and isinstance(event, ScanRead) and self._is_sorter_scan(event):
            sorter = next(s for s in self.site.sorters if s.scan_point == event.scan_point)
            self.diverts.append(asyncio.ensure_future(
                self.hub.sorter(sorter.id).divert(f"d-{event.scan_id}", event.scan_id, self._divert_to)))

    def _is_sorter_scan(self, event: ScanRead) -> bool:
        return any(s.scan_point == event.scan_point for s in self.site.sorters)

    def answer_scans(self, lane: str | None) -> None:
        """From now on answer every sorter scan at once with `lane`, as the engine does (None: stop)."""
        self._divert_to = lane

    async def start(self, *, hub: bool = True) -> None:
        self.sims = await self._stack.enter_async_context(
            plc_floor(self.site, speed=self.speed, ports={plc.id: 0 for plc in self.site.plcs}))
        if hub:
            await self.start_hub()

    async def start_hub(self) -> OpcUaHub:
        self._hub = OpcUaHub(self.site, endpoints={plc_id: sim.endpoint for plc_id, sim in self.sims.items()})
        self._stack.push_async_callback(self._hub.stop)
        mark = self.events.mark()
        await self._hub.start(self.sink)
        for device in self._hub.devices():
            await self.wait_status(device.device_id, lambda s: s.online, since=mark)
        return self._hub

    async def start_hub_offline(self) -> OpcUaHub:
        """Start a hub that is not expected to get online (its first connection attempt has failed)."""
        self._hub = OpcUaHub(self.site, endpoints={plc_id: sim.endpoint for plc_id, sim in self.sims.items()})
        self._stack.push_async_callback(self._hub.stop)
        await self._hub.start(self.sink)
        return self._hub

    async def stop(self) -> None:
        await self._stack.aclose()

    @property
    def sim(self) -> PlcSimulator:
        """The PLC of a one-PLC site."""
        (only,) = self.sims.values()
        return only

    async def wait_status(self, device_id: str, predicate: Callable[[DeviceStatus], bool],
                          timeout: float = 5.0, since: int = 0) -> DeviceStatus:
        event = await self.events.wait_for(
            lambda e: isinstance(e,
                                 DeviceStatus) and e.device_id == device_id and predicate(e), timeout, since)
        assert isinstance(event, DeviceStatus)
        return event

    async def wait_scan(self, scan_point: str, since: int = 0, timeout: float = 5.0) -> ScanRead:
        event = await self.events.wait_for(
            lambda e: isinstance(e, ScanRead) and e.scan_point == scan_point, timeout, since)
        assert isinstance(event, ScanRead)
        return event


OpcUaRigFactory = Callable[..., Awaitable[OpcUaRig]]


@pytest.fixture
async def make_opcua_rig(events: EventLog) -> AsyncIterator[OpcUaRigFactory]:
    """`rig = await make_opcua_rig(site)`: the site's PLCs (with `quick_sorter` applied unless
    `quick=False`) and a hub (unless `hub=False`); everything stops after the test."""
    rigs: list[OpcUaRig] = []

    async def start(site: Site, *, hub: bool = True, speed: float = SPEED, quick: bool = True) -> OpcUaRig:
        rig = OpcUaRig(quick_sorter(site) if quick else site, events, speed)
        rigs.append(rig)
        await rig.start(hub=hub)
        return rig

    yield start
    for rig in reversed(rigs):
        await rig.stop()


@pytest.fixture
async def opcua_rig(demo_site: Site, make_opcua_rig: OpcUaRigFactory) -> OpcUaRig:
    return await make_opcua_rig(demo_site)


@pytest.fixture
def raw_plc() -> Callable[[str], RawPlcClient]:
    """`async with raw_plc(endpoint) as plc:` a client that knows only the documented contract."""
    return RawPlcClient


class RawPlcClient:
    """A plain asyncua client that knows nothing of adapters.opcua: it plays a panel in another
    process, or checks what the PLC serves, using only docs/devices.md (OPC UA devices)."""

    def __init__(self, endpoint: str) -> None:
        self.client = Client(endpoint, timeout=2)

    async def __aenter__(self) -> Self:
        await self.client.connect()
        self.namespaces = await self.client.get_namespace_array()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    def contract_node(self, name: str) -> ua.NodeId:
        return node_id(name, self.namespaces.index(CONTRACT_NAMESPACE))

    async def call(self, obj: ua.NodeId | str, method: ua.NodeId | str, *args: str) -> Any:
        parent = self.client.get_node(obj)
        method_id = method if isinstance(method, ua.NodeId) else ua.NodeId.from_string(method)
        return await asyncio.wait_for(parent.call_method(method_id, *args), 2)

    async def read(self, node: ua.NodeId | str) -> Any:
        return await self.client.get_node(node).read_value()
