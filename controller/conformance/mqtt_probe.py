"""The controller's side of the broker for the MQTT checks: one plain paho client that records every
message on the site's topics as it came off the wire (QoS, retain flag, bytes), and publishes
commands. Nothing here decodes or forgives: judging what a device sent is the checks' job.

paho runs on its own network thread; its callbacks only hand messages to the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from adapters.mqtt.link import BrokerAddress, use_account
from controller.conformance.checks import Unreachable
from controller.contract.mqtt import QOS, Headers, encode
from controller.site import BrokerSettings, SiteError


@dataclass(frozen=True, slots=True)
class Heard:
    """One message as the broker delivered it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float  # the loop's clock when it arrived


@dataclass
class _Topic:
    messages: list[Heard] = field(default_factory=list)


class MqttProbe:
    """`await connect()`, `subscribe()`, `publish()`, `wait()`; `close()`."""

    def __init__(self, url: str, settings: BrokerSettings, *, client_id: str, clean: bool = True) -> None:
        self.address = BrokerAddress.from_url(url)
        self.url = url
        self.settings = settings
        self.client_id = client_id
        self.v5 = self.address.protocol == "5"
        self.headers = Headers(client_id)
        self._topics: dict[str, _Topic] = {}
        self._arrived: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._connected: asyncio.Future[str] | None = None
        self._lost = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.v5 else clean, reconnect_on_failure=False)
        self._clean = clean
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.max_inflight_messages_set(0)

    # --- connection ---------------------------------------------------------------------------
    async def connect(self) -> None:
        """Raises Unreachable with the reason in words."""
        loop = self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._connected = loop.create_future()
        where = f"the broker at {self.url}"
        try:
            use_account(self._client, self.settings, self.address)
        except SiteError as exc:
            raise Unreachable(str(exc)) from None
        except (OSError, ValueError) as exc:  # TLS files that cannot be read
            raise Unreachable(f"{where}: cannot set up TLS: {exc}") from None
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 0 if self._clean else self.settings.session_expiry_s
        try:
            await asyncio.wait_for(asyncio.to_thread(self._connect_blocking, properties),
                                   self.settings.connect_timeout_s)
        except TimeoutError:
            raise Unreachable(f"{where}: no answer within {self.settings.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise Unreachable(f"cannot reach {where}: {exc.strerror or exc}") from None
        self._client.loop_start()
        try:
            refusal = await asyncio.wait_for(asyncio.shield(self._connected), self.settings.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise Unreachable(f"{where}: no CONNACK within {self.settings.connect_timeout_s:g} s") from None
        if refusal:
            await self.close()
            raise Unreachable(f"{where} refused the connection: {refusal}")

    def _connect_blocking(self, properties: Properties | None) -> None:
        host, port, keepalive = self.address.host, self.address.port, self.settings.keepalive_s
        if self.v5:
            self._client.connect(host, port, keepalive, clean_start=self._clean, properties=properties)
        else:
            self._client.connect(host, port, keepalive)

    async def close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    @property
    def lost(self) -> bool:
        """The broker dropped this connection (another client took its id, most often)."""
        return self._lost

    # --- subscribe and publish ----------------------------------------------------------------
    async def subscribe(self, topic: str, *, no_local: bool = True) -> None:
        """Subscribe at QoS 1; retained messages arrive (retain flag set) before this returns."""
        assert self._loop is not None
        if self.v5:
            options = SubscribeOptions(qos=QOS, noLocal=no_local)
            _, mid = self._client.subscribe(topic, options=options)
        else:
            _, mid = self._client.subscribe(topic, qos=QOS)
        if mid is None:
            raise Unreachable(f"the broker at {self.url}: cannot subscribe to {topic} (link down)")
        await self._await_mid(mid, f"no SUBACK for {topic}")

    async def publish(self, topic: str, message: dict[str, Any] | bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK. A dict gets a fresh header."""
        if isinstance(message, dict):
            message = encode({"header": self.headers.next(topic), **message})
        info = self._client.publish(topic, message, QOS, retain)
        await self._await_mid(info.mid, f"no PUBACK for {topic}")

    async def _await_mid(self, mid: int, what: str) -> None:
        assert self._loop is not None
        future = self._acks.setdefault(mid, self._loop.create_future())
        try:
            await asyncio.wait_for(future, self.settings.connect_timeout_s)
        except TimeoutError:
            raise Unreachable(f"the broker at {self.url}: {what} within "
                              f"{self.settings.connect_timeout_s:g} s") from None
        finally:
            self._acks.pop(mid, None)

    # --- what was heard ------------------------------------------------------------------------
    def heard(self, topic: str) -> list[Heard]:
        """Every message on exactly `topic` so far, in arrival order."""
        return list(self._topics.get(topic, _Topic()).messages)

    def topics(self) -> list[str]:
        return list(self._topics)

    def mark(self, topic: str) -> int:
        return len(self._topics.get(topic, _Topic()).messages)

    async def wait(self, topic: str, match: Callable[[Heard], bool], timeout: float,
                   since: int = 0) -> Heard | None:
        """The first message on `topic` from position `since` on that `match`es, or None after `timeout`."""
        assert self._arrived is not None
        try:
            async with asyncio.timeout(timeout):
                seen = since
                while True:
                    messages = self._topics.get(topic, _Topic()).messages
                    for message in messages[seen:]:
                        if match(message):
                            return message
                    seen = len(messages)
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            return None

    # --- paho callbacks (network thread) -------------------------------------------------------
    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self._call(self._connect_result, str(reason) if reason.is_failure else "")

    def _connect_result(self, refusal: str) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(refusal)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._lost = True
        self._call(self._connect_result, f"disconnected: {reason}")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._call(self._record, message.topic, cast(bytes, message.payload), message.qos,
                   bool(message.retain))

    def _record(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        assert self._loop is not None and self._arrived is not None
        self._topics.setdefault(topic, _Topic()).messages.append(Heard(topic, payload, qos, retain,
                                                                       self._loop.time()))
        self._arrived.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self._call(self._acked, mid)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._call(self._acked, mid)

    def _acked(self, mid: int) -> None:
        assert self._loop is not None
        future = self._acks.setdefault(mid, self._loop.create_future())
        if not future.done():
            future.set_result(None)

