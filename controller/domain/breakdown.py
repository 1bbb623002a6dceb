"""Where an order's time went: its cycle time split into parts that add up exactly. Pure: no I/O.

The cycle runs from `received` to `shipped` (or `cancelled`), or to `now` for an active order. Every
instant of it goes to exactly one `Part`: the order's own periods (held for stock, in exception) and
the phases of its device commands are laid on the time line, and where several cover an instant
(parallel pick lines, a divert answer during the sorter's travel) the part that comes first in
`PRECEDENCE` takes it. An instant nothing covers is the controller's own gap. Because it is a
partition of one time line, no part is negative and the parts sum to the cycle time. docs/insight.md
says what each part means and where the data stops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from controller.domain.model import TERMINAL, OrderState, Task


class Part(StrEnum):
    HELD = "held"  # waiting for stock: received (or held) until allocated
    QUEUED = "queued"  # waiting for a device busy with other work: queued -> sent
    DEVICE_DOWN = "device_down"  # waiting on a device that took no work: offline, faulted, paused, out
    TRANSMISSION = "transmission"  # sent -> acknowledged
    EXECUTION = "execution"  # acknowledged -> done: a pick, a pack, a label
    TRANSIT = "transit"  # belt and sorter travel: a conveyor's or sorter's acknowledged -> done
    EXCEPTION = "exception"  # in exception until a person resolved (or cancelled) it
    CONTROLLER = "controller"  # nothing of the above: between one command ending and the next queued


# Who takes an instant that several parts cover: the order's own periods first, then waiting before
# working (an order that waits on anything at an instant is being held up by that wait, whatever
# else of it is under way), then the device's phases from the first to the last.
PRECEDENCE = (Part.EXCEPTION, Part.HELD, Part.DEVICE_DOWN, Part.QUEUED, Part.TRANSMISSION, Part.EXECUTION,
              Part.TRANSIT, Part.CONTROLLER)
_RANK = {part: rank for rank, part in enumerate(PRECEDENCE)}

# Devices that move the tote: their commands' work is travel.
TRAVEL_KINDS = frozenset({"conveyor", "sorter"})

# What ends a hold: the first of these stamped after it (allocated, or a stage past it, exception or
# cancelled). What ends an exception: any other stamp after it (the resolve stamps the stage it resumes).
_AFTER_HELD = frozenset(s.value for s in OrderState) - {OrderState.RECEIVED.value, OrderState.HELD.value}
_AFTER_EXCEPTION = frozenset(s.value for s in OrderState) - {OrderState.EXCEPTION.value}


@dataclass(frozen=True, slots=True)
class CommandTimes:
    """One device command of the order, as its timing row says. `ended_at` None: still under way."""

    device_id: str
    device_kind: str
    task: str
    queued_at: float
    sent_at: float | None = None
    acked_at: float | None = None
    completed_at: float | None = None
    ended_at: float | None = None
    # Seconds it waited while its device took no work, before it was sent and after.
    down_queued_s: float = 0.0
    down_in_hand_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PartTime:
    part: Part
    seconds: float
    # The devices whose commands the part was counted for, with the seconds each: commands of one
    # part on two devices at once (two pick lines queued) each count the whole overlap.
    devices: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Breakdown:
    start: float  # received
    end: float  # shipped, cancelled, or now
    finished: bool
    parts: dict[Part, PartTime]  # every part, in Part order

    @property
    def cycle_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class _Span:
    start: float
    end: float
    part: Part
    device: str | None = None


def breakdown(state: OrderState, stamps: Mapping[str, float], commands: Iterable[CommandTimes], *,
              now: float) -> Breakdown:
    """Split the order's cycle time into its parts. `stamps`: when the order entered each state, by
    state name (the last time, for a state entered twice); `now` ends an active order's cycle."""
    finished = state in TERMINAL
    commands = list(commands)
    start = stamps.get(OrderState.RECEIVED.value)
    if start is None:  # not stamped (a hand-made row): from the first thing known of it
        start = min([*stamps.values(), *(c.queued_at for c in commands)], default=now)
    end = stamps.get(state.value, now) if finished else now
    end = max(end, start)
    # Relative to `start`: small numbers keep the float error of the sums far below a microsecond.
    spans = [_Span(s.start - start, s.end - start, s.part, s.device)
             for s in [*_order_spans(stamps, end), *(x for c in commands for x in _command_spans(c, end))]]
    return Breakdown(start, end, finished, _partition(spans, end - start))


def _order_spans(stamps: Mapping[str, float], end: float) -> Iterable[_Span]:
    """Held: from received until the stage after held began (an order is held from its first
    allocation attempt, moments after it is received; re-entering held with a new reason moves the
    stamp, not the start). Exception: from its stamp until the order moved on (the resolve stamps
    the stage it resumes) or was cancelled, else until now."""
    held = stamps.get(OrderState.HELD.value)
    if held is not None:
        received = stamps.get(OrderState.RECEIVED.value, held)
        yield _Span(received, _next_stamp(stamps, held, _AFTER_HELD, end), Part.HELD)
    failed = stamps.get(OrderState.EXCEPTION.value)
    if failed is not None:
        yield _Span(failed, _next_stamp(stamps, failed, _AFTER_EXCEPTION, end), Part.EXCEPTION)


def _next_stamp(stamps: Mapping[str, float], after: float, among: frozenset[str], end: float) -> float:
    return min((at for name, at in stamps.items() if name in among and at > after), default=end)


def _command_spans(c: CommandTimes, end: float) -> Iterable[_Span]:
    """The command's phases: queued -> sent -> acknowledged -> done, each to the next one reached,
    the last to when the command ended (now, for one under way). The row counts its waits on a
    device that took no work, not when they were: a queued command's wait is laid at the start of
    its queue phase (work queued while the device is down waits from the moment it is queued, then
    behind the backlog), an in-hand one's at the end of its phase (the device faults while holding
    it, and finishes it once it is back)."""
    finish = end if c.ended_at is None else c.ended_at
    finish = max(finish, c.queued_at, *(t for t in (c.sent_at, c.acked_at, c.completed_at) if t is not None))
    travel = c.device_kind in TRAVEL_KINDS
    # A divert answer goes out while the tote travels from the scanner to the divert: all of it is travel.
    answer = c.task == Task.DIVERT.value
    queue_end = c.sent_at if c.sent_at is not None else finish
    yield _Span(c.queued_at, queue_end, Part.TRANSIT if answer else Part.QUEUED, c.device_id)
    if c.down_queued_s > 0:
        yield _Span(c.queued_at, min(queue_end, c.queued_at + c.down_queued_s), Part.DEVICE_DOWN, c.device_id)
    if c.sent_at is None:
        return
    hand_end = c.completed_at if c.completed_at is not None else finish
    ack_end = c.acked_at if c.acked_at is not None else hand_end
    yield _Span(c.sent_at, ack_end, Part.TRANSIT if answer else Part.TRANSMISSION, c.device_id)
    if c.acked_at is not None:
        yield _Span(c.acked_at, hand_end, Part.TRANSIT if travel or answer else Part.EXECUTION, c.device_id)
    if c.down_in_hand_s > 0:
        yield _Span(max(c.sent_at, hand_end - c.down_in_hand_s), hand_end, Part.DEVICE_DOWN, c.device_id)


def _partition(spans: list[_Span], cycle: float) -> dict[Part, PartTime]:
    """Sweep the time line [0, cycle]: each piece between two span boundaries goes to the covering
    part of highest precedence (the controller when none covers it), and to that part's devices."""
    events: list[tuple[float, int, _Span | None]] = []
    for laid in spans:
        a, b = max(laid.start, 0.0), min(laid.end, cycle)
        if b > a:
            events += [(a, 1, laid), (b, -1, laid)]
    events.sort(key=lambda e: e[0])
    seconds = dict.fromkeys(Part, 0.0)
    devices: dict[Part, dict[str, float]] = {part: {} for part in Part}
    covering: dict[Part, Counter[str | None]] = {part: Counter() for part in Part}  # span counts by device
    at = 0.0
    for t, step, span in [*events, (cycle, 0, None)]:
        if t > at:
            part = min((p for p, by_device in covering.items() if by_device), key=_RANK.__getitem__,
                       default=Part.CONTROLLER)
            seconds[part] += t - at
            for device in covering[part]:
                if device is not None:
                    devices[part][device] = devices[part].get(device, 0.0) + t - at
            at = t
        if span is not None:
            by_device = covering[span.part]
            by_device[span.device] += step
            if by_device[span.device] == 0:
                del by_device[span.device]
    return {part: PartTime(part, seconds[part], dict(sorted(devices[part].items(), key=lambda d: -d[1])))
            for part in Part}
