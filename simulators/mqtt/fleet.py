"""MqttFloor: every MQTT device of a site, simulated, each on its own broker connection."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TypeVar

from controller.site import OperatorModel, PackerModel, Site
from simulators.mqtt.device import LINK_WAIT_S, FloorContext, SimulatedDevice
from simulators.mqtt.pack_station import SimPackStation
from simulators.mqtt.pick_light import SimPickLight
from simulators.mqtt.printer import SimPrinter

log = logging.getLogger(__name__)
T = TypeVar("T", bound=SimulatedDevice)


class MqttFloor:
    """The site's pick lights, printers and pack stations as simulators speaking the wire contract.

    One MQTT connection per device, so each has its own last-will like real hardware. `counters`
    counts what the devices did not expect (malformed_payload, duplicate_command,
    ignored_while_faulted, unexpected_topic).
    """

    def __init__(self, site: Site, *, broker_url: str | None = None, speed: float = 1.0,
                 seed: int | None = None) -> None:
        self.site = site
        self.counters: Counter[str] = Counter()
        sim = site.simulation
        context = FloorContext(site, broker_url or site.broker.url, speed,
                               sim.seed if seed is None else seed, self.counters)
        zone_of = {loc.pick_light: loc.zone for loc in site.locations}
        devices: list[SimulatedDevice] = [
            SimPickLight(light.id, context,
                         _slower(sim.operator, sim.slower(light.id, zone_of.get(light.id, ""))))
            for light in site.pick_lights]
        devices += [SimPrinter(printer.id, context, media_labels=printer.media_labels,
                               print_s=sim.printer.print_s * sim.slower(printer.id))
                    for printer in site.printers]
        devices += [SimPackStation(station.id, context, _slower(sim.packer, sim.slower(station.id)))
                    for station in site.pack_stations]
        self._devices = {device.device_id: device for device in devices}

    async def start(self) -> None:
        await asyncio.gather(*(device.start() for device in self._devices.values()))
        connected = await asyncio.gather(*(device.link.wait_connected(LINK_WAIT_S)
                                           for device in self._devices.values()))
        if not all(connected):
            log.warning("%d simulated devices are not connected to the broker yet",
                        connected.count(False))

    async def stop(self) -> None:
        await asyncio.gather(*(device.stop() for device in self._devices.values()))

    def devices(self) -> list[SimulatedDevice]:
        return list(self._devices.values())

    def device(self, device_id: str) -> SimulatedDevice:
        return self._devices[device_id]

    def pick_light(self, device_id: str) -> SimPickLight:
        return self._typed(device_id, SimPickLight)

    def printer(self, device_id: str) -> SimPrinter:
        return self._typed(device_id, SimPrinter)

    def pack_station(self, device_id: str) -> SimPackStation:
        return self._typed(device_id, SimPackStation)

    def _typed(self, device_id: str, cls: type[T]) -> T:
        device = self._devices[device_id]
        if not isinstance(device, cls):
            raise KeyError(f"{device_id} is a {device.kind}, not a {cls.kind}")
        return device


M = TypeVar("M", OperatorModel, PackerModel)


def _slower(model: M, factor: float) -> M:
    """A person's timing model `factor` times slower (the site's `simulation.slowdown`)."""
    if factor == 1.0:
        return model
    return model.model_copy(update={"mean_s": model.mean_s * factor, "spread_s": model.spread_s * factor})
