"""The MQTT side recovering by itself (docs/devices.md, After a lost link, State, Reset): a broker
crash that loses what it had acked, a device written off by a stale retained state, bad `done`s,
and the reset and cancel actions, over a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Self

import pytest

from adapters.mqtt import MqttHub, MqttPickLight, MqttPrinter
from controller.ports import CommandRejected
from controller.site import Site
from simulators.broker import EmbeddedBroker
from simulators.mqtt import MqttFloor
from tests.conftest import (
    FLOOR_SPEED,
    EventLog,
    RawPeer,
    RigFactory,
    eventually,
    online,
    with_simulation,
)

ROOT = "floorctl/v1"
HEADER = {"message_id": 1, "timestamp": "2025-01-01T00:00:00.000Z", "device_id": "ptl-01", "version": "1.0"}
LABEL = "^XA^FO20,20^A0N,40,40^FDTote T-17^FS^XZ"


class Gate:
    """A TCP relay between the controller and the broker that a test can shut, as a cut cable."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"mqtt://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.shut()
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def shut(self) -> None:
        self.open = False
        for writer in list(self._writers):
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()
        self._writers.discard(sink)


async def test_a_pick_whose_done_a_crashed_broker_lost_completes_when_the_light_is_back(
        demo_site: Site, broker: EmbeddedBroker, events: EventLog) -> None:
    # The operator confirms 1.5 s after the pick is shown; meanwhile the broker is killed (-9) and
    # comes back without its saved state (it had not autosaved yet), and the controller's link stays
    # down until the light's `done` has gone to a broker where nobody subscribes to it.
    site = with_simulation(demo_site, "operator", mean_s=150.0, spread_s=0.0, short_pick_rate=0.0,
                           no_answer_rate=0.0)
    floor = MqttFloor(site, broker_url=broker.url, speed=FLOOR_SPEED)
    await floor.start()
    async with Gate(broker.port) as gate:
        hub = MqttHub(site, broker_url=gate.url)
        await hub.start(events)
        try:
            await events.wait_for(online("ptl-03"))
            light = hub.device("ptl-03")
            assert isinstance(light, MqttPickLight)
            ticket = await light.show("pick-crash", "A-03", 2)
            await asyncio.wait_for(ticket.acked, 2)

            gate.shut()
            await eventually(lambda: not hub.connected)
            await broker.stop(kill=True)
            for saved in broker.data_dir.glob("*.db"):
                saved.unlink()
            await broker.start()
            async with RawPeer(broker, "witness") as witness:
                await witness.subscribe(f"{ROOT}/pick_light/ptl-03/done")
                lost = await witness.next(f"{ROOT}/pick_light/ptl-03/done", timeout=10)
            assert b"pick-crash" in lost.payload and not ticket.done.done()

            gate.open = True
            started = asyncio.get_running_loop().time()
            completion = await asyncio.wait_for(ticket.done, 10)  # far short of the 60 s pick time-out
            assert completion.ok and completion.result == {"picked": 2, "short": False}
            assert asyncio.get_running_loop().time() - started < 10
            assert hub.counters["resent"] >= 1
            assert floor.pick_light("ptl-03").executions["pick-crash"] == 1  # answered again, not redone
        finally:
            await hub.stop()
            await floor.stop()


async def test_a_device_a_stale_retained_state_calls_broken_is_asked_again(
        demo_site: Site, make_rig: RigFactory, raw_peer: RawPeer, events: EventLog) -> None:
    settings = demo_site.broker.model_copy(update={"state_refresh_s": 0.2})
    rig = await make_rig(demo_site.model_copy(update={"broker": settings}))
    stale = {"header": {**HEADER, "device_id": "ptl-02"}, "connection": "CONNECTIONBROKEN",
             "state": "unknown", "fault": None}
    await raw_peer.publish(f"{ROOT}/pick_light/ptl-02/state", stale, retain=True)  # a lost birth, say
    await eventually(lambda: not rig.hub.device("ptl-02").status.online)
    await eventually(lambda: rig.hub.device("ptl-02").status.online, timeout=3)
    assert rig.hub.counters["state_requests"] >= 1
    # Nothing offline any more: no more announcements.
    seen = rig.hub.counters["state_requests"]
    await asyncio.sleep(0.5)
    assert rig.hub.counters["state_requests"] == seen


@pytest.mark.parametrize("picked", ['"2"', "null", "[2]", "NaN", "1e400", "1.5", "true", "3"])
async def test_a_bad_picked_never_finishes_a_pick_and_a_proper_answer_still_does(
        demo_site: Site, make_rig: RigFactory, raw_peer: RawPeer, picked: str,
        caplog: pytest.LogCaptureFixture) -> None:
    rig = await make_rig(with_simulation(demo_site, "operator", no_answer_rate=1.0))  # the peer answers
    light = rig.hub.device("ptl-01")
    assert isinstance(light, MqttPickLight)
    ticket = await light.show("pick-bad", "A-01", 2)
    await asyncio.wait_for(ticket.acked, 2)
    topic = f"{ROOT}/pick_light/ptl-01/done"
    prefix = b'{"header": {"message_id": 1}, "command_id": "pick-bad", "outcome": "done", "result": '
    await raw_peer.publish(topic, prefix + b'{"picked": ' + picked.encode() + b', "short": true}}')
    await raw_peer.publish(topic, prefix + b"[" * 100_000 + b"]" * 100_000 + b"}")
    await eventually(lambda: rig.hub.counters["malformed_payload"] == 2)
    assert not ticket.done.done()
    await raw_peer.publish(topic, prefix + b'{"picked": 1, "short": true}}')
    assert (await asyncio.wait_for(ticket.done, 2)).result == {"picked": 1, "short": True}
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_reset_and_cancel_over_the_wire(demo_site: Site, make_rig: RigFactory) -> None:
    rig = await make_rig(with_simulation(demo_site, "printer", print_s=100.0))  # 1 s a label
    light, printer = rig.hub.device("ptl-04"), rig.hub.device("prn-1")
    assert isinstance(light, MqttPickLight) and isinstance(printer, MqttPrinter)
    rig.floor.pick_light("ptl-04").inject("display_fault")
    await eventually(lambda: light.status.fault == "display_fault")
    reset = await light.reset("reset-ptl")
    assert (await asyncio.wait_for(reset.done, 2)).result == {"fault": "display_fault"}
    await eventually(lambda: light.status.fault is None and light.status.online)

    held = await printer.print_label("label-held", LABEL)
    await asyncio.wait_for(held.acked, 2)
    rig.floor.printer("prn-1").inject("paper_out")  # the label under the head is held
    await eventually(lambda: printer.status.fault == "paper_out")
    refused = await printer.reset("reset-prn")
    with pytest.raises(CommandRejected, match="operator_required"):
        await asyncio.wait_for(refused.acked, 2)
    cancel = await printer.cancel_queued("cancel-prn")
    assert (await asyncio.wait_for(cancel.done, 2)).result == {"cancelled": 1}
    assert (await asyncio.wait_for(held.done, 2)).reason == "cancelled"
    rig.floor.printer("prn-1").clear()
    await eventually(lambda: printer.status.fault is None)
    assert not rig.floor.printer("prn-1").printed  # nothing cancelled came out
