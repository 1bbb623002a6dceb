"""Read queries for the API and the panel. The engine owns every write; nothing here changes a row.

Built to stay fast on 100k+ orders and millions of timing rows: listings filter on indexed columns
where they can (orders.state, device_commands.order_id / device_id / queued_at), pages are bounded,
and the CSV export walks the timing rows in keyset chunks of short, separate reads so a slow download
neither loads everything into memory nor holds a read transaction open for minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, Row, and_, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.domain.insight import CommandRecord, OrderRecord
from controller.store import order_counts
from controller.store.tables import (
    AlarmRow,
    AuditRow,
    DeviceCommandRow,
    OrderLineRow,
    OrderRow,
    StockRow,
)

ORDERS = OrderRow.__table__  # type: ignore[attr-defined]
LINES = OrderLineRow.__table__  # type: ignore[attr-defined]
STOCK = StockRow.__table__  # type: ignore[attr-defined]
COMMANDS = DeviceCommandRow.__table__  # type: ignore[attr-defined]
ALARMS = AlarmRow.__table__  # type: ignore[attr-defined]
AUDIT = AuditRow.__table__  # type: ignore[attr-defined]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


async def _page(session: AsyncSession, table: Any, where: Sequence[ColumnElement[bool]],
                order_by: Sequence[Any], limit: int, offset: int,
                counted: Callable[[], Awaitable[int]] | None = None) -> Page[Row[Any]]:
    """One bounded page plus the total count of matching rows (from `counted` where the total is
    kept, not counted)."""
    stmt = select(table).where(*where).order_by(*order_by).limit(limit).offset(offset)
    rows = list((await session.execute(stmt)).all())
    if len(rows) < limit and (rows or offset == 0):
        return Page(rows, offset + len(rows))  # the last page tells the total: no need to count
    if counted is not None:
        return Page(rows, await counted())
    total = (await session.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
    return Page(rows, total)


# ---- orders ------------------------------------------------------------------------------------
async def orders_page(session: AsyncSession, *, states: Sequence[str] = (), carrier: str | None = None,
                      external_id: str | None = None, limit: int = 50, offset: int = 0) -> Page[Row[Any]]:
    """Orders in arrival order (id), filtered by state(s), carrier and/or external id."""
    where: list[ColumnElement[bool]] = []
    if states:
        where.append(ORDERS.c.state.in_(list(states)))
    if carrier is not None:
        where.append(ORDERS.c.carrier == carrier)
    if external_id is not None:
        where.append(ORDERS.c.external_id == external_id)
    counted = None
    if states and carrier is None and external_id is None:  # the kept counts say how many, exactly
        async def counted() -> int:
            return await order_counts.in_states(session, states)
    return await _page(session, ORDERS, where, [ORDERS.c.id], limit, offset, counted)


async def order_with_lines(session: AsyncSession, order_id: int) -> tuple[Row[Any], list[Row[Any]]] | None:
    order = (await session.execute(select(ORDERS).where(ORDERS.c.id == order_id))).first()
    if order is None:
        return None
    lines = (await session.execute(
        select(LINES).where(LINES.c.order_id == order_id).order_by(LINES.c.line_no))).all()
    return order, list(lines)


async def order_row(session: AsyncSession, order_id: int) -> Row[Any] | None:
    return (await session.execute(select(ORDERS).where(ORDERS.c.id == order_id))).first()


async def order_exists(session: AsyncSession, order_id: int) -> bool:
    return (await session.execute(select(ORDERS.c.id).where(ORDERS.c.id == order_id))).first() is not None


async def order_counts_by_state(session: AsyncSession) -> dict[str, int]:
    """Orders by state, as the writer keeps them counted (controller/store/order_counts.py)."""
    return await order_counts.by_state(session)


# ---- device command timings ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TimingFilter:
    order_id: int | None = None
    device_id: str | None = None
    device_kind: str | None = None
    task: str | None = None
    outcome: str | None = None
    since: float | None = None  # queued_at >= since
    until: float | None = None  # queued_at < until

    def where(self) -> list[ColumnElement[bool]]:
        c = COMMANDS.c
        where: list[ColumnElement[bool]] = []
        for column, value in ((c.order_id, self.order_id), (c.device_id, self.device_id),
                              (c.device_kind, self.device_kind), (c.task, self.task), (c.outcome,
                                                                                       self.outcome)):
            if value is not None:
                where.append(column == value)
        if self.since is not None:
            where.append(c.queued_at >= self.since)
        if self.until is not None:
            where.append(c.queued_at < self.until)
        return where


# Time order, with the row id breaking ties: a stable order for pages and for keyset chunks alike.
TIME_ORDER = (COMMANDS.c.queued_at, COMMANDS.c.id)


async def order_timeline(session: AsyncSession, order_id: int) -> list[Row[Any]]:
    """Every device command of one order, in the order they were queued (indexed on order_id)."""
    stmt = select(COMMANDS).where(*TimingFilter(order_id=order_id).where()).order_by(*TIME_ORDER)
    return list((await session.execute(stmt)).all())


async def timings_page(session: AsyncSession, filt: TimingFilter, *, limit: int = 50,
                       offset: int = 0) -> Page[Row[Any]]:
    return await _page(session, COMMANDS, filt.where(), TIME_ORDER, limit, offset)


async def timings_in_chunks(db: AsyncEngine, filt: TimingFilter, *,
                            chunk: int = 5000) -> AsyncIterator[list[Row[Any]]]:
    """All matching timing rows in time order, `chunk` at a time, each chunk its own short read.

    Keyset paging on (queued_at, id) instead of OFFSET: every chunk costs the same however deep the
    export is. Rows the engine writes meanwhile appear if they sort after the current position.
    """
    async for rows in _in_time_order(db, [COMMANDS], filt.where(), chunk):
        yield rows


async def _in_time_order(db: AsyncEngine, columns: Sequence[Any], where: Sequence[ColumnElement[bool]],
                         chunk: int) -> AsyncIterator[list[Row[Any]]]:
    """Timing rows (these columns, which must include queued_at and id) in keyset chunks."""
    after: tuple[float, int] | None = None
    while True:
        stmt = select(*columns).where(*where)
        if after is not None:
            # The plain bound lets the queued_at index start at the last chunk's end: an index on
            # queued_at alone cannot take the row comparison, and each chunk would read the range
            # from its start again.
            stmt = stmt.where(COMMANDS.c.queued_at >= after[0], tuple_(*TIME_ORDER) > tuple_(*after))
        async with db.connect() as conn:
            rows = (await conn.execute(stmt.order_by(*TIME_ORDER).limit(chunk))).all()
        if not rows:
            return
        yield list(rows)
        if len(rows) < chunk:
            return
        last = rows[-1]
        after = (last.queued_at, last.id)


async def stock_page(session: AsyncSession, *, sku: str | None = None, limit: int = 1000,
                     offset: int = 0) -> Page[Row[Any]]:
    where = [STOCK.c.sku == sku] if sku is not None else []
    return await _page(session, STOCK, where, [STOCK.c.location], limit, offset)


# ---- alarms and device controls ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AlarmFilter:
    active: bool | None = None  # True: not cleared yet; False: cleared (history)
    severity: str | None = None
    kind: str | None = None
    source: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        c = ALARMS.c
        where: list[ColumnElement[bool]] = []
        if self.active is not None:
            where.append(c.cleared_at.is_(None) if self.active else c.cleared_at.is_not(None))
        for column, value in ((c.severity, self.severity), (c.kind, self.kind), (c.source, self.source)):
            if value is not None:
                where.append(column == value)
        return where


async def alarms_page(session: AsyncSession, filt: AlarmFilter, *, limit: int = 50,
                      offset: int = 0) -> Page[Row[Any]]:
    """Newest first."""
    return await _page(session, ALARMS, filt.where(), [ALARMS.c.raised_at.desc(), ALARMS.c.id.desc()],
                       limit, offset)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None  # exact (order.cancel), or a family with a trailing dot (device.)
    target: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        c = AUDIT.c
        where: list[ColumnElement[bool]] = []
        if self.actor is not None:
            where.append(c.actor == self.actor)
        if self.action is not None:
            where.append(c.action.startswith(self.action, autoescape=True) if self.action.endswith(".")
                         else c.action == self.action)
        if self.target is not None:
            where.append(c.target == self.target)
        return where


async def audit_page(session: AsyncSession, filt: AuditFilter, *, limit: int = 50,
                     offset: int = 0) -> Page[Row[Any]]:
    """The audit trail, newest first."""
    return await _page(session, AUDIT, filt.where(), [AUDIT.c.at.desc(), AUDIT.c.id.desc()], limit, offset)


# ---- what limits the floor (controller/domain/insight.py) ----------------------------------------------
# In the order of CommandRecord's and OrderRecord's fields (the records are made from the rows by
# position, much faster than by name), the commands' id first, for the keyset.
_INSIGHT_COMMANDS = [COMMANDS.c.id, COMMANDS.c.device_id, COMMANDS.c.device_kind, COMMANDS.c.task,
                     COMMANDS.c.order_id, COMMANDS.c.queued_at, COMMANDS.c.sent_at, COMMANDS.c.completed_at,
                     COMMANDS.c.outcome]
_INSIGHT_ORDERS = [ORDERS.c.id, ORDERS.c.state, ORDERS.c.priority, ORDERS.c.carrier, ORDERS.c.due_at,
                   ORDERS.c.received_at, ORDERS.c.shipped_at, ORDERS.c.cancelled_at]


async def insight_commands(db: AsyncEngine, queued_from: float, since: float, until: float, *,
                           chunk: int = 5000) -> AsyncIterator[list[CommandRecord]]:
    """The commands that may have waited, worked or finished in [since, until): queued from
    `queued_from` (a look-back before `since`, on the queued_at index) to `until`, less those that
    finished before `since`. In time order, `chunk` at a time, each chunk its own short read."""
    c = COMMANDS.c
    where = [c.queued_at >= queued_from, c.queued_at < until,
             or_(c.queued_at >= since, c.completed_at.is_(None), c.completed_at >= since)]
    async for rows in _in_time_order(db, _INSIGHT_COMMANDS, where, chunk):
        yield [CommandRecord(device, kind, task, order, queued, sent, completed, outcome)
               for _, device, kind, task, order, queued, sent, completed, outcome
               in cast("list[tuple[Any, ...]]", rows)]


async def insight_orders(db: AsyncEngine, received_from: float, since: float,
                         until: float) -> list[OrderRecord]:
    """The orders on the floor at some point of [since, until): received from `received_from` (a
    look-back on the received_at index) and not finished before `since`, plus any order still active
    that was received earlier."""
    c = ORDERS.c
    # An order shipped or cancelled before the window is not in it, whatever its due time: the
    # on-time share counts the orders shipped in the window and those due in it and not shipped.
    not_done_before = or_(and_(c.shipped_at.is_(None), c.cancelled_at.is_(None)), c.shipped_at >= since,
                          c.cancelled_at >= since)
    recent = select(*_INSIGHT_ORDERS).where(c.received_at >= received_from, c.received_at < until,
                                            not_done_before)
    older = (order_counts.in_active_states(select(*_INSIGHT_ORDERS), db.dialect.name)
             .where(c.received_at < received_from))
    async with db.connect() as conn:
        rows = [*(await conn.execute(recent)).all(), *(await conn.execute(older)).all()]
    return [OrderRecord(*r) for r in rows]  # the columns in the record's field order


async def insight_lines(db: AsyncEngine, since: float,
                        until: float) -> dict[int, list[tuple[str, str | None]]]:
    """(sku, location) of each line of the orders received in [since, until), by order id."""
    query = (select(LINES.c.order_id, LINES.c.sku, LINES.c.location)
             .join(ORDERS, ORDERS.c.id == LINES.c.order_id)
             .where(ORDERS.c.received_at >= since, ORDERS.c.received_at < until))
    lines: dict[int, list[tuple[str, str | None]]] = {}
    async with db.connect() as conn:
        for order_id, sku, location in (await conn.execute(query)).all():
            lines.setdefault(order_id, []).append((sku, location))
    return lines
