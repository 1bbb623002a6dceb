"""Read queries for the API and the panel. The engine owns every write; nothing here changes a row.

Built to stay fast on 100k+ orders and millions of timing rows: listings filter on indexed columns
where they can (orders.state, device_commands.order_id / device_id / queued_at), pages are bounded,
and the CSV export walks the timing rows in keyset chunks of short, separate reads so a slow download
neither loads everything into memory nor holds a read transaction open for minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Row, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from controller.store.tables import DeviceCommandRow, OrderLineRow, OrderRow, StockRow

ORDERS = OrderRow.__table__  # type: ignore[attr-defined]
LINES = OrderLineRow.__table__  # type: ignore[attr-defined]
STOCK = StockRow.__table__  # type: ignore[attr-defined]
COMMANDS = DeviceCommandRow.__table__  # type: ignore[attr-defined]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


async def _page(session: AsyncSession, table: Any, where: Sequence[ColumnElement[bool]], order_by: Sequence[Any],
                limit: int, offset: int) -> Page[Row[Any]]:
    """One bounded page plus the total count of matching rows."""
    stmt = select(table).where(*where).order_by(*order_by).limit(limit).offset(offset)
    rows = list((await session.execute(stmt)).all())
    if len(rows) < limit and (rows or offset == 0):
        return Page(rows, offset + len(rows))  # the last page tells the total: no need to count
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
    return await _page(session, ORDERS, where, [ORDERS.c.id], limit, offset)


async def order_with_lines(session: AsyncSession, order_id: int) -> tuple[Row[Any], list[Row[Any]]] | None:
    order = (await session.execute(select(ORDERS).where(ORDERS.c.id == order_id))).first()
    if order is None:
        return None
    lines = (await session.execute(
        select(LINES).where(LINES.c.order_id == order_id).order_by(LINES.c.line_no))).all()
    return order, list(lines)


async def order_exists(session: AsyncSession, order_id: int) -> bool:
    return (await session.execute(select(ORDERS.c.id).where(ORDERS.c.id == order_id))).first() is not None


async def order_counts_by_state(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(ORDERS.c.state, func.count()).group_by(ORDERS.c.state))
    return {state: count for state, count in rows.all()}


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
                              (c.device_kind, self.device_kind), (c.task, self.task), (c.outcome, self.outcome)):
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


async def timings_in_chunks(db: AsyncEngine, filt: TimingFilter, *, chunk: int = 5000) -> AsyncIterator[list[Row[Any]]]:
    """All matching timing rows in time order, `chunk` at a time, each chunk its own short read.

    Keyset paging on (queued_at, id) instead of OFFSET: every chunk costs the same however deep the
    export is. Rows the engine writes meanwhile appear if they sort after the current position.
    """
    where = filt.where()
    after: tuple[float, int] | None = None
    while True:
        stmt = select(COMMANDS).where(*where)
        if after is not None:
            stmt = stmt.where(tuple_(*TIME_ORDER) > tuple_(*after))
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
