"""What limits the floor over a window of time: how busy each device and each kind of device was, how
long work queued for it and whether that wait grew, how much of the orders' time went waiting on it,
the bottleneck and its runner-up, and the order rate at which each kind would saturate.

Pure: the store hands in the device command rows and the orders of the window (`CommandRecord`,
`OrderRecord`) and the floor's resources (`Resource`); nothing here reads a clock or a database.
Timestamps are wall-clock epoch seconds as recorded; `time_scale` (floor seconds per wall second: a
simulated floor runs N times faster than the clock that stamps it) turns every duration into floor
seconds and every rate into a rate per floor second. docs/insight.md explains the model and its limits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# ---- the model's thresholds (docs/insight.md, "What limits the floor") ----------------------------
SATURATED = 0.85  # utilisation from which a resource counts as saturated
WAITING_SHARE = 0.05  # ...when its queue wait grows, or this share of the orders' time waits on it
GROWTH_SLOPE = 0.02  # seconds of queue wait added per second of floor time from which a wait grows
MIN_SAMPLES = 8  # fewer queue waits than this: whether the wait grows is not judged
TIE = 0.05  # capacities within 5% of each other: the higher utilisation decides
BELT_DEMAND = 0.95  # a belt whose rated flow is below 95% of the order rate ...
BELT_BUSY = 0.75  # ... while it runs at 75% of that flow or more, is saturated
BUCKETS = 60  # points of each series over the window
SERIES_TOP = 5  # resources whose queue wait is followed over time
TOTE_PITCH_M = 1.0  # metres of belt a tote takes, gap included, where the site file gives none

# How each kind works (controller/engine/dispatch.py sends the commands; these say what the device
# does with them). A pick light shows one pick and its operator confirms it, a packer packs one tote,
# a printer prints one label at a time (dispatch lets it hold a second in its buffer, which is why its
# service time is measured between labels rather than from sending to done). Conveyors and sorters
# carry many totes at once: what limits them is how many totes a second pass their slowest point.
SERIAL_KINDS = frozenset({"pick_light", "pack_station", "printer"})
BELT_KINDS = frozenset({"conveyor", "sorter"})
# Kinds whose device the engine chooses for each piece of work (controller/domain/choice.py): their
# work spreads over the kind, which saturates as a pool. A pick goes to the light of the SKU's
# location and a tote to its carrier's sorter: those saturate device by device.
POOLED_KINDS = frozenset({"pack_station", "printer", "conveyor"})
# The tasks that put a tote on a belt. A sorter's divert commands steer a tote already on it.
CARRYING_TASKS = frozenset({"convey", "induct"})
FLOW = ("pick_light", "conveyor", "pack_station", "printer", "sorter")  # the order a tote meets them
LABELS = {"pick_light": ("pick light", "pick lights"), "conveyor": ("conveyor", "conveyors"),
          "pack_station": ("pack station", "pack stations"), "printer": ("printer", "printers"),
          "sorter": ("sorter", "sorters")}


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list (q in 0..100)."""
    rank = max(1, math.ceil(q * len(ordered) / 100 - 1e-9))  # the epsilon absorbs float noise
    return ordered[rank - 1]


# ---- what goes in ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Resource:
    """One device of the floor as the analysis sees it."""

    device_id: str
    kind: str
    servers: int = 1  # commands it works on at once
    zone: str | None = None  # pick lights: the zone of their locations; pack stations: theirs
    rated_s: float | None = None  # belts: floor seconds a tote holds its entry (pitch / speed)
    ride_s: float | None = None  # conveyors: floor seconds of the ride itself, entry to destination


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A device command's timing row (controller/store/tables.py `device_commands`)."""

    device_id: str
    kind: str
    task: str
    order_id: int | None
    queued_at: float
    sent_at: float | None
    completed_at: float | None
    outcome: str


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order's times (controller/store/tables.py `orders`)."""

    id: int
    state: str
    priority: int
    carrier: str
    due_at: float | None
    received_at: float | None
    shipped_at: float | None
    cancelled_at: float | None = None
    # The devices the order's work must go to, one entry per command: its lines' pick lights, its
    # carrier's sorter (as the loader knows them from the site file; empty where it does not say).
    needs: tuple[str, ...] = ()

    @property
    def ended_at(self) -> float | None:
        return self.shipped_at if self.shipped_at is not None else self.cancelled_at


# ---- what comes out ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Growth:
    """Does the queue wait grow over the window? Least-squares slope of wait against when the command
    left the queue (seconds of wait per second of floor time), and the mean wait of the earlier and the
    later half of the commands (split at the middle of their time span)."""

    samples: int
    slope: float | None = None
    early_mean_s: float | None = None
    late_mean_s: float | None = None
    grows: bool = False


@dataclass(frozen=True, slots=True)
class Load:
    """One resource over the window: a device, a kind of device, or the pick lights of a zone."""

    resource: str  # a device id, a kind, or "zone Z1"
    kind: str
    devices: int
    servers: int
    zone: str | None
    utilisation: float | None  # busy share of its capacity
    arrivals_per_s: float  # commands queued per floor second
    completions_per_s: float  # commands completed per floor second
    commands: int  # commands sent to it in the window
    service_s: float | None  # time it is held per command (serial kinds, hand-over included; belts: rated)
    work_s: float | None  # mean time from sending to done
    rate_per_s: float | None  # commands per second it can complete: servers / service
    queue_wait_mean_s: float | None  # queued -> sent, of the commands sent in the window
    queue_wait_p95_s: float | None
    queue_wait_max_s: float | None
    growth: Growth
    waiting_share: float | None  # share of all the orders' time in the window spent waiting for it
    orders_served: int  # orders with a command sent to it in the window
    orders_waited: int  # ...of which waited longer than half a service time
    lit_share: float | None = None  # zones: share of the window with at least one light lit


@dataclass(frozen=True, slots=True)
class Capacity:
    """The order rate at which a kind saturates: count x capacity / (service x commands per order)."""

    kind: str
    devices: int
    servers: int
    service_s: float | None  # the kind's service time per command (harmonic mean over its devices)
    commands_per_order: float | None
    orders_per_s: float | None  # floor time
    orders_per_hour: float | None
    orders_per_s_wall: float | None  # per wall second, at the window's time scale
    limiting_device: str | None  # kinds saturating device by device: the device that saturates first
    headroom: float | None  # orders_per_s / the rate orders arrived at (OrderFlow.arriving_per_s)
    formula: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """The bottleneck or the runner-up, with the figures that make the case."""

    resource: str  # a kind (pooled kinds) or a device id
    label: str  # for people: "pack stations", "pick light ptl-03"
    kind: str
    device_id: str  # the device that shows it most (pools: the slowest, else the busiest)
    devices: tuple[str, ...]
    zone: str | None
    saturated: bool
    utilisation: float | None
    queue_wait_mean_s: float | None
    queue_wait_p95_s: float | None
    growth: Growth
    waiting_share: float | None
    orders_waited: int
    orders_served: int
    capacity_orders_per_s: float | None
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Percentiles:
    n: int
    mean_s: float | None = None
    p50_s: float | None = None
    p90_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None


@dataclass(frozen=True, slots=True)
class OrderFlow:
    received: int  # in the window
    shipped: int  # in the window
    offered_per_s: float  # received / the window
    arriving_per_s: float  # received / the time from the first to the last of them: the rate while they came
    shipped_per_s: float
    unfinished_at_end: int  # received before the window's end and not finished by it
    cycle: Percentiles  # received -> shipped of the orders shipped in the window


@dataclass(frozen=True, slots=True)
class OnTimeShare:
    orders: int
    on_time: int
    late: int
    share: float | None


@dataclass(frozen=True, slots=True)
class OnTime:
    """Orders with a due time that fell in the window or that shipped in it: shipped by it or not."""

    all: OnTimeShare
    by_priority: dict[str, OnTimeShare]
    by_carrier: dict[str, OnTimeShare]
    without_due: int  # orders shipped in the window that carried no due time


@dataclass(frozen=True, slots=True)
class Series:
    """The window in BUCKETS equal parts: `starts` are wall-clock epoch seconds, rates per floor second."""

    bucket_s: float  # floor seconds per bucket
    starts: list[float]
    received_per_s: list[float]
    shipped_per_s: list[float]
    cycle_p50_s: list[float | None]
    cycle_p95_s: list[float | None]
    queue_wait_s: dict[str, list[float | None]]  # mean wait of the commands sent in each bucket
    utilisation: dict[str, list[float | None]]  # per kind


@dataclass(frozen=True, slots=True)
class Insight:
    since: float
    until: float
    time_scale: float
    window_s: float  # floor seconds
    orders: OrderFlow
    devices: list[Load]
    kinds: list[Load]
    zones: list[Load]
    capacities: list[Capacity]
    bottleneck: Finding | None
    runner_up: Finding | None
    verdict: str
    on_time: OnTime
    series: Series = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: floats rounded to what a person reads (6 significant digits)."""
        tidy: dict[str, Any] = _tidy(asdict(self))
        return tidy


def _tidy(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return value
        return round(value, 3) if abs(value) >= 1e5 else float(f"{value:.6g}")  # an instant: to the ms
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tidy(v) for v in value]
    return value


# ---- the analysis ------------------------------------------------------------------------------------
def analyse(commands: Iterable[CommandRecord], orders: Iterable[OrderRecord], resources: Iterable[Resource],
            since: float, until: float, *, time_scale: float = 1.0) -> Insight:
    """Everything above for [since, until). `commands` must hold every command that may have been
    queued, in hand or completed in the window (the store reads from a look-back before `since`)."""
    if not until > since:
        raise ValueError(f"the window must end after it starts (since {since}, until {until})")
    if not (time_scale > 0 and math.isfinite(time_scale)):
        raise ValueError(f"time_scale must be a positive number, got {time_scale}")
    w = _Window(since, until, time_scale)
    order_list = list(orders)
    by_device: dict[str, list[CommandRecord]] = defaultdict(list)
    for c in commands:
        by_device[c.device_id].append(c)
    floor = {r.device_id: r for r in resources}
    for device_id, cmds in by_device.items():  # a device the site no longer names still counts
        floor.setdefault(device_id, Resource(device_id, cmds[0].kind))
    order_time = sum(w.overlap(o.received_at, o.ended_at if o.ended_at is not None else until)
                     for o in order_list if o.received_at is not None)

    stats = {d: _DeviceStats.of(floor[d], by_device.get(d, []), w) for d in floor}
    devices = [s.load(w, order_time) for s in _in_flow_order(stats.values())]
    kinds: dict[str, list[_DeviceStats]] = defaultdict(list)
    for s in _in_flow_order(stats.values()):
        kinds[s.resource.kind].append(s)
    kind_loads = {k: _load(k, k, members, w, order_time) for k, members in kinds.items()}
    zones = [_load(f"zone {zone}", "pick_light", members, w, order_time, zone=zone, lit=True)
             for zone, members in sorted(_zones(stats.values()).items())]

    flow = _order_flow(order_list, w)
    per_order = _commands_per_order(order_list, by_device, floor, w)
    capacities = {k: _capacity(k, kinds[k], per_order, flow.arriving_per_s, w) for k in kinds}
    units = _units(kinds, kind_loads, capacities, {d.resource: d for d in devices}, per_order,
                   flow.arriving_per_s)
    bottleneck, runner_up, verdict = _judge(units, flow, w)
    ordered = sorted(kinds, key=_flow_rank)
    followed = [f.resource for f in (bottleneck, runner_up) if f is not None]
    return Insight(
        since=since, until=until, time_scale=time_scale, window_s=w.floor_s, orders=flow, devices=devices,
        kinds=[kind_loads[k] for k in ordered], zones=zones, capacities=[capacities[k] for k in ordered],
        bottleneck=bottleneck, runner_up=runner_up, verdict=verdict, on_time=_on_time(order_list, w),
        series=_series(order_list, kinds, followed, units, w))


@dataclass(frozen=True, slots=True)
class _Window:
    since: float
    until: float
    scale: float

    @property
    def wall_s(self) -> float:
        return self.until - self.since

    @property
    def floor_s(self) -> float:
        return self.wall_s * self.scale

    def inside(self, at: float | None) -> bool:
        return at is not None and self.since <= at < self.until

    def overlap(self, start: float | None, end: float | None) -> float:
        """Wall seconds of [start, end] inside the window."""
        if start is None or end is None:
            return 0.0
        return max(0.0, min(end, self.until) - max(start, self.since))


@dataclass(slots=True)
class _DeviceStats:
    """One device's commands worked out once: what it held when, and what waited for it."""

    resource: Resource
    held: list[tuple[float, float, CommandRecord]]  # (start, end) wall: its hold on the device
    waits: list[tuple[float, float, CommandRecord]]  # (queued, left the queue) wall, commands sent
    arrivals: int
    completions: int
    sent: int
    service_s: float | None  # floor
    work_s: float | None  # floor
    busy_wall: float  # inside the window

    @classmethod
    def of(cls, resource: Resource, cmds: list[CommandRecord], w: _Window) -> _DeviceStats:
        if resource.kind in BELT_KINDS:
            cmds = [c for c in cmds if c.task in CARRYING_TASKS]
        sent = [c for c in cmds if c.sent_at is not None]
        done = [c for c in sent if c.completed_at is not None]
        works = [(c.completed_at or 0.0) - (c.sent_at or 0.0) for c in done if w.inside(c.completed_at)]
        work_s = sum(works) / len(works) * w.scale if works else None
        if resource.kind in BELT_KINDS:
            # A tote holds the belt's entry for pitch / speed from when it got on: when sent, or,
            # where the belt holds totes back at its entry, the ride's length before it arrived.
            service_s = resource.rated_s
            hold = (resource.rated_s or 0.0) / w.scale
            entries = [(_got_on(c, resource, w.scale), c) for c in sent]
            held = [(on, on + hold, c) for on, c in entries]
            waits = [(c.queued_at, on, c) for on, c in entries]
        else:
            held = _holds(done)
            own = [end - start for start, end, c in held if w.inside(c.completed_at)]
            service_s = sum(own) / len(own) * w.scale if own else None
            waits = [(c.queued_at, c.sent_at or c.queued_at, c) for c in sent]
        return cls(resource, held, waits, arrivals=sum(1 for c in cmds if w.inside(c.queued_at)),
                   completions=sum(1 for c in done if w.inside(c.completed_at)),
                   sent=sum(1 for c in sent if w.inside(c.sent_at)), service_s=service_s, work_s=work_s,
                   busy_wall=sum(w.overlap(start, end) for start, end, _ in held))

    @property
    def rate_per_s(self) -> float | None:
        return self.resource.servers / self.service_s if self.service_s else None

    def utilisation(self, w: _Window) -> float:
        return self.busy_wall / (self.resource.servers * w.wall_s)

    def load(self, w: _Window, order_time: float) -> Load:
        r = self.resource
        return _load(r.device_id, r.kind, [self], w, order_time, zone=r.zone)


def _got_on(c: CommandRecord, belt: Resource, scale: float) -> float:
    """When the tote got on the belt (wall clock): the ride's length before it arrived, not before it
    was sent; waiting at the entry is waiting for the belt."""
    sent = c.sent_at or c.queued_at
    if belt.ride_s is None or c.completed_at is None:
        return sent
    return max(sent, c.completed_at - belt.ride_s / scale)


def _holds(done: list[CommandRecord]) -> list[tuple[float, float, CommandRecord]]:
    """When each completed command held a one-at-a-time device: from its sending, or from when the
    command before it finished if it was sent into the device's buffer while that one was in hand,
    or if it was already waiting then (the controller's hand-over to the next command is part of the
    device's cycle, up to one typical command's length: a longer gap is the device away, not busy)."""
    ordered = sorted(done, key=lambda c: (c.sent_at or 0.0, c.completed_at or 0.0))
    typical = sorted((c.completed_at or 0.0) - (c.sent_at or 0.0) for c in ordered)
    hand_over_cap = percentile(typical, 50) if typical else 0.0
    held = []
    frontier = -math.inf
    for c in ordered:
        sent, end = c.sent_at or 0.0, c.completed_at or 0.0
        start = sent
        if sent < frontier or (c.queued_at <= frontier and sent - frontier <= hand_over_cap):
            start = frontier
        start = min(start, end)
        held.append((start, end, c))
        frontier = max(frontier, end)
    return held


def _load(resource: str, kind: str, members: Sequence[_DeviceStats], w: _Window, order_time: float, *,
          zone: str | None = None, lit: bool = False) -> Load:
    servers = sum(s.resource.servers for s in members)
    busy = sum(s.busy_wall for s in members)
    # A pool completes sum(servers / service) commands a second: its service time is the harmonic mean.
    measured = [s for s in members if s.rate_per_s]
    service_s = (sum(s.resource.servers for s in measured) / sum(s.rate_per_s or 0.0 for s in measured)
                 if measured else None)
    works = [(s.work_s, s.completions) for s in members if s.work_s is not None and s.completions]
    completed = sum(n for _, n in works)
    # The waits of the commands that left the queue in the window, by when they left: a row is written
    # when its command ends, so on a live floor those still queued are not there yet, and judging by
    # when commands were queued would see only the few that went quickly.
    left = [(sent, sent - queued) for s in members for queued, sent, _ in s.waits if w.inside(sent)]
    waits_s = sorted(wait * w.scale for _, wait in left)
    growth = _growth([((sent - w.since) * w.scale, wait * w.scale) for sent, wait in left], service_s)
    served: set[int] = set()
    waited: set[int] = set()
    patience = 0.5 * (service_s or 0.0)
    by_order: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for s in members:
        for queued, sent, c in s.waits:
            if c.order_id is None:
                continue
            if w.inside(sent):
                served.add(c.order_id)
                if (sent - queued) * w.scale > patience:
                    waited.add(c.order_id)
            if w.overlap(queued, sent) > 0:
                by_order[c.order_id].append((queued, sent))
    waiting = sum(_union_inside(spans, w) for spans in by_order.values())
    lit_s = _union_inside([(a, b) for s in members for a, b, _ in s.held], w) if lit else None
    return Load(
        resource=resource, kind=kind, devices=len(members), servers=servers, zone=zone,
        utilisation=busy / (servers * w.wall_s) if servers else None,
        arrivals_per_s=sum(s.arrivals for s in members) / w.floor_s,
        completions_per_s=sum(s.completions for s in members) / w.floor_s,
        commands=sum(s.sent for s in members), service_s=service_s,
        work_s=sum(x * n for x, n in works) / completed if completed else None,
        rate_per_s=servers / service_s if service_s else None,
        queue_wait_mean_s=sum(waits_s) / len(waits_s) if waits_s else None,
        queue_wait_p95_s=percentile(waits_s, 95) if waits_s else None,
        queue_wait_max_s=waits_s[-1] if waits_s else None,
        growth=growth, waiting_share=waiting / order_time if order_time > 0 else None,
        orders_served=len(served), orders_waited=len(waited),
        lit_share=None if lit_s is None else lit_s / w.wall_s)


def _union_inside(spans: list[tuple[float, float]], w: _Window) -> float:
    """Wall seconds inside the window covered by at least one of the spans."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):
        start, end = max(start, w.since, reach), min(end, w.until)
        if end > start:
            total += end - start
            reach = end
    return total


def _growth(points: list[tuple[float, float]], service_s: float | None) -> Growth:
    """Grows: the slope is at least GROWTH_SLOPE, and the halves agree: the later one waited longer
    than the earlier by at least one service time and by what that slope adds over half the span (a
    steady queue wanders by less; a few long waits at one end do not make a trend)."""
    n = len(points)
    if n < MIN_SAMPLES:
        return Growth(n)
    points.sort()
    first, last = points[0][0], points[-1][0]
    if last - first <= 0:
        return Growth(n)
    mid = (first + last) / 2
    early = [wait for t, wait in points if t < mid]
    late = [wait for t, wait in points if t >= mid]
    mean_t = sum(t for t, _ in points) / n
    mean_w = sum(wait for _, wait in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (wait - mean_w) for t, wait in points) / spread if spread else 0.0
    early_mean = sum(early) / len(early) if early else None
    late_mean = sum(late) / len(late) if late else None
    grows = (slope >= GROWTH_SLOPE and early_mean is not None and late_mean is not None
             and late_mean - early_mean >= max(service_s or 0.0, GROWTH_SLOPE * (last - first) / 2))
    return Growth(n, slope, early_mean, late_mean, grows)


def _zones(stats: Iterable[_DeviceStats]) -> dict[str, list[_DeviceStats]]:
    zones: dict[str, list[_DeviceStats]] = defaultdict(list)
    for s in stats:
        if s.resource.kind == "pick_light" and s.resource.zone is not None:
            zones[s.resource.zone].append(s)
    return zones


def _flow_rank(kind: str) -> tuple[int, str]:
    return (FLOW.index(kind) if kind in FLOW else len(FLOW), kind)


def _in_flow_order(stats: Iterable[_DeviceStats]) -> list[_DeviceStats]:
    return sorted(stats, key=lambda s: (_flow_rank(s.resource.kind), s.resource.device_id))


# ---- orders --------------------------------------------------------------------------------------------
def _order_flow(orders: list[OrderRecord], w: _Window) -> OrderFlow:
    arrivals = sorted(o.received_at for o in orders if o.received_at is not None and w.inside(o.received_at))
    received = len(arrivals)
    span = (arrivals[-1] - arrivals[0]) * w.scale if received > 1 else 0.0
    shipped = [o for o in orders if w.inside(o.shipped_at) and o.received_at is not None]
    unfinished = sum(1 for o in orders if o.received_at is not None and o.received_at < w.until
                     and (o.ended_at is None or o.ended_at >= w.until))
    cycles = [((o.shipped_at or 0.0) - (o.received_at or 0.0)) * w.scale for o in shipped]
    offered = received / w.floor_s
    return OrderFlow(received=received, shipped=len(shipped), offered_per_s=offered,
                     arriving_per_s=max(offered, (received - 1) / span if span > 0 else 0.0),
                     shipped_per_s=len(shipped) / w.floor_s, unfinished_at_end=unfinished,
                     cycle=_percentiles(cycles))


def _percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles(0)
    ordered = sorted(values)
    return Percentiles(len(ordered), sum(ordered) / len(ordered), percentile(ordered, 50),
                       percentile(ordered, 90), percentile(ordered, 95), percentile(ordered, 99), ordered[-1])


def _on_time(orders: list[OrderRecord], w: _Window) -> OnTime:
    counted: list[tuple[OrderRecord, bool]] = []
    without = 0
    for o in orders:
        shipped_in = w.inside(o.shipped_at)
        if o.due_at is None:
            without += shipped_in
            continue
        if o.cancelled_at is not None and o.shipped_at is None:
            continue
        due_in = w.inside(o.due_at) and (o.shipped_at is None or o.shipped_at >= w.until)
        if shipped_in or due_in:
            counted.append((o, o.shipped_at is not None and o.shipped_at <= o.due_at))

    def share(group: list[bool]) -> OnTimeShare:
        kept = sum(group)
        return OnTimeShare(len(group), kept, len(group) - kept, kept / len(group) if group else None)

    by_priority: dict[int, list[bool]] = defaultdict(list)
    by_carrier: dict[str, list[bool]] = defaultdict(list)
    for o, kept in counted:
        by_priority[o.priority].append(kept)
        by_carrier[o.carrier].append(kept)
    return OnTime(all=share([kept for _, kept in counted]),
                  by_priority={str(p): share(v) for p, v in sorted(by_priority.items(), reverse=True)},
                  by_carrier={c: share(v) for c, v in sorted(by_carrier.items())}, without_due=without)


@dataclass(frozen=True, slots=True)
class _PerOrder:
    """Commands sent per order, by kind and by device, and how many commands each was counted on."""

    kinds: dict[str, float]
    devices: dict[str, float]
    counted: dict[str, float]  # by device


def _commands_per_order(orders: list[OrderRecord], by_device: dict[str, list[CommandRecord]],
                        floor: dict[str, Resource], w: _Window) -> _PerOrder:
    """Over the orders both received and shipped in the window (every command of theirs was read);
    with fewer than MIN_SAMPLES of those, per kind over the orders that had a command of the kind sent
    in the window. Retries and failed commands count: they held the device too."""
    whole = {o.id for o in orders if w.inside(o.received_at) and w.inside(o.shipped_at)}
    kinds: dict[str, float] = defaultdict(float)
    devices: dict[str, float] = defaultdict(float)
    users: dict[str, set[int]] = defaultdict(set)
    for device_id, cmds in by_device.items():
        kind = floor[device_id].kind
        for c in cmds:
            if c.order_id is None or c.sent_at is None or not _carries(kind, c):
                continue
            if len(whole) >= MIN_SAMPLES:
                if c.order_id in whole:
                    kinds[kind] += 1
                    devices[device_id] += 1
            elif w.inside(c.sent_at):
                kinds[kind] += 1
                devices[device_id] += 1
                users[kind].add(c.order_id)
    if len(whole) >= MIN_SAMPLES:
        measured = _PerOrder({k: v / len(whole) for k, v in kinds.items()},
                             {d: v / len(whole) for d, v in devices.items()}, devices)
    else:
        measured = _PerOrder({k: v / len(users[k]) for k, v in kinds.items()},
                             {d: v / len(users[floor[d].kind]) for d, v in devices.items()}, devices)
    return _with_demand(measured, orders, floor, w)


def _with_demand(measured: _PerOrder, orders: list[OrderRecord], floor: dict[str, Resource],
                 w: _Window) -> _PerOrder:
    """For the kinds whose device each order names (a line's pick light, the carrier's sorter), how
    the work spreads over the devices is taken from what the orders received in the window asked for,
    done or not: the commands recorded favour the orders that got through, away from the device that
    holds the others up."""
    asked = [o for o in orders if o.needs and w.inside(o.received_at)]
    if len(asked) < MIN_SAMPLES:
        return measured
    counts: dict[str, float] = defaultdict(float)
    for o in asked:
        for device_id in o.needs:
            if device_id in floor:
                counts[device_id] += 1
    named = {floor[d].kind for d in counts}
    kinds = {k: v for k, v in measured.kinds.items() if k not in named}
    devices = {d: v for d, v in measured.devices.items() if floor[d].kind not in named}
    counted = {d: v for d, v in measured.counted.items() if floor[d].kind not in named}
    for device_id, n in counts.items():
        kind = floor[device_id].kind
        kinds[kind] = kinds.get(kind, 0.0) + n / len(asked)
        devices[device_id] = n / len(asked)
        counted[device_id] = n
    return _PerOrder(kinds, devices, counted)


def _carries(kind: str, c: CommandRecord) -> bool:
    """Does the command occupy the device? On a belt only the commands that put a tote on it do."""
    return kind not in BELT_KINDS or c.task in CARRYING_TASKS


# ---- capacity ----------------------------------------------------------------------------------------
def _capacity(kind: str, members: list[_DeviceStats], per_order: _PerOrder, arriving: float,
              w: _Window) -> Capacity:
    count = len(members)
    servers = sum(s.resource.servers for s in members)
    n = per_order.kinds.get(kind)
    measured = [s for s in members if s.rate_per_s]
    if not measured or not n:
        why = ("no command of this kind completed in the window" if not measured
               else "no order counted used this kind")
        return Capacity(kind, count, servers, None, n, None, None, None, None, None, "-", why)
    notes = []
    rate = sum(s.rate_per_s or 0.0 for s in measured)
    if len(measured) < count:  # devices that did nothing: taken to work like their peers
        rate += rate / len(measured) * (count - len(measured))
        idle = ", ".join(sorted(s.resource.device_id for s in members if not s.rate_per_s))
        notes.append(f"no service measured for {idle}: taken to work like the others")
    service_s = servers / rate
    spread = rate / n
    orders_per_s = spread
    limiting: str | None = None
    if kind not in POOLED_KINDS:
        bounds = {d: b for s in measured if (b := _bound(s, per_order)) is not None
                  for d in (s.resource.device_id,)}
        if bounds:
            limiting = min(bounds, key=lambda d: (bounds[d], d))
            if bounds[limiting] < spread:
                hot = next(s for s in measured if s.resource.device_id == limiting)
                notes.append(f"{limiting} gets {per_order.devices[limiting] / n:.0%} of the kind's commands, "
                             f"{_secs(hot.service_s)} each: it saturates first "
                             f"(spread evenly: {_rate(spread)})")
                orders_per_s = bounds[limiting]
    if kind in BELT_KINDS:
        notes.append("a belt's service: the time a tote holds its entry, pitch / speed")
    per_device = f"{servers // count}" if servers % count == 0 else f"{servers / count:.3g}"
    formula = f"{count} x {per_device} / ({_secs(service_s)} x {n:.3g} per order) = {_rate(spread)}"
    return Capacity(kind, count, servers, service_s, n, orders_per_s, orders_per_s * 3600,
                    orders_per_s * w.scale, limiting, orders_per_s / arriving if arriving > 0 else None,
                    formula, "; ".join(notes) or None)


def _bound(s: _DeviceStats, per_order: _PerOrder) -> float | None:
    """Orders per second at which this one device saturates, its share of the work staying as it was
    (not judged on fewer than MIN_SAMPLES of its commands: its share would be a guess)."""
    d = s.resource.device_id
    n = per_order.devices.get(d)
    return s.rate_per_s / n if s.rate_per_s and n and per_order.counted.get(d, 0) >= MIN_SAMPLES else None


# ---- the bottleneck --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Unit:
    """A candidate: a pooled kind, or one device of a kind that saturates device by device."""

    resource: str
    label: str
    kind: str
    load: Load
    capacity: float | None
    members: tuple[_DeviceStats, ...]
    arriving: float  # orders per second while they came

    @property
    def saturated(self) -> bool:
        """Busy, and queueing or unable to do what comes; or queueing more and more because more comes
        than it can do (the window began before it was busy); or a belt full or past its rated flow."""
        u = self.load.utilisation or 0.0
        grows = self.load.growth.grows
        short = self.capacity is not None and self.capacity < self.arriving  # less than the orders need
        overloaded = grows and short
        # Just downstream of another bottleneck a resource gets less than arrives and may not queue
        # much, yet if it is busy and could not do what the orders need, it limits the floor too.
        waits = grows or (self.load.waiting_share or 0.0) >= WAITING_SHARE or short
        # A belt queues its totes itself, at its entry, where the controller's queue wait cannot see
        # them: more orders coming than its rated flow takes, while it runs near that flow, is enough.
        belt_full = (self.kind in BELT_KINDS and self.capacity is not None
                     and self.capacity < BELT_DEMAND * self.arriving and u >= BELT_BUSY)
        past_rated = self.kind in BELT_KINDS and u >= 1.0
        return (u >= SATURATED and waits) or overloaded or belt_full or past_rated


def _units(kinds: dict[str, list[_DeviceStats]], kind_loads: dict[str, Load], capacities: dict[str, Capacity],
           device_loads: dict[str, Load], per_order: _PerOrder, arriving: float) -> list[_Unit]:
    units = []
    for kind, members in kinds.items():
        one, many = LABELS.get(kind, (kind, kind))
        if kind in POOLED_KINDS:
            units.append(_Unit(kind, many, kind, kind_loads[kind], capacities[kind].orders_per_s,
                               tuple(members), arriving))
            continue
        for s in members:
            d = s.resource.device_id
            units.append(_Unit(d, f"{one} {d}", kind, device_loads[d], _bound(s, per_order), (s,), arriving))
    return units


def _first(units: list[_Unit]) -> _Unit | None:
    """The lowest capacity: it sets the pace. Capacities within TIE of it go to the highest
    utilisation; units without a capacity come last, by utilisation."""
    if not units:
        return None
    known = [u for u in units if u.capacity is not None]
    if not known:
        return max(units, key=lambda u: u.load.utilisation or 0.0)
    lowest = min(u.capacity or 0.0 for u in known)
    close = [u for u in known if (u.capacity or 0.0) <= lowest * (1 + TIE)]
    return max(close, key=lambda u: (u.load.utilisation or 0.0, -(u.capacity or 0.0)))


def _judge(units: list[_Unit], flow: OrderFlow, w: _Window) -> tuple[Finding | None, Finding | None, str]:
    saturated = [u for u in units if u.saturated]
    # Busy ones first: a unit saturated only because its queue grows (and a capacity estimate below
    # the arrivals) can be a quiet device behind a busy one; the busy one sets the pace.
    busy = [u for u in saturated if (u.load.utilisation or 0.0) >= SATURATED]
    top = _first(busy or saturated)
    if top is not None:
        others = [u for u in saturated if u.kind != top.kind] or [u for u in units if u.kind != top.kind]
        second = _first(others)
        bottleneck = _finding(top, units, flow, w)
        runner_up = _finding(second, units, flow, w) if second else None
        verdict = f"Bottleneck: {bottleneck.label}: {'; '.join(bottleneck.evidence[:3])}."
        if runner_up is not None:
            verdict += f" Runner-up: {runner_up.label} ({_short(runner_up)})."
        return bottleneck, runner_up, verdict
    measured = [u for u in units if u.load.commands]
    if not measured:
        return None, None, "No bottleneck: no device command in the window."
    busiest = max(measured, key=lambda u: u.load.utilisation or 0.0)
    first = _first(measured) or busiest
    why = (f"no resource is saturated (utilisation {SATURATED:.0%} or more with a growing queue wait or "
           f"{WAITING_SHARE:.0%} of the orders' time waiting on it): the busiest, {busiest.label}, is at "
           f"{_pct(busiest.load.utilisation)}")
    if busiest.load.growth.slope is not None:
        why += f", its queue wait {'growing' if busiest.load.growth.grows else 'steady'}"
    ahead = ""
    if first.capacity is not None and flow.arriving_per_s > 0:
        ahead = (f"; orders arrived at {_rate(flow.arriving_per_s)}, and the first to saturate would be "
                 f"{first.label} at {_rate(first.capacity)} "
                 f"({first.capacity / flow.arriving_per_s:.1f}x that)")
    return None, _finding(first, units, flow, w), f"No bottleneck: the floor kept up; {why}{ahead}."


def _finding(unit: _Unit, units: list[_Unit], flow: OrderFlow, w: _Window) -> Finding:
    load = unit.load
    members = list(unit.members)
    device = _telling_device(members)
    busiest = sorted(members, key=lambda s: -s.busy_wall)[:6]
    each = f" ({', '.join(f'{s.resource.device_id} {_pct(s.utilisation(w))}' for s in busiest)})"
    evidence = [f"utilisation {_pct(load.utilisation)}" + (each if len(members) > 1 else "")]
    if load.queue_wait_mean_s is not None:
        g = load.growth
        wait = f"queue wait mean {_secs(load.queue_wait_mean_s)}, p95 {_secs(load.queue_wait_p95_s)}"
        if g.slope is not None:
            trend = f"{g.slope:+.3f} s per s" if abs(g.slope) >= 0.001 else "flat"
            wait += (f", {'growing' if g.grows else 'not growing'}: {_secs(g.early_mean_s)} in the earlier "
                     f"half of the window, {_secs(g.late_mean_s)} in the later ({trend})")
        evidence.append(wait)
    if load.waiting_share is not None:
        evidence.append(f"{load.waiting_share:.0%} of the orders' time was spent waiting for it; "
                        f"{load.orders_waited} of {load.orders_served} orders waited over half a service "
                        "time")
    if unit.capacity is not None:
        evidence.append(f"saturates at {_rate(unit.capacity)} ({unit.capacity * 3600:.0f} orders/h); "
                        f"orders arrived at {_rate(flow.arriving_per_s)}")
    peers = [s.service_s for s in members if s.service_s and s is not device]
    peer_s = sum(peers) / len(peers) if peers else None
    if device.service_s and peer_s and device.service_s >= 1.5 * peer_s:
        evidence.append(f"{device.resource.device_id} takes {device.service_s / peer_s:.1f}x as long per "
                        f"command as its peers ({_secs(device.service_s)} against {_secs(peer_s)})")
    zone = device.resource.zone if unit.kind == "pick_light" else None
    if zone is not None:
        lights = [u for u in units if u.kind == "pick_light" and u.members[0].resource.zone == zone]
        hot = sum(1 for u in lights if u.saturated)
        if hot > 1:
            evidence.append(f"{hot} of the {len(lights)} pick lights of zone {zone} are saturated")
    if unit.kind in BELT_KINDS and (load.utilisation or 0.0) >= 1.0:
        evidence.append("more totes a second than its rated flow (tote pitch / speed): on a real belt they "
                        "would queue to get on")
    return Finding(
        resource=unit.resource, label=unit.label, kind=unit.kind, device_id=device.resource.device_id,
        devices=tuple(s.resource.device_id for s in members), zone=zone, saturated=unit.saturated,
        utilisation=load.utilisation, queue_wait_mean_s=load.queue_wait_mean_s,
        queue_wait_p95_s=load.queue_wait_p95_s, growth=load.growth, waiting_share=load.waiting_share,
        orders_waited=load.orders_waited, orders_served=load.orders_served,
        capacity_orders_per_s=unit.capacity, evidence=tuple(evidence))


def _telling_device(members: list[_DeviceStats]) -> _DeviceStats:
    """The device that shows it most: one much slower than its peers, else the busiest."""
    timed = [s for s in members if s.service_s]
    if len(timed) > 1:
        slowest = max(timed, key=lambda s: s.service_s or 0.0)
        others = [s.service_s or 0.0 for s in timed if s is not slowest]
        if (slowest.service_s or 0.0) >= 1.5 * (sum(others) / len(others)):
            return slowest
    return max(members, key=lambda s: (s.busy_wall, s.resource.device_id))


def _short(f: Finding) -> str:
    parts = [f"utilisation {_pct(f.utilisation)}"]
    if f.growth.grows:
        parts.append("queue wait growing")
    if f.capacity_orders_per_s is not None:
        parts.append(f"saturates at {_rate(f.capacity_orders_per_s)}")
    return ", ".join(parts)


# ---- series ----------------------------------------------------------------------------------------------
def _series(orders: list[OrderRecord], kinds: dict[str, list[_DeviceStats]], followed: list[str],
            units: list[_Unit], w: _Window) -> Series:
    width = w.wall_s / BUCKETS
    starts = [w.since + i * width for i in range(BUCKETS)]

    def bucket(at: float | None) -> int | None:
        if at is None or not w.inside(at):
            return None
        return min(BUCKETS - 1, int((at - w.since) / width))

    received = [0] * BUCKETS
    shipped = [0] * BUCKETS
    cycles: list[list[float]] = [[] for _ in range(BUCKETS)]
    for o in orders:
        if (i := bucket(o.received_at)) is not None:
            received[i] += 1
        if (i := bucket(o.shipped_at)) is not None and o.received_at is not None:
            shipped[i] += 1
            cycles[i].append(((o.shipped_at or 0.0) - o.received_at) * w.scale)
    for c in cycles:
        c.sort()
    floor_width = width * w.scale

    by_wait = sorted((u for u in units if u.load.queue_wait_mean_s),
                     key=lambda u: -(u.load.queue_wait_mean_s or 0.0))
    names = list(dict.fromkeys([*followed, *(u.resource for u in by_wait)]))[:SERIES_TOP]
    waits: dict[str, list[float | None]] = {}
    for name in names:
        unit = next(u for u in units if u.resource == name)
        sums, counts = [0.0] * BUCKETS, [0] * BUCKETS
        for s in unit.members:
            for queued, sent, _ in s.waits:
                if (i := bucket(sent)) is not None:
                    sums[i] += (sent - queued) * w.scale
                    counts[i] += 1
        waits[name] = [sums[i] / counts[i] if counts[i] else None for i in range(BUCKETS)]

    utilisation: dict[str, list[float | None]] = {}
    for kind in sorted(kinds, key=_flow_rank):
        busy = [0.0] * BUCKETS
        for s in kinds[kind]:
            for start, end, _ in s.held:
                lo, hi = max(start, w.since), min(end, w.until)
                i = int((lo - w.since) / width)
                while hi > lo and i < BUCKETS:
                    edge = hi if i == BUCKETS - 1 else min(hi, starts[i] + width)
                    busy[i] += edge - lo
                    lo, i = edge, i + 1
        servers = sum(s.resource.servers for s in kinds[kind])
        utilisation[kind] = [b / (servers * width) if servers else None for b in busy]
    return Series(bucket_s=floor_width, starts=starts, received_per_s=[n / floor_width for n in received],
                  shipped_per_s=[n / floor_width for n in shipped],
                  cycle_p50_s=[percentile(c, 50) if c else None for c in cycles],
                  cycle_p95_s=[percentile(c, 95) if c else None for c in cycles],
                  queue_wait_s=waits, utilisation=utilisation)


# ---- words -------------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def _rate(per_s: float) -> str:
    return f"{per_s:.3g} orders/s"
