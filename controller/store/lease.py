"""The floor's lease in PostgreSQL: who leads a hot-standby pair, under which epoch, and the fence
every write of a leader passes (docs/standby.md).

One row, `floorctl_lease`, names the holder and its epoch; the holder renews it every few hundred
milliseconds, and any instance may take it once it has not been renewed for the lease time. Times
are the database's own clock (`clock_timestamp()`), so the instances' clocks never need to agree.
Taking the lease adds one to the epoch, in the same transaction that reads the row `FOR UPDATE`:
of two instances trying at once, the second sees the first's fresh lease and stays a standby.

Every batch a leader writes first reads the lease row `FOR SHARE` and goes on only if the epoch is
still its own. The lock makes a take-over wait for a batch already past that check, and a batch
that comes after a take-over finds a higher epoch and is refused whole: a stale leader cannot
write one row. Each committed batch also counts itself under its epoch in `floorctl_epoch_writes`
(the write log), in the same transaction, so what each epoch wrote and when is on record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

LEASE = "floor"
SCHEMA_LOCK = 0x666C6F6F72  # pg_advisory_lock key: one instance at a time creates or widens the schema

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS floorctl_lease (
        name text PRIMARY KEY, holder text, epoch bigint NOT NULL DEFAULT 0,
        acquired_at timestamptz, renewed_at timestamptz,
        expires_at timestamptz NOT NULL DEFAULT '-infinity')""",
    f"INSERT INTO floorctl_lease (name) VALUES ('{LEASE}') ON CONFLICT (name) DO NOTHING",
    """CREATE TABLE IF NOT EXISTS floorctl_leaders (
        epoch bigint PRIMARY KEY, holder text NOT NULL, acquired_at timestamptz NOT NULL,
        previous_holder text, previous_renewed_at timestamptz)""",
    """CREATE TABLE IF NOT EXISTS floorctl_epoch_writes (
        epoch bigint PRIMARY KEY, holder text NOT NULL, batches bigint NOT NULL, rows bigint NOT NULL,
        first_at timestamptz NOT NULL, last_at timestamptz NOT NULL)""",
]


class Fenced(Exception):
    """A write under an epoch that no longer leads: refused, nothing of the batch was written."""


@dataclass(frozen=True, slots=True)
class LeaseView:
    holder: str | None
    epoch: int
    expired: bool


@dataclass(frozen=True, slots=True)
class Election:
    """What an attempt to take the lease found: `won` with the new epoch, else who holds it."""

    won: bool
    epoch: int
    holder: str | None
    previous_holder: str | None = None
    # Seconds from the previous holder's last renewal to this take-over, by the database's clock
    # (None: there was no previous holder, or it had released the lease in an orderly stop).
    gap_s: float | None = None


def sync_engine(url: str, *, statement_timeout_s: float,
                idle_in_transaction_s: float | None = None) -> Engine:
    """A synchronous engine for the lease or the writer, whose connections cannot hang for long: a
    connect time-out, a statement time-out, TCP keepalives; and, for the writer, an idle-in-transaction
    time-out, so that a frozen leader's open batch cannot hold the lease row against a take-over."""
    options = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    if idle_in_transaction_s is not None:
        options += f" -c idle_in_transaction_session_timeout={int(idle_in_transaction_s * 1000)}"
    connect_args = {"connect_timeout": max(1, int(statement_timeout_s)), "options": options,
                    "keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 2}
    return create_engine(url, connect_args=connect_args, poolclass=NullPool)


def harden(engine: Engine, *, idle_in_transaction_s: float) -> None:
    """Give an existing engine's new connections the idle-in-transaction time-out (the writer's), as a
    start-up option of the session: a `SET` on a fresh connection would sit in the driver's implicit
    transaction, which the pool rolls back, and the rollback undoes the `SET`."""

    @event.listens_for(engine, "do_connect")
    def _timeout(_dialect: Any, _record: ConnectionPoolEntry, _cargs: Any, cparams: dict[str, Any]) -> None:
        option = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_s * 1000)}"
        cparams["options"] = f"{cparams.get('options', '')} {option}".strip()


def create_lease_tables(conn: Connection) -> None:
    for statement in SCHEMA:
        conn.exec_driver_sql(statement)


async def create_lease_schema(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.run_sync(create_lease_tables)


async def one_at_a_time(db: AsyncEngine, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` (creating the schema) while holding an advisory lock: two instances started at once
    would otherwise both create the same tables, and one would fail."""
    async with db.connect() as conn:
        await conn.execute(text(f"SELECT pg_advisory_lock({SCHEMA_LOCK})"))
        await conn.commit()
        try:
            await work()
        finally:
            await conn.execute(text(f"SELECT pg_advisory_unlock({SCHEMA_LOCK})"))
            await conn.commit()


class LeaseStore:
    """The lease's SQL, on one connection of its own (blocking: called from a thread of its own)."""

    def __init__(self, url: str, *, lease_s: float, timeout_s: float) -> None:
        self.lease_s = lease_s
        self.engine = sync_engine(url, statement_timeout_s=timeout_s, idle_in_transaction_s=timeout_s)
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        return self._conn

    def _reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection: nothing to close cleanly
                conn.invalidate()
                conn.close()

    def try_acquire(self, me: str) -> Election:
        try:
            conn = self._connection()
            with conn.begin():
                row = conn.execute(text(
                    "SELECT holder, epoch, renewed_at, expires_at < clock_timestamp() AS expired, "
                    "expires_at = '-infinity' OR renewed_at IS NULL AS released "
                    "FROM floorctl_lease WHERE name = :name FOR UPDATE"), {"name": LEASE}).one()
                if row.holder is not None and not row.expired:
                    return Election(False, row.epoch, row.holder)
                won = conn.execute(text(
                    "UPDATE floorctl_lease SET holder = :me, epoch = epoch + 1, "
                    "acquired_at = clock_timestamp(), renewed_at = clock_timestamp(), "
                    "expires_at = clock_timestamp() + make_interval(secs => :lease) "
                    "WHERE name = :name RETURNING epoch, acquired_at"),
                    {"me": me, "lease": self.lease_s, "name": LEASE}).one()
                previous_renewal = None if row.released else row.renewed_at
                conn.execute(text(
                    "INSERT INTO floorctl_leaders (epoch, holder, acquired_at, previous_holder, "
                    "previous_renewed_at) VALUES (:epoch, :me, :at, :previous, :renewed)"),
                    {"epoch": won.epoch, "me": me, "at": won.acquired_at, "previous": row.holder,
                     "renewed": previous_renewal})
            gap = (won.acquired_at - previous_renewal).total_seconds() if previous_renewal else None
            return Election(True, won.epoch, me, row.holder, gap)
        except Exception:
            self._reset()
            raise

    def renew(self, me: str, epoch: int) -> bool:
        """True: renewed; False: the lease is someone else's now. Raises when the database cannot say."""
        try:
            conn = self._connection()
            with conn.begin():
                renewed = conn.execute(text(
                    "UPDATE floorctl_lease SET renewed_at = clock_timestamp(), "
                    "expires_at = clock_timestamp() + make_interval(secs => :lease) "
                    "WHERE name = :name AND holder = :me AND epoch = :epoch RETURNING epoch"),
                    {"lease": self.lease_s, "name": LEASE, "me": me, "epoch": epoch}).first()
            return renewed is not None
        except Exception:
            self._reset()
            raise

    def release(self, me: str, epoch: int) -> None:
        """An orderly stop: the lease expires now, so a standby takes over at its next try."""
        try:
            conn = self._connection()
            with conn.begin():
                conn.execute(text(
                    "UPDATE floorctl_lease SET expires_at = '-infinity' "
                    "WHERE name = :name AND holder = :me AND epoch = :epoch"),
                    {"name": LEASE, "me": me, "epoch": epoch})
        finally:
            self._reset()

    def read(self) -> LeaseView:
        try:
            conn = self._connection()
            with conn.begin():
                row = conn.execute(text(
                    "SELECT holder, epoch, expires_at < clock_timestamp() AS expired "
                    "FROM floorctl_lease WHERE name = :name"), {"name": LEASE}).one()
            return LeaseView(row.holder, row.epoch, row.expired)
        except Exception:
            self._reset()
            raise

    def close(self) -> None:
        self._reset()
        self.engine.dispose()


@dataclass
class WriteFence:
    """The writer's side of the lease: which epoch its batches write under (None: this instance does
    not lead, and writes nothing), checked inside each batch's transaction."""

    holder: str
    epoch: int | None = None
    idle_in_transaction_s: float = 2.0  # a batch left open longer (a frozen leader) is ended by the server

    def check(self, conn: Connection) -> None:
        """First thing in a batch: the lease row FOR SHARE; Fenced unless the epoch is still ours."""
        if self.epoch is None:
            raise Fenced(f"{self.holder} does not lead: nothing is written")
        current = conn.exec_driver_sql(
            f"SELECT epoch FROM floorctl_lease WHERE name = '{LEASE}' FOR SHARE").scalar_one()
        if current != self.epoch:
            raise Fenced(f"{self.holder} wrote under epoch {self.epoch}, the lease is at epoch {current}")

    def log(self, conn: Connection, rows: int) -> None:
        """Last thing in a batch: count it under its epoch (the write log)."""
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        conn.exec_driver_sql(
            "INSERT INTO floorctl_epoch_writes (epoch, holder, batches, rows, first_at, last_at) "
            f"VALUES ({marker}, {marker}, 1, {marker}, clock_timestamp(), clock_timestamp()) "
            "ON CONFLICT (epoch) DO UPDATE SET batches = floorctl_epoch_writes.batches + 1, "
            "rows = floorctl_epoch_writes.rows + excluded.rows, last_at = excluded.last_at",
            (self.epoch, self.holder, rows))
