"""Alarms: a condition on the floor that a person should know about. Pure: no I/O, no clock.

An alarm is raised when its condition starts, cleared when the condition ends (by the floor, never
by a person) and acknowledged by a person (before or after it clears). Each condition has a stable
key (`kind:source`): while it lasts it is one alarm, however often it is evaluated, and the next time
it starts it is a new one. docs/operations.md lists the conditions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    CRITICAL = "critical"  # the floor or a part of it has stopped
    WARNING = "warning"  # work is late or runs on fewer devices
    INFO = "info"  # a deliberate state a supervisor should not forget


class SourceKind(StrEnum):
    DEVICE = "device"  # source: the device id
    ORDERS = "orders"  # source: the stage the orders are in, or "due_at"
    LINK = "link"  # source: "broker" or a PLC id
    STORE = "store"  # source: "writer"
    CONTROLLER = "controller"  # source: the leader's epoch, "epoch-N" (a hot-standby pair)


class AlarmKind(StrEnum):
    DEVICE_OFFLINE = "device_offline"
    DEVICE_FAULTED = "device_faulted"
    DEVICE_OUT_OF_ROTATION = "device_out_of_rotation"
    DEVICE_PAUSED = "device_paused"
    NO_PROGRESS = "no_progress"  # a conveyor or sorter holds commands and finishes none
    ORDERS_OVERDUE = "orders_overdue"  # orders in one stage for longer than its limit
    ORDERS_DUE_AT_RISK = "orders_due_at_risk"  # due soon (or past due) and not yet labelled
    WRITER_BACKLOG = "writer_backlog"
    BROKER_UNREACHABLE = "broker_unreachable"
    PLC_UNREACHABLE = "plc_unreachable"
    TAKEOVER = "takeover"  # another instance of a hot-standby pair took the floor over


SEVERITY: dict[AlarmKind, Severity] = {
    AlarmKind.DEVICE_OFFLINE: Severity.CRITICAL,
    AlarmKind.DEVICE_FAULTED: Severity.CRITICAL,
    AlarmKind.DEVICE_OUT_OF_ROTATION: Severity.WARNING,
    AlarmKind.DEVICE_PAUSED: Severity.INFO,
    AlarmKind.NO_PROGRESS: Severity.CRITICAL,
    AlarmKind.ORDERS_OVERDUE: Severity.WARNING,
    AlarmKind.ORDERS_DUE_AT_RISK: Severity.WARNING,
    AlarmKind.WRITER_BACKLOG: Severity.WARNING,
    AlarmKind.BROKER_UNREACHABLE: Severity.CRITICAL,
    AlarmKind.PLC_UNREACHABLE: Severity.CRITICAL,
    AlarmKind.TAKEOVER: Severity.WARNING,
}

SOURCE_KIND: dict[AlarmKind, SourceKind] = {
    **{kind: SourceKind.DEVICE for kind in (AlarmKind.DEVICE_OFFLINE, AlarmKind.DEVICE_FAULTED,
                                            AlarmKind.DEVICE_OUT_OF_ROTATION, AlarmKind.DEVICE_PAUSED,
                                            AlarmKind.NO_PROGRESS)},
    AlarmKind.ORDERS_OVERDUE: SourceKind.ORDERS,
    AlarmKind.ORDERS_DUE_AT_RISK: SourceKind.ORDERS,
    AlarmKind.WRITER_BACKLOG: SourceKind.STORE,
    AlarmKind.BROKER_UNREACHABLE: SourceKind.LINK,
    AlarmKind.PLC_UNREACHABLE: SourceKind.LINK,
    AlarmKind.TAKEOVER: SourceKind.CONTROLLER,
}


def alarm_key(kind: AlarmKind, source: str) -> str:
    return f"{kind.value}:{source}"


@dataclass(frozen=True, slots=True)
class Condition:
    """Something that holds right now; `text` says it to a person."""

    kind: AlarmKind
    source: str
    text: str

    @property
    def key(self) -> str:
        return alarm_key(self.kind, self.source)


class AlarmNotFound(LookupError):
    pass


@dataclass(slots=True)
class Alarm:
    id: int
    kind: AlarmKind
    source: str
    text: str
    raised_at: float
    cleared_at: float | None = None
    acked_at: float | None = None
    acked_by: str | None = None

    @property
    def key(self) -> str:
        return alarm_key(self.kind, self.source)

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.kind]

    @property
    def source_kind(self) -> SourceKind:
        return SOURCE_KIND[self.kind]

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def clear(self, at: float) -> None:
        if self.cleared_at is None:
            self.cleared_at = at

    def acknowledge(self, at: float, actor: str) -> bool:
        """Record who saw it. The first acknowledgement stands: a second one (another supervisor,
        a double click) changes nothing and answers False."""
        if self.acked_at is not None:
            return False
        self.acked_at = at
        self.acked_by = actor
        return True


@dataclass(slots=True)
class Changes:
    raised: list[Alarm] = field(default_factory=list)
    cleared: list[Alarm] = field(default_factory=list)
    retexted: list[Alarm] = field(default_factory=list)  # still active, said differently now

    @property
    def changed(self) -> list[Alarm]:
        return [*self.raised, *self.cleared, *self.retexted]


class AlarmBook:
    """The active alarms by key, and the next alarm id. `evaluate` takes every condition that holds
    now and answers what to raise, clear and re-word."""

    def __init__(self, active: Iterable[Alarm] = (), next_id: int = 1) -> None:
        self.active: dict[str, Alarm] = {a.key: a for a in active if a.active}
        self.next_id = next_id

    def evaluate(self, conditions: Iterable[Condition], now: float) -> Changes:
        holding: dict[str, Condition] = {}
        for condition in conditions:
            holding.setdefault(condition.key, condition)
        changes = Changes()
        for key, condition in holding.items():
            alarm = self.active.get(key)
            if alarm is None:
                alarm = Alarm(self.next_id, condition.kind, condition.source, condition.text, raised_at=now)
                self.next_id += 1
                self.active[key] = alarm
                changes.raised.append(alarm)
            elif alarm.text != condition.text:
                alarm.text = condition.text
                changes.retexted.append(alarm)
        for key in [k for k in self.active if k not in holding]:
            alarm = self.active.pop(key)
            alarm.clear(now)
            changes.cleared.append(alarm)
        return changes

    def by_id(self, alarm_id: int) -> Alarm | None:
        return next((a for a in self.active.values() if a.id == alarm_id), None)
