"""MqttHub: the controller's single broker connection to every MQTT device of a site."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from adapters.mqtt.devices import DEVICE_CLASSES, MqttDevice
from adapters.mqtt.link import MqttLink
from controller.contract.mqtt import Channel, Connection, Headers, Topics, WireError, decode, encode
from controller.ports import CommandTicket, Device, DeviceEvent, DeviceKind, DeviceStatus, EventSink
from controller.site import Site

log = logging.getLogger(__name__)

DEVICE_STATES = frozenset({"idle", "busy", "faulted", "unknown"})
CONNECTIONS = frozenset(Connection)


def _ignore(event: DeviceEvent) -> None:
    pass


class MqttHub:
    """Implements controller.ports.DeviceHub for the site's pick lights, printers and pack stations.

    `counters` counts what the controller did not expect on the wire (malformed_payload,
    unexpected_topic, duplicate_ack, duplicate_done, unknown_command), none of it ever fatal, and
    what it did to recover: commands sent again once a device is back (resent), and ONLINE
    announcements repeated while a device is offline (state_requests).

    A hot standby's hub is `listen_only`: it follows the devices' states and alerts (retained, so
    they are current at once) and says nothing on the wire, neither the controller's ONLINE nor a
    last-will; `lead()` turns it into the leader's hub. `may_send` is the leader's fence: while it
    says no, no command leaves (counted as `fenced`).
    """

    name = "mqtt"  # the prefix of its counters in the metrics

    def __init__(self, site: Site, *, broker_url: str | None = None, client_id: str | None = None,
                 listen_only: bool = False, may_send: Callable[[], bool] | None = None) -> None:
        settings = site.broker
        self.site = site
        self.listen_only = listen_only
        self._may_send = may_send or (lambda: True)
        self._url = broker_url or settings.url
        self.client_id = client_id or settings.client_id
        self.topics = Topics(settings.topic_root)
        self.counters: Counter[str] = Counter()
        self._headers = Headers(self.client_id)
        self._sink: EventSink = _ignore
        self._devices: dict[str, MqttDevice] = {}
        for kind, entries in ((DeviceKind.PICK_LIGHT, site.pick_lights), (DeviceKind.PRINTER, site.printers),
                              (DeviceKind.PACK_STATION, site.pack_stations)):
            for entry in entries:
                self._devices[entry.id] = DEVICE_CLASSES[kind](self, entry.id)
        self._link = self._make_link()
        self._handlers: dict[str, Callable[[MqttDevice, dict[str, Any], bool], str | None]] = {
            Channel.ACK: self._on_ack, Channel.DONE: self._on_done,
            Channel.STATE: self._on_state, Channel.ALERT: self._on_alert}
        self._refresher: asyncio.Task[None] | None = None

    def _make_link(self) -> MqttLink:
        listening = self.listen_only
        channels = (Channel.STATE, Channel.ALERT) if listening else (Channel.ACK, Channel.DONE, Channel.STATE,
                                                                      Channel.ALERT)
        return MqttLink(
            self._url,
            client_id=self.client_id,
            settings=self.site.broker,
            subscriptions=[self.topics.all_devices(channel) for channel in channels],
            on_message=self._on_message,
            on_connected=None if listening else self._on_connected,
            on_lost=self._on_lost,
            will=None if listening else (lambda: self._controller_state(Connection.OFFLINE)),
        )

    async def lead(self) -> None:
        """A standby's hub becomes the leader's: the same session (client id), now with the
        controller's last-will, its ONLINE (devices answer it with their state) and every channel."""
        if not self.listen_only:
            return
        await self._link.stop()
        self.listen_only = False
        self._link = self._make_link()
        await self.start(self._sink)

    # ---------------------------------------------------------------------------------- DeviceHub
    async def start(self, sink: EventSink) -> None:
        """Connect; returns once connected, or after connect_timeout_s with the hub still retrying
        in the background (commands published meanwhile are sent when the link comes up)."""
        self._sink = sink
        await self._link.start()
        if self.site.broker.state_refresh_s > 0 and self._refresher is None and not self.listen_only:
            self._refresher = asyncio.create_task(self._refresh_states(self.site.broker.state_refresh_s),
                                                  name="mqtt-state-refresh")
        if not await self._link.wait_connected(self.site.broker.connect_timeout_s):
            log.warning("MQTT broker %s not reachable yet; the hub keeps trying", self._link.address.host)

    async def stop(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
        # A standby, or a leader that was fenced, does not speak for the controller.
        speaks = not self.listen_only and self._may_send()
        await self._link.stop(farewell=self._controller_state(Connection.OFFLINE) if speaks else None)

    def devices(self) -> list[Device]:
        return list(self._devices.values())

    # ------------------------------------------------------------------------------------- extras
    def device(self, device_id: str) -> MqttDevice:
        return self._devices[device_id]

    @property
    def connected(self) -> bool:
        return self._link.connected

    async def wait_connected(self, timeout: float | None = None) -> bool:
        return await self._link.wait_connected(timeout)

    # ------------------------------------------------------------------------------ command path
    def send_command(self, device: MqttDevice, ticket: CommandTicket, action: str,
                     params: dict[str, Any]) -> None:
        if self.listen_only or not self._may_send():
            self.counters["fenced"] += 1  # not leading: the ticket waits, the engine's retry finds it
            return
        topic = device.command_topic
        payload = encode({"header": self._headers.next(topic), "command_id": ticket.command_id,
                          "action": action, "params": params})
        if self._link.connected:
            self._link.publish(topic, payload)
            ticket.mark_sent()
        else:
            # paho holds it and sends it after reconnect; the broker's PUBACK says it left.
            self._link.publish(topic, payload, on_delivered=ticket.mark_sent)

    # ---------------------------------------------------------------------------------- inbound
    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None:
            self._count("unexpected_topic", topic, "not a device topic")
            return
        kind, device_id, channel = parsed
        device = self._devices.get(device_id)
        handler = self._handlers.get(channel)
        if device is None or handler is None or device.kind != kind:
            self._count("unexpected_topic", topic, "no such device or channel")
            return
        if not payload:
            return  # an empty retained message only clears the topic
        try:
            problem = handler(device, decode(payload), retained)
        except WireError as exc:
            self._count("malformed_payload", topic, str(exc))
            return
        if problem is not None:
            self._count(problem, topic, payload[:200].decode(errors="replace"))

    def _on_ack(self, device: MqttDevice, message: dict[str, Any], retained: bool) -> str | None:
        return device.on_ack(message)

    def _on_done(self, device: MqttDevice, message: dict[str, Any], retained: bool) -> str | None:
        return device.on_done(message)

    def _on_state(self, device: MqttDevice, message: dict[str, Any], retained: bool) -> str | None:
        connection = message.get("connection")
        state = message.get("state")
        fault = message.get("fault")
        if connection not in CONNECTIONS or state not in DEVICE_STATES:
            raise WireError(f"bad connection {connection!r} or state {state!r}")
        if fault is not None and type(fault) is not str:
            raise WireError("fault must be a string or null")
        detail = {key: value for key, value in message.items() if key not in ("header", "state", "fault")}
        online = connection == Connection.ONLINE
        self._report(device, DeviceStatus(device.device_id, device.kind, online=online,
                                          state=state, fault=fault, detail=detail))
        if not online:
            device.lost_sight()
        elif not retained:  # said just now, so subscribed just now: a retained copy may be old news
            self._send_again(device)
        return None

    def _send_again(self, device: MqttDevice) -> None:
        """A broker that crashed loses what it had acked and not yet delivered, either way; paho
        re-sends only what the broker had not acked. So what the device still owes is sent again,
        same ids: the device dedupes, and answers again what it had already answered."""
        owed = device.owed()
        if owed and self.listen_only:
            return
        if owed:
            self.counters["resent"] += len(owed)
            log.info("MQTT: sending %d unfinished commands to %s again", len(owed), device.device_id)
        for entry in owed:
            action, params = entry.command
            self.send_command(device, entry.ticket, action, params)

    def _on_alert(self, device: MqttDevice, message: dict[str, Any], retained: bool) -> str | None:
        code = message.get("alert")
        active = message.get("active")
        if type(code) is not str or type(active) is not bool:
            raise WireError("alert needs a string `alert` and a boolean `active`")
        current = device.status
        self._report(device, DeviceStatus(
            device.device_id, device.kind, online=current.online,
            state="faulted" if active else current.state, fault=code if active else None,
            detail={**current.detail,
                    "alert": {"code": code, "active": active, "message": message.get("message")}}))
        return None

    def _report(self, device: MqttDevice, status: DeviceStatus) -> None:
        device.update_status(status)
        try:
            self._sink(status)
        except Exception:
            log.exception("event sink failed on %s", status)

    def _count(self, counter: str, topic: str, detail: str) -> None:
        self.counters[counter] += 1
        seen = self.counters[counter]
        if seen <= 10 or seen % 1000 == 0:  # log the first few of each kind, then a sample
            log.warning("MQTT %s #%d on %s: %s", counter, seen, topic, detail)

    # ----------------------------------------------------------------------------------- link
    def _controller_state(self, connection: Connection) -> tuple[str, bytes]:
        topic = self.topics.controller_state
        return topic, encode({"header": self._headers.next(topic), "connection": connection})

    def _on_connected(self, session_present: bool) -> None:
        if not self._may_send():
            return  # a leader that was fenced does not speak for the controller any more
        topic, payload = self._controller_state(Connection.ONLINE)
        self._link.publish(topic, payload, retain=True)

    async def _refresh_states(self, interval: float) -> None:
        """While any device is offline, ask every device for its state again (the controller's
        ONLINE, as on a connect): a device that is back but whose state message was lost says so."""
        while True:
            await asyncio.sleep(interval)
            if (self._link.connected and self._may_send()
                    and any(not d.status.online for d in self._devices.values())):
                self.counters["state_requests"] += 1
                topic, payload = self._controller_state(Connection.ONLINE)
                self._link.publish(topic, payload, retain=True)

    def _on_lost(self) -> None:
        # Without the broker nothing reaches the devices; retained states restore them on reconnect.
        for device in self._devices.values():
            device.lost_sight()
            if device.status.online:
                self._report(device, DeviceStatus(device.device_id, device.kind, online=False,
                                                  state="unknown", fault=device.status.fault,
                                                  detail={"connection": "CONTROLLER_LINK_DOWN"},
                                                  at=time.time()))
