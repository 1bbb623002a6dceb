"""Timing rows partitioned by day on PostgreSQL (declarative partitioning, RANGE on queued_at).

A floor at 10 orders/s writes millions of timing rows a day. Partitioned by the UTC day they were
queued, a query over an hour reads one day's table, and retention drops a whole day with a detach and
a drop instead of deleting millions of rows (controller/store/retention.py).

Shape, and why:
- One table per UTC day, `device_commands_dYYYYMMDD`, holding queued_at in [day, day + 1); made ahead
  of time by the maintenance task and, should a batch bring a day without one, by the writer first.
- A DEFAULT partition, `device_commands_default`, takes any row no day's table is there for (a clock
  far off, a day's table that could not be made in time): a row is never refused. It stays empty in
  normal running; retention deletes its old rows in batches.
- A unique constraint on a partitioned table must hold the partition key: `command_id` is unique
  with `queued_at` here, and the writer keeps a command id to one row across re-queueing (a command
  sent again after a restart is queued again, later) by deleting its older row, looking back
  `REQUEUE_LOOKBACK_S` (controller/store/writer.py).

A database whose `device_commands` was made unpartitioned (by a floorctl before this) keeps working
as it is: `is_partitioned` tells the writer and retention which way to go, and start-up logs it once.
SQLite is never partitioned.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
from collections.abc import Iterable

from sqlalchemy import (
    Column,
    Connection,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.exc import DBAPIError

from controller.store.tables import DeviceCommandRow

log = logging.getLogger(__name__)

COMMANDS = DeviceCommandRow.__table__  # type: ignore[attr-defined]
DAY_S = 86_400
DEFAULT_PARTITION = f"{COMMANDS.name}_default"
DAY_PARTITION = re.compile(rf"^{COMMANDS.name}_d(\d{{8}})$")
# A command re-queued after a restart keeps its id; its earlier row is looked for this far back.
REQUEUE_LOOKBACK_S = 2 * DAY_S
# Making or detaching a day's table waits at most this long for the table's lock, then gives up and
# tries again later: a long wait would queue every reader and the writer behind it.
LOCK_TIMEOUT_MS = 1000


def day_of(epoch_s: float) -> int:
    """The UTC day number (days since 1970-01-01) of an instant."""
    return int(epoch_s // DAY_S)


def partition_name(day: int) -> str:
    return f"{COMMANDS.name}_d{time.strftime('%Y%m%d', time.gmtime(day * DAY_S))}"


def day_of_partition(name: str) -> int | None:
    """The day a day's table holds, from its name; None for the default partition or another table."""
    found = DAY_PARTITION.match(name)
    if found is None:
        return None
    return day_of(calendar.timegm(time.strptime(found.group(1), "%Y%m%d")))


def partitioned_table() -> Table:
    """`device_commands` as a partitioned table: the same columns, the keys widened by queued_at."""
    columns = [Column(c.name, c.type, nullable=False if c.primary_key else c.nullable,
                      autoincrement=bool(c.primary_key)) for c in COMMANDS.columns]
    indexes = [Index(ix.name, *[c.name for c in ix.columns]) for ix in COMMANDS.indexes]
    return Table(COMMANDS.name, MetaData(), *columns,
                 PrimaryKeyConstraint("id", "queued_at", name=f"{COMMANDS.name}_pkey"),
                 UniqueConstraint("command_id", "queued_at", name=f"{COMMANDS.name}_command_id_key"),
                 *indexes, postgresql_partition_by="RANGE (queued_at)")


def _exists(conn: Connection, name: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar_one()


def is_partitioned(conn: Connection) -> bool:
    """Is this PostgreSQL database's `device_commands` a partitioned table (in the current schema)?"""
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace)"),
        {"name": COMMANDS.name}).scalar_one())


def create_partitioned(conn: Connection) -> bool:
    """Make `device_commands` partitioned, with its default partition, if there is no such table
    yet; answers whether it made it. Runs before `create_all`, which then leaves the table be."""
    if _exists(conn, COMMANDS.name):
        if not is_partitioned(conn):
            log.warning("%s is not partitioned by day (it was made by an earlier floorctl): it keeps "
                        "working as it is; retention deletes old rows in batches instead of dropping "
                        "days (docs/site-file.md, retention, tells how to convert it)", COMMANDS.name)
        return False
    partitioned_table().create(conn)
    conn.execute(text(f'CREATE TABLE "{DEFAULT_PARTITION}" PARTITION OF "{COMMANDS.name}" DEFAULT'))
    log.info("made %s, partitioned by day", COMMANDS.name)
    return True


def rows_up_to(conn: Connection, table: str, limit: int) -> int:
    """How many rows the table holds, counted no further than limit + 1 (is it small enough to index
    at start?)."""
    return int(conn.execute(text(f'SELECT count(*) FROM (SELECT 1 FROM "{table}" LIMIT {limit + 1}) AS r'))
               .scalar_one())


def add_index(conn: Connection, index: Index, small_rows: int) -> list[str]:
    """An index of `device_commands` that a database made by an older floorctl lacks: made on the
    partitioned table alone (at once: day tables made from then on get their own), then on each table
    of it that has none and holds at most `small_rows` rows (the days ahead, the default partition),
    attached to it. A bigger day's table is left as it is, logged with the statements that make its
    index by hand without stopping the floor, until retention drops it. Answers the indexes made."""
    name = str(index.name)
    columns = ", ".join(f'"{c.name}"' for c in index.columns)
    made: list[str] = []
    if not _exists(conn, name):
        conn.execute(text(f'CREATE INDEX "{name}" ON ONLY "{COMMANDS.name}" ({columns})'))
        made.append(name)
    lacking = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:table) AND NOT EXISTS (SELECT 1 FROM pg_index x "
        "JOIN pg_inherits xi ON xi.inhrelid = x.indexrelid "
        "WHERE x.indrelid = c.oid AND xi.inhparent = to_regclass(:index)) ORDER BY c.relname"),
        {"table": COMMANDS.name, "index": name}).scalars().all()
    big = []
    for table in lacking:
        child = f"{table}_{'_'.join(c.name for c in index.columns)}_idx"
        if rows_up_to(conn, table, small_rows) > small_rows:
            big.append((table, child))
            continue
        conn.execute(text(f'CREATE INDEX IF NOT EXISTS "{child}" ON "{table}" ({columns})'))
        conn.execute(text(f'ALTER INDEX "{name}" ATTACH PARTITION "{child}"'))
        made.append(child)
    if big:
        log.warning("%d day tables of %s hold more than %d rows and have no index %s; it is made for "
                    "the days to come; for these, run (docs/site-file.md, retention): %s", len(big),
                    COMMANDS.name, small_rows, name,
                    " ".join(f'CREATE INDEX CONCURRENTLY "{child}" ON "{table}" ({columns}); ALTER INDEX '
                             f'"{name}" ATTACH PARTITION "{child}";' for table, child in big))
    return made


def day_partitions(conn: Connection) -> dict[int, str]:
    """The day tables attached to `device_commands` now, by day."""
    rows = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = :name AND p.relnamespace = current_schema()::regnamespace"),
        {"name": COMMANDS.name}).scalars()
    days = {}
    for name in rows:
        day = day_of_partition(name)
        if day is not None:
            days[day] = name
    return days


def make_day_partitions(conn: Connection, days: Iterable[int]) -> list[int]:
    """Make the tables of these days that are missing, each in its own short transaction (on an
    autocommit-free connection the caller commits); answers the days made. A day whose rows already
    sit in the default partition gets them moved into its new table in the same transaction."""
    have = day_partitions(conn)
    made = []
    for day in sorted(set(days) - set(have)):
        name, low, high = partition_name(day), day * DAY_S, (day + 1) * DAY_S
        conn.execute(text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
        stray = conn.execute(text(f'SELECT count(*) FROM "{DEFAULT_PARTITION}" '
                                  "WHERE queued_at >= :low AND queued_at < :high"),
                             {"low": low, "high": high}).scalar_one()
        if stray:
            # The new table's range must not hold rows of the default partition: move them across.
            conn.execute(text(f'CREATE TEMPORARY TABLE moving (LIKE "{COMMANDS.name}") ON COMMIT DROP'))
            conn.execute(text(f'WITH gone AS (DELETE FROM "{DEFAULT_PARTITION}" WHERE queued_at >= :low '
                              'AND queued_at < :high RETURNING *) INSERT INTO moving SELECT * FROM gone'),
                         {"low": low, "high": high})
        conn.execute(text(f'CREATE TABLE "{name}" PARTITION OF "{COMMANDS.name}" '
                          f"FOR VALUES FROM ({low}) TO ({high})"))
        if stray:
            conn.execute(text(f'INSERT INTO "{COMMANDS.name}" SELECT * FROM moving'))
            log.info("moved %d rows of %s from the default partition", stray, name)
        conn.commit()
        made.append(day)
    return made


def ensure_days(conn: Connection, days: Iterable[int]) -> list[int]:
    """`make_day_partitions`, but a day that cannot be made now (its lock not granted in time) is
    logged and left for later: its rows land in the default partition meanwhile."""
    try:
        return make_day_partitions(conn, days)
    except DBAPIError as exc:
        conn.rollback()
        log.warning("could not make the day tables of %s now, trying again later: %s", COMMANDS.name,
                    str(exc.orig).splitlines()[0] if exc.orig else exc)
        return []


def detach_and_drop(conn: Connection, day: int) -> bool:
    """Detach a day's table and drop it, each step waiting at most LOCK_TIMEOUT_MS for its lock.
    `conn` must be in autocommit (a detach is its own transaction). False: not done, try later."""
    name = partition_name(day)
    try:
        conn.execute(text(f"SET lock_timeout = {LOCK_TIMEOUT_MS}"))
        if _exists(conn, name):
            attached = conn.execute(text(
                "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(:name))"),
                {"name": name}).scalar_one()
            if attached:
                conn.execute(text(f'ALTER TABLE "{COMMANDS.name}" DETACH PARTITION "{name}"'))
            conn.execute(text(f'DROP TABLE "{name}"'))
        return True
    except DBAPIError as exc:
        log.warning("could not drop %s now (%s); trying again on the next run", name,
                    str(exc.orig).splitlines()[0] if exc.orig else exc)
        return False
    finally:
        conn.execute(text("RESET lock_timeout"))
