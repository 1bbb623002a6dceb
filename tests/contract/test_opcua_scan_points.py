"""Scan points are objects of the PLC: a client that knows only the site file finds every conveyor,
sorter and scanner by browsing, and reads what each scanner read last."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asyncua import Node

from controller.site import Site
from tests.conftest import with_simulation

if TYPE_CHECKING:
    from tests.contract.opcua_fixtures import OpcUaRigFactory, RawPlcClient

pytest_plugins = ["tests.contract.opcua_fixtures"]

SCAN_POINT_VARIABLES = ("LastBarcode", "LastScanId", "LastReadAt", "ReadCount", "NoReadCount")


async def children(node: Node) -> dict[str, Node]:
    """The objects and variables under `node`, by browse name."""
    return {(await child.read_browse_name()).Name: child for child in await node.get_children()}


async def test_every_conveyor_sorter_and_scan_point_of_the_demo_site_is_browsable(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory, raw_plc: Callable[[str], RawPlcClient]) -> None:
    rig = await make_opcua_rig(demo_site, hub=False, quick=False)
    expected = {c.id: [sp.id for sp in c.scan_points] for c in demo_site.conveyors}
    expected |= {s.id: [s.scan_point] for s in demo_site.sorters}
    assert sum(map(len, expected.values())) == 3  # the demo site has scanners to find
    async with raw_plc(rig.sim.endpoint) as plc:
        under_objects = await children(plc.client.nodes.objects)
        for device_id, scan_points in expected.items():
            device = await children(under_objects[device_id])
            for scan_point in scan_points:
                variables = await children(device[scan_point])
                assert set(variables) == set(SCAN_POINT_VARIABLES)
                assert await variables["ReadCount"].read_value() == 0
                assert await variables["LastBarcode"].read_value() == ""
                assert (await variables["LastReadAt"].read_value()).year == 1601  # never read


async def scan_point_values(plc: RawPlcClient, device_id: str, scan_point: str) -> dict[str, Any]:
    """The scan point's variables, at their default node ids."""
    nodes = [plc.client.get_node(f"ns=2;s={device_id}.{scan_point}.{name}") for name in SCAN_POINT_VARIABLES]
    values = await plc.client.read_values(nodes)
    return dict(zip(SCAN_POINT_VARIABLES, values))


async def wait_values(plc: RawPlcClient, device_id: str, scan_point: str,
                      predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while not predicate(values := await scan_point_values(plc, device_id, scan_point)):
            await asyncio.sleep(0.02)
    return values


async def test_scan_point_variables_follow_the_totes_that_pass(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory, raw_plc: Callable[[str], RawPlcClient]) -> None:
    rig = await make_opcua_rig(demo_site)
    async with raw_plc(rig.sim.endpoint) as plc:
        before = await scan_point_values(plc, "loop-1", "sp-pack")
        ticket = await rig.hub.conveyor("loop-1").transport("t-sp", "TOTE-SP", "PS-1")
        await asyncio.wait_for(ticket.done, 5)
        scan = await rig.wait_scan("sp-pack")
        after = await wait_values(plc, "loop-1", "sp-pack", lambda v: v["ReadCount"] == 1)
        assert before["ReadCount"] == 0 and before["LastScanId"] == ""
        assert after == {"LastBarcode": "TOTE-SP", "LastScanId": scan.scan_id, "ReadCount": 1,
                         "NoReadCount": 0, "LastReadAt": after["LastReadAt"]}
        assert abs(after["LastReadAt"].timestamp() - scan.at) < 0.001  # the PLC's stamp of the read
        # The sorter's scanner is untouched: nothing passed it.
        assert (await scan_point_values(plc, "sorter-1", "sp-sort"))["ReadCount"] == 0
    await rig.sim.stop()  # the counts are the PLC's memory, not its server's
    await rig.sim.start()
    async with raw_plc(rig.sim.endpoint) as plc:
        assert await scan_point_values(plc, "loop-1", "sp-pack") == after


async def test_a_no_read_is_counted_and_clears_the_last_barcode(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory, raw_plc: Callable[[str], RawPlcClient]) -> None:
    rig = await make_opcua_rig(with_simulation(demo_site, "scanner", no_read_rate=1.0))
    async with raw_plc(rig.sim.endpoint) as plc:
        await rig.hub.sorter("sorter-1").induct("i-nr", "TOTE-NR")
        scan = await rig.wait_scan("sp-sort")
        assert scan.barcode is None
        values = await wait_values(plc, "sorter-1", "sp-sort", lambda v: v["ReadCount"] >= 1)
        assert values["LastBarcode"] == "" and values["NoReadCount"] == values["ReadCount"]
        assert values["LastScanId"] in [t.scan_id for t in rig.sim.sorter("sorter-1").scans]
        assert rig.sim.scan_point("sp-sort").no_read_count >= values["NoReadCount"]
