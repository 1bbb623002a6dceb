"""Without Mosquitto the floor falls back to amqtt (MQTT 3.1.1): the same devices must still work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.ports import DeviceStatus
from controller.site import Site
from simulators.broker import EmbeddedBroker
from tests.conftest import FLOOR_SPEED, EventLog, MqttRig


@pytest.fixture
async def amqtt_rig(demo_site: Site, tmp_path: Path) -> AsyncIterator[MqttRig]:
    async with EmbeddedBroker(data_dir=tmp_path / "amqtt", kind="amqtt") as broker:
        assert broker.url.endswith("?protocol=3.1.1")
        rig = MqttRig(demo_site, broker, EventLog(), FLOOR_SPEED)
        await rig.start()
        try:
            yield rig
        finally:
            await rig.stop()


async def test_commands_and_last_will_through_amqtt(amqtt_rig: MqttRig) -> None:
    rig = amqtt_rig
    pick = await rig.hub.device("ptl-01").show("amqtt-pick", "A-01", 2)  # type: ignore[attr-defined]
    label = await rig.hub.device("prn-1").print_label("amqtt-label", "^XA^FO1,1^FDx^FS^XZ")  # type: ignore[attr-defined]
    results = await asyncio.wait_for(asyncio.gather(pick.done, label.done), 5)
    assert [r.ok for r in results] == [True, True]

    mark = rig.events.mark()
    await rig.floor.pick_light("ptl-02").disconnect()
    broken = await rig.events.wait_for(
        lambda e: isinstance(e, DeviceStatus) and e.device_id == "ptl-02" and not e.online, since=mark)
    assert isinstance(broken, DeviceStatus) and broken.detail["connection"] == "CONNECTIONBROKEN"
