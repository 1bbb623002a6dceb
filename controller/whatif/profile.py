"""Order profiles of a what-if scenario: generated, from a CSV file, or recorded by a floorctl
database. Each becomes the same list of planned orders, at offsets of floor time from the start."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col

from controller.site import Site, SiteError
from controller.store.tables import OrderLineRow, OrderRow
from controller.whatif.scenario import Generated, Recorded, Scenario, seconds


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    at_s: float  # floor seconds from the start of the scenario
    lines: tuple[tuple[str, int], ...]
    carrier: str
    priority: int = 0
    due_in_s: float | None = None  # floor seconds after it arrives; None: no due time


async def plan_orders(scenario: Scenario) -> list[PlannedOrder]:
    """The scenario's orders, in arrival order, within its duration."""
    profile, spec = scenario.spec.orders, scenario.spec
    if profile.generated is not None:
        planned = generate(profile.generated, scenario.site, spec.duration, spec.seed)
    elif profile.csv is not None:
        planned = read_csv(scenario.base_dir / profile.csv, scenario.site)
    else:
        assert profile.recorded is not None
        planned = await read_recorded(profile.recorded, scenario.site)
    planned = [order for order in planned if order.at_s < spec.duration]
    if not planned:
        raise SiteError(f"{scenario.path}: the order profile gives no order within {spec.duration:g} s")
    return planned


def generate(g: Generated, site: Site, duration: float, seed: int) -> list[PlannedOrder]:
    """Poisson arrivals at the profile's rate (thinned under the peak), seeded."""
    r = random.Random(seed)
    skus = sorted(site.skus())
    weights = [1 / (rank + 1) ** g.sku_skew for rank in range(len(skus))]
    r.shuffle(skus)  # which SKUs are popular is itself seeded, not alphabetical
    carriers = sorted(g.carriers) if g.carriers else [c.id for c in site.carriers]
    carrier_weights = [g.carriers[c] for c in carriers] if g.carriers else None
    unknown = set(carriers) - {c.id for c in site.carriers}
    if unknown:
        raise SiteError(f"orders.generated.carriers: unknown carrier {', '.join(sorted(unknown))}")
    top = max(g.rate_at(t, duration) for t in _grid(duration)) or 0.0
    planned: list[PlannedOrder] = []
    t = 0.0
    while top > 0:
        t += r.expovariate(top)
        if t >= duration:
            break
        if r.random() * top > g.rate_at(t, duration):
            continue
        count = min(len(skus), r.choices(range(1, len(g.lines) + 1), weights=g.lines)[0])
        chosen: list[str] = []
        while len(chosen) < count:
            sku = r.choices(skus, weights=weights)[0]
            if sku not in chosen:
                chosen.append(sku)
        lines = tuple((sku, r.choice((1, 1, 1, 2, 3))) for sku in chosen)
        carrier = r.choices(carriers, weights=carrier_weights)[0]
        express = r.random() < g.express_share
        planned.append(PlannedOrder(t, lines, carrier, g.express_priority if express else 0,
                                    g.express_due if express else g.standard_due))
    return planned


def _grid(duration: float) -> list[float]:
    return [duration * i / 1000 for i in range(1001)]


CSV_COLUMNS = ("received_at", "lines", "carrier", "priority", "due_at")


def read_csv(path: Path, site: Site) -> list[PlannedOrder]:
    """`received_at, lines, carrier, priority, due_at`: times as seconds from the start (`90`, `1.5m`)
    or ISO 8601 (offsets from the first order; due_at then absolute); lines as `SKU-0001x2 SKU-0003`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteError(f"{path}: cannot read the order CSV: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SiteError(f"{path}: the order CSV is not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    missing = set(CSV_COLUMNS[:3]) - set(reader.fieldnames or ())
    if missing:
        raise SiteError(f"{path}: the order CSV needs the columns {', '.join(CSV_COLUMNS)} "
                        f"(missing: {', '.join(sorted(missing))})")
    skus, carriers = site.skus(), {c.id for c in site.carriers}
    rows: list[tuple[float, bool, PlannedOrder]] = []
    for number, row in enumerate(reader, start=2):
        where = f"{path}, line {number}"
        try:
            at, absolute = _time(row["received_at"])
            lines = _lines(row["lines"], skus)
            carrier = row["carrier"].strip()
            if carrier not in carriers:
                raise ValueError(f"unknown carrier {carrier!r}")
            priority = int(row.get("priority") or 0)
            due_text = (row.get("due_at") or "").strip()
            due = _time(due_text) if due_text else None
        except (ValueError, KeyError) as exc:
            raise SiteError(f"{where}: {exc}") from None
        due_in = None if due is None else (due[0] - at if due[1] else due[0])
        rows.append((at, absolute, PlannedOrder(at, lines, carrier, priority, due_in)))
    if not rows:
        raise SiteError(f"{path}: the order CSV has no orders")
    start = min(at for at, _, _ in rows) if rows[0][1] else 0.0
    planned = [PlannedOrder(at - start, o.lines, o.carrier, o.priority, o.due_in_s) for at, _, o in rows]
    return sorted(planned, key=lambda o: o.at_s)


def _time(text: str) -> tuple[float, bool]:
    """(seconds, True) for an ISO 8601 time; (seconds, False) for an offset."""
    text = text.strip()
    try:
        return seconds(text), False
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp(), True
    except ValueError:
        raise ValueError(f"{text!r} is neither an offset like 90s nor an ISO 8601 time") from None


def _lines(text: str, skus: set[str]) -> tuple[tuple[str, int], ...]:
    lines: list[tuple[str, int]] = []
    for part in text.replace(";", " ").split():
        sku, qty = part, "1"
        head, sep, tail = part.rpartition("x")
        if sep and head and tail.isdigit():
            sku, qty = head, tail
        if sku not in skus:
            raise ValueError(f"unknown SKU {sku!r}")
        if int(qty) < 1:
            raise ValueError(f"{part!r}: the quantity must be at least 1")
        lines.append((sku, int(qty)))
    if not lines:
        raise ValueError("an order needs at least one line")
    return tuple(lines)


async def read_recorded(recorded: Recorded, site: Site) -> list[PlannedOrder]:
    """The orders a floorctl database received in the window, at their recorded offsets (divided by
    `rate_multiplier`), with their lines, carrier, priority and due time relative to arrival."""
    since = _instant(recorded.since)
    until = _instant(recorded.until) if recorded.until is not None else math.inf
    db = create_async_engine(recorded.database_url)
    try:
        async with db.connect() as conn:
            orders = (await conn.execute(
                select(col(OrderRow.id), col(OrderRow.received_at), col(OrderRow.carrier),
                       col(OrderRow.priority), col(OrderRow.due_at))
                .where(col(OrderRow.received_at) >= since, col(OrderRow.received_at) < until)
                .order_by(col(OrderRow.received_at)))).all()
            ids = [o.id for o in orders]
            lines: dict[int, list[tuple[str, int]]] = {}
            for chunk in range(0, len(ids), 500):
                for line in (await conn.execute(
                        select(col(OrderLineRow.order_id), col(OrderLineRow.sku), col(OrderLineRow.qty))
                        .where(col(OrderLineRow.order_id).in_(ids[chunk:chunk + 500]))
                        .order_by(col(OrderLineRow.order_id), col(OrderLineRow.line_no)))).all():
                    lines.setdefault(line.order_id, []).append((line.sku, line.qty))
    except Exception as exc:  # noqa: BLE001  any database problem is the user's to fix: say which
        raise SiteError(f"orders.recorded: cannot read {recorded.database_url}: {exc}") from None
    finally:
        await db.dispose()
    if not orders:
        raise SiteError("orders.recorded: the database holds no orders received in that window")
    skus, carriers = site.skus(), {c.id for c in site.carriers}
    start = orders[0].received_at
    planned = []
    for o in orders:
        kept = tuple((sku, qty) for sku, qty in lines.get(o.id, []) if sku in skus)
        if not kept or o.carrier not in carriers:
            continue  # an SKU or carrier the changed site does not have: skipped, counted by the caller
        due = None if o.due_at is None else (o.due_at - o.received_at)
        planned.append(PlannedOrder((o.received_at - start) / recorded.rate_multiplier, kept, o.carrier,
                                    o.priority, due))
    return planned


def _instant(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        raise SiteError(f"orders.recorded: {value!r} is not an ISO 8601 time or epoch seconds") from None


def describe(planned: list[PlannedOrder], duration: float) -> dict[str, Any]:
    express = sum(1 for o in planned if o.priority > 0)
    return {"orders": len(planned), "mean_rate_per_s": len(planned) / duration if duration else 0.0,
            "express": express}
