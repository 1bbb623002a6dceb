"""OpcUaHub: the conveyors and sorters of a site, one OPC UA session per PLC (controller.ports.DeviceHub)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from adapters.opcua.devices import OpcUaConveyor, OpcUaSorter, PlcDevice, make_device
from adapters.opcua.link import PlcLink
from controller.ports import Device, EventSink
from controller.site import Site, floor_node_maps


class OpcUaHub:
    """`endpoints` overrides the site file's endpoint per PLC id (tests, simulators on other ports).

    `counters` counts what went wrong without stopping anything: bad values and events from a PLC,
    calls that failed or were refused, connection attempts, reconnects, commands re-sent.
    """

    name = "opcua"  # the prefix of its counters in the metrics

    def __init__(self, site: Site, *, endpoints: dict[str, str] | None = None, client_name: str | None = None,
                 may_send: Callable[[], bool] | None = None) -> None:
        """`client_name`: the session name the PLCs see; `may_send`: the leader's fence (no method
        call goes out while it says no)."""
        self.counters: Counter[str] = Counter()
        self._links: list[PlcLink] = []
        self._devices: dict[str, PlcDevice] = {}
        for plc in site.plcs:
            maps = floor_node_maps(site, plc.id)  # a bad node map fails here, before anything connects
            if len(maps) == 1:
                continue  # a PLC without conveyors or sorters: nothing to talk to
            link = PlcLink(plc, (endpoints or {}).get(plc.id, plc.endpoint), maps, self.counters,
                           client_name=client_name, may_send=may_send)
            for node_map in maps[1:]:
                link.devices[node_map.device_id] = self._devices[node_map.device_id] = make_device(
                    node_map, plc.id, link, self.counters)
            self._links.append(link)
        self._runner: asyncio.Task[None] | None = None

    def devices(self) -> list[Device]:
        return list(self._devices.values())

    @property
    def connected(self) -> bool:
        """Every PLC's session is up."""
        return all(link.online for link in self._links)

    def link_errors(self) -> dict[str, str]:
        """Why each PLC whose session is down could not connect, by PLC id (a refused certificate or
        password, no answer, ...): the health page's `plc_errors` and the unreachable PLC's alarm."""
        return {link.plc.id: link.last_error for link in self._links if not link.online and link.last_error}

    def conveyor(self, device_id: str) -> OpcUaConveyor:
        device = self._devices[device_id]
        assert isinstance(device, OpcUaConveyor), f"{device_id} is not a conveyor"
        return device

    def sorter(self, device_id: str) -> OpcUaSorter:
        device = self._devices[device_id]
        assert isinstance(device, OpcUaSorter), f"{device_id} is not a sorter"
        return device

    async def start(self, sink: EventSink) -> None:
        """Start a supervisor per PLC and wait for each one's first connection attempt (a PLC that is
        down stays offline and keeps being retried)."""
        if self._runner is not None:
            return
        for link in self._links:
            link.tried.clear()
        self._runner = asyncio.create_task(self._run(sink), name="opcua-hub")
        waits = [asyncio.create_task(link.tried.wait()) for link in self._links]
        if waits:
            timeout = max(link.plc.timeout_s for link in self._links) * 3
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()

    async def _run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as links:
            for link in self._links:
                links.create_task(link.run(sink), name=f"opcua-{link.plc.id}")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
