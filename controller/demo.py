"""`floorctl demo`: an embedded broker, every simulator of a site, the controller and the API, fed with
generated orders; and the run's summary, computed from what the database recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import sys
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from controller.bootstrap import Controller, Settings, freeze_startup_heap
from controller.domain.model import NewOrder
from controller.engine.stats import percentile
from controller.security.auth import new_password
from controller.site import Site
from controller.store.insight import floor_insight
from controller.store.repository import stamps_of
from controller.store.tables import DeviceCommandRow, OrderRow
from simulators.broker import EmbeddedBroker, free_port
from simulators.faults import Timeline
from simulators.faults.player import playing
from simulators.site_devices import simulated_floor

STAGES = ("allocated", "picking", "conveyed", "packed", "labelled", "sorted", "shipped")
DONE_STATES = ("shipped", "exception", "cancelled", "held")
LISTED = 20  # unfinished and held orders named one by one in the printed summary (--json lists all)


@dataclass
class Scope:
    """The orders a demo run accounts for: every order the controller holds for this run.

    That is every order received after the start (`after_id`: the highest id in the database then),
    whether the demo submitted it or someone posted it through the API, and the unfinished orders it
    resumed from an earlier run (`--keep-data`). `submitted` are the ids the engine gave the demo's
    generated orders, whose external ids start with `prefix`. `after_id=None` counts exactly the
    resumed and submitted ids.
    """

    after_id: int | None = 0
    prefix: str = "DEMO-"
    resumed: list[int] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)


@dataclass
class DemoOptions:
    site: Site
    site_path: Path
    port: int = 8000
    orders: int | None = None  # None: a stream until Ctrl-C
    rate: float = 10.0  # orders offered per second
    speed: float = 50.0
    exit_when_done: bool = False
    as_json: bool = False
    data_dir: Path = Path("data/demo")
    keep_data: bool = False
    broker_url: str | None = None  # an external broker; None starts an embedded one
    database_url: str | None = None
    seed: int = 1
    timeout_s: float = 900.0
    no_auth: bool = False  # benchmarks: the API lets every request in
    faults: Timeline | None = None  # played once the floor is up (--faults)


class OrderGenerator:
    """Plausible e-commerce orders for a site: 1-3 lines, mostly single items, a few rush orders."""

    def __init__(self, site: Site, run: str, seed: int, skus: Iterable[str] | None = None) -> None:
        self.skus = sorted(site.skus() if skus is None else skus)
        self.carriers = [c.id for c in site.carriers]
        self.run = run
        self.random = random.Random(seed)
        self.count = 0

    def next(self) -> NewOrder:
        self.count += 1
        r = self.random
        skus = r.sample(self.skus, k=min(len(self.skus), r.choice((1, 1, 1, 2, 2, 3))))
        lines = tuple((sku, r.choice((1, 1, 1, 2, 3))) for sku in skus)
        return NewOrder(f"DEMO-{self.run}-{self.count:06d}", lines, r.choice(self.carriers),
                        priority=5 if r.random() < 0.1 else 0)


async def run_demo(opts: DemoOptions) -> int:
    out = sys.stderr
    run = time.strftime("%Y%m%d%H%M%S")
    if not opts.keep_data:
        fresh_start(opts.data_dir)
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    embedded = None if opts.broker_url else EmbeddedBroker(data_dir=opts.data_dir / "broker")
    async with contextlib.AsyncExitStack() as stack:
        if embedded is not None:
            await stack.enter_async_context(embedded)
        broker_url = embedded.url if embedded is not None else str(opts.broker_url)
        ports = {plc.id: free_port() for plc in opts.site.plcs}
        async with simulated_floor(opts.site, broker_url=broker_url, speed=opts.speed,
                                   plc_ports=ports) as floor:
            settings = Settings(site=opts.site.with_broker_url(broker_url), data_dir=opts.data_dir,
                                database_url=opts.database_url, broker_url=broker_url,
                                plc_endpoints=floor.endpoints, speed=opts.speed, port=opts.port,
                                auth=not opts.no_auth)
            controller = Controller(settings)
            await controller.start()
            login = await _demo_login(controller, opts.no_auth)
            freeze_startup_heap()
            try:
                scope = Scope(after_id=await _highest_id(controller.db), prefix=f"DEMO-{run}-",
                              resumed=sorted(controller.engine.orders))
                resumed = len(scope.resumed)
                print(f"floorctl demo: site {opts.site_path} at {opts.speed:g}x speed"
                      + (f", resuming {resumed} orders left in {opts.data_dir}" if resumed else "") + "\n"
                      f"  API and panel  {controller.api_url}/  (OpenAPI: {controller.api_url}/docs)\n"
                      f"  log in         {login}\n"
                      f"  MQTT broker    {broker_url}\n"
                      + "".join(f"  PLC {pid:<10} {url}\n" for pid, url in floor.endpoints.items())
                      + f"  database       {_redact(controller.url)}", file=out, flush=True)
                async with playing(opts.faults, floor, opts.speed, broker=embedded):
                    await _feed_and_watch(controller, opts, OrderGenerator(opts.site, run, opts.seed), scope)
                summary = await summarise(controller.db, scope, controller.writer.stats.timing_rows,
                                          site=opts.site, time_scale=opts.speed)
                summary["speed"] = opts.speed
            finally:
                await controller.stop()
    if opts.as_json:
        print(json.dumps(summary))
    else:
        print(render_summary(summary))
    if opts.exit_when_done and (summary["orders"]["lost"] or summary["orders"]["unfinished"]):
        return 1
    return 0


def fresh_start(data_dir: Path) -> None:
    """A demo starts from the site file's stock and no orders: remove what an earlier demo left."""
    for name in ("floorctl.db", "floorctl.db-wal", "floorctl.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / "broker", ignore_errors=True)


async def _feed_and_watch(controller: Controller, opts: DemoOptions, gen: OrderGenerator,
                          scope: Scope) -> None:
    """Feed orders until `opts.orders` are in and (with `exit_when_done`) every order the engine holds
    is done, or until cancelled (Ctrl-C). The ids the engine gave the demo's orders go to `scope`."""
    engine = controller.engine
    ids = scope.submitted
    started = time.monotonic()
    last_print = 0.0
    interactive = sys.stderr.isatty()
    try:
        while True:
            now = time.monotonic()
            due = int((now - started) * opts.rate) + 1
            if opts.orders is not None:
                due = min(due, opts.orders)
            if due > gen.count:
                batch = [gen.next() for _ in range(due - gen.count)]
                ids.extend(r.id for r in await engine.receive(batch))
            if now - last_print >= (1.0 if interactive else 5.0):
                last_print = now
                counts = await _state_counts(controller.db, scope)
                line = _progress(len(ids), opts.orders, counts, now - started)
                print(("\r" + line + "\x1b[K") if interactive else line, end="" if interactive else "\n",
                      file=sys.stderr, flush=True)
            if opts.exit_when_done and opts.orders is not None and len(ids) >= opts.orders:
                # engine.orders holds every active order: the demo's, the API's and resumed ones
                if all(order.state.value in DONE_STATES for order in list(engine.orders.values())):
                    break
                if now - started > opts.timeout_s:
                    print(f"\nfloorctl demo: not done after {opts.timeout_s:.0f} s; "
                          "summarising what finished", file=sys.stderr)
                    break
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        pass
    if interactive:
        print(file=sys.stderr)
    await engine.writer.flush()


DEMO_ADMIN = "admin"


async def _demo_login(controller: Controller, no_auth: bool) -> str:
    """How to log in, for the banner: the admin gets a fresh random password at every start (the
    one printed is the only copy), as Jupyter prints its token."""
    if no_auth:
        return "not needed: --no-auth (every request is let in)"
    password = new_password()
    await controller.accounts.set_up_user(DEMO_ADMIN, "admin", password)
    return f"{DEMO_ADMIN} / {password}   (a new password at every start; floorctl users add for more)"


async def _highest_id(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.max(col(OrderRow.id))))).scalar() or 0)


def _in_scope(scope: Scope) -> list[Any]:
    """WHERE clauses that together select the scope's orders (listed ids in chunks)."""
    listed = scope.resumed if scope.after_id is not None else sorted({*scope.resumed, *scope.submitted})
    chunks = [listed[i:i + 1000] for i in range(0, len(listed), 1000)]
    by_id = [] if scope.after_id is None else [col(OrderRow.id) > scope.after_id]
    return [*by_id, *(col(OrderRow.id).in_(chunk) for chunk in chunks)]


async def _state_counts(db: AsyncEngine, scope: Scope) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with db.connect() as conn:
        for where in _in_scope(scope):
            query = select(col(OrderRow.state), func.count()).where(where).group_by(col(OrderRow.state))
            for state, n in (await conn.execute(query)).all():
                counts[state] = counts.get(state, 0) + n
    return counts


def _progress(submitted: int, total: int | None, counts: dict[str, int], elapsed: float) -> str:
    shipped = counts.get("shipped", 0)
    busy = sum(n for s, n in counts.items() if s not in DONE_STATES)
    of = f"/{total}" if total else ""
    return (f"[{elapsed:6.1f}s] submitted {submitted}{of}  in flight {busy}  shipped {shipped}  "
            f"exception {counts.get('exception', 0)}  held {counts.get('held', 0)}  "
            f"{shipped / elapsed if elapsed > 0 else 0:.1f} shipped/s")


async def summarise(db: AsyncEngine, scope: Scope | list[int], timing_rows_written: int, *,
                    site: Site | None = None, time_scale: float = 1.0) -> dict[str, Any]:
    """The run's figures, from the database: what was recorded is what counts. Every order in the
    scope counts, not only those the demo submitted: orders posted through the API during the run and
    orders resumed from an earlier one are on the same floor. A plain list of ids (the benchmark's
    steps) counts exactly those orders. With the `site`, what limited the floor from the first of
    these orders received to the last one finished (controller/domain/insight.py), in floor time
    (`time_scale`: the floor's speed)."""
    if isinstance(scope, list):
        scope = Scope(after_id=None, prefix="", submitted=scope)
    orders: list[Any] = []
    commands: list[Any] = []
    async with db.connect() as conn:
        for where in _in_scope(scope):
            orders += (await conn.execute(select(OrderRow).where(where).order_by(col(OrderRow.id)))).all()
        ids = [o.id for o in orders]
        for i in range(0, len(ids), 1000):
            query = select(DeviceCommandRow).where(col(DeviceCommandRow.order_id).in_(ids[i:i + 1000]))
            commands += (await conn.execute(query)).all()
    orders.sort(key=lambda o: o.id)
    states: dict[str, int] = {}
    for o in orders:
        states[o.state] = states.get(o.state, 0) + 1
    cycle = [o.shipped_at - o.received_at for o in orders if o.shipped_at]
    stages: dict[str, dict[str, float | None]] = {}
    stamps = [stamps_of(o) for o in orders]
    for prev, stage in zip(("received", *STAGES), STAGES, strict=False):
        stages[stage] = _pcts([s[stage] - s[prev] for s in stamps if s.get(stage) and s.get(prev)])
    by_device: dict[str, list[float]] = {}
    for c in commands:
        if c.completed_at is not None:
            by_device.setdefault(f"{c.device_kind}:{c.device_id}", []).append(c.completed_at - c.queued_at)
    devices = {key: _pcts(v) for key, v in sorted(by_device.items())}
    unfinished = [_named(o) for o in orders if o.state not in DONE_STATES]
    held = [_named(o) for o in orders if o.state == "held"]
    found = set(ids)
    resumed = set(scope.resumed)
    submitted = set(scope.submitted)
    return {
        # submitted: counted from what was recorded, as the demo's own external ids, so an order
        # received in the very moment of a Ctrl-C (in the database, its id not yet handed back)
        # counts as the demo's and not as a stranger's
        "orders": {"total": len(orders),
                   "submitted": len(submitted) + sum(1 for o in orders if o.id not in resumed
                                                     and o.id not in submitted and scope.prefix
                                                     and o.external_id.startswith(scope.prefix)),
                   "posted": sum(1 for o in orders if o.id not in resumed and o.id not in submitted
                                 and not o.external_id.startswith(scope.prefix)),
                   "resumed": len(scope.resumed),
                   "shipped": states.get("shipped", 0),
                   "exception": states.get("exception", 0), "held": len(held),
                   "cancelled": states.get("cancelled", 0), "unfinished": len(unfinished),
                   "lost": sum(1 for i in scope.submitted if i not in found)},
        "unfinished_orders": unfinished,
        "held_orders": held,
        "cycle_time_s": _pcts(cycle),
        "stages_s": stages,
        "devices_s": devices,
        "timing_rows": len(commands),
        "timing_rows_written": timing_rows_written,
        # by duration: what took longest, which is not what limits the floor (the insight says that)
        "slowest": {"stage": _slowest(stages), "device": _slowest(devices)},
        "insight": await _insight(db, orders, site, time_scale),
    }


async def _insight(db: AsyncEngine, orders: list[Any], site: Site | None,
                   time_scale: float) -> dict[str, Any] | None:
    """The bottleneck, the runner-up and the capacities over the run's window; None without a site."""
    stamps = [t for o in orders for t in stamps_of(o).values()]
    if site is None or not stamps:
        return None
    found = await floor_insight(db, site, min(stamps), max(stamps) + 0.001, time_scale)
    full = found.as_dict()
    kept = ("window_s", "time_scale", "verdict", "bottleneck", "runner_up", "kinds", "capacities", "orders")
    return {key: full[key] for key in kept}


def _named(order: Any) -> dict[str, Any]:
    return {"id": order.id, "external_id": order.external_id, "state": order.state}


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(percentile(ordered, 50), 4),
            "p95": round(percentile(ordered, 95), 4),
            "max": round(ordered[-1], 4)}


def _slowest(table: dict[str, dict[str, float | None]]) -> str | None:
    timed = {k: v["p95"] for k, v in table.items() if v["p95"] is not None}
    return max(timed, key=lambda k: timed[k]) if timed else None


def render_summary(s: dict[str, Any]) -> str:
    o = s["orders"]
    c = s["cycle_time_s"]
    lines = [
        "",
        (f"Orders     {o['total']} held by the controller: submitted by the demo {o['submitted']}  "
         f"posted through the API {o['posted']}  resumed {o['resumed']}"),
        (f"           shipped {o['shipped']}  exception {o['exception']}  held {o['held']}  "
         f"cancelled {o['cancelled']}  unfinished {o['unfinished']}  lost {o['lost']}"),
        *_listing("Unfinished", s.get("unfinished_orders", [])),
        *_listing("Held", s.get("held_orders", [])),
        (f"Cycle time p50 {_fmt(c['p50'])}  p95 {_fmt(c['p95'])}  max {_fmt(c['max'])}  "
         f"(wall clock at {s.get('speed', 1):g}x floor speed)"),
        f"Timing rows {s['timing_rows']}",
        "",
        f"{'stage (time to reach)':<28}{'n':>7}{'p50':>10}{'p95':>10}{'max':>10}",
    ]
    for name, v in s["stages_s"].items():
        lines.append(f"{name:<28}{v['n']:>7}{_fmt(v['p50']):>10}{_fmt(v['p95']):>10}{_fmt(v['max']):>10}")
    lines += ["", f"{'device (queued to completed)':<28}{'n':>7}{'p50':>10}{'p95':>10}{'max':>10}"]
    for name, v in s["devices_s"].items():
        lines.append(f"{name:<28}{v['n']:>7}{_fmt(v['p50']):>10}{_fmt(v['p95']):>10}{_fmt(v['max']):>10}")
    lines += _what_limits(s.get("insight"))
    return "\n".join(lines)


def _what_limits(insight: dict[str, Any] | None) -> list[str]:
    """The bottleneck by utilisation and waiting, with its evidence; the kinds; their capacities."""
    if insight is None:
        return []
    scale = insight["time_scale"]
    lines = ["", f"What limited the floor (floor time: {insight['window_s']:.0f} s at {scale:g}x)"]
    found, second = insight["bottleneck"], insight["runner_up"]
    if found is None:
        lines += textwrap.wrap(insight["verdict"], width=100, initial_indent="  ", subsequent_indent="    ")
    else:
        lines.append(f"  Bottleneck: {found['label']}")
        for item in found["evidence"]:
            lines += textwrap.wrap(item, width=100, initial_indent="    - ", subsequent_indent="      ")
    if second is not None:
        rate = second["capacity_orders_per_s"]
        lines.append(f"  {'Runner-up' if found else 'First to saturate'}: {second['label']}: utilisation "
                     f"{_pct(second['utilisation'])}"
                     + ("" if rate is None else f", saturates at {rate:.3g} orders/s"))
    head = (f"  {'kind':<14}{'busy':>6}{'wait mean':>11}{'wait p95':>10}{'grows':>7}{'waiting':>9}"
            f"{'saturates at (orders/s)':>26}")
    lines += ["", head]
    capacity = {c["kind"]: c for c in insight["capacities"]}
    for k in insight["kinds"]:
        c = capacity.get(k["kind"], {})
        rate = c.get("orders_per_s")
        at = "-" if rate is None else f"{rate:.3g} ({rate * scale:.3g}/s wall)"
        share = k["waiting_share"]
        lines.append(f"  {k['kind']:<14}{_pct(k['utilisation']):>6}{_fmt(k['queue_wait_mean_s']):>11}"
                     f"{_fmt(k['queue_wait_p95_s']):>10}{'yes' if k['growth']['grows'] else 'no':>7}"
                     f"{_pct(share):>9}{at:>26}")
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _listing(title: str, orders: list[dict[str, Any]]) -> list[str]:
    """`Unfinished 3: 12 DEMO-1 (picking), ...`, at most LISTED of them, by id."""
    if not orders:
        return []
    named = [f"{o['id']} {o['external_id']} ({o['state']})" for o in orders[:LISTED]]
    more = f", and {len(orders) - LISTED} more" if len(orders) > LISTED else ""
    return textwrap.wrap(f"{title} {len(orders)}: " + ", ".join(named) + more, width=100,
                         subsequent_indent=" " * 11, break_on_hyphens=False)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}ms" if v < 1 else f"{v:.2f}s"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
