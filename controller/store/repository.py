"""Orders and stock between the domain and the tables: the only module that knows column names.

The engine speaks in domain objects (`Order`, `OrderLine`, `StockLocation`); this repository turns
them into the writer's batched rows and loads them back after a restart. Writes are buffered (the
writer commits them in batches on its own thread); `flush()` waits for everything put so far.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col  # a column with its SQL type, where the class attribute says `int`

from controller.domain.alarms import Alarm, AlarmKind
from controller.domain.breakdown import CommandTimes
from controller.domain.model import (
    TERMINAL,
    NewOrder,
    Order,
    OrderLine,
    OrderState,
    StockLocation,
)
from controller.store.tables import AlarmRow, OrderLineRow, OrderRow, StockRow
from controller.store.writer import StoreWriter

_CHUNK = 1000  # ids per IN (...) list


def _stamp_column(state: OrderState) -> str:
    return f"{state.value}_at"


STAMP_COLUMNS = {state: _stamp_column(state) for state in OrderState}


@dataclass(slots=True)
class Loaded:
    """What a (re)starting engine needs: the stock, the orders still active, the next order id."""

    stock: list[StockLocation]
    orders: list[Order]
    next_id: int


class OrderRepository:
    def __init__(self, db: AsyncEngine, writer: StoreWriter) -> None:
        self.db = db
        self.writer = writer

    # ---- loading ------------------------------------------------------------------------------
    async def load(self, seed: Iterable[StockLocation]) -> Loaded:
        """Stock (locations new in the site file are seeded from `seed`), the active orders with
        their lines, and the next free order id."""
        async with self.db.connect() as conn:
            stock_rows = (await conn.execute(select(StockRow))).all()
            known = {row.location for row in stock_rows}
            stock = [StockLocation(r.location, r.sku, r.on_hand, r.reserved) for r in stock_rows]
            for loc in seed:
                if loc.location not in known:
                    stock.append(loc)
                    self.put_stock(loc)
            newest = select(col(OrderRow.id)).order_by(col(OrderRow.id).desc()).limit(1)
            max_id = (await conn.execute(newest)).scalar()
            active = [s.value for s in OrderState if s not in TERMINAL]
            rows = (await conn.execute(select(OrderRow).where(col(OrderRow.state).in_(active)))).all()
            lines: dict[int, list[OrderLine]] = {}
            ids = [r.id for r in rows]
            for start in range(0, len(ids), _CHUNK):
                part = ids[start:start + _CHUNK]
                query = (select(OrderLineRow).where(col(OrderLineRow.order_id).in_(part))
                         .order_by(col(OrderLineRow.line_no)))
                for ln in (await conn.execute(query)).all():
                    lines.setdefault(ln.order_id, []).append(
                        OrderLine(ln.line_no, ln.sku, ln.qty, ln.location, ln.picked_qty, ln.picked))
        orders = [_order(r, lines.get(r.id, [])) for r in rows]
        await self.writer.flush()
        return Loaded(stock, orders, (max_id or 0) + 1)

    async def known_external_ids(self, external_ids: Iterable[str]) -> dict[str, tuple[int, OrderState]]:
        """(id, state) of each of these external ids the database has, active or finished."""
        wanted = list(external_ids)
        found: dict[str, tuple[int, OrderState]] = {}
        if not wanted:
            return found
        async with self.db.connect() as conn:
            for start in range(0, len(wanted), _CHUNK):
                query = (select(col(OrderRow.id), col(OrderRow.external_id), col(OrderRow.state))
                         .where(col(OrderRow.external_id).in_(wanted[start:start + _CHUNK])))
                for row in (await conn.execute(query)).all():
                    found[row.external_id] = (row.id, OrderState(row.state))
        return found

    async def as_received(self, order_ids: Iterable[int]) -> dict[int, NewOrder]:
        """Orders as the WMS released them (external id, lines, carrier, priority, due time)."""
        wanted = list(order_ids)
        heads: dict[int, Any] = {}
        lines: dict[int, list[tuple[str, int]]] = {}
        async with self.db.connect() as conn:
            for start in range(0, len(wanted), _CHUNK):
                part = wanted[start:start + _CHUNK]
                for row in (await conn.execute(select(OrderRow).where(col(OrderRow.id).in_(part)))).all():
                    heads[row.id] = row
                query = (select(OrderLineRow).where(col(OrderLineRow.order_id).in_(part))
                         .order_by(col(OrderLineRow.line_no)))
                for ln in (await conn.execute(query)).all():
                    lines.setdefault(ln.order_id, []).append((ln.sku, ln.qty))
        return {oid: NewOrder(r.external_id, tuple(lines.get(oid, [])), r.carrier, r.priority, r.due_at)
                for oid, r in heads.items()}

    async def state_of(self, order_id: int) -> OrderState | None:
        async with self.db.connect() as conn:
            query = select(col(OrderRow.state)).where(col(OrderRow.id) == order_id)
            state = (await conn.execute(query)).scalar()
        return OrderState(state) if state is not None else None

    # ---- writing (buffered) ---------------------------------------------------------------------
    def add(self, order: Order) -> None:
        row: dict[str, Any] = {"id": order.id, "external_id": order.external_id, "carrier": order.carrier,
                               "priority": order.priority, "due_at": order.due_at, "state": order.state.value,
                               "attempt": order.attempt, "label_attempt": order.label_attempt}
        for state in OrderState:
            at = order.stamps.get(state.value)
            if at is not None:
                row[STAMP_COLUMNS[state]] = at
        lines = [{"order_id": order.id, "line_no": ln.line_no, "sku": ln.sku, "qty": ln.qty,
                  "location": ln.location,
                  "picked_qty": ln.picked_qty, "picked": ln.picked} for ln in order.lines]
        self.writer.insert_order(row, lines)

    def save_state(self, order: Order) -> None:
        """The order's state, reason, where an exception resumes, and the stamp of its state."""
        state = order.state
        stamp = {STAMP_COLUMNS[state]: order.stamps.get(state.value)}
        self.writer.update_order(order.id, state=state.value, reason=order.reason,
                                 resume_state=order.resume_state.value if order.resume_state else None,
                                 attempt=order.attempt, **stamp)

    def save_assignment(self, order: Order) -> None:
        """Where the order's work goes: tote, pack station, printer, lane (and the label attempt)."""
        self.writer.update_order(order.id, tote=order.tote, pack_station=order.pack_station,
                                 printer=order.printer, lane=order.lane, label_attempt=order.label_attempt)

    def save_line(self, order: Order, line: OrderLine) -> None:
        self.writer.update_line(order.id, line.line_no, location=line.location, picked_qty=line.picked_qty,
                                picked=line.picked)

    def put_stock(self, loc: StockLocation) -> None:
        self.writer.put_stock(loc.location, loc.sku, loc.on_hand, loc.reserved)

    def timing(self, row: dict[str, Any]) -> None:
        self.writer.timing(row)

    async def flush(self) -> None:
        await self.writer.flush()

    @property
    def backlog(self) -> int:
        return self.writer.backlog


ALARMS = AlarmRow.__table__  # type: ignore[attr-defined]


class AlarmRepository:
    """Alarms. Written through the batched writer (a few rows a minute, in the next batch), read back
    when the controller starts and for an acknowledgement."""

    def __init__(self, db: AsyncEngine, writer: StoreWriter) -> None:
        self.db = db
        self.writer = writer

    async def active(self) -> tuple[list[Alarm], int]:
        """The alarms still active when the controller last stopped, and the next free alarm id."""
        async with self.db.connect() as conn:
            rows = (await conn.execute(select(ALARMS).where(ALARMS.c.cleared_at.is_(None))
                                       .order_by(ALARMS.c.id))).all()
            max_id = (await conn.execute(select(ALARMS.c.id).order_by(ALARMS.c.id.desc()).limit(1))).scalar()
        return [alarm_of(r) for r in rows], (max_id or 0) + 1

    async def get(self, alarm_id: int) -> Alarm | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(ALARMS).where(ALARMS.c.id == alarm_id))).first()
        return alarm_of(row) if row is not None else None

    def save(self, alarm: Alarm) -> None:
        self.writer.upsert(ALARMS, ("id",), {
            "id": alarm.id, "kind": alarm.kind.value, "severity": alarm.severity.value,
            "source_kind": alarm.source_kind.value, "source": alarm.source, "text": alarm.text,
            "raised_at": alarm.raised_at, "cleared_at": alarm.cleared_at, "acked_at": alarm.acked_at,
            "acked_by": alarm.acked_by})

    async def flush(self) -> None:
        await self.writer.flush()


def alarm_of(row: Any) -> Alarm:
    return Alarm(id=row.id, kind=AlarmKind(row.kind), source=row.source, text=row.text,
                 raised_at=row.raised_at, cleared_at=row.cleared_at, acked_at=row.acked_at,
                 acked_by=row.acked_by)


def stamps_of(row: Any) -> dict[str, float]:
    """When an order row entered each state it has been in, by state name."""
    stamps: dict[str, float] = {}
    for state, column in STAMP_COLUMNS.items():
        at = getattr(row, column)
        if at is not None:
            stamps[state.value] = at
    return stamps


def command_times_of(row: Any, *, under_way: bool = False) -> CommandTimes:
    """A device command's timing row (stored, or the engine's live one as attributes) as the time
    breakdown reads it. `under_way`: a live row, still queued or in flight. A row stored before its
    end was recorded ended at the last instant it tells."""
    known = [t for t in (row.queued_at, row.sent_at, row.acked_at, row.completed_at) if t is not None]
    ended = None if under_way else (row.ended_at if row.ended_at is not None else max(known))
    return CommandTimes(device_id=row.device_id, device_kind=row.device_kind, task=row.task,
                        queued_at=row.queued_at, sent_at=row.sent_at, acked_at=row.acked_at,
                        completed_at=row.completed_at, ended_at=ended,
                        down_queued_s=row.down_queued_s or 0.0, down_in_hand_s=row.down_in_hand_s or 0.0)


def _order(r: Any, lines: list[OrderLine]) -> Order:
    stamps = stamps_of(r)
    return Order(id=r.id, external_id=r.external_id, carrier=r.carrier, priority=r.priority, lines=lines,
                 state=OrderState(r.state), due_at=r.due_at, reason=r.reason,
                 resume_state=OrderState(r.resume_state) if r.resume_state else None, tote=r.tote,
                 pack_station=r.pack_station, printer=r.printer, lane=r.lane, attempt=r.attempt,
                 label_attempt=r.label_attempt, stamps=stamps)
