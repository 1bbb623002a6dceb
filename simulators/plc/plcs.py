"""Start every PLC of a site at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from controller.site import Site
from simulators.plc.server import PlcSimulator, endpoint_with_port


@asynccontextmanager
async def plc_floor(site: Site, *, speed: float = 1.0, seed: int | None = None,
                    ports: dict[str, int] | None = None) -> AsyncIterator[dict[str, PlcSimulator]]:
    """One running PlcSimulator per PLC of the site, by PLC id; `ports` moves a PLC to another port
    (0: any free port, read the result from `.endpoint`)."""
    sims: dict[str, PlcSimulator] = {}
    try:
        for plc in site.plcs:
            endpoint = endpoint_with_port(plc.endpoint, ports[plc.id]) if ports and plc.id in ports else None
            sims[plc.id] = sim = PlcSimulator(site, plc.id, speed=speed, seed=seed, endpoint=endpoint)
            await sim.start()
        yield sims
    finally:
        for sim in sims.values():
            await sim.stop()
