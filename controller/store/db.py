"""Database engines: SQLite (WAL, the embedded default) or PostgreSQL by URL."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import BigInteger, Connection, event, inspect, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import SQLModel

from controller.store import order_counts, partitions, tables  # noqa: F401  (tables: registers the tables)

DATABASE_URL_ENV = "FLOORCTL_DATABASE_URL"
# An index missing from a table of at most this many rows is made at start (a few seconds at most).
SMALL_TABLE_ROWS = 1_000_000

log = logging.getLogger(__name__)


def database_url(data_dir: Path | None, url: str | None = None) -> str:
    """The URL to use: explicit, then FLOORCTL_DATABASE_URL, then SQLite under the data directory."""
    url = url or os.environ.get(DATABASE_URL_ENV)
    if url:
        return normalise_url(url)
    directory = data_dir or Path("data")
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{directory / 'floorctl.db'}"


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (postgresql://, sqlite:///) and pick the async driver."""
    for plain, driver in (("postgresql://", "postgresql+asyncpg://"), ("postgres://", "postgresql+asyncpg://"),
                          ("sqlite://", "sqlite+aiosqlite://")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url



def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # Order state must survive power loss: FULL, not NORMAL (WAL + NORMAL can lose commits).
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Before create_all, which leaves an existing table be: timing rows partitioned by day.
            await conn.run_sync(partitions.create_partitioned)
        await conn.run_sync(SQLModel.metadata.create_all)
        await conn.run_sync(add_missing_columns)
        await conn.run_sync(add_missing_indexes)
        await conn.run_sync(order_counts.ensure)
        if conn.dialect.name == "postgresql":
            await widen_ids(conn)


def add_missing_columns(conn: Connection) -> list[str]:
    """Add to a database made by an older floorctl the nullable columns its tables lack (`create_all`
    makes missing tables, not missing columns); answers the columns added. Rows already there get
    null in them. A no-op on a current database: one look at each table's columns."""
    inspector = inspect(conn)
    added = []
    for table in SQLModel.metadata.sorted_tables:
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(f"{table.name}.{column.name} is missing and cannot be added: not nullable")
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))
            added.append(f"{table.name}.{column.name}")
    if added:
        log.warning("added columns to an older database: %s", ", ".join(added))
    return added


def add_missing_indexes(conn: Connection) -> list[str]:
    """Make the indexes a database made by an older floorctl lacks (`create_all` makes them with
    missing tables only), where the table is small enough to index at start (SMALL_TABLE_ROWS); on a
    bigger one, log the statement to run by hand instead of holding up the start for minutes. The
    day tables of partitioned timing rows are seen to one by one (partitions.add_index). Answers the
    indexes made."""
    made = []
    for table in SQLModel.metadata.sorted_tables:
        if conn.dialect.name == "postgresql" and table.name == partitions.COMMANDS.name \
                and partitions.is_partitioned(conn):
            for index in table.indexes:
                made += partitions.add_index(conn, index, SMALL_TABLE_ROWS)
            continue
        have = _index_names(conn, table.name)
        for index in table.indexes:
            if index.name in have:
                continue
            if partitions.rows_up_to(conn, table.name, SMALL_TABLE_ROWS) > SMALL_TABLE_ROWS:
                columns = ", ".join(c.name for c in index.columns)
                concurrently = " CONCURRENTLY" if conn.dialect.name == "postgresql" else ""
                log.warning("%s holds more than %d rows: its index %s is not made at start; make it with "
                            "CREATE INDEX%s %s ON %s (%s)", table.name, SMALL_TABLE_ROWS, index.name,
                            concurrently, index.name, table.name, columns)
                continue
            index.create(conn)
            made.append(str(index.name))
    if made:
        log.warning("made indexes missing from an older database: %s", ", ".join(made))
    return made


def _index_names(conn: Connection, table: str) -> set[str]:
    if conn.dialect.name == "postgresql":  # pg_indexes lists a partitioned table's indexes too
        return set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                                     "AND tablename = :t"), {"t": table}).scalars())
    return {ix["name"] for ix in inspect(conn).get_indexes(table) if ix["name"]}


async def widen_ids(conn: AsyncConnection) -> list[str]:
    """Make the 64-bit id columns of a PostgreSQL database made before ids were 64-bit `bigint`
    (with their sequences), in place; answers the columns changed. A no-op on a current database:
    one catalogue query. The first start after the upgrade rewrites those tables once, under lock."""
    wanted = [(table.name, column.name) for table in SQLModel.metadata.sorted_tables
              for column in table.columns if isinstance(column.type.dialect_impl(conn.dialect), BigInteger)]
    if not wanted:
        return []
    found = await conn.execute(text(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'integer'"))
    int4 = {(row[0], row[1]) for row in found}
    narrow = [pair for pair in wanted if pair in int4]
    changed = []
    for table, column in narrow:
        await conn.execute(text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE bigint'))
        sequence = (await conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                       {"t": f'"{table}"', "c": column})).scalar()
        if sequence:
            await conn.execute(text(f"ALTER SEQUENCE {sequence} AS bigint"))
        changed.append(f"{table}.{column}")
    if changed:
        log.warning("widened id columns to 64 bits: %s", ", ".join(changed))
    return changed

