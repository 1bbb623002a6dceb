"""Play a fault timeline against a running simulated floor, in floor time.

`await play(timeline, floor, speed)` starts each fault at its `at` and ends it after its `for`, both
floor seconds, so at `speed` 50 an entry `at: 30s` starts 0.6 s of wall time after the call. It acts
on the simulators directly, as the wire's fault-injection topic and the PLC's InjectFault method do:

| entry | start | end (after `for`) |
|---|---|---|
| an MQTT device's fault code (`paper_out`, `lamp_broken`, ...) | the device faults | the fault clears |
| `jam` on a conveyor or sorter | its segment jams | the jam clears (totes carry on) |
| `estop` on a PLC | every machine of the PLC stops | the PLC's reset |
| `link_cut` on an MQTT device | its connection drops (the broker sends its last-will) | it reconnects |
| `link_cut` on a PLC | its OPC UA server goes away, the machines keep moving | it listens again |
| `broker_restart` | the broker stops (or is killed) | it starts again on the same port |

A fault without `for` stays. Cancelled midway, the player ends every fault it started (the floor is
left as it found it) before it re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from simulators.faults.timeline import (
    BROKER_RESTART,
    ESTOP,
    JAM,
    LINK_CUT,
    FaultEntry,
    Timeline,
    TimelineError,
)
from simulators.mqtt.device import SimulatedDevice
from simulators.plc.machine import Machine
from simulators.site_devices import SimulatedFloor

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


class RestartableBroker(Protocol):
    """What a broker restart needs (simulators.broker.EmbeddedBroker)."""

    async def stop(self, *, kill: bool = False) -> None: ...

    async def start(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Played:
    """One thing the player did: an entry started (`started`) or ended, at which floor second (as
    scheduled) and how late in wall seconds the step ran."""

    entry: FaultEntry
    started: bool
    floor_s: float
    late_s: float

    def __str__(self) -> str:
        e = self.entry
        if e.fault == BROKER_RESTART:
            what = ("broker " + ("killed" if e.kill else "stopped")) if self.started else "broker back"
        else:
            what = f"{e.target} {e.fault}" + (f" on {e.segment}" if e.segment else "")
            what += "" if self.started else " ended"
        return f"floor {_clock(self.floor_s)}  {what}" + (f"  ({e.note})" if e.note and self.started else "")


def _clock(floor_s: float) -> str:
    minutes, seconds = divmod(floor_s, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{seconds:04.1f}"


async def play(timeline: Timeline, floor: SimulatedFloor, speed: float, *,
               broker: RestartableBroker | None = None,
               report: Callable[[Played], None] | None = None) -> list[Played]:
    """Play `timeline` on `floor` (running at `speed`); return what was done, in order. `broker` is
    needed only for a `broker_restart`. `report` hears each step as it happens. Raises
    TimelineError before anything happens when the timeline does not fit the floor."""
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    timeline.check(floor.mqtt.site)
    if timeline.needs_broker and broker is None:
        raise TimelineError(f"{timeline.source}: {BROKER_RESTART} needs a broker the player can restart "
                            "(floorctl demo's embedded broker, the pytest plugin's); this floor's broker "
                            "is someone else's")
    steps: list[tuple[float, int, int, FaultEntry, bool]] = []
    for entry in timeline.entries:
        steps.append((entry.at, 1, entry.index, entry, True))
        if entry.ends is not None:
            steps.append((entry.ends, 0, entry.index, entry, False))  # at one instant, ends go first
    steps.sort(key=lambda s: s[:3])
    loop = asyncio.get_running_loop()
    origin = loop.time()
    played: list[Played] = []
    undo: dict[int, Step] = {}
    try:
        for floor_s, _, _, entry, starting in steps:
            due = origin + floor_s / speed
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            late = max(0.0, loop.time() - due)
            if starting:
                start, end = fault_steps(entry, floor, broker)
                undo[entry.index] = end
                await start()
            else:
                await undo.pop(entry.index)()
            done = Played(entry, starting, floor_s, late)
            played.append(done)
            log.info("fault timeline %s: %s", timeline.source, done)
            if report is not None:
                report(done)
    except BaseException:
        for end in reversed(list(undo.values())):  # leave the floor as it was found
            try:
                await end()
            except Exception:
                log.exception("fault timeline %s: could not end a fault", timeline.source)
        raise
    return played


@contextlib.asynccontextmanager
async def playing(timeline: Timeline | None, floor: SimulatedFloor, speed: float, *,
                  broker: RestartableBroker | None = None, out: TextIO = sys.stderr) -> AsyncIterator[None]:
    """Play `timeline` (None: nothing) in the background while the block runs, one line on `out` per
    step; leaving the block ends the faults still on. For `floorctl sim` and `floorctl demo`."""
    if timeline is None:
        yield
        return
    timeline.check(floor.mqtt.site)
    lead = "\r\x1b[K" if out.isatty() else ""  # after a progress line that ends in \r

    def say(step: Played) -> None:
        print(f"{lead}faults: {step}", file=out, flush=True)

    async def run() -> None:
        try:
            await play(timeline, floor, speed, broker=broker, report=say)
        except TimelineError as exc:
            print(f"{lead}faults: {exc}", file=out, flush=True)
            return
        except Exception:
            log.exception("fault timeline %s failed", timeline.source)
            print(f"{lead}faults: {timeline.source} stopped by an error (see the log)", file=out, flush=True)
            return
        print(f"{lead}faults: {timeline.source} played to its end", file=out, flush=True)

    print(f"faults: playing {timeline.source} ({len(timeline.entries)} entries over "
          f"{timeline.length:g} floor seconds, {timeline.length / speed:.1f} s at {speed:g}x)",
          file=out, flush=True)
    task = asyncio.create_task(run(), name="fault-timeline")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def fault_steps(entry: FaultEntry, floor: SimulatedFloor,
                broker: RestartableBroker | None = None) -> tuple[Step, Step]:
    """What starts the entry's fault and what ends it (an entry that fits the floor: `Timeline.check`)."""
    fault = entry.fault
    if fault == BROKER_RESTART:
        if broker is None:
            raise TimelineError(f"{BROKER_RESTART} needs a broker the player can restart")
        return _call(broker.stop, kill=entry.kill), broker.start
    if entry.plc is not None:
        plc = floor.plcs[entry.plc]
        if fault == ESTOP:
            return _sync(plc.estop), _sync(plc.reset)
        assert fault == LINK_CUT
        return _call(plc.stop, keep_running=True), plc.start
    assert entry.device is not None
    device = floor.device(entry.device)
    if isinstance(device, Machine):
        assert fault == JAM
        return _sync(device.inject_jam, entry.segment), _sync(device.clear)
    assert isinstance(device, SimulatedDevice)
    if fault == LINK_CUT:
        return device.disconnect, device.reconnect
    return _sync(device.inject, fault), _sync(device.clear)


def _sync(action: Callable[..., Any], *args: Any) -> Step:
    async def step() -> None:
        action(*args)
    return step


def _call(action: Callable[..., Awaitable[None]], **kwargs: Any) -> Step:
    async def step() -> None:
        await action(**kwargs)
    return step
