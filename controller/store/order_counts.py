"""Orders by state, counted once and kept up to date: `/api/stats`, the panel and the board's totals
read eleven rows instead of counting millions of finished orders on every request.

The writer is the only one that changes orders (controller/store/writer.py). In the transaction of
each batch it reads the state the batch's changed orders have in the database before the change,
and adds the difference to `order_counts` with the orders themselves: the counts are at the same
batch boundary as the orders, and a batch that is refused or rolled back changes neither.

`ensure` runs with the schema at every start (on PostgreSQL holding the writer's batches off the
counts meanwhile, so that an instance starting beside a leading one reads whole batches): a database
without counts yet (new, or made by an older floorctl) is counted once (a scan of `orders`); one
whose counts of the active states do not match theirs in `orders` (orders changed by hand, or by an
older floorctl meanwhile) is counted again, with a warning. Checking the active states is cheap: they
are the few rows of the state index that are not finished. Anything that fills `orders` past the
writer (a bulk load) calls `recount`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, func, insert, literal_column, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from controller.domain.model import TERMINAL, OrderState
from controller.store.tables import OrderCountRow, OrderRow

log = logging.getLogger(__name__)

COUNTS = OrderCountRow.__table__  # type: ignore[attr-defined]
ORDERS = OrderRow.__table__  # type: ignore[attr-defined]
ACTIVE = [s.value for s in OrderState if s not in TERMINAL]
_CHUNK = 1000  # order ids per IN (...) list


def in_active_states(query: Select[Any], dialect: str) -> Select[Any]:
    """The query over the active orders only, on the state index. SQLite's planner averages the
    index over every state, the millions of finished orders included, and would scan the whole table
    for nine states: it is told that few orders match (PostgreSQL knows it from its statistics)."""
    active = ORDERS.c.state.in_(ACTIVE)
    return query.where(func.likelihood(active, literal_column("0.001")) if dialect == "sqlite" else active)


def recount(conn: Connection) -> dict[str, int]:
    """Count the orders by state from `orders` and keep that (every state has its row, zeros too)."""
    found = {state: int(n) for state, n in
             conn.execute(select(ORDERS.c.state, func.count()).group_by(ORDERS.c.state)).all()}
    counts = {**{s.value: 0 for s in OrderState}, **found}
    conn.execute(delete(COUNTS))
    conn.execute(insert(COUNTS), [{"state": state, "orders": n} for state, n in counts.items()])
    return counts


def ensure(conn: Connection) -> None:
    """Counts there and right for the active states; else counted from `orders` (see the module)."""
    if conn.dialect.name == "postgresql":
        # An instance starting beside a leading one: the leader's writer adds each batch's changes after
        # it changed the orders, so hold its batches off the counts until this transaction ends; the
        # orders then read are those of whole batches, and so are the counts.
        conn.execute(text(f'LOCK TABLE "{COUNTS.name}" IN EXCLUSIVE MODE'))
    kept = {state: n for state, n in conn.execute(select(COUNTS.c.state, COUNTS.c.orders)).all()}
    if kept:
        counting = in_active_states(select(ORDERS.c.state, func.count()), conn.dialect.name)
        active = {state: int(n) for state, n in conn.execute(counting.group_by(ORDERS.c.state))}
        wrong = {s: (kept.get(s, 0), active.get(s, 0)) for s in ACTIVE if kept.get(s, 0) != active.get(s, 0)}
        if not wrong:
            return
        log.warning("orders by state did not match the orders (%s: kept, found); counting them again",
                    ", ".join(f"{s} {k}/{f}" for s, (k, f) in sorted(wrong.items())))
    counts = recount(conn)
    log.info("counted %d orders by state", sum(counts.values()))


def changes(conn: Connection, new_states: Iterable[str],
            updates: Mapping[int, Mapping[str, Any]]) -> Counter[str]:
    """What a batch does to the counts: +1 for each new order's state, and for each order whose
    state it changes, -1 for the state the database has now and +1 for the new one. Call before the
    batch's updates are executed, in its transaction."""
    delta: Counter[str] = Counter(new_states)
    moving = {order_id: values["state"] for order_id, values in updates.items() if "state" in values}
    ids = list(moving)
    query = select(ORDERS.c.id, ORDERS.c.state).where(ORDERS.c.id.in_(bindparam("ids", expanding=True)))
    for start in range(0, len(ids), _CHUNK):
        for order_id, state in conn.execute(query, {"ids": ids[start:start + _CHUNK]}).all():
            delta[state] -= 1
            delta[moving[order_id]] += 1
    return delta


def apply(conn: Connection, delta: Counter[str]) -> None:
    """Add a batch's changes (from `changes`) to the counts."""
    rows = [{"state": state, "orders": n} for state, n in sorted(delta.items()) if n]
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(COUNTS)
    conn.execute(stmt.on_conflict_do_update(index_elements=["state"],
                                            set_={"orders": COUNTS.c.orders + stmt.excluded.orders}), rows)


async def by_state(session: AsyncSession) -> dict[str, int]:
    """Orders by state, states with none left out."""
    rows = await session.execute(select(COUNTS.c.state, COUNTS.c.orders).where(COUNTS.c.orders != 0))
    return {state: int(n) for state, n in rows.all()}


async def in_states(session: AsyncSession, states: Sequence[str]) -> int:
    """How many orders are in any of these states."""
    found = await session.execute(select(func.coalesce(func.sum(COUNTS.c.orders), 0))
                                  .where(COUNTS.c.state.in_(list(states))))
    return int(found.scalar_one())
