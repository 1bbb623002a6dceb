"""One MQTT connection, with paho-mqtt driven from the asyncio event loop.

paho runs inside the loop (as Home Assistant's MQTT client does): the socket is watched with
`add_reader`, paho's `loop_read` / `loop_write` / `loop_misc` are called from loop callbacks, so every
paho callback already runs on the loop and no thread hop sits on the command path. Only the blocking
TCP/TLS connect runs in the default executor; while it does, the loop leaves the paho client alone
and buffers publishes.

The connection state is explicit (aiomqtt's client shape): `state` is one of LinkState, the
`_connected` future is done while a CONNACK holds, the `_disconnected` future is done while no socket
is open, and one reconnection task owns every attempt: retry with jittered exponential backoff,
persistent session (clean_start=False + SessionExpiryInterval), re-subscribe on every connect. QoS1
messages that paho holds while the link is down are re-sent by paho after reconnect; nothing is
re-published here.

    DISCONNECTED --attempt--> CONNECTING --CONNACK--> CONNECTED --socket closed--> DISCONNECTED
    CONNECTING --refused / closed / no CONNACK in time--> DISCONNECTED (backoff, then again)
    any --stop()--> STOPPING --> STOPPED
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.contract.mqtt import QOS
from controller.site import BrokerSettings, parse_broker_url

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
MISC_INTERVAL_S = 1.0  # keepalive pings and dead-link detection (paho's loop_misc)

Backlog = list[tuple[str, bytes, bool, Callable[[], None] | None]]  # topic, payload, retain, on_delivered
MessageHandler = Callable[[str, bytes, bool], None]
"""(topic, payload, retained) -> None, called on the loop. Must not raise (the link logs if it does)."""


class LinkState(Enum):
    DISCONNECTED = "disconnected"  # no socket; the reconnection task tries again after its backoff
    CONNECTING = "connecting"  # TCP/TLS connect and CONNECT sent, no CONNACK yet
    CONNECTED = "connected"  # the broker accepted the session
    STOPPING = "stopping"  # stop() is closing the link; no attempt follows
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    protocol: Literal["5", "3.1.1"]

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        """`mqtt://host:port`, optionally `?protocol=3.1.1` for brokers without MQTT 5 (amqtt)."""
        host, port, tls = parse_broker_url(url)
        protocol = parse_qs(urlsplit(url).query).get("protocol", ["5"])[-1]
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"broker URL asks for MQTT protocol {protocol!r}; use 5 or 3.1.1")
        return cls(host, port, tls, "5" if protocol == "5" else "3.1.1")


def use_account(client: paho.Client, settings: BrokerSettings, address: BrokerAddress) -> None:
    """The site file's user name, password and TLS files on a paho client, before it connects.
    The password is read here: a missing secret file or variable is a SiteError before any attempt."""
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.resolved_password())
    tls = settings.tls
    if address.tls or tls is not None:
        client.tls_set(ca_certs=tls.ca_file if tls else None, certfile=tls.cert_file if tls else None,
                       keyfile=tls.key_file if tls else None)
        client.tls_insecure_set(bool(tls and tls.insecure))


class MqttLink:
    """A self-healing MQTT connection: `start()`, `publish()`, `stop()`."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        settings: BrokerSettings,
        subscriptions: Sequence[str],
        on_message: MessageHandler,
        on_connected: Callable[[bool], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        will: Callable[[], tuple[str, bytes]] | None = None,
        quiet: bool = False,
    ) -> None:
        """`quiet=True` logs connection trouble at DEBUG only (for hundreds of simulated devices)."""
        self.address = BrokerAddress.from_url(url)
        self.client_id = client_id
        self.settings = settings
        self.subscriptions = list(subscriptions)
        self.connects = 0  # successful CONNACKs so far, for tests and the panel
        self.state = LinkState.DISCONNECTED
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._will = will
        self._client = self._make_client()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None  # done while CONNECTED; renewed on loss
        self._disconnected: asyncio.Future[None] | None = None  # done while no socket is open
        self._reconnector: asyncio.Task[None] | None = None
        self._connect_job: asyncio.Future[None] | None = None  # the blocking connect in the executor
        self._backlog: Backlog | None = None  # a list while the executor owns paho: publishes wait in it
        self._fd: int | None = None  # the socket the loop watches
        self._writer_armed = False
        self._reading = False
        self._delivery: dict[int, Callable[[], None]] = {}  # mid -> on_delivered
        self._misc_timer: asyncio.TimerHandle | None = None
        self._failures = 0
        self._lost_reason: Any = None
        self._info = logging.DEBUG if quiet else logging.INFO
        self._warning = logging.DEBUG if quiet else logging.WARNING

    # ----------------------------------------------------------------------------------- lifecycle
    @property
    def connected(self) -> bool:
        return self.state is LinkState.CONNECTED

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._disconnected = loop.create_future()
        self._disconnected.set_result(None)
        self._reconnector = loop.create_task(self._reconnect_forever(), name=f"mqtt-link:{self.client_id}")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while self.state is not LinkState.CONNECTED:
                    if self._connected is None or self.state in (LinkState.STOPPING, LinkState.STOPPED):
                        return False  # not started, or stopped: nothing will connect
                    await asyncio.shield(self._connected)
        except TimeoutError:
            return False
        return True

    async def wait_disconnected(self, timeout: float | None = None) -> bool:
        disconnected = self._disconnected
        if disconnected is None or disconnected.done():
            return True
        try:
            await asyncio.wait_for(asyncio.shield(disconnected), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, farewell: tuple[str, bytes] | None = None, timeout: float = 1.0) -> None:
        """Orderly shutdown: publish `farewell` (retained) and wait for its PUBACK, then DISCONNECT
        (so the broker discards the last-will)."""
        if self.state in (LinkState.STOPPING, LinkState.STOPPED):
            return
        if farewell is not None and self.connected:
            await self.publish_and_wait(*farewell, retain=True, timeout=timeout)
        self.state = LinkState.STOPPING
        if self._reconnector is not None:
            self._reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnector
        if self._connect_job is not None and not self._connect_job.done():
            await asyncio.wait([self._connect_job], timeout=self.settings.connect_timeout_s)
        if self._client.socket() is not None:
            self._client.disconnect()  # written at once; paho closes the socket after it
        if self._client.socket() is not None:
            self._abort()
            self._client.loop_read()
        self._cancel_misc()
        self.state = LinkState.STOPPED

    # ------------------------------------------------------------------------------------- publish
    def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                on_delivered: Callable[[], None] | None = None) -> bool:
        """Hand a QoS1 message to paho. True when it went out on a live connection just now; else paho
        keeps it and sends it after the next connect. `on_delivered` runs on the broker's PUBACK."""
        if self._backlog is not None:
            self._backlog.append((topic, payload, retain, on_delivered))
            return False
        client = self._client
        info = client.publish(topic, payload, QOS, retain)
        if on_delivered is not None:
            self._delivery[info.mid] = on_delivered
        if not self._reading and client.want_write():
            self._flush_writes()
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.state is LinkState.CONNECTED

    async def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool = False,
                               timeout: float = 1.0) -> bool:
        assert self._loop is not None
        delivered: asyncio.Future[None] = self._loop.create_future()

        def on_delivered() -> None:
            if not delivered.done():
                delivered.set_result(None)

        self.publish(topic, payload, retain=retain, on_delivered=on_delivered)
        try:
            await asyncio.wait_for(delivered, timeout)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------------------- reconnection
    async def _reconnect_forever(self) -> None:
        delay = BACKOFF_MIN_S
        while True:
            if await self._attempt():
                delay = BACKOFF_MIN_S
                assert self._disconnected is not None
                await asyncio.shield(self._disconnected)
                continue  # a lost link is retried at once, then with backoff
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _attempt(self) -> bool:
        """One connection attempt, from DISCONNECTED to CONNECTED (True) or back to DISCONNECTED."""
        where = f"{self.address.host}:{self.address.port}"
        try:
            await self._open()
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, TLS, DNS: all retried alike
            self._note_failure(f"cannot connect to {where}: {exc}")
            self.state = LinkState.DISCONNECTED
            return False
        connected, disconnected = self._connected, self._disconnected
        assert connected is not None and disconnected is not None
        await asyncio.wait((connected, disconnected), timeout=self.settings.connect_timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        if connected.done():
            return True  # (it may have dropped again already: then the next attempt follows at once)
        if disconnected.done():
            self._note_failure(f"{where} closed the connection before CONNACK")
        else:
            self._note_failure(f"no CONNACK from {where} within {self.settings.connect_timeout_s} s")
            self._abort()
            await asyncio.wait((disconnected,), timeout=1.0)
        self.state = LinkState.DISCONNECTED
        return False

    async def _open(self) -> None:
        """CONNECTING: the socket connect and CONNECT run in the executor, then the loop watches the
        socket. Raises if no connection could be opened."""
        assert self._loop is not None
        self.state = LinkState.CONNECTING
        will = self._will() if self._will is not None else None
        self._backlog = []
        job = self._connect_job = self._loop.run_in_executor(None, self._connect_blocking, will)
        try:
            await job
        except asyncio.CancelledError:
            raise  # stop() during a connect: the executor thread owns paho until the job ends
        except BaseException:
            self._end_backlog()
            raise
        sock = self._client.socket()
        if sock is None:
            self._end_backlog()
            raise OSError("paho has no socket after connect")
        self._fd = sock.fileno()
        self._disconnected = self._loop.create_future()
        self._loop.add_reader(self._fd, self._on_readable)
        self._schedule_misc()
        self._end_backlog()
        self._flush_writes()

    def _end_backlog(self) -> None:
        backlog, self._backlog = self._backlog or [], None
        for topic, payload, retain, on_delivered in backlog:
            self.publish(topic, payload, retain=retain, on_delivered=on_delivered)

    def _connect_blocking(self, will: tuple[str, bytes] | None) -> None:
        """Runs in the executor: socket connect (+TLS) and CONNECT. The loop does not touch paho meanwhile."""
        client = self._client
        if will is not None:
            client.will_set(will[0], will[1], QOS, retain=True)
        host, port, keepalive = self.address.host, self.address.port, self.settings.keepalive_s
        if self.address.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.settings.session_expiry_s
            client.connect(host, port, keepalive, clean_start=False, properties=properties)
        else:
            client.connect(host, port, keepalive)

    def _note_failure(self, message: str) -> None:
        self._failures += 1
        # One warning per outage; 240 simulated devices retrying every few seconds would flood the log.
        log.log(self._warning if self._failures == 1 else logging.DEBUG, "%s: %s", self.client_id, message)

    # ----------------------------------------------------------------------------- paho on the loop
    def _make_client(self) -> paho.Client:
        v5 = self.address.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(0)  # paho's default of 20 would throttle pipelined commands
        client.max_queued_messages_set(0)
        client.connect_timeout = self.settings.connect_timeout_s
        use_account(client, self.settings, self.address)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_paho_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    def _on_readable(self) -> None:
        client = self._client
        self._reading = True
        try:
            client.loop_read()
            # TLS may hold decrypted bytes the selector cannot see.
            while self.address.tls and isinstance(sock := client.socket(), ssl.SSLSocket) and sock.pending():
                client.loop_read()
        except Exception:
            log.exception("%s: reading from the broker failed; dropping the connection", self.client_id)
            self._abort()
        finally:
            self._reading = False
        if client.want_write():
            self._flush_writes()

    def _flush_writes(self) -> None:
        if self._fd is None or self._loop is None:
            return
        self._client.loop_write()
        pending = self._fd is not None and self._client.want_write()
        if pending != self._writer_armed:
            if pending:
                assert self._fd is not None
                self._loop.add_writer(self._fd, self._flush_writes)
            elif self._fd is not None:
                self._loop.remove_writer(self._fd)
            self._writer_armed = pending

    def _schedule_misc(self) -> None:
        assert self._loop is not None
        self._misc_timer = self._loop.call_later(MISC_INTERVAL_S, self._misc)

    def _cancel_misc(self) -> None:
        if self._misc_timer is not None:
            self._misc_timer.cancel()
            self._misc_timer = None

    def _misc(self) -> None:
        self._misc_timer = None
        if self._fd is None:
            return
        try:
            self._client.loop_misc()
        except Exception:
            log.exception("%s: keepalive check failed", self.client_id)
            self._abort()
        if self._fd is not None:
            self._flush_writes()
            self._schedule_misc()

    def _abort(self) -> None:
        """Shut the socket down; the reader then sees EOF and paho tidies up as for any lost link."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------------------ paho callbacks
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Runs in the executor during connect. Without this every request/response waits ~40 ms (Nagle).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = self._fd
        if fd is None or sock.fileno() != fd or self._loop is None:
            return  # a socket the loop never watched (closed in the executor during a failed connect)
        self._loop.remove_reader(fd)
        if self._writer_armed:
            self._loop.remove_writer(fd)
            self._writer_armed = False
        self._fd = None
        self._cancel_misc()
        stopping, was_connected = self.state is LinkState.STOPPING, self.state is LinkState.CONNECTED
        if not stopping:
            self.state = LinkState.DISCONNECTED
        if self._connected is not None and self._connected.done():
            self._connected = self._loop.create_future()
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(None)
        if stopping or not was_connected:
            return
        log.log(self._info, "%s: link to the broker lost (%s)", self.client_id, self._lost_reason)
        if self._on_lost is not None:
            self._on_lost()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._note_failure(f"broker refused the connection: {reason}")
            self._abort()  # the reconnection task sees the socket close and tries again later
            return
        if self.subscriptions:
            client.subscribe([(topic, QOS) for topic in self.subscriptions])
        self.connects += 1
        if self._failures or self.connects > 1:
            log.log(self._info, "%s: connected to %s:%s (session present: %s)", self.client_id,
                    self.address.host, self.address.port, bool(flags.session_present))
        self._failures = 0
        self.state = LinkState.CONNECTED
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(None)
        if self._on_connected is not None:
            try:
                self._on_connected(bool(flags.session_present))
            except Exception:
                log.exception("%s: on_connected failed", self.client_id)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._lost_reason = reason

    def _on_paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            # paho's payload is typed bytes | bytearray but decoded with struct.unpack: always bytes.
            self._on_message(message.topic, cast(bytes, message.payload), bool(message.retain))
        except Exception:
            log.exception("%s: message handler failed on %r", self.client_id, message._topic)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused message %s: %s", self.client_id, mid, reason)
        on_delivered = self._delivery.pop(mid, None)
        if on_delivered is not None:
            on_delivered()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        for topic, reason in zip(self.subscriptions, reasons, strict=False):
            if reason.is_failure:
                log.error("%s: broker refused the subscription %s: %s", self.client_id, topic, reason)
