"""Faults between OpcUaHub and the PLC simulator: link cuts, PLC restarts, jams, e-stops, bad values."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from asyncua import ua

from adapters.opcua import CommandRejected
from controller.ports import DeviceUnavailable, ScanRead
from controller.site import Site
from tests.fakes import same_ticket

if TYPE_CHECKING:
    from tests.contract.opcua_fixtures import OpcUaRig, OpcUaRigFactory, RawPlcClient

pytest_plugins = ["tests.contract.opcua_fixtures"]

DEVICES = ("loop-1", "sorter-1")
LONGER_THAN_A_TRANSPORT = 1.0  # the demo conveyor takes 0.5 s of test time


async def wait_all(rig: OpcUaRig, predicate: Callable[..., bool], since: int, timeout: float = 10.0) -> None:
    for device_id in DEVICES:
        await rig.wait_status(device_id, predicate, timeout=timeout, since=since)


@pytest.mark.parametrize("keep_running", [False, True], ids=["plc-restart", "cable-cut"])
async def test_link_cut_and_restored(opcua_rig: OpcUaRig, keep_running: bool) -> None:
    rig, conveyor = opcua_rig, opcua_rig.hub.conveyor("loop-1")
    assert rig.hub.connected and rig.hub.name == "opcua"
    in_flight = await conveyor.transport("t-before", "TOTE-A", "PS-1")
    await in_flight.acked

    mark = rig.events.mark()
    await rig.sim.stop(keep_running=keep_running)
    await wait_all(rig, lambda s: not s.online and s.state == "unknown", since=mark)
    assert not rig.hub.connected
    with pytest.raises(DeviceUnavailable):
        await conveyor.transport("t-offline", "TOTE-B", "PS-1")
    if keep_running:  # the tote arrives while nobody listens: its completion is lost on the wire
        await asyncio.sleep(LONGER_THAN_A_TRANSPORT)
    assert not in_flight.done.done()

    mark = rig.events.mark()
    await rig.sim.start()
    await wait_all(rig, lambda s: s.online and s.state in ("NotExecuting", "Executing"), since=mark)
    assert rig.hub.connected
    # Re-sent after the reconnect with the same id: the PLC finishes it (or repeats its completion).
    assert (await asyncio.wait_for(in_flight.done, 5)).ok
    assert rig.sim.conveyor("loop-1").executed["t-before"] == 1

    mark = rig.events.mark()
    after = await conveyor.transport("t-after", "TOTE-C", "PS-2")
    assert (await asyncio.wait_for(after.done, 5)).ok
    # Scans come through the subscription the adapter created on the new session.
    scan = await rig.events.wait_for(lambda e: isinstance(e, ScanRead) and e.barcode == "TOTE-C", since=mark)
    assert scan is not None
    assert rig.hub.counters["link_lost"] == 1 and rig.hub.counters["connects"] == 2
    assert rig.hub.counters["resent"] >= 1


async def test_a_plc_that_is_down_when_the_hub_starts_comes_online_later(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory) -> None:
    rig = await make_opcua_rig(demo_site, hub=False)
    await rig.sim.stop()
    await rig.start_hub_offline()
    assert not any(d.status.online for d in rig.hub.devices())
    assert rig.hub.counters["connect_failed"] >= 1
    await rig.sim.start()
    await wait_all(rig, lambda s: s.online, since=0)


async def test_jam_stops_the_conveyor_until_cleared(opcua_rig: OpcUaRig) -> None:
    rig = opcua_rig
    ticket = await rig.hub.conveyor("loop-1").transport("t-jam", "TOTE-J", "PS-1")
    await ticket.acked
    rig.sim.conveyor("loop-1").inject_jam("main")
    jammed = await rig.wait_status("loop-1", lambda s: s.fault == "jam:main")
    assert jammed.state == "OutOfService" and jammed.detail["estop"] is False
    await asyncio.sleep(LONGER_THAN_A_TRANSPORT)
    assert not ticket.done.done()  # the tote waits on the stopped belt

    rig.sim.conveyor("loop-1").clear()
    await rig.wait_status("loop-1", lambda s: s.fault is None and s.state == "Executing",
                          since=rig.events.events.index(jammed))
    assert (await asyncio.wait_for(ticket.done, 5)).ok


async def test_a_jam_cleared_by_taking_the_totes_off_fails_their_transports(opcua_rig: OpcUaRig) -> None:
    rig = opcua_rig
    ticket = await rig.hub.conveyor("loop-1").transport("t-off", "TOTE-O", "PS-1")
    await ticket.acked
    rig.sim.conveyor("loop-1").inject_jam("pick-out")  # where the tote is now
    rig.sim.conveyor("loop-1").clear(remove_totes=True)
    done = await asyncio.wait_for(ticket.done, 5)
    assert not done.ok and done.reason == "jam:pick-out"


async def test_estop_stops_everything_until_reset(opcua_rig: OpcUaRig) -> None:
    rig = opcua_rig
    conveyor, sorter = rig.hub.conveyor("loop-1"), rig.hub.sorter("sorter-1")
    in_flight = await conveyor.transport("t-es", "TOTE-E", "PS-1")
    await in_flight.acked
    mark = rig.events.mark()
    rig.sim.estop()
    await wait_all(rig, lambda s: s.state == "OutOfService" and s.fault == "estop" and s.detail["estop"],
                   mark)
    refusals = (await conveyor.transport("t-es2", "TOTE-F", "PS-1"), await sorter.induct("i-es", "TOTE-G"))
    for refused in refusals:
        with pytest.raises(CommandRejected, match="estop"):
            await refused.acked
    await asyncio.sleep(LONGER_THAN_A_TRANSPORT)
    assert not in_flight.done.done()

    mark = rig.events.mark()
    rig.sim.reset()
    await wait_all(rig, lambda s: s.fault is None and not s.detail["estop"], mark)
    assert (await asyncio.wait_for(in_flight.done, 5)).ok
    retried = await conveyor.transport("t-es2", "TOTE-F", "PS-1")  # refused ids may be tried again
    assert (await asyncio.wait_for(retried.done, 5)).ok
    assert rig.sim.conveyor("loop-1").executed["t-es2"] == 1
    # finished: an equal ticket handed back, nothing sent
    assert same_ticket(await conveyor.transport("t-es2", "TOTE-F", "PS-1"), retried)
    assert rig.sim.conveyor("loop-1").executed["t-es2"] == 1


async def test_a_panel_in_another_process_injects_and_resets_faults(
        opcua_rig: OpcUaRig, raw_plc: Callable[[str], RawPlcClient]) -> None:
    rig = opcua_rig
    async with raw_plc(rig.sim.endpoint) as panel:
        plc, inject, reset = (panel.contract_node(n) for n in ("Plc", "Plc.InjectFault", "Plc.Reset"))
        assert await panel.read(panel.contract_node("Plc.ContractVersion")) == "1.0"
        assert await panel.call(plc, inject, "loop-1", "jam:main") == "accepted"
        await rig.wait_status("loop-1", lambda s: s.fault == "jam:main")
        assert await panel.call(plc, inject, "loop-1", "jam:nowhere") == "rejected:unknown_segment"
        assert await panel.call(plc, inject, "no-such-device", "jam") == "rejected:unknown_target"
        assert await panel.call(plc, inject, "sorter-1", "jam") == "accepted"
        await rig.wait_status("sorter-1", lambda s: s.fault == "jam:loop")
        mark = rig.events.mark()
        assert await panel.call(plc, reset) == "accepted"
        await wait_all(rig, lambda s: s.fault is None, mark)
        assert await panel.call(plc, inject, "", "estop") == "accepted"
        await wait_all(rig, lambda s: s.fault == "estop", rig.events.mark())


async def test_bad_values_and_events_from_the_plc_are_counted_never_fatal(opcua_rig: OpcUaRig) -> None:
    rig, sim = opcua_rig, opcua_rig.sim
    before = rig.hub.conveyor("loop-1").status
    await sim.force_value("loop-1", "State", ua.Variant("Dancing", ua.VariantType.String))
    await sim.force_value("loop-1", "EStop", ua.Variant("yes", ua.VariantType.String))
    await sim.force_value("loop-1", "Fault", ua.Variant(42, ua.VariantType.Int32))
    await sim.force_event("loop-1", "ScanEventType", ScanPoint="sp-induct", ScanId="", Barcode="X")
    await sim.force_event("loop-1", "TransportCompletedEventType", CommandId="t-?", Outcome="maybe")
    async with asyncio.timeout(5):
        while rig.hub.counters["bad_value"] < 3 or rig.hub.counters["bad_event"] < 2:
            await asyncio.sleep(0.01)
    assert rig.hub.conveyor("loop-1").status.state == before.state
    # A PLC may publish the OPC 40001 state as its enumeration index.
    await sim.force_value("loop-1", "State", ua.Variant(3, ua.VariantType.Int32))
    await rig.wait_status("loop-1", lambda s: s.state == "Executing")
    ticket = await rig.hub.conveyor("loop-1").transport("t-still", "TOTE-S", "PS-1")
    assert (await asyncio.wait_for(ticket.done, 5)).ok


async def test_a_plc_speaking_another_contract_version_is_not_used(
        demo_site: Site, make_opcua_rig: OpcUaRigFactory) -> None:
    rig = await make_opcua_rig(demo_site, hub=False)
    await rig.sim.force_value("plc-1", "ContractVersion", ua.Variant("2.0", ua.VariantType.String))
    await rig.start_hub_offline()
    assert not any(d.status.online for d in rig.hub.devices())
    assert rig.hub.counters["incompatible_plc"] >= 1


async def test_credentials_from_the_site_file(demo_site: Site, make_opcua_rig: OpcUaRigFactory) -> None:
    plc = demo_site.plcs[0].model_copy(update={"username": "wcs", "password": "s3cret"})
    site = demo_site.model_copy(update={"plcs": [plc]})
    rig = await make_opcua_rig(site)
    assert all(d.status.online for d in rig.hub.devices())
    wrong = site.model_copy(update={"plcs": [plc.model_copy(update={"password": "guess"})]})
    intruder = await make_opcua_rig(wrong, hub=False)
    intruder.sims = rig.sims  # the same PLC, reached with the wrong password
    await intruder.start_hub_offline()
    assert not any(d.status.online for d in intruder.hub.devices())
    assert intruder.hub.counters["connect_failed"] >= 1


async def test_a_restarted_controller_resending_a_finished_command_hears_its_completion_again(
        opcua_rig: OpcUaRig) -> None:
    first = await opcua_rig.hub.conveyor("loop-1").transport("t-old", "TOTE-R", "PS-2")
    assert (await asyncio.wait_for(first.done, 5)).ok
    await opcua_rig.hub.stop()
    restarted = await opcua_rig.start_hub()  # a new hub: no tickets, like a controller after a restart
    again = await restarted.conveyor("loop-1").transport("t-old", "TOTE-R", "PS-2")
    done = await asyncio.wait_for(again.done, 2)
    assert done.ok and done.result["destination"] == "PS-2" and done.at == first.done.result().at
    assert opcua_rig.sim.conveyor("loop-1").executed["t-old"] == 1


async def test_reset_from_the_controller_clears_the_estop_and_jams_of_the_whole_plc(
        opcua_rig: OpcUaRig) -> None:
    rig = opcua_rig
    conveyor, sorter = rig.hub.conveyor("loop-1"), rig.hub.sorter("sorter-1")
    in_flight = await conveyor.transport("t-rs", "TOTE-R", "PS-1")
    await in_flight.acked
    mark = rig.events.mark()
    rig.sim.sorter("sorter-1").inject_jam(None)
    rig.sim.estop()
    await wait_all(rig, lambda s: s.state == "OutOfService" and s.detail["estop"], mark)

    mark = rig.events.mark()
    reset = await conveyor.reset("reset-1")  # the conveyor's PLC: the sorter's jam goes too
    await asyncio.wait_for(reset.acked, 2)
    completion = await asyncio.wait_for(reset.done, 2)
    assert completion.ok and completion.result == {"plc": conveyor.plc_id}
    await wait_all(rig, lambda s: s.fault is None and not s.detail["estop"], mark)
    assert rig.sim.sorter("sorter-1").jammed is None
    assert (await asyncio.wait_for(in_flight.done, 5)).ok
    assert same_ticket(await conveyor.reset("reset-1"), reset)  # finished: handed back, no second call
    healthy = await sorter.reset("reset-2")  # nothing to reset: accepted all the same
    assert (await asyncio.wait_for(healthy.done, 2)).ok

