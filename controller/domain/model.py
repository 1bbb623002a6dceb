"""The pure order model: states, lines, stock and allocation. No asyncio, no I/O, no SQL."""

from __future__ import annotations

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

    def enter(self, state: OrderState, at: float, reason: str | None = None) -> None:
        self.state = state
        self.reason = reason
        self.stamps[state.value] = at

    def fail(self, at: float, reason: str) -> None:
        """Send the order to exception; resolving it retries the stage it was in."""
        if self.state is not OrderState.EXCEPTION:
            self.resume_state = self.state
        self.enter(OrderState.EXCEPTION, at, reason)

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

    def allocate(self, lines: list[OrderLine]) -> str | None:
        """Reserve every line at one location each, or nothing. Returns the hold reason, if any."""
        plan: list[tuple[OrderLine, StockLocation]] = []
        planned: dict[str, int] = {}  # location -> qty this order already takes there
        for line in lines:
            candidates = self.by_sku.get(line.sku)
            if not candidates:
                return f"unknown SKU {line.sku}"
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


@dataclass(frozen=True, slots=True)
class Received:
    id: int
    external_id: str
    state: OrderState
    created: bool  # False when the external id was already known (idempotent re-post)


class OrderRejected(ValueError):
    """An order that names what the floor does not have. `problems` maps a field path to a message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


class OrderNotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    """E.g. cancelling a shipped order, resolving an order that is not in exception."""
