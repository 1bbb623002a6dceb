"""The wire format of docs/devices.md, checked by a peer that shares no code with either side.

The peer is a plain paho client: it plays the controller against a simulated device, and a device
against the controller's hub, using only topic names and JSON shapes written in the contract.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.mqtt import MqttHub
from controller.site import Site
from simulators.broker import EmbeddedBroker
from tests.conftest import EventLog, MqttRig, RawPeer

ROOT = "floorctl/v1"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def body(message: Any, sender: str) -> dict[str, Any]:
    """The JSON body of an MQTT message, after checking its QoS and its header."""
    assert message.qos == 1
    data = json.loads(message.payload)
    header = data.pop("header")
    assert set(header) == {"message_id", "timestamp", "device_id", "version"}
    assert type(header["message_id"]) is int and header["message_id"] >= 1
    assert TIMESTAMP.match(header["timestamp"])
    assert header["device_id"] == sender and header["version"] == "1.0"
    data["_message_id"] = header["message_id"]
    return data


def header(sender: str, message_id: int = 1) -> dict[str, Any]:
    return {"message_id": message_id, "timestamp": "2025-06-01T08:00:00.000Z", "device_id": sender,
            "version": "1.0"}


async def test_simulated_pick_light_speaks_the_contract(rig: MqttRig, raw_peer: RawPeer) -> None:
    base = f"{ROOT}/pick_light/ptl-06"
    await raw_peer.subscribe(f"{base}/#")
    state = await raw_peer.next(f"{base}/state")
    assert state.retain
    assert body(state, "ptl-06") | {"_message_id": 0} == {
        "connection": "ONLINE", "state": "idle", "fault": None, "display": None, "queued": 0,
        "_message_id": 0}

    for n in (1, 2):
        await raw_peer.publish(f"{base}/cmd", {"header": header("panel", n), "command_id": f"peer-{n}",
                                               "action": "show", "params": {"location": "A-06", "qty": 3,
                                                                            "colour": "red"}})
        acked = body(await raw_peer.next(f"{base}/ack"), "ptl-06")
        assert acked == {"command_id": f"peer-{n}", "status": "accepted", "_message_id": n}
        finished = body(await raw_peer.next(f"{base}/done"), "ptl-06")
        assert finished == {"command_id": f"peer-{n}", "outcome": "done",
                            "result": {"picked": 3, "short": False}, "_message_id": n}

    await raw_peer.publish(f"{base}/cmd", {"header": header("panel", 3), "command_id": "peer-3",
                                           "action": "show", "params": {"location": "A-06"}})
    rejected = body(await raw_peer.next(f"{base}/ack"), "ptl-06")
    assert rejected["status"] == "rejected" and rejected["reason"].startswith("bad_params")


async def test_simulated_printer_alerts_and_goes_silent(rig: MqttRig, raw_peer: RawPeer) -> None:
    base = f"{ROOT}/printer/prn-1"
    await raw_peer.subscribe(f"{base}/#")
    await raw_peer.next(f"{base}/state")  # the retained copy
    await raw_peer.publish(f"{ROOT}/sim/prn-1/inject", {"fault": "head_open"})
    state = body(await raw_peer.next(f"{base}/state"), "prn-1")
    assert state["state"] == "faulted" and state["fault"] == "head_open" and state["head_open"] is True
    assert body(await raw_peer.next(f"{base}/alert"), "prn-1") | {"_message_id": 0} == {
        "alert": "head_open", "active": True, "message": "HEAD OPEN", "_message_id": 0}

    await raw_peer.publish(f"{base}/cmd", {"header": header("panel"), "command_id": "hs-1",
                                           "action": "host_status", "params": {}})
    with pytest.raises(TimeoutError):
        await raw_peer.next(f"{base}/ack", timeout=0.4)


async def test_last_will_marks_a_cut_device_connection_broken(rig: MqttRig, raw_peer: RawPeer) -> None:
    topic = f"{ROOT}/pack_station/PS-1/state"
    await raw_peer.subscribe(topic)
    await raw_peer.next(topic)
    await rig.floor.pack_station("PS-1").disconnect()
    will = body(await raw_peer.next(topic), "PS-1")
    assert (will["connection"], will["state"], will["fault"]) == ("CONNECTIONBROKEN", "unknown", None)


@pytest.fixture
async def lone_hub(demo_site: Site, broker: EmbeddedBroker, events: EventLog) -> AsyncIterator[MqttHub]:
    hub = MqttHub(demo_site, broker_url=broker.url, client_id="wcs-under-test")
    await hub.start(events)
    try:
        yield hub
    finally:
        await hub.stop()


async def test_hub_speaks_the_contract_to_a_device_it_did_not_write(
        lone_hub: MqttHub, raw_peer: RawPeer, events: EventLog) -> None:
    base = f"{ROOT}/pick_light/ptl-09"
    await raw_peer.subscribe(f"{ROOT}/controller/state")
    online = await raw_peer.next(f"{ROOT}/controller/state")
    assert online.retain and body(online, "wcs-under-test")["connection"] == "ONLINE"

    await raw_peer.subscribe(f"{base}/cmd")
    await raw_peer.publish(f"{base}/state", {"header": header("ptl-09"), "connection": "ONLINE",
                                             "state": "idle", "fault": None, "display": None, "queued": 0},
                           retain=True)
    await events.wait_for(lambda e: getattr(e, "device_id", None) == "ptl-09" and getattr(e, "online", False))

    ticket = await lone_hub.device("ptl-09").show("wcs-1", "A-09", 2)  # type: ignore[attr-defined]
    command = body(await raw_peer.next(f"{base}/cmd"), "wcs-under-test")
    assert command == {"command_id": "wcs-1", "action": "show", "_message_id": 1,
                       "params": {"location": "A-09", "qty": 2, "colour": "green"}}
    await raw_peer.publish(f"{base}/ack",
                           {"header": header("ptl-09"), "command_id": "wcs-1", "status": "accepted"})
    await asyncio.wait_for(ticket.acked, 2)
    await raw_peer.publish(f"{base}/done", {"header": header("ptl-09"), "command_id": "wcs-1",
                                            "outcome": "failed", "reason": "operator_absent", "result": {}})
    completion = await asyncio.wait_for(ticket.done, 2)
    assert (completion.ok, completion.reason) == (False, "operator_absent")

    await raw_peer.publish(f"{base}/state", {"header": header("ptl-09", 2), "connection": "CONNECTIONBROKEN",
                                             "state": "unknown", "fault": None}, retain=True)
    await events.wait_for(
        lambda e: getattr(e, "device_id", None) == "ptl-09" and not getattr(e, "online", True))
    assert lone_hub.device("ptl-09").status.detail == {"connection": "CONNECTIONBROKEN"}


async def test_hub_says_offline_when_it_stops(demo_site: Site, broker: EmbeddedBroker,
                                              raw_peer: RawPeer) -> None:
    hub = MqttHub(demo_site, broker_url=broker.url, client_id="wcs-stopping")
    await hub.start(EventLog())
    await raw_peer.subscribe(f"{ROOT}/controller/state")
    assert body(await raw_peer.next(f"{ROOT}/controller/state"), "wcs-stopping")["connection"] == "ONLINE"
    await hub.stop()
    assert body(await raw_peer.next(f"{ROOT}/controller/state"), "wcs-stopping")["connection"] == "OFFLINE"
    async with RawPeer(broker, "late-panel") as late:  # retained: whoever subscribes later learns it too
        await late.subscribe(f"{ROOT}/controller/state")
        retained = await late.next(f"{ROOT}/controller/state")
        assert retained.retain and body(retained, "wcs-stopping")["connection"] == "OFFLINE"
