"""Faults on the MQTT side: cut links, a silent printer, bad payloads, retries, broker restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from adapters.mqtt import MqttHub, MqttPickLight, MqttPrinter
from adapters.mqtt.link import LinkState
from controller.ports import DeviceEvent, DeviceStatus
from controller.site import Site
from simulators.broker import EmbeddedBroker
from simulators.mqtt import MqttFloor
from tests.conftest import FLOOR_SPEED, EventLog, MqttRig, RawPeer, RigFactory, eventually, with_simulation
from tests.fakes import same_ticket

LABEL = "^XA^FO20,20^A0N,40,40^FDTote T-17^FS^XZ"
ROOT = "floorctl/v1"


def status_of(device_id: str, **expected: object) -> Callable[[DeviceEvent], bool]:
    """A predicate for EventLog.wait_for: a DeviceStatus of `device_id` whose fields match `expected`."""
    def matches(event: DeviceEvent) -> bool:
        return (isinstance(event, DeviceStatus) and event.device_id == device_id
                and all(getattr(event, key) == value for key, value in expected.items()))
    return matches


def with_printers(site: Site, **changes: object) -> Site:
    return site.model_copy(update={"printers": [p.model_copy(update=changes) for p in site.printers]})


async def test_cut_link_reports_connection_broken_then_recovers(rig: MqttRig, events: EventLog) -> None:
    sim = rig.floor.pick_light("ptl-05")
    light = rig.hub.device("ptl-05")
    assert isinstance(light, MqttPickLight)

    mark = events.mark()
    await sim.disconnect()
    assert sim.link.state is LinkState.DISCONNECTED  # and it stays down until reconnect()
    broken = await events.wait_for(status_of("ptl-05", online=False), since=mark)
    assert isinstance(broken, DeviceStatus) and broken.detail["connection"] == "CONNECTIONBROKEN"
    assert not light.status.online

    # Sent while the device is away: the broker keeps it in the device's persistent session.
    queued = await light.show("pick-while-cut", "A-05", 2)
    await asyncio.sleep(0.3)  # longer than the first backoffs: a cut link does not come back by itself
    assert sim.link.state is LinkState.DISCONNECTED
    await sim.reconnect()
    assert sim.link.state is LinkState.CONNECTED and sim.link.connected
    await events.wait_for(status_of("ptl-05", online=True), since=events.after(broken))
    assert (await asyncio.wait_for(queued.done, 3)).result == {"picked": 2, "short": False}

    after = await light.show("pick-after-cut", "A-05", 1)
    assert (await asyncio.wait_for(after.done, 3)).ok
    assert sim.executions == {"pick-while-cut": 1, "pick-after-cut": 1}


async def test_a_pick_refused_while_faulted_is_executed_when_retried_after_the_fault(rig: MqttRig) -> None:
    sim = rig.floor.pick_light("ptl-06")
    light = rig.hub.device("ptl-06")
    assert isinstance(light, MqttPickLight)
    sim.inject("display_fault")
    refused = await light.show("pick-retry", "A-06", 1)
    assert (await asyncio.wait_for(refused.done, 3)).reason == "display_fault"
    sim.clear()
    retried = await light.show("pick-retry", "A-06", 1)  # the same id: a fresh command, judged afresh
    assert retried is not refused
    assert (await asyncio.wait_for(retried.done, 3)).ok
    assert sim.executions["pick-retry"] == 1
    assert rig.hub.counters["duplicate_ack"] == 0 and rig.floor.counters["duplicate_command"] == 0


async def test_printer_paper_out_is_silent_then_reported_then_prints_after_clear(
        rig: MqttRig, events: EventLog) -> None:
    sim = rig.floor.printer("prn-1")
    printer = rig.hub.device("prn-1")
    assert isinstance(printer, MqttPrinter)

    mark = events.mark()
    sim.inject("paper_out")
    ticket = await printer.print_label("label-17", LABEL)
    status = await printer.host_status("hs-17")
    with pytest.raises(TimeoutError):  # like a Zebra: no ack, no done, no ~HS answer
        await asyncio.wait_for(asyncio.shield(asyncio.gather(ticket.acked, status.acked)), 0.5)
    assert rig.floor.counters["ignored_while_faulted"] == 2

    alert = await events.wait_for(lambda e: isinstance(e, DeviceStatus) and e.device_id == "prn-1"
                                  and "alert" in e.detail, since=mark)
    assert isinstance(alert, DeviceStatus) and alert.fault == "paper_out"
    assert alert.detail["alert"] == {"code": "paper_out", "active": True, "message": "PAPER OUT"}
    state = await events.wait_for(status_of("prn-1", state="faulted", fault="paper_out"), since=mark)
    assert isinstance(state, DeviceStatus) and state.detail["paper_out"] and state.detail["paused"]

    mark = events.mark()
    sim.clear()
    await events.wait_for(status_of("prn-1", state="idle", fault=None), since=mark)
    retry = await printer.print_label("label-17", LABEL)  # the engine's retry: same id, same ticket
    assert retry is ticket and ticket.sends == 2
    assert (await asyncio.wait_for(ticket.done, 3)).ok
    assert sim.executions["label-17"] == 1


async def test_printer_runs_out_of_media(demo_site: Site, make_rig: RigFactory, events: EventLog) -> None:
    rig = await make_rig(with_printers(demo_site, media_labels=2))
    printer = rig.hub.device("prn-2")
    assert isinstance(printer, MqttPrinter)
    for n in (1, 2):
        done = await asyncio.wait_for((await printer.print_label(f"roll-{n}", LABEL)).done, 3)
        assert done.result == {"labels_remaining": 2 - n}
    await events.wait_for(status_of("prn-2", fault="paper_out"))
    third = await printer.print_label("roll-3", LABEL)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(third.acked), 0.3)
    rig.floor.printer("prn-2").clear()  # a fresh roll
    await eventually(lambda: printer.status.fault is None)
    assert (await asyncio.wait_for((await printer.print_label("roll-3", LABEL)).done, 3)).result == {
        "labels_remaining": 1}


async def test_label_under_the_head_is_held_through_a_fault(demo_site: Site, make_rig: RigFactory) -> None:
    rig = await make_rig(with_simulation(demo_site, "printer", print_s=40.0))  # 0.4 s of test time
    printer = rig.hub.device("prn-1")
    assert isinstance(printer, MqttPrinter)
    ticket = await printer.print_label("held-1", LABEL)
    await asyncio.wait_for(ticket.acked, 2)
    rig.floor.printer("prn-1").inject("head_open")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(ticket.done), 0.6)
    rig.floor.printer("prn-1").clear()
    assert (await asyncio.wait_for(ticket.done, 3)).ok
    assert len(rig.floor.printer("prn-1").printed) == 1


async def test_faults_can_be_injected_over_mqtt(rig: MqttRig, raw_peer: RawPeer, events: EventLog) -> None:
    mark = events.mark()
    await raw_peer.publish(f"{ROOT}/sim/prn-2/inject", {"fault": "ribbon_out"})
    await events.wait_for(status_of("prn-2", fault="ribbon_out", state="faulted"), since=mark)
    await raw_peer.publish(f"{ROOT}/sim/PS-1/inject", {"fault": "station_blocked"})
    await events.wait_for(status_of("PS-1", fault="station_blocked"), since=mark)
    rejected = await rig.hub.device("PS-1").pack("pack-blocked", "o-1", "t-1", 1)  # type: ignore[attr-defined]
    assert (await asyncio.wait_for(rejected.done, 2)).reason == "station_blocked"

    await raw_peer.publish(f"{ROOT}/sim/prn-2/inject", {"fault": "no_such_fault"})
    await raw_peer.publish(f"{ROOT}/sim/prn-2/inject", b"{not json")
    await eventually(lambda: rig.floor.counters["malformed_payload"] == 2)

    for device_id in ("prn-2", "PS-1"):
        await raw_peer.publish(f"{ROOT}/sim/{device_id}/inject", {"fault": None})
    await eventually(lambda: rig.hub.device("prn-2").status.fault is None
                     and rig.hub.device("PS-1").status.fault is None)
    packed = await rig.hub.device("PS-1").pack("pack-unblocked", "o-1", "t-1", 1)  # type: ignore[attr-defined]
    assert (await asyncio.wait_for(packed.done, 2)).ok


async def test_malformed_payloads_are_counted_and_the_hub_keeps_working(rig: MqttRig,
                                                                         raw_peer: RawPeer) -> None:
    header = {"message_id": 1, "timestamp": "2025-01-01T00:00:00.000Z", "device_id": "ptl-01",
              "version": "1.0"}
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-01/ack", b"\xff not json")
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-01/done", {"header": header, "command_id": 5})
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-01/state", "[1, 2, 3]")
    no_header = {"command_id": "x", "status": "accepted"}
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-01/ack", no_header)
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-99/ack", {"header": header, **no_header})
    await raw_peer.publish(f"{ROOT}/printer/ptl-01/done",
                           {"header": header, "command_id": "x", "outcome": "done"})
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-01/done",
                           {"header": header, "command_id": "never-sent", "outcome": "done", "result": {}})
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-01/cmd", b"garbage for the device")
    await eventually(lambda: rig.hub.counters == {"malformed_payload": 4, "unexpected_topic": 2,
                                                  "unknown_command": 1})
    await eventually(lambda: rig.floor.counters["malformed_payload"] == 1)

    ticket = await rig.hub.device("ptl-01").show("pick-after-garbage", "A-01", 1)  # type: ignore[attr-defined]
    assert (await asyncio.wait_for(ticket.done, 3)).ok
    assert rig.hub.device("ptl-01").status.online


async def test_duplicate_command_id_is_executed_once(demo_site: Site, make_rig: RigFactory,
                                                     raw_peer: RawPeer) -> None:
    rig = await make_rig(with_simulation(demo_site, "packer", mean_s=40.0, spread_s=0.0))  # 0.4 s
    station = rig.hub.device("PS-2")
    first = await station.pack("pack-dup", "o-9", "t-9", 2)  # type: ignore[attr-defined]
    await asyncio.wait_for(first.acked, 2)
    again = await station.pack("pack-dup", "o-9", "t-9", 2)  # type: ignore[attr-defined]
    assert again is first and first.sends == 2
    await eventually(lambda: rig.hub.counters["duplicate_ack"] == 1)
    assert (await asyncio.wait_for(first.done, 3)).ok
    sim = rig.floor.pack_station("PS-2")
    assert sim.executions["pack-dup"] == 1

    # A QoS1 redelivery of the finished command straight onto the wire: answered again, not redone.
    redelivered = {"header": {"message_id": 99, "timestamp": "2025-01-01T00:00:00.000Z",
                              "device_id": "floorctl", "version": "1.0"},
                   "command_id": "pack-dup", "action": "pack",
                   "params": {"order_id": "o-9", "tote_id": "t-9", "items": 2}}
    await raw_peer.publish(f"{ROOT}/pack_station/PS-2/cmd", redelivered)
    await eventually(lambda: rig.hub.counters["duplicate_ack"] == 2
                     and rig.hub.counters["duplicate_done"] == 1)
    assert sim.executions["pack-dup"] == 1
    assert rig.floor.counters["duplicate_command"] == 2
    assert same_ticket(await station.pack("pack-dup", "o-9", "t-9", 2), first)  # type: ignore[attr-defined]
    assert first.sends == 2  # finished: nothing is sent again


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill-9"])
async def test_hub_reconnects_after_broker_restart(rig: MqttRig, events: EventLog, kill: bool) -> None:
    mark = events.mark()
    await rig.broker.restart(kill=kill)
    offline = await events.wait_for(status_of("ptl-07", online=False), since=mark)
    # Its birth after the restart: the device has re-subscribed (kill -9 may have lost its session).
    await events.wait_for(status_of("ptl-07", online=True), since=events.after(offline))
    ticket = await rig.hub.device("ptl-07").show("pick-after-restart", "A-07", 1)  # type: ignore[attr-defined]
    assert (await asyncio.wait_for(ticket.done, 5)).ok


async def test_command_sent_during_broker_outage_goes_out_once_after(rig: MqttRig) -> None:
    await rig.broker.stop()
    await eventually(lambda: not rig.hub.connected)
    ticket = await rig.hub.device("PS-1").pack("pack-outage", "o-3", "t-3", 1)  # type: ignore[attr-defined]
    assert ticket.sent_at is None  # paho holds it; nothing is on the wire yet
    await rig.broker.start()
    done = await asyncio.wait_for(ticket.done, 10)
    assert done.ok and ticket.sent_at is not None and ticket.sends == 1
    assert rig.floor.pack_station("PS-1").executions["pack-outage"] == 1
    assert rig.hub.counters["duplicate_ack"] == 0


async def test_devices_republish_state_when_the_controller_comes_online(rig: MqttRig, raw_peer: RawPeer,
                                                                        events: EventLog) -> None:
    mark = events.mark()
    header = {"message_id": 7, "timestamp": "2025-01-01T00:00:00.000Z", "device_id": "floorctl",
              "version": "1.0"}
    await raw_peer.publish(f"{ROOT}/controller/state", {"header": header, "connection": "ONLINE"})
    for device in rig.hub.devices():
        await events.wait_for(status_of(device.device_id, online=True), since=mark)


async def test_hub_started_before_the_broker_connects_when_it_appears(demo_site: Site, broker: EmbeddedBroker,
                                                                     events: EventLog) -> None:
    await broker.stop()
    settings = demo_site.broker.model_copy(update={"connect_timeout_s": 0.3})
    site = demo_site.model_copy(update={"broker": settings})
    hub = MqttHub(site, broker_url=broker.url)
    await hub.start(events)  # gives up waiting after connect_timeout_s, keeps trying behind
    try:
        assert not hub.connected
        early = await hub.device("PS-2").pack("pack-early", "o-1", "t-1", 1)  # type: ignore[attr-defined]
        await broker.start()
        assert await hub.wait_connected(5)
        floor = MqttFloor(site, broker_url=broker.url, speed=FLOOR_SPEED)
        await floor.start()
        try:
            # Published before the device ever subscribed: MQTT drops it, the engine's time-out and
            # retry (same id) recover it.
            retry = await hub.device("PS-2").pack("pack-early", "o-1", "t-1", 1)  # type: ignore[attr-defined]
            assert retry is early
            assert (await asyncio.wait_for(early.done, 3)).ok
        finally:
            await floor.stop()
    finally:
        await hub.stop()
