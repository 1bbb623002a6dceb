"""The bare MQTT path: paho-mqtt and Mosquitto with nothing of ours in between.

An echoing device (`python -m controller.bench.bare_mqtt URL SITE`, a process of its own) answers
every command of the wire contract with an ack and a done, deduping on the command id like any
device. The bare commander is paho driven by hand in one thread: publish, read until the ack is
in. The controller path (controller.bench.command_path) talks to the same echoing device, so the
two differ only by what the controller adds.
"""

from __future__ import annotations

import json
import operator
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from controller.bench.measure import Latencies
from controller.contract.mqtt import MQTT_KINDS, Channel, Connection, Headers, Topics, encode
from controller.site import Site, load_site, parse_broker_url

QOS = 1
BARE_ROOT = "bench/bare"  # the bare commander's topics, so the controller's hub never hears its traffic
READ_TIMEOUT_S = 5.0  # a command unanswered this long is counted lost


def nodelay_client(client_id: str,
                   on_message: Callable[[paho.Client, Any, paho.MQTTMessage], None]) -> paho.Client:
    """A paho MQTT 5 client with TCP_NODELAY (without it every round trip waits ~40 ms) and no
    inflight or queue caps (paho's default of 20 in flight would throttle pipelined commands)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.on_socket_open = lambda _c, _u, sock: cast(socket.socket, sock).setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.on_message = on_message
    return client


def connect_and_subscribe(client: paho.Client, url: str, topics: list[str]) -> None:
    """Connect and wait for the SUBACK, driving paho by hand in the calling thread."""
    host, port, _tls = parse_broker_url(url)
    subscribed: list[bool] = []
    client.on_subscribe = lambda *_args: subscribed.append(True)
    client.connect(host, port, keepalive=60)
    client.subscribe([(topic, QOS) for topic in topics])
    deadline = time.monotonic() + READ_TIMEOUT_S
    while not subscribed:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SUBACK from the broker at {url}")
        client.loop(0.05)


def mqtt_devices(site: Site) -> list[tuple[str, str]]:
    """(kind, device id) of every MQTT device of a site."""
    return [(kind, item.id) for kind, items in (("pick_light", site.pick_lights), ("printer", site.printers),
                                               ("pack_station", site.pack_stations)) for item in items]


# ---------------------------------------------------------------------------------- the echoing device
class EchoDevice:
    """Every MQTT device of a site at once, under the site's topic root and under BARE_ROOT,
    answering each command at once with ack + done."""

    MEMORY = 100_000  # answered command ids kept for dedupe

    def __init__(self, site: Site, url: str) -> None:
        self.url = url
        self.topics = Topics(site.broker.topic_root)
        self.roots = (self.topics, Topics(BARE_ROOT))
        self.devices = mqtt_devices(site)
        self.headers = Headers("bench-echo")
        self.answered: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()
        self.client = nodelay_client("bench-echo", self._on_command)
        self.malformed = 0

    def run(self) -> None:
        connect_and_subscribe(self.client, self.url, [t.all_devices(Channel.CMD) for t in self.roots])
        for kind, device_id in self.devices:
            topic = self.topics.device(kind, device_id, Channel.STATE)
            self.client.publish(topic,
                                encode({"header": self.headers.next(topic), "connection": Connection.ONLINE,
                                               "state": "idle", "fault": None}), QOS, retain=True)
        print("ready", flush=True)
        self.client.loop_forever()

    def _on_command(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        parsed = next(filter(None, (t.parse(message.topic) for t in self.roots)), None)
        try:
            command_id = json.loads(message.payload)["command_id"]
            if parsed is None or parsed[0] not in MQTT_KINDS or type(command_id) is not str:
                raise ValueError(message.topic)
        except (ValueError, KeyError, TypeError):
            self.malformed += 1  # counted, never fatal: the echo must outlive a bad payload
            return
        base = message.topic.rsplit("/", 1)[0]
        ack_topic, done_topic = f"{base}/{Channel.ACK}", f"{base}/{Channel.DONE}"
        answers = self.answered.get(command_id)
        if answers is None:  # first time: "execute" (nothing to do) and remember the answers
            answers = (encode({"header": self.headers.next(ack_topic), "command_id": command_id,
                               "status": "accepted"}),
                       encode({"header": self.headers.next(done_topic), "command_id": command_id,
                               "outcome": "done", "result": {"picked": 1, "short": False}}))
            self.answered[command_id] = answers
            if len(self.answered) > self.MEMORY:
                self.answered.popitem(last=False)
        client.publish(ack_topic, answers[0], QOS)
        client.publish(done_topic, answers[1], QOS)


# ---------------------------------------------------------------------------------- the bare commander
class BareCommander:
    """Commands to the echoing device with paho alone, driven by hand in the calling thread."""

    def __init__(self, site: Site, url: str, run: str) -> None:
        self.url = url
        self.run = run
        self.topics = Topics(BARE_ROOT)
        self.devices = mqtt_devices(site)
        self._acked: dict[str, float] = {}
        self._done: set[str] = set()
        self._header = {"message_id": 0, "timestamp": "", "device_id": "bench-bare", "version": "1.0"}
        self.client = nodelay_client(f"bench-bare-{run}", self._on_answer)
        self._seq = 0

    def _on_answer(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        at = time.perf_counter()
        command_id = json.loads(message.payload)["command_id"]
        if message.topic.endswith("/ack"):
            self._acked[command_id] = at
        else:
            self._done.add(command_id)

    def connect(self) -> None:
        connect_and_subscribe(self.client, self.url, [self.topics.all_devices(Channel.ACK),
                                                      self.topics.all_devices(Channel.DONE)])

    def close(self) -> None:
        self.client.disconnect()

    def _send(self, device: tuple[str, str]) -> tuple[str, float]:
        self._seq += 1
        command_id = f"bare-{self.run}-{self._seq}"
        payload = encode({"header": self._header, "command_id": command_id, "action": "show",
                          "params": {"location": "bench", "qty": 1, "colour": "green"}})
        sent = time.perf_counter()
        self.client.publish(self.topics.device(device[0], device[1], Channel.CMD), payload, QOS)
        return command_id, sent

    def _read_until(self, ready: Callable[[], bool]) -> bool:
        deadline = time.perf_counter() + READ_TIMEOUT_S
        while not ready():
            if time.perf_counter() > deadline:
                return False
            self.client.loop(0.1)
        return True

    def sequential(self, count: int) -> Latencies:
        """One command at a time: publish, wait for its ack (measured), then for its done."""
        result = Latencies()
        device = self.devices[0]
        started = time.perf_counter()
        for _ in range(count):
            command_id, sent = self._send(device)
            if not self._read_until(partial(operator.contains, self._acked, command_id)):
                result.lost += 1
                continue
            result.add(self._acked.pop(command_id) - sent)
            self._read_until(partial(operator.contains, self._done, command_id))
            self._done.discard(command_id)
        result.elapsed_s = time.perf_counter() - started
        return result

    def pipelined(self, count: int, window: int) -> Latencies:
        """`window` commands in flight, one per device; each ack sends that device its next command."""
        result = Latencies()
        in_flight: dict[str, tuple[float, tuple[str, str]]] = {}
        started = time.perf_counter()
        for device in self.devices[:window]:
            command_id, sent = self._send(device)
            in_flight[command_id] = (sent, device)
        issued = len(in_flight)
        while in_flight:
            if not self._read_until(lambda: bool(self._acked)):
                result.lost += len(in_flight)
                break
            for command_id, at in list(self._acked.items()):
                del self._acked[command_id]
                sent, device = in_flight.pop(command_id)
                result.add(at - sent)
                if issued < count:
                    issued += 1
                    new_id, new_sent = self._send(device)
                    in_flight[new_id] = (new_sent, device)
        result.elapsed_s = time.perf_counter() - started
        self._done.clear()
        return result


def main(argv: list[str]) -> int:
    url, site_path = argv
    EchoDevice(load_site(site_path), url).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
