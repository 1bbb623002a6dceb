"""Shared fixtures: a private broker per test, the demo site, and a simulated MQTT floor with a hub.

Every test that needs MQTT gets its own Mosquitto (config/mosquitto.conf) on a free port and its own
data directory; it starts in ~15 ms, so no state leaks between tests through sessions or retained
messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from adapters.mqtt import MqttHub
from controller.ports import DeviceEvent, DeviceStatus
from controller.site import Site, load_site
from simulators.broker import EmbeddedBroker
from simulators.broker import free_port as _free_port
from simulators.mqtt import MqttFloor

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOOR_SPEED = 100.0  # demo operators take ~3 s of floor time: 30 ms of test time


@contextlib.contextmanager
def throwaway_database(prefix: str, url: str) -> Iterator[str]:
    """A fresh PostgreSQL database `<prefix>_<random>` on the server of `url`, whose URL (same driver
    as `url`) is yielded, dropped afterwards; the test is skipped when the server cannot be reached."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    def admin(sql: str) -> None:
        with psycopg.connect(url.replace("+asyncpg", ""), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    try:
        admin(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {url}: {exc}")
    try:
        yield f"{url.rsplit('/', 1)[0]}/{name}"
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    return _free_port()


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its defaults costs tens of milliseconds a hash by design, and the API tests hash and
    verify hundreds. The same algorithm at its smallest costs keeps every check real (a hash stores
    its own costs) and the suite quick. Controllers started as processes keep the defaults."""
    from argon2 import PasswordHasher

    from controller.security import auth

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(auth, "_hasher", cheap)
    monkeypatch.setattr(auth, "_DECOY", cheap.hash("decoy"))


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    return _free_port


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(data_dir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
def demo_site() -> Site:
    return load_site(REPO_ROOT / "config" / "demo.yaml")


class EventLog:
    """An EventSink that records what a hub reports, with a way to wait for a given event."""

    def __init__(self) -> None:
        self.events: list[DeviceEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: DeviceEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def statuses(self, device_id: str) -> list[DeviceStatus]:
        return [e for e in self.events if isinstance(e, DeviceStatus) and e.device_id == device_id]

    def mark(self) -> int:
        """A position in the log; `wait_for(..., since=mark)` then only looks at later events."""
        return len(self.events)

    def after(self, event: DeviceEvent) -> int:
        """The position just after `event`, to wait for what follows it."""
        return next(i for i, seen in enumerate(self.events) if seen is event) + 1

    async def wait_for(self, predicate: Callable[[DeviceEvent], bool], timeout: float = 5.0,
                       since: int = 0) -> DeviceEvent:
        """The first event after `since` (already seen or still to come) that satisfies `predicate`."""
        async with asyncio.timeout(timeout):
            seen = since
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def events() -> EventLog:
    return EventLog()


def online(device_id: str) -> Callable[[DeviceEvent], bool]:
    """A predicate for EventLog.wait_for: `device_id` reported online."""
    return lambda event: isinstance(event, DeviceStatus) and event.device_id == device_id and event.online


class MqttRig:
    """A simulated floor and the controller's hub on one private broker."""

    def __init__(self, site: Site, broker: EmbeddedBroker, events: EventLog, speed: float) -> None:
        self.site = site
        self.broker = broker
        self.events = events
        self.floor = MqttFloor(site, broker_url=broker.url, speed=speed)
        self.hub = MqttHub(site, broker_url=broker.url)

    async def start(self) -> None:
        await self.floor.start()
        await self.hub.start(self.events)
        # Every device's retained state reaches the hub right after it subscribes.
        for device in self.hub.devices():
            await self.events.wait_for(online(device.device_id))

    async def stop(self) -> None:
        await self.hub.stop()
        await self.floor.stop()


@pytest.fixture
def rig_site(demo_site: Site) -> Site:
    """The site a rig runs; override in a test module to change the floor."""
    return demo_site


@pytest.fixture
async def rig(rig_site: Site, broker: EmbeddedBroker, events: EventLog) -> AsyncIterator[MqttRig]:
    running = MqttRig(rig_site, broker, events, FLOOR_SPEED)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


RigFactory = Callable[[Site], Awaitable[MqttRig]]


@pytest.fixture
async def make_rig(broker: EmbeddedBroker, events: EventLog) -> AsyncIterator[RigFactory]:
    """For tests that need a floor other than the demo's: `rig = await make_rig(site)`."""
    rigs: list[MqttRig] = []

    async def start(site: Site) -> MqttRig:
        rig = MqttRig(site, broker, events, FLOOR_SPEED)
        rigs.append(rig)
        await rig.start()
        return rig

    yield start
    for rig in rigs:
        await rig.stop()


def with_simulation(site: Site, part: str, **changes: Any) -> Site:
    """`site` with one part of its simulation model changed, e.g.
    `with_simulation(site, "operator", mean_s=0)`."""
    simulation = site.simulation.model_copy(
        update={part: getattr(site.simulation, part).model_copy(update=changes)})
    return site.model_copy(update={"simulation": simulation})


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (checked every 10 ms), or fail the test."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class RawPeer:
    """A plain paho client on its own network thread that knows nothing of adapters.mqtt: it plays a
    device, a panel or a misbehaving sender, using only what docs/devices.md says."""

    def __init__(self, broker: EmbeddedBroker, client_id: str = "raw-peer") -> None:
        self._loop = asyncio.get_running_loop()
        self.messages: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._port = broker.port

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.messages.put_nowait, message)

    async def __aenter__(self) -> Self:
        connected = threading.Event()
        self._client.on_connect = lambda *args: connected.set()
        await asyncio.to_thread(self._client.connect, "127.0.0.1", self._port)
        self._client.loop_start()
        assert await asyncio.to_thread(connected.wait, 5), "raw peer could not connect"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self._client.subscribe(topic, qos=1)
        assert await asyncio.to_thread(self._subscribed.wait, 5), f"no SUBACK for {topic}"

    async def publish(self, topic: str, payload: bytes | str | dict[str, Any], retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 5)

    async def next(self, topic: str, timeout: float = 5.0) -> paho.MQTTMessage:
        """The next message on exactly `topic`; messages on other topics are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.messages.get()
                if message.topic == topic:
                    return message


@pytest.fixture
async def raw_peer(broker: EmbeddedBroker) -> AsyncIterator[RawPeer]:
    async with RawPeer(broker) as peer:
        yield peer
