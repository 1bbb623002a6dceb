"""The one writer: every change the engine makes reaches the database in batched transactions.

The engine calls the `put`-style methods from the event loop; they only append to in-memory
buffers. A background task swaps the buffers every `interval_s` (or sooner when they are large) and
writes the whole batch in ONE transaction on a dedicated thread with its own synchronous connection,
so the loop never waits on the database and never commits row by row. Order state, stock and the
timing rows of a batch commit together: after a crash the database is at a batch boundary, and the
engine's deterministic command ids make re-sending whatever came after it harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, create_engine, event, insert, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from controller.store import order_counts, partitions
from controller.store.lease import Fenced, WriteFence, harden
from controller.store.tables import DeviceCommandRow, OrderLineRow, OrderRow, StockRow

log = logging.getLogger(__name__)

ORDERS = OrderRow.__table__  # type: ignore[attr-defined]
LINES = OrderLineRow.__table__  # type: ignore[attr-defined]
STOCK = StockRow.__table__  # type: ignore[attr-defined]
COMMANDS = DeviceCommandRow.__table__  # type: ignore[attr-defined]
TIMING_COLUMNS = [c.name for c in COMMANDS.columns if c.name != "id"]


def sync_url(url: str) -> str:
    """The synchronous-driver twin of an async URL."""
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


def make_sync_engine(url: str) -> Engine:
    engine = create_engine(sync_url(url))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


@dataclass
class Batch:
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)  # new orders, by id
    lines: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # new lines
    order_updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    line_updates: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    stock: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)  # by command_id: last wins
    # Small tables (alarms, the device-control audit trail): whole rows by (table, key), last wins;
    # and rows only ever added.
    upserts: dict[tuple[str, tuple[Any, ...]], tuple[Any, tuple[str, ...], dict[str, Any]]] = field(
        default_factory=dict)
    appends: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def size(self) -> int:
        return (len(self.orders) + len(self.lines) + len(self.order_updates) + len(self.line_updates)
                + len(self.stock) + len(self.timings) + len(self.upserts) + len(self.appends))


@dataclass
class WriterStats:
    batches: int = 0
    rows: int = 0
    timing_rows: int = 0
    last_batch_rows: int = 0
    last_batch_ms: float = 0.0
    max_batch_ms: float = 0.0
    errors: int = 0
    refused_rows: int = 0  # put while this instance did not lead (a hot standby): never written


class StoreWriter:
    def __init__(self, url: str, *, interval_s: float = 0.05, max_batch: int = 20_000) -> None:
        self.url = url
        self.interval_s = interval_s
        self.max_batch = max_batch
        self.stats = WriterStats()
        self._engine: Engine | None = None
        self._pending = Batch()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floorctl-writer")
        # A hot-standby pair (controller/ha): every batch checks the lease's epoch first; a refused
        # batch is dropped whole and `on_fenced` is told (the instance steps down).
        self.fence: WriteFence | None = None
        self.on_fenced: Callable[[str], None] | None = None
        # PostgreSQL with timing rows partitioned by day (controller/store/partitions.py): the days
        # that have their table, and when a day that could not be made may be tried again.
        self.partitioned = False
        self._days: set[int] = set()
        self._retry_days_at = 0.0

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._engine = await asyncio.get_running_loop().run_in_executor(self._thread, make_sync_engine,
                                                                        self.url)
        if self.fence is not None:
            # before the first connection: the pool keeps it, and every batch of a frozen leader
            # must be ended by the server, or its FOR SHARE of the lease row holds off a take-over
            harden(self._engine, idle_in_transaction_s=self.fence.idle_in_transaction_s)
        await asyncio.get_running_loop().run_in_executor(self._thread, self._learn_partitions)
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def close(self) -> None:
        """Write everything that was put, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        await self._task
        self._task = None
        engine = self._engine
        if engine is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, engine.dispose)
        self._thread.shutdown(wait=True)

    # ---- what the engine writes ---------------------------------------------------------------
    def insert_order(self, row: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        self._pending.orders[row["id"]] = row
        for line in lines:
            self._pending.lines[(line["order_id"], line["line_no"])] = line
        self._nudge()

    def update_order(self, order_id: int, **values: Any) -> None:
        new = self._pending.orders.get(order_id)
        if new is not None:
            new.update(values)
        else:
            self._pending.order_updates.setdefault(order_id, {}).update(values)
        self._nudge()

    def update_line(self, order_id: int, line_no: int, **values: Any) -> None:
        new = self._pending.lines.get((order_id, line_no))
        if new is not None:
            new.update(values)
            return
        self._pending.line_updates.setdefault((order_id, line_no), {}).update(values)
        self._nudge()

    def put_stock(self, location: str, sku: str, on_hand: int, reserved: int) -> None:
        self._pending.stock[location] = {"location": location, "sku": sku, "on_hand": on_hand,
                                         "reserved": reserved}
        self._nudge()

    def timing(self, row: dict[str, Any]) -> None:
        """A device command's timing row; the same command_id again replaces it (retries, restarts)."""
        self._pending.timings[row["command_id"]] = row
        self._nudge()

    def upsert(self, table: Any, keys: tuple[str, ...], row: dict[str, Any]) -> None:
        """A whole row of `table`, inserted or replacing the one with the same `keys` columns."""
        self._pending.upserts[(table.name, tuple(row[k] for k in keys))] = (table, keys, row)
        self._nudge()

    def append(self, table: Any, row: dict[str, Any]) -> None:
        """A row that is only ever added (its id, if any, comes from the database)."""
        self._pending.appends.append((table, row))
        self._nudge()

    async def flush(self) -> None:
        """Wait until everything put so far is committed."""
        if self._task is None:
            raise RuntimeError("writer is not running")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.waiters.append(waiter)
        self._wake.set()
        await waiter

    @property
    def backlog(self) -> int:
        return self._pending.size()

    # ---- the background task ------------------------------------------------------------------
    def _nudge(self) -> None:
        if self._pending.size() >= self.max_batch:
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            batch, self._pending = self._pending, Batch()
            if batch.size() and self.fence is not None and self.fence.epoch is None:
                self.stats.refused_rows += batch.size()  # not leading: nothing to write, nothing to wait for
            elif batch.size():
                started = time.perf_counter()
                try:
                    await loop.run_in_executor(self._thread, self._write, batch)
                except Fenced as exc:
                    self._refused(batch, str(exc))
                except Exception as exc:  # noqa: BLE001  any failure: keep the data, retry it with what came after
                    self.stats.errors += 1
                    log.error("database write failed (%s); retrying in 1 s", exc)
                    self._requeue(batch)
                    await asyncio.sleep(1.0)
                    continue
                else:
                    elapsed = (time.perf_counter() - started) * 1000
                    self.stats.batches += 1
                    self.stats.rows += batch.size()
                    self.stats.timing_rows += len(batch.timings)
                    self.stats.last_batch_rows = batch.size()
                    self.stats.last_batch_ms = elapsed
                    self.stats.max_batch_ms = max(self.stats.max_batch_ms, elapsed)
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if self._closing and not self._pending.size() and not self._pending.waiters:
                return

    def _refused(self, batch: Batch, reason: str) -> None:
        """Another instance leads now: this batch and everything after it are dropped, never written."""
        log.error("database write refused, stepping down: %s", reason)
        self.stats.refused_rows += batch.size()
        if self.fence is not None:
            self.fence.epoch = None
        if self.on_fenced is not None:
            self.on_fenced(reason)

    def _requeue(self, failed: Batch) -> None:
        newer, self._pending = self._pending, failed
        self._pending.orders.update(newer.orders)
        self._pending.lines.update(newer.lines)
        for order_id, values in newer.order_updates.items():
            self.update_order(order_id, **values)
        for (order_id, line_no), values in newer.line_updates.items():
            self.update_line(order_id, line_no, **values)
        self._pending.stock.update(newer.stock)
        self._pending.timings.update(newer.timings)
        self._pending.upserts.update(newer.upserts)
        self._pending.appends.extend(newer.appends)
        self._pending.waiters.extend(newer.waiters)

    def _learn_partitions(self) -> None:
        assert self._engine is not None
        if self._engine.dialect.name != "postgresql":
            return
        with self._engine.connect() as conn:
            self.partitioned = partitions.is_partitioned(conn)
            if self.partitioned:
                self._days = set(partitions.day_partitions(conn))

    def _make_days(self, rows: Any) -> None:
        """Make the day tables this batch's timing rows need and that are not there (normally made
        days ahead by the maintenance task; this is for a clock that jumped or a missed run)."""
        assert self._engine is not None
        wanted = {partitions.day_of(row["queued_at"]) for row in rows} - self._days
        if not wanted or time.monotonic() < self._retry_days_at:
            return
        with self._engine.connect() as conn:
            partitions.ensure_days(conn, wanted)
            self._days = set(partitions.day_partitions(conn))
        if wanted - self._days:
            self._retry_days_at = time.monotonic() + 60.0  # their rows go to the default partition

    def _write(self, batch: Batch) -> None:
        assert self._engine is not None
        if self.partitioned and batch.timings:
            self._make_days(batch.timings.values())
        with self._engine.begin() as conn:
            if self.fence is not None:
                self.fence.check(conn)
            # Orders by state move with the orders, read before they change (order_counts.py).
            counted = order_counts.changes(conn, (row["state"] for row in batch.orders.values()),
                                           batch.order_updates)
            if batch.orders:
                conn.execute(insert(ORDERS), list(batch.orders.values()))
            if batch.lines:
                conn.execute(insert(LINES), list(batch.lines.values()))
            _update_many(conn, ORDERS, batch.order_updates.items(), lambda key: {"k_id": key}, ("id",))
            order_counts.apply(conn, counted)
            _update_many(conn, LINES, batch.line_updates.items(),
                         lambda key: {"k_order_id": key[0], "k_line_no": key[1]}, ("order_id", "line_no"))
            if batch.stock:
                conn.execute(_upsert(conn, STOCK, ["location"], ["on_hand", "reserved"]),
                             list(batch.stock.values()))
            if batch.timings:
                # The bulk of every batch: plain tuples straight to the driver. Building and binding
                # dicts through SQLAlchemy costs several times more Python, all of it holding the GIL
                # that the event loop needs.
                if self.partitioned:
                    _drop_requeued(conn, batch.timings.values())
                conn.exec_driver_sql(_timing_upsert(conn.dialect.paramstyle, self.partitioned),
                                     [tuple(map(row.get, TIMING_COLUMNS)) for row in batch.timings.values()])
            appends: dict[Any, list[dict[str, Any]]] = {}
            for table, row in batch.appends:
                appends.setdefault(table, []).append(row)
            for table, rows in appends.items():
                conn.execute(insert(table), rows)
            upserts: dict[tuple[Any, tuple[str, ...]], list[dict[str, Any]]] = {}
            for table, keys, row in batch.upserts.values():
                upserts.setdefault((table, keys), []).append(row)
            for (table, keys), rows in upserts.items():
                columns = [c.name for c in table.columns if c.name not in keys]
                conn.execute(_upsert(conn, table, list(keys), columns), rows)
            if self.fence is not None:
                self.fence.log(conn, batch.size())


def _timing_upsert(paramstyle: str, partitioned: bool = False) -> str:
    """INSERT ... ON CONFLICT (command_id) DO UPDATE, the same in SQLite and PostgreSQL; on a table
    partitioned by day the key is (command_id, queued_at), the partition key being part of it."""
    marker = "?" if paramstyle == "qmark" else "%s"
    columns = ", ".join(TIMING_COLUMNS)
    values = ", ".join([marker] * len(TIMING_COLUMNS))
    key = ("command_id", "queued_at") if partitioned else ("command_id",)
    updates = ", ".join(f"{c} = excluded.{c}" for c in TIMING_COLUMNS if c not in key)
    return (f"INSERT INTO {COMMANDS.name} ({columns}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


_REQUEUED = text(f"DELETE FROM {COMMANDS.name} d USING unnest(CAST(:ids AS text[]), CAST(:at AS float8[])) "
                 "AS n(command_id, queued_at) WHERE d.command_id = n.command_id AND d.queued_at <> "
                 "n.queued_at AND d.queued_at >= :since AND d.queued_at < :until")


def _drop_requeued(conn: Connection, rows: Any) -> None:
    """A command queued again (sent again after a restart) keeps its id but not its queued_at, so
    the partitioned key (command_id, queued_at) would let it have two rows: drop its earlier one.
    Looks back REQUEUE_LOOKBACK_S, which keeps the look to the last few days' tables."""
    ids, at = [row["command_id"] for row in rows], [row["queued_at"] for row in rows]
    conn.execute(_REQUEUED, {"ids": ids, "at": at, "since": min(at) - partitions.REQUEUE_LOOKBACK_S,
                             "until": max(at)})


def _update_many(conn: Connection, table: Any, items: Any, key_params: Any,
                 key_cols: tuple[str, ...]) -> None:
    """Executemany UPDATEs, grouped by the set of columns each changes."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for key, values in items:
        groups.setdefault(tuple(sorted(values)), []).append({**values, **key_params(key)})
    for columns, params in groups.items():
        stmt = update(table).values({c: bindparam(c) for c in columns})
        for col in key_cols:
            stmt = stmt.where(table.c[col] == bindparam(f"k_{col}"))
        conn.execute(stmt, params)


def _upsert(conn: Connection, table: Any, keys: list[str], columns: list[str]) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in columns})
