"""The secure broker configuration against a private Mosquitto: the files `floorctl credentials` writes
for config/secure-site.yaml, run with config/mosquitto-secure.conf, with the hub and the simulated
devices each on their own account over TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from adapters.mqtt import MqttHub
from controller.contract.mqtt import encode
from controller.security import pki
from controller.security.credentials import write_credentials
from controller.security.mqtt_accounts import write_password_file
from controller.site import Site, parse_site
from simulators.broker import EmbeddedBroker
from tests.conftest import FLOOR_SPEED, EventLog, MqttRig, eventually

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs Mosquitto")


def secure_site(credentials: Path) -> Site:
    """The demo floor with the broker section of config/secure-site.yaml, its credentials/ paths in
    `credentials` (the PLCs as in demo.yaml: these tests are about MQTT)."""
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    secure = yaml.safe_load((ROOT / "config" / "secure-site.yaml").read_text())
    broker = secure["broker"]

    def moved(path: str) -> str:
        return str(credentials / Path(path).relative_to("credentials"))

    broker["password_file"] = moved(broker["password_file"])
    broker["tls"] = {key: moved(value) for key, value in broker["tls"].items()}
    broker["simulators"] = {key: moved(value) for key, value in broker["simulators"].items()}
    return parse_site({**data, "site": secure["site"], "broker": broker},
                      ROOT / "config" / "secure-site.yaml")


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    out = tmp_path / "credentials"
    write_credentials(secure_site(out), out)
    return out


@pytest.fixture
def site(credentials: Path) -> Site:
    return secure_site(credentials)


@pytest.fixture
async def secure_broker(tmp_path: Path, credentials: Path) -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(data_dir=tmp_path / "broker", secure=credentials) as running:
        yield running


@pytest.fixture
async def rig(site: Site, secure_broker: EmbeddedBroker) -> AsyncIterator[MqttRig]:
    events = EventLog()
    running = MqttRig(site, secure_broker, events, FLOOR_SPEED)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


class Peer:
    """A plain paho client with any identity, certificate or none: it plays a device, a stranger or
    an impostor. Records the CONNACK and every PUBACK reason code."""

    def __init__(self, broker: EmbeddedBroker, *, client_id: str = "peer", username: str | None = None,
                 password: str | None = None, ca: Path | None = None,
                 cert: tuple[Path, Path] | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.port = broker.port
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert[0]) if cert else None,
                                keyfile=str(cert[1]) if cert else None)
        self.connack: Any = None
        self.connected = threading.Event()
        self.disconnects = 0
        self.pubacks: dict[int, Any] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = lambda c, u, mid, reason, props: self.pubacks.__setitem__(mid, reason)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connack = reason
        self.connected.set()

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnects += 1
        self.connected.set()

    async def connect(self) -> Any:
        """The CONNACK's reason code; raises what the TLS handshake raises."""
        await asyncio.to_thread(self.client.connect, "127.0.0.1", self.port, 30)
        self.client.loop_start()
        assert await asyncio.to_thread(self.connected.wait, 5), "no CONNACK"
        return self.connack

    async def publish(self, topic: str, body: dict[str, Any]) -> Any:
        info = self.client.publish(topic, encode(body), qos=1)
        await asyncio.to_thread(info.wait_for_publish, 5)
        await eventually(lambda: info.mid in self.pubacks)
        return self.pubacks[info.mid]

    async def close(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


def device_peer(broker: EmbeddedBroker, credentials: Path, device_id: str, **kwargs: Any) -> Peer:
    password = (credentials / "secrets" / f"{device_id}.password").read_text().strip()
    options: dict[str, Any] = {"client_id": device_id, "username": device_id, "password": password,
                               "ca": credentials / "ca.crt",
                               "cert": pki.paths_for(credentials / "clients", device_id)}
    return Peer(broker, **{**options, **kwargs})


def done(device_id: str, command_id: str) -> dict[str, Any]:
    return {"header": {"message_id": 1, "timestamp": "2025-01-01T00:00:00.000Z", "device_id": device_id,
                       "version": "1.0"}, "command_id": command_id, "outcome": "done", "result": {}}


async def test_every_device_and_the_controller_on_their_own_account(rig: MqttRig) -> None:
    assert rig.hub.connected
    assert all(device.status.online for device in rig.hub.devices())
    light = rig.floor.pick_light("ptl-01")
    assert light.link.settings.username == "ptl-01"
    assert light.link.address.tls


async def test_anonymous_is_refused(secure_broker: EmbeddedBroker, credentials: Path) -> None:
    # With a valid certificate but no account.
    cert = pki.paths_for(credentials / "clients", "ptl-01")
    peer = Peer(secure_broker, ca=credentials / "ca.crt", cert=cert)
    reason = await peer.connect()
    assert reason.is_failure and reason.value in (0x86, 0x87), reason  # bad user name or password, or
    # not authorised
    await peer.close()
    # A wrong password is refused as well.
    liar = device_peer(secure_broker, credentials, "ptl-01", password="not-the-password")
    assert (await liar.connect()).is_failure
    await liar.close()


async def session(peer: Peer) -> bool:
    """Whether the broker gives `peer` a session that lasts: a CONNACK with success and no disconnect
    right after. A refused TLS handshake or a closed socket is no session."""
    try:
        reason = await peer.connect()
        await asyncio.sleep(0.3)
        lasted = reason is not None and not reason.is_failure and peer.disconnects == 0
    except (ssl.SSLError, OSError):
        lasted = False
    await peer.close()
    return lasted


async def test_plain_tcp_and_no_client_certificate_are_refused(secure_broker: EmbeddedBroker,
                                                                credentials: Path) -> None:
    assert await session(device_peer(secure_broker, credentials, "ptl-01"))  # the control
    assert not await session(device_peer(secure_broker, credentials, "ptl-01", ca=None))
    assert not await session(device_peer(secure_broker, credentials, "ptl-01", cert=None))


async def test_a_certificate_from_another_ca_is_refused(secure_broker: EmbeddedBroker, credentials: Path,
                                                        tmp_path: Path) -> None:
    other = pki.make_ca(tmp_path / "other-ca", "Someone else's CA")
    forged = pki.issue(other, "ptl-01", tmp_path / "forged", server=False)
    # The right password, the site's CA to check the broker, but a client certificate the site never issued.
    peer = device_peer(secure_broker, credentials, "ptl-01", cert=(forged.cert_path, forged.key_path))
    assert not await session(peer)


async def test_a_broker_certificate_from_another_ca_is_refused(credentials: Path, tmp_path: Path,
                                                               secure_broker: EmbeddedBroker) -> None:
    other = pki.make_ca(tmp_path / "other-ca", "Someone else's CA")
    peer = device_peer(secure_broker, credentials, "ptl-01", ca=other.cert_path)
    with pytest.raises(ssl.SSLError):
        await peer.connect()
    await peer.close()


async def test_a_device_cannot_speak_for_another(rig: MqttRig) -> None:
    """A compromised pick light (the simulator's own link, on its own account) forges a `done` for
    another light: the broker refuses it and the controller never sees it."""
    link = rig.floor.pick_light("ptl-01").link
    refused: list[Any] = []
    on_publish = link._client.on_publish

    def record(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            refused.append(reason)
        on_publish(client, userdata, mid, reason, properties)

    link._client.on_publish = record
    before = rig.hub.counters["unknown_command"]
    forged = encode(done("ptl-02", "forged"))
    assert await link.publish_and_wait("floorctl/v1/pick_light/ptl-02/done", forged)
    assert [reason.value for reason in refused] == [0x87]  # not authorised
    # Its own done topic is open to it: a `done` for a command the controller never sent arrives and
    # is counted as unknown. It went out after the forged one on the same connection, so once it is
    # counted the forged one would have been too.
    barrier = encode(done("ptl-01", "barrier"))
    assert await link.publish_and_wait("floorctl/v1/pick_light/ptl-01/done", barrier)
    await eventually(lambda: rig.hub.counters["unknown_command"] == before + 1)
    await asyncio.sleep(0.2)
    assert rig.hub.counters["unknown_command"] == before + 1
    assert rig.hub.device("ptl-02").status.online  # and ptl-02 is none the wiser
    # Nor may it send commands, or answer on a printer's topic.
    assert await link.publish_and_wait("floorctl/v1/pick_light/ptl-02/cmd", encode(done("ptl-01", "x")))
    assert await link.publish_and_wait("floorctl/v1/printer/prn-1/ack", encode(done("prn-1", "x")))
    assert [reason.value for reason in refused] == [0x87] * 3


async def test_a_device_with_the_controllers_client_id_does_not_knock_it_off(
        rig: MqttRig, secure_broker: EmbeddedBroker, credentials: Path) -> None:
    link = rig.hub._link
    connects = link.connects
    lost = 0

    def on_lost() -> None:
        nonlocal lost
        lost += 1

    link._on_lost = on_lost
    for _ in range(10):  # without use_username_as_clientid, each of these took the session over
        impostor = device_peer(secure_broker, credentials, "ptl-01", client_id=rig.hub.client_id)
        assert not (await impostor.connect()).is_failure
        await impostor.close()
    await asyncio.sleep(0.5)
    assert lost == 0 and link.connects == connects and rig.hub.connected


async def test_floorctls_own_password_hashes_work_with_mosquitto(credentials: Path,
                                                                 secure_broker: EmbeddedBroker) -> None:
    names = [path.name.removesuffix(".password") for path in (credentials / "secrets").iterdir()]
    passwords = {name: (credentials / "secrets" / f"{name}.password").read_text().strip() for name in names}
    write_password_file(credentials / "passwd", passwords, use_mosquitto_passwd=False)
    await secure_broker.restart()
    peer = device_peer(secure_broker, credentials, "prn-1")
    assert not (await peer.connect()).is_failure
    await peer.close()
    liar = device_peer(secure_broker, credentials, "prn-1", password=passwords["prn-2"])
    assert (await liar.connect()).is_failure
    await liar.close()


async def test_a_hub_without_its_account_gets_no_session(site: Site, secure_broker: EmbeddedBroker) -> None:
    stranger = site.model_copy(update={"broker": site.broker.model_copy(
        update={"username": None, "password_file": None})})
    hub = MqttHub(stranger, broker_url=secure_broker.url)
    await hub.start(lambda event: None)
    try:
        assert not await hub.wait_connected(1.0)
    finally:
        await hub.stop()
