"""The fault timeline player on the demo floor's simulators, over a real broker and real OPC UA: each
fault starts and ends at its floor time, a cancelled play leaves the floor as it found it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controller.site import Site
from simulators.broker import EmbeddedBroker, free_port
from simulators.faults import Played, TimelineError, parse_timeline, play
from simulators.site_devices import SimulatedFloor, simulated_floor

SPEED = 50.0


@pytest.fixture
async def sims(demo_site: Site, broker: EmbeddedBroker) -> AsyncIterator[SimulatedFloor]:
    ports = {plc.id: free_port() for plc in demo_site.plcs}
    async with simulated_floor(demo_site, broker_url=broker.url, speed=SPEED, plc_ports=ports) as floor:
        yield floor


async def test_each_fault_starts_and_ends_at_its_floor_time(sims: SimulatedFloor,
                                                            broker: EmbeddedBroker) -> None:
    timeline = parse_timeline(
        "faults:\n"
        "  - {at: 5s, device: prn-1, fault: paper_out, for: 10s}\n"
        "  - {at: 10s, device: loop-1, fault: jam, segment: main, for: 5s}\n"
        "  - {at: 20s, plc: plc-1, fault: estop, for: 5s}\n"
        "  - {at: 30s, device: ptl-03, fault: link_cut, for: 5s}\n"
        "  - {at: 40s, fault: broker_restart, for: 5s}\n")
    printer, conveyor, light = sims.device("prn-1"), sims.device("loop-1"), sims.device("ptl-03")
    seen: list[tuple[str, bool, object]] = []

    def observe(step: Played) -> None:
        e = step.entry
        state = {"prn-1": lambda: printer.fault, "loop-1": lambda: conveyor.jammed,
                 "plc-1": lambda: conveyor.estopped, "ptl-03": lambda: light.link.connected,
                 "broker": lambda: broker.running}[e.target]()
        seen.append((e.target, step.started, state))

    loop = asyncio.get_running_loop()
    began = loop.time()
    played = await play(timeline, sims, SPEED, broker=broker, report=observe)
    took = loop.time() - began
    assert seen == [("prn-1", True, "paper_out"), ("loop-1", True, "main"), ("prn-1", False, None),
                    ("loop-1", False, None), ("plc-1", True, True), ("plc-1", False, False),
                    ("ptl-03", True, False), ("ptl-03", False, True), ("broker", True, False),
                    ("broker", False, True)]
    assert [p.floor_s for p in played] == [5, 10, 15, 15, 20, 25, 30, 35, 40, 45]
    assert 45 / SPEED <= took < 45 / SPEED + 3.0  # 0.9 s of wall time for 45 floor seconds
    assert all(p.late_s < 1.0 for p in played)
    # after the broker's restart the devices are back on it
    assert await printer.link.wait_connected(5) and await light.link.wait_connected(5)


async def test_a_cancelled_play_ends_what_it_started(sims: SimulatedFloor) -> None:
    timeline = parse_timeline("faults:\n  - {at: 0s, device: prn-2, fault: head_open, for: 1h}\n"
                              "  - {at: 0s, device: ptl-01, fault: lamp_broken}\n"
                              "  - {at: 1h, device: ptl-02, fault: lamp_broken}\n")
    task = asyncio.create_task(play(timeline, sims, SPEED))
    printer, light = sims.device("prn-2"), sims.device("ptl-01")
    async with asyncio.timeout(5):
        while printer.fault is None or light.fault is None:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert printer.fault is None and light.fault is None and sims.device("ptl-02").fault is None


async def test_a_timeline_that_does_not_fit_plays_nothing(sims: SimulatedFloor) -> None:
    timeline = parse_timeline("faults:\n  - {at: 0s, device: prn-1, fault: paper_out}\n"
                              "  - {at: 1s, device: prn-7, fault: paper_out}\n")
    with pytest.raises(TimelineError, match="unknown device 'prn-7'"):
        await play(timeline, sims, SPEED)
    assert sims.device("prn-1").fault is None
    restart = parse_timeline("faults:\n  - {at: 0s, fault: broker_restart}\n")
    with pytest.raises(TimelineError, match="needs a broker the player can restart"):
        await play(restart, sims, SPEED)
