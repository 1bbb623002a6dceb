"""A PLC with its own node ids is driven by the site file's `nodes:` mapping, not by code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from asyncua import ua

from adapters.opcua.nodemap import node_id
from controller.ports import Diverted, ScanRead
from controller.site import Site
from tests.conftest import eventually

if TYPE_CHECKING:
    from tests.contract.opcua_fixtures import OpcUaRigFactory, RawPlcClient

pytest_plugins = ["tests.contract.opcua_fixtures"]

CONVEYOR_NODES = {
    "Object": "ns=3;s=PLC_A/Conv1",
    "State": "ns=3;s=PLC_A/Conv1/State",
    "OperationMode": "ns=3;s=PLC_A/Conv1/Mode",
    "Fault": "ns=3;s=PLC_A/Conv1/Fault",
    "EStop": "ns=3;s=PLC_A/Conv1/EStop",
    "Transport": "ns=3;s=PLC_A/Conv1/Transport",
    "ScanPoint": "ns=3;s=PLC_A/Conv1/{scan_point}",  # one per scan point of the conveyor
    "ReadCount": "ns=3;s=PLC_A/Conv1/{scan_point}/Reads",
}
SORTER_NODES = {  # partly mapped (the rest keeps the defaults), by URI, with the device id spliced in
    "Object": "nsu=urn:example:plc-vendor;s=Sorters/{id}",
    "State": "nsu=urn:example:plc-vendor;s=Sorters/{id}/MachineryItemState",
    "Divert": "ns=4;i=4711",
}


def vendor_site(site: Site) -> Site:
    conveyors = [c.model_copy(update={"nodes": CONVEYOR_NODES}) for c in site.conveyors]
    sorters = [s.model_copy(update={"nodes": SORTER_NODES}) for s in site.sorters]
    return site.model_copy(update={"conveyors": conveyors, "sorters": sorters})


async def test_the_adapter_follows_the_node_ids_of_the_site_file(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory, raw_plc: Callable[[str], RawPlcClient]) -> None:
    rig = await make_opcua_rig(vendor_site(demo_site))
    async with raw_plc(rig.sim.endpoint) as plc:
        assert await plc.read("ns=3;s=PLC_A/Conv1/State") == "NotExecuting"
        vendor = plc.namespaces.index("urn:example:plc-vendor")
        assert await plc.read(node_id("Sorters/sorter-1/MachineryItemState", vendor)) == "NotExecuting"
        assert await plc.read("ns=2;s=sorter-1.Fault") == ""  # not mapped: the default
        with pytest.raises(ua.UaStatusCodeError):
            await plc.read("ns=2;s=loop-1.State")  # the default id of a mapped signal does not exist

    transport = await rig.hub.conveyor("loop-1").transport("t-v", "TOTE-V", "PS-1")
    assert (await asyncio.wait_for(transport.done, 5)).ok
    async with raw_plc(rig.sim.endpoint) as plc:
        scan_point = plc.client.get_node("ns=3;s=PLC_A/Conv1/sp-pack")
        assert (await scan_point.read_browse_name()).Name == "sp-pack"
        async with asyncio.timeout(5):
            while await plc.read("ns=3;s=PLC_A/Conv1/sp-pack/Reads") != 1:
                await asyncio.sleep(0.02)
        assert await plc.read("ns=2;s=loop-1.sp-pack.LastBarcode") == "TOTE-V"  # not mapped: the default
    rig.answer_scans("lane-3")
    induct = await rig.hub.sorter("sorter-1").induct("i-v", "TOTE-W")
    assert (await asyncio.wait_for(induct.done, 5)).result["lane"] == "lane-3"
    assert [e.barcode for e in rig.events.events if isinstance(e, ScanRead)] == ["TOTE-V", "TOTE-V", "TOTE-W"]
    assert [e.lane for e in rig.events.events if isinstance(e, Diverted)] == ["lane-3"]
    await eventually(lambda: all(d.status.online and d.status.state == "NotExecuting"
                                 for d in rig.hub.devices()))
    assert not rig.hub.counters["bad_event"] and not rig.hub.counters["bad_value"]
