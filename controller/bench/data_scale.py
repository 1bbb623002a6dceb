"""`floorctl bench --data-scale [ROWS]`: the read side on a big database, and the writer beside it.

Fills a database of its own with ROWS timing rows (default 50 million on PostgreSQL, a tenth of that
on SQLite) and a tenth as many orders, laid out as a busy floor would leave them: ten device commands
per order, orders arriving evenly over the last `DAYS` days up to now, the last minutes' orders still
on the floor. Then asks the API (in process, the app `floorctl run` serves, no network) each request
many times and reports its p95: an order's timeline, detail and breakdown, `/api/timings` for one
device over one hour (a JSON page and the whole CSV), `/api/insight` and `/api/stats` over the last
15 minutes, and the panel's requests. Last, the store writer's rows/s into that database against an
empty one made the same way. PostgreSQL rows go in with INSERT ... SELECT generate_series on the
server (minutes for 50 million on two cores); SQLite's through executemany.

The database is dropped afterwards unless FLOORCTL_BENCH_KEEP_DATA=1, which also lets a later run reuse
a database already filled to the same size.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from controller.bench.context import BenchContext
from controller.bench.timing_writer import DEFAULT_POSTGRES, measure
from controller.config_files import config_file
from controller.site import load_site
from controller.store import order_counts, partitions
from controller.store.db import create_schema, make_engine, normalise_url
from controller.store.partitions import DAY_S
from controller.store.writer import sync_url

KEEP_ENV = "FLOORCTL_BENCH_KEEP_DATA"
DAYS = 8
COMMANDS_PER_ORDER = 10
STEP_S = 2.0  # between an order's commands
ACTIVE_S = 300  # orders received in the last 5 minutes are still on the floor
CHUNK_ORDERS = 200_000  # orders per INSERT ... SELECT (ten times as many timing rows)
SAMPLES = 40
WRITER_SECONDS = 10.0
# Device of each of an order's ten commands: kind, id prefix, how many there are, task, protocol.
STEPS = [("pick_light", "ptl-", 240, "pick", "mqtt")] * 6 + [
    ("conveyor", "cv-", 4, "convey", "opcua"), ("pack_station", "ps-", 8, "pack", "mqtt"),
    ("printer", "prn-", 6, "label", "mqtt"), ("sorter", "sorter-", 2, "sort", "opcua")]
ACTIVE_STATES = ["picking", "conveyed", "packed", "labelled", "allocated"]


def _step_sql(column: str) -> str:
    """A SQL CASE over k (the command's place in its order) giving this column of STEPS."""
    index = {"kind": 0, "task": 3, "protocol": 4}[column]
    whens = " ".join(f"WHEN {k} THEN '{step[index]}'" for k, step in enumerate(STEPS))
    return f"(CASE k {whens} END)"


def _device_sql() -> str:
    whens = " ".join(f"WHEN {k} THEN '{prefix}' || ((o * 7 + {k}) % {count})"
                     for k, (_, prefix, count, _, _) in enumerate(STEPS))
    return f"(CASE k {whens} END)"


def _postgres_chunk(first: int, last: int, start: float, gap: float, now: float) -> list[str]:
    """INSERT ... SELECT statements for orders first..last (ids), their lines and commands."""
    received = f"({start} + (o - 1) * {gap})"
    active = f"({received} > {now - ACTIVE_S})"
    states = "(ARRAY[" + ", ".join(f"'{s}'" for s in ACTIVE_STATES) + "])"
    series = f"generate_series({first}, {last}) AS o"
    return [
        (f"INSERT INTO orders (id, external_id, carrier, priority, due_at, state, attempt, label_attempt, "
        f"received_at, allocated_at, picking_at, conveyed_at, packed_at, labelled_at, sorted_at, shipped_at) "
        f"SELECT o, 'WMS-' || o, (ARRAY['DHL', 'UPS', 'DPD'])[1 + o % 3], o % 3, {received} + 3600, "
        f"CASE WHEN {active} THEN {states}[1 + o % 5] ELSE 'shipped' END, 0, 0, {received}, "
        f"{received} + 0.5, {received} + 1, {received} + 13, {received} + 15, {received} + 17, "
        f"{received} + 19, CASE WHEN {active} THEN NULL ELSE {received} + 21 END FROM {series}"),
        (f"INSERT INTO order_lines (order_id, line_no, sku, qty, location, picked_qty, picked) "
        f"SELECT o, l, 'SKU-' || ((o + l) % 500), 1, 'A-' || ((o + l) % 240), 1, true "
         f"FROM {series}, generate_series(1, 2) AS l"),
        (f"INSERT INTO device_commands (command_id, order_id, task, device_id, device_kind, protocol, "
        f"command, queued_at, sent_at, acked_at, completed_at, outcome, reason, retries, ended_at, "
        f"down_queued_s, down_in_hand_s) "
        f"SELECT 'o' || o || '.' || k, o, {_step_sql('task')}, {_device_sql()}, {_step_sql('kind')}, "
        f"{_step_sql('protocol')}, 'run', {received} + k * {STEP_S}, {received} + k * {STEP_S} + 0.01, "
        f"{received} + k * {STEP_S} + 0.02, {received} + k * {STEP_S} + 1.5, "
        f"CASE WHEN o % 997 = 0 THEN 'timed_out' ELSE 'ok' END, NULL, 0, "
        f"{received} + k * {STEP_S} + 1.5, 0, 0 "
         f"FROM {series}, generate_series(0, {COMMANDS_PER_ORDER - 1}) AS k"),
    ]


def _fill_postgres(url: str, orders: int, now: float, progress: Callable[[str], None]) -> None:
    start = now - DAYS * DAY_S
    gap = DAYS * DAY_S / orders
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            partitions.ensure_days(conn, range(partitions.day_of(start), partitions.day_of(now) + 2))
        for first in range(1, orders + 1, CHUNK_ORDERS):
            last = min(orders, first + CHUNK_ORDERS - 1)
            with engine.begin() as conn:
                for statement in _postgres_chunk(first, last, start, gap, now):
                    conn.execute(text(statement))
            progress(f"filled {last * COMMANDS_PER_ORDER / 1e6:.1f} of "
                     f"{orders * COMMANDS_PER_ORDER / 1e6:.0f} million timing rows")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def _fill_sqlite(path: Path, orders: int, now: float, progress: Callable[[str], None]) -> None:
    start = now - DAYS * DAY_S
    gap = DAYS * DAY_S / orders
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # filling only; the writer measured later uses FULL
        for first in range(1, orders + 1, CHUNK_ORDERS):
            last = min(orders, first + CHUNK_ORDERS - 1)
            order_rows: list[tuple[Any, ...]] = []
            line_rows: list[tuple[Any, ...]] = []
            command_rows: list[tuple[Any, ...]] = []
            for o in range(first, last + 1):
                received = start + (o - 1) * gap
                active = received > now - ACTIVE_S
                order_rows.append((o, f"WMS-{o}", ("DHL", "UPS", "DPD")[o % 3], o % 3, received + 3600,
                                   ACTIVE_STATES[o % 5] if active else "shipped", received,
                                   None if active else received + 21))
                line_rows.extend((o, line, f"SKU-{(o + line) % 500}", f"A-{(o + line) % 240}")
                                 for line in (1, 2))
                for k, (kind, prefix, count, task, protocol) in enumerate(STEPS):
                    at = received + k * STEP_S
                    command_rows.append((f"o{o}.{k}", o, task, f"{prefix}{(o * 7 + k) % count}", kind,
                                         protocol, at, at + 0.01, at + 0.02, at + 1.5,
                                         "timed_out" if o % 997 == 0 else "ok", at + 1.5))
            with conn:
                conn.executemany("INSERT INTO orders (id, external_id, carrier, priority, due_at, state, "
                                 "received_at, shipped_at, attempt, label_attempt) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0)", order_rows)
                conn.executemany("INSERT INTO order_lines (order_id, line_no, sku, qty, location, "
                                 "picked_qty, picked) VALUES (?, ?, ?, 1, ?, 1, 1)", line_rows)
                conn.executemany("INSERT INTO device_commands (command_id, order_id, task, device_id, "
                                 "device_kind, protocol, command, queued_at, sent_at, acked_at, "
                                 "completed_at, outcome, retries, ended_at, down_queued_s, down_in_hand_s) "
                                 "VALUES (?, ?, ?, ?, ?, ?, 'run', ?, ?, ?, ?, ?, 0, ?, 0, 0)", command_rows)
            progress(f"filled {last * COMMANDS_PER_ORDER / 1e6:.1f} of "
                     f"{orders * COMMANDS_PER_ORDER / 1e6:.1f} million timing rows")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _recount(url: str) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            order_counts.recount(conn)
    finally:
        engine.dispose()


def _count(url: str) -> int:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM orders")).scalar_one())
    except Exception:  # noqa: BLE001 - no such table yet: empty
        return 0
    finally:
        engine.dispose()


async def _p95(call: Callable[[], Awaitable[httpx.Response]], samples: int = SAMPLES) -> dict[str, Any]:
    times = []
    await call()  # warm the connection pool and the statement caches
    for _ in range(samples):
        started = time.perf_counter()
        response = await call()
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:200]}")
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1), "max_ms": round(times[-1], 1)}


async def _ask(url: str, orders: int, now: float, scratch: Path) -> dict[str, Any]:
    """Each request SAMPLES times through the app `floorctl run` serves (nothing started: no device
    links; the routes read the database as they do on a running floor)."""
    from controller.bootstrap import Controller, Settings

    site = load_site(config_file("peak.yaml"))
    controller = Controller(Settings(site=site, data_dir=scratch, database_url=url, auth=False))
    app = controller.app()
    rng = random.Random(7)
    results: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            def get(path: Callable[[], str]) -> Callable[[], Awaitable[httpx.Response]]:
                return lambda: client.get(path())

            def an_order() -> int:
                return rng.randint(1, orders)

            hour_end = now - rng.random() * 3600
            device_hour = f"device_id=ptl-17&since={hour_end - 3600:.0f}&until={hour_end:.0f}"
            requests: dict[str, Callable[[], str]] = {
                "order_timeline": lambda: f"/api/orders/{an_order()}/timeline",
                "order_detail": lambda: f"/api/orders/{an_order()}",
                "order_breakdown": lambda: f"/api/orders/{an_order()}/breakdown",
                "order_audit": lambda: f"/api/orders/{an_order()}/audit?limit=20",
                "timings_device_hour_json": lambda: f"/api/timings?{device_hour}",
                "timings_device_hour_csv": lambda: f"/api/timings?{device_hour}&format=csv",
                "insight_15_min": lambda: f"/api/insight?since={now - 900:.0f}&until={now:.0f}",
                "stats": lambda: "/api/stats",
                "panel_latest": lambda: "/api/events/latest",
                "panel_board_picking": lambda: "/api/events/board?state=picking&limit=100",
                "panel_board_shipped": lambda: "/api/events/board?state=shipped&limit=100",
                "panel_alarms": lambda: "/api/alarms?active=true",
                "order_by_external_id": lambda: f"/api/orders?external_id=WMS-{an_order()}",
            }
            for name, path in requests.items():
                try:
                    results[name] = await _p95(get(path))
                except Exception as exc:  # noqa: BLE001 - one broken request must not hide the others
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            csv_rows = (await client.get(f"/api/timings?{device_hour}&format=csv")).text.count("\n") - 1
            results["timings_device_hour_csv"]["rows"] = csv_rows
    finally:
        await controller.db.dispose()
    return results


async def _writer_rates(url: str, empty_url: str, run: str) -> dict[str, Any]:
    empty = await measure(empty_url, f"{run}e", WRITER_SECONDS)
    full = await measure(url, f"{run}f", WRITER_SECONDS)
    return {"empty_rows_per_s": empty["rows_per_s"], "at_size_rows_per_s": full["rows_per_s"],
            "ratio": round(full["rows_per_s"] / empty["rows_per_s"], 2) if empty["rows_per_s"] else None,
            "empty": empty, "at_size": full}


def _admin(url: str, statement: str) -> None:
    engine = create_engine(make_url(sync_url(normalise_url(url))), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


async def _database(kind: str, ctx: BenchContext, rows: int) -> dict[str, Any]:
    orders = rows // COMMANDS_PER_ORDER
    now = time.time()
    keep = os.environ.get(KEEP_ENV, "") not in ("", "0")
    if kind == "postgres":
        base = normalise_url(ctx.database_url or os.environ.get("FLOORCTL_DATABASE_URL") or DEFAULT_POSTGRES)
        root = base.rsplit("/", 1)[0]
        name, empty_name = f"floorctl_scale_{rows}", f"floorctl_scale_empty_{os.getpid()}"
        url, empty_url = f"{root}/{name}", f"{root}/{empty_name}"
        existing = await asyncio.to_thread(_exists, base, name)
        if not existing:
            await asyncio.to_thread(_admin, base, f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(_admin, base, f'CREATE DATABASE "{empty_name}"')
    else:
        directory = Path(os.environ.get("FLOORCTL_BENCH_DATA_DIR", ctx.scratch)) if keep else ctx.scratch
        url = f"sqlite+aiosqlite:///{directory / f'scale-{rows}.db'}"
        empty_url = f"sqlite+aiosqlite:///{ctx.scratch / 'scale-empty.db'}"
    try:
        for target in (url, empty_url):
            db = make_engine(target)
            await create_schema(db)
            await db.dispose()
        have = await asyncio.to_thread(_count, url)
        fill_s = 0.0
        if have != orders:
            if have:
                raise RuntimeError(f"{make_url(url).render_as_string()} holds {have} orders, not {orders}: "
                                   "drop it first")
            started = time.monotonic()
            if kind == "postgres":
                await asyncio.to_thread(_fill_postgres, url, orders, now, ctx.progress)
            else:
                await asyncio.to_thread(_fill_sqlite, Path(make_url(url).database or ""), orders, now,
                                        ctx.progress)
            await asyncio.to_thread(_recount, url)  # filled past the writer, which keeps the counts
            fill_s = time.monotonic() - started
        else:
            now = await asyncio.to_thread(_newest, url)
        ctx.progress(f"{kind}: asking the API")
        result: dict[str, Any] = {"timing_rows": orders * COMMANDS_PER_ORDER, "orders": orders,
                                  "days": DAYS, "fill_s": round(fill_s, 1) if fill_s else "reused",
                                  "requests": await _ask(url, orders, now, ctx.scratch)}
        ctx.progress(f"{kind}: the writer, at that size and empty")
        result["writer"] = await _writer_rates(url, empty_url, ctx.run_id)
        worst = max((r["p95_ms"] for r in result["requests"].values() if "p95_ms" in r), default=None)
        result["worst_p95_ms"] = worst
        return result
    finally:
        if kind == "postgres":
            await asyncio.to_thread(_admin, base, f'DROP DATABASE IF EXISTS "{empty_name}" WITH (FORCE)')
            if not keep:
                await asyncio.to_thread(_admin, base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _exists(url: str, name: str) -> bool:
    engine = create_engine(make_url(sync_url(normalise_url(url))))
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            return found.first() is not None
    finally:
        engine.dispose()


def _newest(url: str) -> float:
    """A reused data set: its own 'now', where its orders stop arriving."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return float(conn.execute(text("SELECT max(received_at) FROM orders")).scalar_one())
    finally:
        engine.dispose()


async def run(ctx: BenchContext, rows: int) -> dict[str, Any]:
    """`rows` timing rows on PostgreSQL, a tenth of them on SQLite."""
    result: dict[str, Any] = {}
    for kind, size in (("sqlite", rows // 10), ("postgres", rows)):
        ctx.progress(f"{kind}: {size:,} timing rows")
        try:
            result[kind] = await _database(kind, ctx, size)
        except Exception as exc:  # noqa: BLE001 - say why, keep the other database's figures
            result[kind] = {"error": f"{type(exc).__name__}: {exc}"}
    return result
