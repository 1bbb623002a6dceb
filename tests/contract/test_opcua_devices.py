"""OpcUaHub's conveyors and sorters against the PLC simulator, through real asyncua sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from adapters.opcua import CommandRejected
from adapters.opcua.devices import OpcUaConveyor, OpcUaSorter
from controller.ports import Completion, Conveyor, Device, Diverted, ScanRead, Sorter
from controller.site import Site
from tests.conftest import with_simulation
from tests.fakes import same_ticket

if TYPE_CHECKING:
    from tests.contract.opcua_fixtures import OpcUaRig, OpcUaRigFactory, RawPlcClient

pytest_plugins = ["tests.contract.opcua_fixtures"]


async def test_devices_implement_the_ports(opcua_rig: OpcUaRig) -> None:
    hub = opcua_rig.hub
    assert {type(d) for d in hub.devices()} == {OpcUaConveyor, OpcUaSorter}
    conveyor: Conveyor = hub.conveyor("loop-1")  # the ports are checked statically ...
    sorter: Sorter = hub.sorter("sorter-1")
    assert isinstance(conveyor, Device) and isinstance(sorter, Device)  # ... and at run time
    for device in hub.devices():
        assert device.protocol == "opcua"
        status = device.status
        assert status.online and status.state == "NotExecuting" and status.fault is None
        assert status.detail == {"plc": "plc-1", "mode": "Processing", "estop": False}


async def test_transport_is_acked_then_done_on_arrival_with_scans_on_the_way(opcua_rig: OpcUaRig) -> None:
    conveyor = opcua_rig.hub.conveyor("loop-1")
    ticket = await conveyor.transport("t-1", "TOTE-1", "PS-2")
    assert ticket.sent_at is not None and ticket.sends == 1
    acked_at = await asyncio.wait_for(ticket.acked, 2)
    busy = await opcua_rig.wait_status("loop-1", lambda s: s.state == "Executing")
    done = await asyncio.wait_for(ticket.done, 5)
    assert done == Completion("t-1", ok=True, at=done.at, result={"tote_id": "TOTE-1", "destination": "PS-2"})
    assert ticket.sent_at <= acked_at <= done.at
    scans = [e for e in opcua_rig.events.events if isinstance(e, ScanRead)]
    assert [(s.scan_point, s.barcode) for s in scans] == [("sp-induct", "TOTE-1"), ("sp-pack", "TOTE-1")]
    assert acked_at <= scans[0].at <= scans[1].at <= done.at
    assert len({s.scan_id for s in scans}) == 2
    await opcua_rig.wait_status("loop-1", lambda s: s.state == "NotExecuting",
                                since=opcua_rig.events.events.index(busy))
    assert opcua_rig.sim.conveyor("loop-1").executed["t-1"] == 1


async def test_transport_to_a_station_the_conveyor_does_not_reach_is_rejected(opcua_rig: OpcUaRig) -> None:
    ticket = await opcua_rig.hub.conveyor("loop-1").transport("t-x", "TOTE-1", "PS-9")
    with pytest.raises(CommandRejected) as rejected:
        await ticket.acked
    assert rejected.value.reason == "unknown_destination"
    done = ticket.done.result()
    assert not done.ok and done.reason == "unknown_destination"
    assert opcua_rig.hub.counters["rejected"] == 1


async def test_duplicate_command_id_executes_once(opcua_rig: OpcUaRig,
                                                  raw_plc: Callable[[str], RawPlcClient]) -> None:
    conveyor = opcua_rig.hub.conveyor("loop-1")
    first, second = await asyncio.gather(conveyor.transport("t-dup", "TOTE-7", "PS-1"),
                                         conveyor.transport("t-dup", "TOTE-7", "PS-1"))
    assert first is second and first.sends == 2  # the retry went on the wire with the same id
    await asyncio.wait_for(first.done, 5)
    assert same_ticket(await conveyor.transport("t-dup", "TOTE-7", "PS-1"), first)
    # Another client repeating the id (a controller restarted without its tickets) is answered
    # "accepted" and hears the completion again, but no second tote moves.
    since = opcua_rig.events.mark()
    async with raw_plc(opcua_rig.sim.endpoint) as raw:
        reply = await raw.call("ns=2;s=loop-1", "ns=2;s=loop-1.Transport", "t-dup", "TOTE-7", "PS-1")
        assert reply == "accepted"
    await asyncio.sleep(0.2)
    assert opcua_rig.sim.conveyor("loop-1").executed["t-dup"] == 1
    assert not [e for e in opcua_rig.events.events[since:] if isinstance(e, ScanRead)]
    assert opcua_rig.hub.counters["unmatched_completion"] == 0


async def test_induct_scan_divert_to_the_right_lane(opcua_rig: OpcUaRig) -> None:
    opcua_rig.answer_scans("lane-2")
    sorter = opcua_rig.hub.sorter("sorter-1")
    induct = await sorter.induct("i-1", "TOTE-9")
    await asyncio.wait_for(induct.acked, 2)
    scan = await opcua_rig.wait_scan("sp-sort")
    assert scan.barcode == "TOTE-9"
    done = await asyncio.wait_for(induct.done, 5)
    assert done.ok and done.result["lane"] == "lane-2"
    divert = await opcua_rig.diverts[0]
    assert divert.acked.result() >= scan.at
    assert (await divert.done).result == {"lane": "lane-2", "scan_id": scan.scan_id}
    diverted = await opcua_rig.events.wait_for(lambda e: isinstance(e, Diverted))
    assert diverted == Diverted("sorter-1", scan.scan_id, "TOTE-9", "lane-2", diverted.at)  # type: ignore[union-attr]
    (timing,) = opcua_rig.sim.sorter("sorter-1").scans
    assert timing.scan_id == scan.scan_id and timing.read_at == pytest.approx(scan.at, abs=1e-3)
    assert timing.target_landed_at is not None and timing.read_at <= timing.target_landed_at


async def test_late_divert_recirculates_then_diverts_on_the_next_pass(opcua_rig: OpcUaRig) -> None:
    sorter = opcua_rig.hub.sorter("sorter-1")
    induct = await sorter.induct("i-late", "TOTE-3")
    first = await opcua_rig.wait_scan("sp-sort")
    around = await opcua_rig.events.wait_for(lambda e: isinstance(e, Diverted) and e.scan_id == first.scan_id)
    assert isinstance(around, Diverted) and around.lane is None and around.barcode == "TOTE-3"
    late = await sorter.divert("d-late", first.scan_id, "lane-1")
    with pytest.raises(CommandRejected, match="late"):
        await late.acked
    second = await opcua_rig.wait_scan("sp-sort", since=opcua_rig.events.events.index(around))
    assert second.scan_id != first.scan_id and second.barcode == "TOTE-3"
    in_time = await sorter.divert("d-second", second.scan_id, "lane-1")
    await in_time.acked
    assert (await asyncio.wait_for(induct.done, 5)).result["lane"] == "lane-1"
    assert (await in_time.done).result["lane"] == "lane-1"


async def test_no_reads_go_round_until_the_sorter_sends_the_tote_to_the_exception_lane(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory) -> None:
    rig = await make_opcua_rig(with_simulation(demo_site, "scanner", no_read_rate=1.0))
    induct = await rig.hub.sorter("sorter-1").induct("i-nr", "TOTE-4")
    done = await asyncio.wait_for(induct.done, 5)
    assert not done.ok and done.reason == "recirculation_limit" and done.result["lane"] == "lane-x"
    scans = [e for e in rig.events.events if isinstance(e, ScanRead)]
    diverts = [e for e in rig.events.events if isinstance(e, Diverted)]
    assert len(scans) == 3 and all(s.barcode is None for s in scans)  # max_recirculations = 2
    assert [d.lane for d in diverts] == [None, None, "lane-x"]
    assert [d.scan_id for d in diverts] == [s.scan_id for s in scans]


async def test_a_no_read_can_still_be_diverted_by_its_scan_id(demo_site: Site,
                                                              make_opcua_rig: OpcUaRigFactory) -> None:
    rig = await make_opcua_rig(with_simulation(demo_site, "scanner", no_read_rate=1.0))
    rig.answer_scans("lane-x")
    induct = await rig.hub.sorter("sorter-1").induct("i-nr2", "TOTE-5")
    done = await asyncio.wait_for(induct.done, 5)
    assert done.ok and done.result["lane"] == "lane-x"  # the controller chose the exception lane
    assert len([e for e in rig.events.events if isinstance(e, ScanRead)]) == 1


async def test_divert_for_an_unknown_scan_or_lane_is_rejected(opcua_rig: OpcUaRig) -> None:
    sorter = opcua_rig.hub.sorter("sorter-1")
    for command_id, scan_id, lane, reason in [("d-a", "no-such-scan", "lane-1", "unknown_scan"),
                                              ("d-b", "no-such-scan", "lane-9", "unknown_lane")]:
        ticket = await sorter.divert(command_id, scan_id, lane)
        with pytest.raises(CommandRejected) as rejected:
            await ticket.acked
        assert rejected.value.reason == reason


async def test_duplicate_induct_executes_once(opcua_rig: OpcUaRig) -> None:
    opcua_rig.answer_scans("lane-3")
    sorter = opcua_rig.hub.sorter("sorter-1")
    first = await sorter.induct("i-dup", "TOTE-8")
    again = await sorter.induct("i-dup", "TOTE-8")
    assert first is again
    await asyncio.wait_for(first.done, 5)
    assert opcua_rig.sim.sorter("sorter-1").executed["i-dup"] == 1
    assert len([e for e in opcua_rig.events.events if isinstance(e, ScanRead)]) == 1
