"""The alarm monitor: once a second, what holds on the floor, raised and cleared as alarms.

It reads only the engine's public state (`devices()`, `health()`, `orders`), never a device, so a
check costs a pass over the device rows and the active orders. `FloorConditions` says what holds
(given the state and a clock, nothing else); the domain's `AlarmBook` turns that into raised,
cleared and re-worded alarms; the store writes them in the writer's next batch.

Thresholds are the site file's `alarms:` (controller/site.py), in floor seconds like `timeouts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from controller.domain.alarms import Alarm, AlarmBook, AlarmKind, AlarmNotFound, Changes, Condition
from controller.domain.model import Order, OrderState
from controller.site import AlarmLimits, Site

log = logging.getLogger(__name__)

K = AlarmKind
# Kinds whose totes ride a PLC: commands in flight that never finish are a jam, not a slow person.
MOVERS = ("conveyor", "sorter")
# Not labelled yet: a due time close by is at risk. (Exception counts: a person must act first.)
UNLABELLED = frozenset({OrderState.RECEIVED, OrderState.HELD, OrderState.ALLOCATED, OrderState.PICKING,
                        OrderState.CONVEYED, OrderState.PACKED, OrderState.EXCEPTION})
NAMED = 5  # order ids named in an alarm's text
MIN_CHECK_GAP_S = 0.1  # between two checks, however often the floor pokes the monitor


class FloorView(Protocol):
    """The engine as the monitor reads it."""

    @property
    def site(self) -> Site: ...

    @property
    def orders(self) -> Mapping[int, Order]: ...

    def devices(self) -> list[dict[str, Any]]: ...

    def health(self) -> dict[str, Any]: ...


class AlarmStore(Protocol):
    async def active(self) -> tuple[list[Alarm], int]: ...

    async def get(self, alarm_id: int) -> Alarm | None: ...

    def save(self, alarm: Alarm) -> None: ...

    async def flush(self) -> None: ...


class FloorConditions:
    """What holds right now. Remembers one thing between checks: since when each conveyor and
    sorter has had commands in flight, so a device that idled for an hour is not 'stuck' the
    moment it takes a tote."""

    def __init__(self, site: Site, limits: AlarmLimits, *, speed: float = 1.0) -> None:
        self.limits = limits
        self.speed = speed
        self._plc_of = {cv.id: cv.plc for cv in site.conveyors} | {s.id: s.plc for s in site.sorters}
        self._stage_s: dict[str, float | None] = {str(k): v for k, v in limits.stage_s.items()}
        self._busy_since: dict[str, float] = {}

    def _wall(self, floor_s: float) -> float:
        return floor_s / self.speed

    def evaluate(self, devices: Iterable[dict[str, Any]], health: dict[str, Any],
                 orders: Iterable[Order], now: float) -> list[Condition]:
        out: list[Condition] = []
        rows = list(devices)
        broker_up = bool(health.get("broker", True))
        # The health check calls a PLC down when any of its devices is offline; the alarm says the
        # PLC is unreachable only when none of them is online (one conveyor offline is that device's).
        online_on: dict[str, list[bool]] = {}
        for row in rows:
            plc = self._plc_of.get(row["device_id"])
            if plc is not None:
                online_on.setdefault(plc, []).append(bool(row.get("online", True)))
        reported: dict[str, bool] = health.get("plcs") or {}
        plcs = {plc: bool(up) or any(online_on.get(plc, [])) for plc, up in reported.items()}
        if not broker_up:
            out.append(Condition(K.BROKER_UNREACHABLE, "broker", "the MQTT broker is unreachable: pick "
                                 "lights, pack stations and printers get no commands"))
        why: dict[str, str] = health.get("plc_errors") or {}
        for plc, up in sorted(plcs.items()):
            if not up:
                reason = f" ({why[plc]})" if plc in why else ""
                out.append(Condition(K.PLC_UNREACHABLE, plc, f"PLC {plc} is unreachable{reason}: its "
                                     "conveyors and sorters get no commands"))
        backlog = health.get("writer_backlog") or 0
        if backlog > self.limits.writer_backlog:
            out.append(Condition(K.WRITER_BACKLOG, "writer", f"the database writer is behind: more than "
                                 f"{self.limits.writer_backlog} rows waiting"))
        out.extend(_takeover(health, now))
        for row in rows:
            out.extend(self._device(row, broker_up, plcs, now))
        out.extend(self._orders(list(orders), now))
        return out

    def _device(self, row: dict[str, Any], broker_up: bool, plcs: dict[str, bool],
                now: float) -> Iterable[Condition]:
        device, kind = row["device_id"], row.get("kind", "device")
        name = f"{kind.replace('_', ' ')} {device}"
        link_down = (not broker_up if row.get("protocol") == "mqtt"
                     else plcs.get(self._plc_of.get(device, ""), True) is False)
        if not row.get("online", True) and not link_down:  # a link down is one alarm, not one per device
            yield Condition(K.DEVICE_OFFLINE, device, f"{name} is offline")
        if row.get("fault"):
            yield Condition(K.DEVICE_FAULTED, device, f"{name} is faulted: {row['fault']}")
        if not row.get("in_rotation", True):
            note = _detail(row.get("unavailable"), "out_of_rotation")
            yield Condition(K.DEVICE_OUT_OF_ROTATION, device,
                            f"{name} is out of rotation" + (f": {note}" if note else ""))
        if row.get("paused"):
            yield Condition(K.DEVICE_PAUSED, device, f"{name} is paused (draining)")
        if kind in MOVERS:
            if not row.get("in_flight"):
                self._busy_since.pop(device, None)
                return
            busy_since = self._busy_since.setdefault(device, now)
            progress = row.get("last_progress_at")
            since = max(busy_since, progress if progress is not None else -math.inf)
            limit = self.limits.no_progress_s
            if now - since > self._wall(limit):
                yield Condition(K.NO_PROGRESS, device, f"{name} has commands in flight and has finished none "
                                f"for more than {limit:g} s")

    def _orders(self, orders: list[Order], now: float) -> Iterable[Condition]:
        overdue: dict[str, list[tuple[float, int]]] = {}
        for order in orders:
            state = order.state.value
            limit = self._stage_s.get(state)
            entered = order.stamps.get(state)
            if limit is not None and entered is not None and now - entered > self._wall(limit):
                overdue.setdefault(state, []).append((entered, order.id))
        for state in sorted(overdue):
            late = sorted(overdue[state])
            limit = self._stage_s[state]
            yield Condition(K.ORDERS_OVERDUE, state, f"{_orders_text(len(late))} in {state} for more than "
                            f"{limit:g} s (oldest first: {_ids(late)})")
        window = self._wall(self.limits.due_at_risk_s)
        at_risk = sorted((o.due_at, o.id) for o in orders
                         if o.due_at is not None and o.state in UNLABELLED and o.due_at - now < window)
        if at_risk:
            yield Condition(K.ORDERS_DUE_AT_RISK, "due_at", f"{_orders_text(len(at_risk))} due within "
                            f"{self.limits.due_at_risk_s:g} s or past due and not yet labelled "
                            f"(soonest first: {_ids(at_risk)})")


# How long a take-over stays an active alarm: long enough for a shift to see it on the panel.
TAKEOVER_NOTICE_S = 900.0


def _takeover(health: dict[str, Any], now: float) -> Iterable[Condition]:
    """This instance of a hot-standby pair took the floor over from another (docs/standby.md)."""
    ha = health.get("ha") or {}
    took_over_at, previous = ha.get("took_over_at"), ha.get("previous_leader")
    if health.get("role") != "leader" or took_over_at is None or previous is None:
        return
    if now - took_over_at >= TAKEOVER_NOTICE_S:
        return
    gap = ha.get("takeover_gap_s")
    how = (f"{gap:.1f} s after its last lease renewal" if gap is not None
           else "after it released the lease")
    yield Condition(K.TAKEOVER, f"epoch-{health.get('epoch')}",
                    f"{health.get('instance')} took the floor over from {previous} {how} "
                    f"(epoch {health.get('epoch')}); find out why {previous} stopped")


def _detail(unavailable: str | None, reason: str) -> str | None:
    """`out_of_rotation: <note>` -> the note, when the row's first reason is this one."""
    if unavailable and unavailable.startswith(f"{reason}: "):
        return unavailable.removeprefix(f"{reason}: ")
    return None


def _orders_text(n: int) -> str:
    return "1 order" if n == 1 else f"{n} orders"


def _ids(ranked: list[tuple[float, int]]) -> str:
    named = ", ".join(str(order_id) for _at, order_id in ranked[:NAMED])
    return named + (f" and {len(ranked) - NAMED} more" if len(ranked) > NAMED else "")


class AlarmMonitor:
    """Checks the floor every `alarms.check_every_s`, keeps the active alarms, acknowledges them.

    Started after the engine and stopped before it (controller/bootstrap.py); it owns one task.
    """

    def __init__(self, floor: FloorView, store: AlarmStore, *, speed: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.floor = floor
        self.store = store
        self.clock = clock
        self.limits = floor.site.alarms
        self.conditions = FloorConditions(floor.site, self.limits, speed=speed)
        self.book = AlarmBook()
        self.raised_counts: Counter[str] = Counter()  # by kind, since start (Prometheus)
        self.listeners: list[Callable[[Changes], None]] = []  # e.g. the panel's push
        self.check_errors = 0
        self._task: asyncio.Task[None] | None = None
        self._poked = asyncio.Event()  # something changed: check now rather than at the next tick

    async def start(self) -> None:
        active, next_id = await self.store.active()
        self.book = AlarmBook(active, next_id)
        self._task = asyncio.create_task(self._run(), name="alarm-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        """Checking the floor (a standby's monitor is not: the leader's is)."""
        return self._task is not None

    def poke(self) -> None:
        """Check soon, not at the next tick: a device's status changed. Many pokes, one check."""
        self._poked.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.limits.check_every_s)
            self._poked.clear()
            try:
                self.check()
            except Exception:  # one bad check must not end the alarms for good
                self.check_errors += 1
                log.exception("alarm check failed")
            await asyncio.sleep(MIN_CHECK_GAP_S)  # a storm of status changes checks ten times a second

    def check(self, now: float | None = None) -> Changes:
        now = self.clock() if now is None else now
        floor = self.floor
        held = self.conditions.evaluate(floor.devices(), floor.health(), floor.orders.values(), now)
        changes = self.book.evaluate(held, now)
        for alarm in changes.raised:
            self.raised_counts[alarm.kind.value] += 1
            log.warning("alarm %d raised (%s): %s", alarm.id, alarm.severity.value, alarm.text)
        for alarm in changes.cleared:
            log.info("alarm %d cleared: %s", alarm.id, alarm.text)
        for alarm in changes.changed:
            self.store.save(alarm)
        if changes.changed:
            for listener in self.listeners:
                listener(changes)
        return changes

    def active(self) -> list[Alarm]:
        return sorted(self.book.active.values(), key=lambda a: a.id)

    def active_by_severity(self) -> Counter[str]:
        return Counter(a.severity.value for a in self.book.active.values())

    async def acknowledge(self, alarm_id: int, actor: str) -> Alarm:
        """Record who saw the alarm (active or cleared); the first acknowledgement stands."""
        alarm = self.book.by_id(alarm_id)
        if alarm is None:
            await self.store.flush()  # a clear still in the writer's buffer must not be read over
            alarm = await self.store.get(alarm_id)
        if alarm is None:
            raise AlarmNotFound(f"no alarm {alarm_id}")
        if alarm.acknowledge(self.clock(), actor):
            self.store.save(alarm)
            await self.store.flush()
        return alarm
