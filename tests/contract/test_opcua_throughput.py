"""Nothing the PLC reports is lost at 2,000 scans a second (plus as many divert reports)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from controller.ports import Diverted, ScanRead
from controller.site import Site

if TYPE_CHECKING:
    from tests.contract.opcua_fixtures import OpcUaRigFactory

pytest_plugins = ["tests.contract.opcua_fixtures"]

SPEED = 100.0
TOTES = 100  # on a loop that takes 50 ms of test time: 2,000 scans/s
RUN_S = 1.5


async def test_no_scan_or_divert_report_is_lost_at_2000_scans_a_second(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory) -> None:
    # Nobody answers: every tote goes round and round, scanned once per pass.
    site = demo_site.model_copy(update={"sorters": [s.model_copy(update={
        "loop_length_m": 10.0, "speed_mps": 2.0, "scan_to_divert_m": 2.0, "max_recirculations": 10_000})
        for s in demo_site.sorters]})
    rig = await make_opcua_rig(site, speed=SPEED, quick=False)
    sorter = rig.hub.sorter("sorter-1")
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(TOTES):  # spread over one pass, so that scans come evenly
        await asyncio.sleep(max(0.0, start + n * 0.05 / TOTES - loop.time()))
        await sorter.induct(f"i-{n}", f"TOTE-{n:03}")
    await asyncio.sleep(RUN_S)
    rig.sim.sorter("sorter-1").set_estop(True)  # the loop stops: no more scans

    read = [t.scan_id for t in rig.sim.sorter("sorter-1").scans]
    assert len(read) >= 1.5 * TOTES  # every tote went round more than once

    def heard() -> list[str]:
        return [e.scan_id for e in rig.events.events if isinstance(e, ScanRead)]

    async with asyncio.timeout(10):
        while len(heard()) < len(read):
            await asyncio.sleep(0.05)
    assert heard() == read  # all of them, in the order the scanner read them
    diverted = [e.scan_id for e in rig.events.events if isinstance(e, Diverted)]
    assert len(diverted) >= len(read) - TOTES  # one report per pass past the divert ...
    assert diverted == read[:len(diverted)]  # ... for the same scans, in the same order
