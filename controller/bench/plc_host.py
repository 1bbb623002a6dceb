"""The site's simulated PLCs in a process of their own, driven over stdin by the OPC UA and divert
benchmarks: `python -m controller.bench.plc_host SITE SPEED`.

On start it prints `ready {"plc-1": "opc.tcp://...", ...}`. Then one JSON answer line per request line:
  induct SORTER RATE SECONDS PREFIX   totes PREFIX-0, PREFIX-1, ... put on the sorter at RATE per second;
                                      answers once every tote has passed the divert, with each scan's
                                      id, read time and the time its divert target landed (the
                                      sorter's ScanTiming hook; null when no target landed in time)
A writable Double `Bench.Echo` (in the PLC's own namespace) is added to every PLC for the bare write.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from asyncua import ua

from controller.bench.gc_pauses import GcPauses
from controller.site import load_site
from simulators.plc import PlcSimulator, plc_floor
from simulators.plc.sorter import INDUCT_TO_SCAN_M, SimSorter

ECHO_NODE = "Bench.Echo"


async def add_echo_variable(sim: PlcSimulator) -> None:
    # The bare write needs a writable node of its own on the simulator's server.
    server = sim.server
    assert server is not None, "start the simulator first"
    namespace = await server.get_namespace_index(f"urn:floorctl:plc:{sim.plc.id}")
    node = await server.nodes.objects.add_variable(ua.NodeId(ua.String(ECHO_NODE), ua.Int16(namespace)),
                                                   ECHO_NODE, 0.0)
    await node.set_writable()


def _sorter(sims: dict[str, PlcSimulator], sorter_id: str) -> SimSorter:
    for sim in sims.values():
        with contextlib.suppress(KeyError):
            return sim.sorter(sorter_id)
    raise KeyError(f"no sorter {sorter_id!r} on any PLC")


async def induct(sims: dict[str, PlcSimulator], sorter_id: str, rate: float, seconds: float,
                 prefix: str) -> dict[str, Any]:
    sorter = _sorter(sims, sorter_id)
    first = len(sorter.scans)
    total = int(rate * seconds)
    started = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        for n in range(sent, due):
            sorter.induct(f"{prefix}.induct.{n}", f"{prefix}-{n}")
        sent = due
        await asyncio.sleep(0.001)
    offered_s = time.perf_counter() - started
    spec = sorter.spec
    divert_s = spec.scan_to_divert_m / spec.speed_mps / sorter.clock.speed
    deadline = time.perf_counter() + INDUCT_TO_SCAN_M / spec.speed_mps / sorter.clock.speed + 10.0
    while len(sorter.scans) - first < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(divert_s + 0.1)  # the last totes reach their divert
    scans = sorter.scans[first:]
    del sorter.scans[:]  # the hook keeps every scan; a long run would otherwise grow without end
    return {"offered": total, "offered_s": round(offered_s, 3), "budget_ms": round(divert_s * 1000, 1),
        "scans": [[s.scan_id, s.read_at, s.target_landed_at] for s in scans]}


@contextlib.contextmanager
def quiet_collector() -> Iterator[None]:
    """No garbage collection while a step is measured. A PLC does not pause to collect garbage, and
    a full collection of the asyncua server's address space stops this process for hundreds of ms,
    which would be charged to the controller's divert latency. Collected between steps instead."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def serve(site_path: str, speed: float) -> None:
    site = load_site(site_path)
    async with plc_floor(site, speed=speed, ports={plc.id: 0 for plc in site.plcs}) as sims:
        for sim in sims.values():
            await add_echo_variable(sim)
        print("ready " + json.dumps({plc_id: sim.endpoint for plc_id, sim in sims.items()}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            if line[0] == "induct":
                with quiet_collector(), GcPauses() as pauses:
                    answer = await induct(sims, line[1], float(line[2]), float(line[3]), line[4])
                answer["gc"] = pauses.summary()
            else:
                answer = {"error": f"unknown request {line[0]!r}"}
            # A blocking write, between two measurements: nothing on this loop is timed meanwhile.
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], float(sys.argv[2])))
