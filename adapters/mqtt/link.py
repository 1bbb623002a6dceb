"""One MQTT connection, with paho-mqtt driven from the asyncio event loop.

paho runs inside the loop (as Home Assistant's MQTT client does): the socket is watched with
`add_reader`, paho's `loop_read` / `loop_write` / `loop_misc` are called from loop callbacks, so every
paho callback already runs on the loop and no thread hop sits on the command path. Only the blocking
TCP/TLS connect runs in the default executor; while it does, the loop leaves the paho client alone
and buffers publishes.

The link owns its reconnect policy: retry with jittered exponential backoff, persistent session
(clean_start=False + SessionExpiryInterval), re-subscribe on every connect. QoS1 messages that paho
holds while the link is down are re-sent by paho after reconnect; nothing is re-published here.
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
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.wire import QOS
from controller.site import BrokerSettings, parse_broker_url

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
MISC_INTERVAL_S = 1.0  # keepalive pings and dead-link detection (paho's loop_misc)

MessageHandler = Callable[[str, bytes, bool], None]
"""(topic, payload, retained) -> None, called on the loop. Must not raise (the link logs if it does)."""


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


class MqttLink:
    """A self-healing MQTT connection: `start()`, `publish()`, `stop()`; `cut()` / `restore()` for tests."""

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
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._will = will
        self._client = self._make_client()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._enabled = asyncio.Event()
        self._enabled.set()
        self._stopping = False
        self._fd: int | None = None
        self._writer_armed = False
        self._reading = False
        self._connecting = False
        self._connect_job: asyncio.Future[None] | None = None
        self._backlog: list[tuple[str, bytes, bool, Callable[[], None] | None]] = []
        self._delivery: dict[int, Callable[[], None]] = {}
        self._misc_timer: asyncio.TimerHandle | None = None
        self._up: asyncio.Future[bool] | None = None
        self._ended: asyncio.Future[None] | None = None
        self._connected_event = asyncio.Event()
        self._failures = 0
        self._lost_reason: Any = None
        self._info = logging.DEBUG if quiet else logging.INFO
        self._warning = logging.DEBUG if quiet else logging.WARNING

    # ----------------------------------------------------------------------------------- lifecycle
    @property
    def connected(self) -> bool:
        return self._connected_event.is_set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._supervisor = self._loop.create_task(self._supervise(), name=f"mqtt-link:{self.client_id}")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_disconnected(self, timeout: float | None = None) -> bool:
        ended = self._ended
        if ended is None or self._fd is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(ended), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, farewell: tuple[str, bytes] | None = None, timeout: float = 1.0) -> None:
        """Orderly shutdown: publish `farewell` (retained) and wait for its PUBACK, then DISCONNECT
        (so the broker discards the last-will)."""
        if self._stopping:
            return
        if farewell is not None and self.connected:
            await self.publish_and_wait(*farewell, retain=True, timeout=timeout)
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._connect_job is not None and not self._connect_job.done():
            await asyncio.wait([self._connect_job], timeout=self.settings.connect_timeout_s)
        if self._client.socket() is not None:
            self._client.disconnect()  # written at once; paho closes the socket after it
        if self._client.socket() is not None:
            self._abort()
            self._client.loop_read()
        self._cancel_misc()
        self._connected_event.clear()

    def cut(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a pulled cable would (the broker then
        publishes the last-will), and stay down until `restore()`."""
        self._enabled.clear()
        self._abort()

    def restore(self) -> None:
        self._enabled.set()

    # ------------------------------------------------------------------------------------- publish
    def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                on_delivered: Callable[[], None] | None = None) -> bool:
        """Hand a QoS1 message to paho. True when it went out on a live connection just now; else paho
        keeps it and sends it after the next connect. `on_delivered` runs on the broker's PUBACK."""
        if self._connecting:
            self._backlog.append((topic, payload, retain, on_delivered))
            return False
        client = self._client
        info = client.publish(topic, payload, QOS, retain)
        if on_delivered is not None:
            self._delivery[info.mid] = on_delivered
        if not self._reading and client.want_write():
            self._flush_writes()
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._connected_event.is_set()

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

    # ---------------------------------------------------------------------------------- supervisor
    async def _supervise(self) -> None:
        assert self._loop is not None
        delay = BACKOFF_MIN_S
        while True:
            await self._enabled.wait()
            self._up = self._loop.create_future()
            self._ended = self._loop.create_future()
            try:
                await self._open()
            except Exception as exc:  # noqa: BLE001 - refused, unreachable, TLS, DNS: all retried alike
                self._note_failure(f"cannot connect to {self.address.host}:{self.address.port}: {exc}")
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if not self._enabled.is_set():
                self._abort()
            await asyncio.wait((self._up, self._ended), timeout=self.settings.connect_timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
            if self._up.done() and self._up.result():
                delay = BACKOFF_MIN_S
                await self._ended
                continue  # a lost link is retried at once, then with backoff
            if self._ended.done():
                self._note_failure(f"{self.address.host}:{self.address.port} closed the connection before CONNACK")
            elif not self._up.done():
                self._note_failure(f"no CONNACK from {self.address.host}:{self.address.port} "
                                   f"within {self.settings.connect_timeout_s} s")
            self._abort()
            await asyncio.wait((self._ended,), timeout=1.0)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _open(self) -> None:
        assert self._loop is not None
        will = self._will() if self._will is not None else None
        self._connecting = True
        job = self._connect_job = self._loop.run_in_executor(None, self._connect_blocking, will)
        try:
            await job
        except asyncio.CancelledError:
            # stop() during a connect: the executor thread owns paho until the job ends.
            job.add_done_callback(lambda _: setattr(self, "_connecting", False))
            raise
        except BaseException:
            self._end_connecting()
            raise
        sock = self._client.socket()
        if sock is None:
            self._end_connecting()
            raise OSError("paho has no socket after connect")
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._on_readable)
        self._schedule_misc()
        self._end_connecting()
        self._flush_writes()

    def _end_connecting(self) -> None:
        self._connecting = False
        backlog, self._backlog = self._backlog, []
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
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        tls = self.settings.tls
        if self.address.tls or tls is not None:
            client.tls_set(ca_certs=tls.ca_file if tls else None, certfile=tls.cert_file if tls else None,
                           keyfile=tls.key_file if tls else None)
            client.tls_insecure_set(bool(tls and tls.insecure))
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
        was_connected = self._connected_event.is_set()
        self._connected_event.clear()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)
        if not was_connected or self._stopping:
            return
        if self._enabled.is_set():
            log.log(self._info, "%s: link to the broker lost (%s)", self.client_id, self._lost_reason)
        if self._on_lost is not None:
            self._on_lost()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._note_failure(f"broker refused the connection: {reason}")
            if self._up is not None and not self._up.done():
                self._up.set_result(False)
            return
        if self.subscriptions:
            client.subscribe([(topic, QOS) for topic in self.subscriptions])
        self.connects += 1
        if self._failures or self.connects > 1:
            log.log(self._info, "%s: connected to %s:%s (session present: %s)", self.client_id, self.address.host,
                     self.address.port, bool(flags.session_present))
        self._failures = 0
        self._connected_event.set()
        if self._up is not None and not self._up.done():
            self._up.set_result(True)
        if self._on_connected is not None:
            try:
                self._on_connected(bool(flags.session_present))
            except Exception:
                log.exception("%s: on_connected failed", self.client_id)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
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

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        for topic, reason in zip(self.subscriptions, reasons, strict=False):
            if reason.is_failure:
                log.error("%s: broker refused the subscription %s: %s", self.client_id, topic, reason)
