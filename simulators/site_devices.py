"""Every simulated device of a site at once: the MQTT devices and one OPC UA server per PLC."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from controller.site import Site
from simulators.mqtt import MqttFloor
from simulators.plc import plc_floor


@dataclass
class SimulatedFloor:
    mqtt: MqttFloor
    plcs: Any  # the PLC simulators by plc id (simulators.plc)

    @property
    def endpoints(self) -> dict[str, str]:
        return {plc_id: sim.endpoint for plc_id, sim in self.plcs.items()}

    def device(self, device_id: str) -> Any:
        """The simulated device with this id, for fault injection."""
        for sim in self.plcs.values():
            for getter in ("conveyor", "sorter"):
                with contextlib.suppress(KeyError, LookupError):
                    return getattr(sim, getter)(device_id)
        return self.mqtt.device(device_id)


@contextlib.asynccontextmanager
async def simulated_floor(site: Site, *, broker_url: str, speed: float = 1.0, seed: int | None = None,
                          plc_ports: dict[str, int] | None = None) -> AsyncIterator[SimulatedFloor]:
    """Start the site's simulators; PLCs listen on `plc_ports` (free ports) or their site endpoints."""
    seed = site.simulation.seed if seed is None else seed
    async with plc_floor(site, speed=speed, seed=seed, ports=plc_ports) as plcs:
        mqtt = MqttFloor(site, broker_url=broker_url, speed=speed, seed=seed)
        await mqtt.start()
        try:
            yield SimulatedFloor(mqtt, plcs)
        finally:
            await mqtt.stop()
