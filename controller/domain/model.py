"""The pure order model: states, lines, stock and allocation. No asyncio, no I/O, no SQL."""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class OrderState(StrEnum):
    RECEIVED = "received"
    HELD = "held"
    ALLOCATED = "allocated"
    PICKING = "picking"
    CONVEYED = "conveyed"
    PACKED = "packed"
    LABELLED = "labelled"
    SORTED = "sorted"
    SHIPPED = "shipped"
    EXCEPTION = "exception"
    CANCELLED = "cancelled"


TERMINAL = frozenset({OrderState.SHIPPED, OrderState.CANCELLED})

_S = OrderState
# The order state machine: where each state may go next. Every active state may also go to exception
# (a device failed, a short pick) or be cancelled; an exception goes back to the state it stopped
# (Order.resolve), never anywhere else.
NEXT: dict[OrderState, frozenset[OrderState]] = {
    state: frozenset(nxt) | ({_S.EXCEPTION, _S.CANCELLED} if state not in TERMINAL else frozenset())
    for state, nxt in {
        _S.RECEIVED: {_S.HELD, _S.ALLOCATED},
        _S.HELD: {_S.ALLOCATED},
        _S.ALLOCATED: {_S.PICKING},
        _S.PICKING: {_S.CONVEYED},
        _S.CONVEYED: {_S.PACKED},
        _S.PACKED: {_S.LABELLED},
        _S.LABELLED: {_S.SORTED},
        _S.SORTED: {_S.SHIPPED},
        _S.EXCEPTION: set(),
        _S.SHIPPED: set(),
        _S.CANCELLED: set(),
    }.items()
}
NEXT[_S.EXCEPTION] = frozenset({_S.CANCELLED})
# States an order may enter again while in them: a held order whose reason changed, a pick resumed
# after a short pick was resolved.
REENTRANT = frozenset({_S.HELD, _S.PICKING})
# Stage timestamps kept per order: the time each state was entered.
STAGE_STAMPS = tuple(s.value for s in OrderState)


class Task(StrEnum):
    """What a device command does for an order (the `task` column of a timing row)."""

    PICK = "pick"
    CONVEY = "convey"
    PACK = "pack"
    LABEL = "label"
    INDUCT = "induct"
    DIVERT = "divert"


@dataclass(slots=True)
class OrderLine:
    line_no: int
    sku: str
    qty: int
    location: str | None = None
    picked_qty: int = 0
    picked: bool = False


@dataclass(slots=True)
class Order:
    id: int
    external_id: str
    carrier: str
    priority: int
    lines: list[OrderLine]
    state: OrderState = OrderState.RECEIVED
    due_at: float | None = None
    reason: str | None = None  # why held or in exception
    resume_state: OrderState | None = None  # where an exception resumes when resolved
    tote: str | None = None
    pack_station: str | None = None
    printer: str | None = None
    lane: str | None = None
    attempt: int = 0  # bumped when an exception is resolved: new command ids for the retried stage
    label_attempt: int = 0  # bumped when a label goes to another printer
    stamps: dict[str, float] = field(default_factory=dict)

    @property
    def items(self) -> int:
        return sum(line.qty for line in self.lines)

    def as_received(self) -> NewOrder:
        """The order as the WMS released it."""
        return NewOrder(self.external_id, tuple((ln.sku, ln.qty) for ln in self.lines), self.carrier,
                        self.priority, self.due_at)

    def receive(self, at: float) -> None:
        """Stamp the arrival of a new order (its first state)."""
        if self.stamps:
            raise InvalidTransition(f"order {self.id} was already received")
        self.state = OrderState.RECEIVED
        self.stamps[OrderState.RECEIVED.value] = at

    def enter(self, state: OrderState, at: float, reason: str | None = None) -> None:
        """Move to `state`; raises InvalidTransition when the state machine does not allow it."""
        if state not in NEXT[self.state] and not (state is self.state and state in REENTRANT):
            raise InvalidTransition(f"order {self.id} cannot go from {self.state.value} to {state.value}")
        self.state = state
        self.reason = reason
        self.stamps[state.value] = at

    def fail(self, at: float, reason: str) -> None:
        """Send the order to exception; resolving it retries the stage it was in."""
        self.resume_state = self.state
        self.enter(OrderState.EXCEPTION, at, reason)

    def resolve(self, at: float) -> None:
        """A person resolved the exception: retry the stage it stopped, with new command ids."""
        if self.state is not OrderState.EXCEPTION:
            raise InvalidTransition(f"order {self.id} is {self.state.value}, not in exception")
        self.attempt += 1
        self.state = self.resume_state or OrderState.RECEIVED
        self.reason = None
        self.stamps[self.state.value] = at

    def cancel(self, at: float) -> None:
        self.enter(OrderState.CANCELLED, at)

    def command_id(self, task: Task, part: int | str = 0) -> str:
        """A deterministic id: a restarted controller re-sends the same id, and the device dedupes it."""
        attempt = self.label_attempt if task is Task.LABEL else self.attempt
        return f"o{self.id}.{task.value}.{part}.a{attempt}"


@dataclass(slots=True)
class StockLocation:
    location: str
    sku: str
    on_hand: int
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class Stock:
    """Stock by location; allocation is all or nothing."""

    def __init__(self, locations: list[StockLocation]) -> None:
        self.by_location = {loc.location: loc for loc in locations}
        self.by_sku: dict[str, list[StockLocation]] = {}
        for loc in locations:
            self.by_sku.setdefault(loc.sku, []).append(loc)

    def allocate(self, lines: list[OrderLine], *, avoid: Container[str] = ()) -> str | None:
        """Reserve every line at one location each, or nothing. Returns the hold reason, if any.
        Locations in `avoid` (e.g. behind a faulted pick light) are not used."""
        plan: list[tuple[OrderLine, StockLocation]] = []
        planned: dict[str, int] = {}  # location -> qty this order already takes there
        for line in lines:
            candidates = [loc for loc in self.by_sku.get(line.sku, ()) if loc.location not in avoid]
            if not candidates:
                known = line.sku in self.by_sku
                return f"no usable location for {line.sku}" if known else f"unknown SKU {line.sku}"
            # The location with the most to spare after what this order already takes from it.
            best = max(candidates, key=lambda loc: loc.available - planned.get(loc.location, 0))
            if best.available - planned.get(best.location, 0) < line.qty:
                wanted = sum(ln.qty for ln in lines if ln.sku == line.sku)
                total = sum(loc.available for loc in candidates)
                return f"insufficient stock for {line.sku}: {total} available, {wanted} wanted"
            planned[best.location] = planned.get(best.location, 0) + line.qty
            plan.append((line, best))
        for line, loc in plan:
            loc.reserved += line.qty
            line.location = loc.location
        return None

    def move(self, lines: list[OrderLine], *, avoid: Container[str]) -> list[StockLocation] | None:
        """Move the open reservations of these lines to other locations, all of them or none (the
        pick light of their location takes no work). Returns the locations whose stock changed."""
        before = [(line, line.location, line.qty - line.picked_qty) for line in lines]
        remainder = [OrderLine(line.line_no, line.sku, qty) for line, _, qty in before]
        if self.allocate(remainder, avoid=avoid) is not None:
            return None
        changed: dict[str, StockLocation] = {}
        for (line, old, qty), moved in zip(before, remainder, strict=True):
            if old is not None:
                loc = self.by_location[old]
                loc.reserved -= qty
                changed[old] = loc
            line.location = moved.location
            changed[moved.location or ""] = self.by_location[moved.location or ""]
        return list(changed.values())

    def confirm_pick(self, location: str, *, shown: int, picked: int) -> StockLocation:
        """The operator took `picked` of the `shown` reserved items; the rest is no longer reserved."""
        loc = self.by_location[location]
        loc.reserved -= shown
        loc.on_hand -= picked
        return loc

    def release(self, line: OrderLine, *, reserved: int) -> StockLocation | None:
        """Give back what a cancelled line held: its open reservation and the items already picked."""
        location = line.location
        if location is None and line.picked_qty and line.sku in self.by_sku:
            location = self.by_sku[line.sku][0].location  # a short-picked line: back where its SKU lives
        if location is None:
            return None
        loc = self.by_location[location]
        loc.reserved -= reserved
        loc.on_hand += line.picked_qty
        return loc


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order as released by the WMS/ERP, before it has an id."""

    external_id: str
    lines: tuple[tuple[str, int], ...]  # (sku, qty)
    carrier: str
    priority: int = 0
    due_at: float | None = None


def differences(new: NewOrder, known: NewOrder) -> list[str]:
    """What a re-posted order changes of the one already received under its external id."""
    out = []
    if sorted(new.lines) != sorted(known.lines):
        out.append(f"lines {_lines(new.lines)} instead of {_lines(known.lines)}")
    for name in ("carrier", "priority", "due_at"):
        if getattr(new, name) != getattr(known, name):
            out.append(f"{name} {getattr(new, name)!r} instead of {getattr(known, name)!r}")
    return out


def _lines(lines: tuple[tuple[str, int], ...]) -> str:
    return "[" + ", ".join(f"{sku} x{qty}" for sku, qty in lines) + "]"


@dataclass(frozen=True, slots=True)
class Received:
    id: int
    external_id: str
    state: OrderState
    created: bool  # False when the external id was already known (idempotent re-post)


def check_new_orders(new_orders: Sequence[NewOrder], skus: Container[str], carriers: Collection[str]) -> None:
    """Raise OrderRejected naming every unknown SKU and carrier (field paths `i.lines.j.sku`; no
    index prefix when there is one order)."""
    problems: dict[str, str] = {}
    many = len(new_orders) > 1
    for i, new in enumerate(new_orders):
        prefix = f"{i}." if many else ""
        if new.carrier not in carriers:
            known = ", ".join(sorted(carriers))
            problems[f"{prefix}carrier"] = f"unknown carrier {new.carrier!r} (known: {known})"
        for j, (sku, _qty) in enumerate(new.lines):
            if sku not in skus:
                problems[f"{prefix}lines.{j}.sku"] = f"unknown SKU {sku!r}"
    if problems:
        raise OrderRejected(problems)


class OrderRejected(ValueError):
    """An order that names what the floor does not have. `problems` maps a field path to a message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


class OrderConflict(ValueError):
    """A re-posted external id with other content than the order already received under it.
    `conflicts` maps each external id to what differs."""

    def __init__(self, conflicts: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"order {ext} was already received with other content: {', '.join(diff)}"
                                   for ext, diff in conflicts.items()))
        self.conflicts = conflicts


class OrderNotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    """E.g. cancelling a shipped order, resolving an order that is not in exception."""
