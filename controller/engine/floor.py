"""The order engine: drives every released order across the floor through the device ports.

One coroutine per active order walks it through its stages; each stage sends commands to the
device queues (controller.engine.dispatch). All state lives here in memory for active orders and is
written behind by the StoreWriter; the moments where a choice must survive a crash (allocation, the
pack station, the printer) wait for their batch to commit before the command goes out. Command ids
are deterministic, so a restarted engine re-sends exactly what it had sent and devices dedupe.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.domain.label import shipping_label
from controller.domain.model import (
    TERMINAL,
    InvalidTransition,
    NewOrder,
    Order,
    OrderLine,
    OrderNotFound,
    OrderRejected,
    OrderState,
    Received,
    Stock,
    StockLocation,
    Task,
)
from controller.engine.dispatch import DeviceFailed, DeviceQueue, Job
from controller.engine.stats import FloorStats
from controller.ports import (
    CommandTicket,
    Completion,
    Device,
    DeviceEvent,
    DeviceHub,
    DeviceKind,
    DeviceStatus,
    Diverted,
    ScanRead,
)
from controller.site import Site
from controller.store.tables import OrderLineRow, OrderRow, StockRow
from controller.store.writer import StoreWriter

log = logging.getLogger(__name__)

S = OrderState


@dataclass(slots=True)
class Route:
    order_id: int
    lane: str
    sorter: str


class Engine:
    def __init__(self, site: Site, hubs: list[DeviceHub], writer: StoreWriter, db: AsyncEngine, *,
                 speed: float = 1.0) -> None:
        self.site = site
        self.hubs = hubs
        self.writer = writer
        self.db = db
        self.speed = speed
        self.stats = FloorStats()
        self._counters: Counter[str] = Counter()
        self.command_counts: Counter[tuple[str, str]] = Counter()  # (device kind, outcome)
        self.orders: dict[int, Order] = {}  # active orders only; finished ones live in the database
        self.queues: dict[str, DeviceQueue] = {}
        self.stock = Stock([])
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._by_external: dict[str, int] = {}
        self._next_id = 1
        self._intake = asyncio.Lock()
        self._routes: dict[str, Route] = {}  # tote -> where the sorter must send it
        self._recirculations: Counter[str] = Counter()
        # Totes heading for each pack station (chosen, not yet packed): without them every order that
        # chooses in the same instant sees the same empty queue and herds to one station.
        self._inbound: Counter[str] = Counter()
        self._sorter_of_scan_point = {s.scan_point: s for s in site.sorters}
        self._locations = {loc.id: loc for loc in site.locations}
        self._sorters = {s.id: s for s in site.sorters}
        self._carriers = {c.id: c for c in site.carriers}
        self._skus = site.skus()
        self._plc_of = {d.id: d.plc for d in (*site.conveyors, *site.sorters)}
        self._printer_ready = asyncio.Event()
        self._divert_tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self.held_retry_s = 5.0

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._load()
        for hub in self.hubs:
            await hub.start(self._on_event)
        t = self.site.timeouts
        for hub in self.hubs:
            for device in hub.devices():
                self.queues[device.device_id] = DeviceQueue(
                    device, ack_timeout_s=t.ack_s, retries=t.retries, timing=self._timing_row,
                    on_finished=self._device_finished)
        self._started = True
        self._refresh_printers()
        for order in sorted(self.orders.values(), key=_priority):
            if order.state not in (S.HELD, S.EXCEPTION):
                self._spawn(order)
        self._held_task = asyncio.create_task(self._retry_held_periodically(), name="held-orders")
        log.info("engine started: %d active orders, %d devices", len(self.orders), len(self.queues))

    async def stop(self) -> None:
        """Stop driving orders (they resume on the next start) and write everything out."""
        self._started = False
        tasks = [*self._tasks.values(), *self._divert_tasks, getattr(self, "_held_task", None)]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        for hub in self.hubs:
            await hub.stop()
        await self.writer.flush()

    async def _load(self) -> None:
        async with self.db.connect() as conn:
            stock_rows = (await conn.execute(select(StockRow))).all()
            known = {row.location for row in stock_rows}
            locations = [StockLocation(r.location, r.sku, r.on_hand, r.reserved) for r in stock_rows]
            for loc in self.site.locations:
                if loc.id not in known:  # a new location in the site file: seed its stock
                    locations.append(StockLocation(loc.id, loc.sku, loc.stock))
                    self.writer.put_stock(loc.id, loc.sku, loc.stock, 0)
            self.stock = Stock(locations)
            max_id = (await conn.execute(select(OrderRow.id).order_by(OrderRow.id.desc()).limit(1))).scalar()
            self._next_id = (max_id or 0) + 1
            active = [s.value for s in S if s not in TERMINAL]
            rows = (await conn.execute(select(OrderRow).where(OrderRow.state.in_(active)))).all()
            lines: dict[int, list[OrderLine]] = {}
            if rows:
                ids = [r.id for r in rows]
                for chunk in range(0, len(ids), 1000):
                    part = ids[chunk:chunk + 1000]
                    for ln in (await conn.execute(select(OrderLineRow).where(OrderLineRow.order_id.in_(part))
                                                  .order_by(OrderLineRow.line_no))).all():
                        lines.setdefault(ln.order_id, []).append(
                            OrderLine(ln.line_no, ln.sku, ln.qty, ln.location, ln.picked_qty, ln.picked))
        for r in rows:
            order = Order(id=r.id, external_id=r.external_id, carrier=r.carrier, priority=r.priority,
                          lines=lines.get(r.id, []), state=S(r.state), due_at=r.due_at, reason=r.reason,
                          resume_state=S(r.resume_state) if r.resume_state else None, tote=r.tote,
                          pack_station=r.pack_station, printer=r.printer, lane=r.lane, attempt=r.attempt,
                          label_attempt=r.label_attempt,
                          stamps={s.value: getattr(r, f"{s.value}_at") for s in S
                                  if getattr(r, f"{s.value}_at") is not None})
            self.orders[order.id] = order
            self._by_external[order.external_id] = order.id
            if order.pack_station and "packed" not in order.stamps:
                self._inbound[order.pack_station] += 1
            if order.tote and order.state is S.LABELLED:
                self._route(order)
        await self.writer.flush()

    # ---- intake, cancel, resolve ---------------------------------------------------------------
    async def receive(self, new_orders: list[NewOrder]) -> list[Received]:
        self._validate(new_orders)
        async with self._intake:
            asked = {o.external_id for o in new_orders}
            known: dict[str, tuple[int, S]] = {
                ext: (self._by_external[ext], self.orders[self._by_external[ext]].state)
                for ext in asked if ext in self._by_external}
            wanted = asked - known.keys()  # not active: look in the database
            if wanted:
                async with self.db.connect() as conn:
                    for row in (await conn.execute(select(OrderRow.id, OrderRow.external_id, OrderRow.state)
                                                   .where(OrderRow.external_id.in_(wanted)))).all():
                        known[row.external_id] = (row.id, S(row.state))
            results: list[Received] = []
            created: list[Order] = []
            now = time.time()
            for new in new_orders:
                if new.external_id in known:
                    oid, state = known[new.external_id]
                    results.append(Received(oid, new.external_id, state, created=False))
                    continue
                order = Order(id=self._next_id, external_id=new.external_id, carrier=new.carrier,
                              priority=new.priority, due_at=new.due_at,
                              lines=[OrderLine(i + 1, sku, qty) for i, (sku, qty) in enumerate(new.lines)])
                self._next_id += 1
                order.enter(S.RECEIVED, now)
                self.writer.insert_order(_order_row(order), [_line_row(order.id, ln) for ln in order.lines])
                known[new.external_id] = (order.id, S.RECEIVED)
                self.orders[order.id] = order
                self._by_external[order.external_id] = order.id
                created.append(order)
                results.append(Received(order.id, new.external_id, S.RECEIVED, created=True))
        if created:
            await self.writer.flush()  # acknowledged to the WMS only once it is durable
            for order in created:
                self._spawn(order)
        return results

    def _validate(self, new_orders: list[NewOrder]) -> None:
        skus, carriers = self._skus, self._carriers
        problems: dict[str, str] = {}
        many = len(new_orders) > 1
        for i, new in enumerate(new_orders):
            prefix = f"{i}." if many else ""
            if new.carrier not in carriers:
                problems[f"{prefix}carrier"] = (f"unknown carrier {new.carrier!r} "
                                                f"(known: {', '.join(sorted(carriers))})")
            for j, (sku, _qty) in enumerate(new.lines):
                if sku not in skus:
                    problems[f"{prefix}lines.{j}.sku"] = f"unknown SKU {sku!r}"
        if problems:
            self._counters["orders_rejected"] += 1
            raise OrderRejected(problems)

    async def cancel(self, order_id: int) -> S:
        order = self.orders.get(order_id)
        if order is None:
            raise await self._why_not_active(order_id, "cancel")
        task = self._tasks.pop(order_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for line in order.lines:
            loc = self.stock.release(line, reserved=_reserved(line))
            if loc is not None:
                self._put_stock(loc)
        self._unroute(order)
        if order.pack_station and order.stamps.get("packed") is None:
            self._inbound[order.pack_station] -= 1
        self._enter(order, S.CANCELLED)
        self.stats.record_order(order.stamps["cancelled"] - order.stamps.get("received", order.stamps["cancelled"]),
                                order.stamps["cancelled"], "cancelled")
        self._finish(order)
        await self.writer.flush()
        self._retry_held()
        return order.state

    async def resolve(self, order_id: int) -> S:
        """Retry an order in exception from the stage where it failed (new command ids)."""
        order = self.orders.get(order_id)
        if order is None:
            raise await self._why_not_active(order_id, "resolve")
        if order.state is not S.EXCEPTION:
            raise InvalidTransition(f"order {order_id} is {order.state.value}, not in exception")
        order.attempt += 1
        resume = order.resume_state or S.RECEIVED
        self._enter(order, resume)
        self.writer.update_order(order.id, attempt=order.attempt)
        await self.writer.flush()
        self._spawn(order)
        return order.state

    async def _why_not_active(self, order_id: int, verb: str) -> Exception:
        async with self.db.connect() as conn:
            state = (await conn.execute(select(OrderRow.state).where(OrderRow.id == order_id))).scalar()
        if state is None:
            return OrderNotFound(f"no order {order_id}")
        return InvalidTransition(f"cannot {verb} order {order_id}: it is {state}")

    # ---- the lifecycle -------------------------------------------------------------------------
    def _spawn(self, order: Order) -> None:
        if self._started and order.id not in self._tasks:
            self._tasks[order.id] = asyncio.create_task(self._drive(order), name=f"order-{order.id}")

    async def _drive(self, order: Order) -> None:
        steps: dict[S, Callable[[Order], Awaitable[None]]] = {
            S.RECEIVED: self._allocate, S.ALLOCATED: self._pick, S.PICKING: self._pick,
            S.CONVEYED: self._pack, S.PACKED: self._label, S.LABELLED: self._sort,
            S.SORTED: self._ship,
        }
        try:
            while order.state in steps:
                before = order.state
                try:
                    await steps[order.state](order)
                except DeviceFailed as exc:
                    self._fail(order, str(exc))
                if order.state is before:
                    break  # held, or a step that could not move on
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("order %s: unexpected error", order.id)
            self._counters["engine_errors"] += 1
            self._fail(order, "internal error; see the controller log")
        finally:
            if self._tasks.get(order.id) is asyncio.current_task():
                del self._tasks[order.id]
        if order.state in TERMINAL:
            self._finish(order)

    async def _allocate(self, order: Order) -> None:
        reason = self.stock.allocate(order.lines)
        if reason is not None:
            if order.state is not S.HELD or order.reason != reason:
                self._enter(order, S.HELD, reason)
            return
        for line in order.lines:
            self.writer.update_line(order.id, line.line_no, location=line.location)
            self._put_stock(self.stock.by_location[line.location or ""])
        self._enter(order, S.ALLOCATED)
        self.stats.record_stage("allocation", _since(order, S.RECEIVED), time.time())
        await self.writer.flush()  # the locations are fixed before any light shows them

    async def _pick(self, order: Order) -> None:
        if order.state is not S.PICKING:
            self._enter(order, S.PICKING)
        open_lines = [ln for ln in order.lines if not ln.picked]
        unallocated = [ln for ln in open_lines if ln.location is None]
        if unallocated:  # the remainder of a short pick, after the exception was resolved
            remainder = [OrderLine(ln.line_no, ln.sku, ln.qty - ln.picked_qty) for ln in unallocated]
            reason = self.stock.allocate(remainder)
            if reason is not None:
                raise DeviceFailed("failed", reason)
            for ln, rem in zip(unallocated, remainder):
                ln.location = rem.location
                self.writer.update_line(order.id, ln.line_no, location=ln.location)
                self._put_stock(self.stock.by_location[ln.location or ""])
            await self.writer.flush()
        started = time.time()
        results = await asyncio.gather(*(self._pick_line(order, ln) for ln in open_lines), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, DeviceFailed):
                raise result
        failures = [r for r in results if isinstance(r, DeviceFailed)]
        short = [ln for ln in open_lines if not ln.picked]
        if failures:
            raise failures[0]
        if short:
            detail = ", ".join(f"{ln.sku} {ln.picked_qty}/{ln.qty} at {ln.location}" for ln in short)
            for ln in short:
                ln.location = None  # the remainder is allocated again when the exception is resolved
                self.writer.update_line(order.id, ln.line_no, location=None)
            raise DeviceFailed("failed", f"short pick: {detail}")
        self.stats.record_stage("picking", time.time() - started, time.time())
        await self._convey(order)

    async def _pick_line(self, order: Order, line: OrderLine) -> None:
        location = self._locations[line.location or ""]
        qty = line.qty - line.picked_qty
        light = self._device(location.pick_light)
        completion = await self._run(order, Task.PICK, light, "show", line.line_no,
                                     lambda cid: light.show(cid, location.id, qty), self.site.timeouts.pick_s)
        picked = int(completion.result.get("picked", qty))
        picked = max(0, min(picked, qty))
        line.picked_qty += picked
        loc = self.stock.confirm_pick(line.location or "", shown=qty, picked=picked)
        self._put_stock(loc)
        line.picked = line.picked_qty >= line.qty
        self.writer.update_line(order.id, line.line_no, picked_qty=line.picked_qty, picked=line.picked)

    async def _convey(self, order: Order) -> None:
        started = time.time()
        if order.pack_station is None:
            order.pack_station = self._choose_station()
            self._inbound[order.pack_station] += 1
            order.tote = order.tote or f"T{order.id:08d}"
            self.writer.update_order(order.id, pack_station=order.pack_station, tote=order.tote)
            await self.writer.flush()  # the choice survives a restart before the tote moves
        conveyor = self._device(self._conveyor_to(order.pack_station))
        station, tote = order.pack_station, order.tote or ""
        await self._run(order, Task.CONVEY, conveyor, "transport", 0,
                        lambda cid: conveyor.transport(cid, tote, station), self.site.timeouts.transport_s)
        self._enter(order, S.CONVEYED)
        self.stats.record_stage("conveying", time.time() - started, time.time())

    async def _pack(self, order: Order) -> None:
        station = self._device(order.pack_station or "")
        await self._run(order, Task.PACK, station, "pack", 0,
                        lambda cid: station.pack(cid, str(order.id), order.tote or "", order.items),
                        self.site.timeouts.pack_s)
        self._inbound[order.pack_station or ""] -= 1
        self._enter(order, S.PACKED)
        self.stats.record_stage("packing", _since(order, S.CONVEYED), time.time())

    async def _label(self, order: Order) -> None:
        carrier = self._carriers[order.carrier]
        zpl = shipping_label(order_id=order.id, external_id=order.external_id, carrier=carrier.id,
                             tote=order.tote or "", lane=carrier.lane, items=order.items)
        printers = [d for d in self.queues.values() if d.device.kind is DeviceKind.PRINTER]
        for _ in range(2 * len(printers) + 1):
            if order.printer is None or not self.queues[order.printer].usable:
                if order.printer is not None:  # it went away before printing: use a new id elsewhere
                    order.label_attempt += 1
                order.printer = await self._available_printer()
                self.writer.update_order(order.id, printer=order.printer, label_attempt=order.label_attempt)
                await self.writer.flush()
            printer = self._device(order.printer)
            try:
                await self._run(order, Task.LABEL, printer, "print", 0,
                                lambda cid, p=printer: p.print_label(cid, zpl), self.site.timeouts.print_s)
            except DeviceFailed as exc:
                if exc.reason.startswith(("bad_zpl", "rejected")):
                    raise
                self.queues[printer.device_id].take_out_of_rotation(exc.reason)
                self._refresh_printers()
                order.printer = None
                order.label_attempt += 1
                continue
            self._enter(order, S.LABELLED)
            self.stats.record_stage("labelling", _since(order, S.PACKED), time.time())
            return
        raise DeviceFailed("failed", "no printer could print the label", where="label")

    async def _sort(self, order: Order) -> None:
        route = self._route(order)
        sorter = self._device(route.sorter)
        timeout = self.site.timeouts.divert_s * (self._sorters[route.sorter].max_recirculations + 2)
        completion = await self._run(order, Task.INDUCT, sorter, "induct", 0,
                                     lambda cid: sorter.induct(cid, order.tote or ""), timeout)
        lane = completion.result.get("lane")
        self._unroute(order)
        if lane != route.lane:
            raise DeviceFailed("failed", f"sorted to {lane or 'no lane'} instead of {route.lane}",
                               where=f"sort at {route.sorter}")
        order.lane = lane
        self.writer.update_order(order.id, lane=lane)
        self._enter(order, S.SORTED)
        self.stats.record_stage("sorting", _since(order, S.LABELLED), time.time())

    async def _ship(self, order: Order) -> None:
        self._enter(order, S.SHIPPED)
        self.stats.record_order(order.stamps["shipped"] - order.stamps["received"], time.time(), "shipped")

    # ---- divert decisions: the sorter's scanner asks, we answer within its budget ----------------
    def _on_scan(self, scan: ScanRead) -> None:
        sorter = self._sorter_of_scan_point.get(scan.scan_point)
        if sorter is None:
            self._counters["scans_conveyor"] += 1
            return
        if scan.barcode is None:
            self._counters["no_reads"] += 1
            return  # nothing to answer: the sorter recirculates the tote and scans it again
        route = self._routes.get(scan.barcode)
        if route is None:
            self._counters["unknown_totes"] += 1
            lane, order_id = sorter.exception_lane, None
        elif self._recirculations[scan.barcode] >= sorter.max_recirculations:
            lane, order_id = sorter.exception_lane, route.order_id
        else:
            lane, order_id = route.lane, route.order_id
        queue = self.queues.get(sorter.id)
        if queue is None:
            return
        device: Any = queue.device
        command_id = f"d.{sorter.id}.{scan.scan_id}"
        job = Job((0,), command_id, "divert", Task.DIVERT.value, order_id,
                  lambda: device.divert(command_id, scan.scan_id, lane),
                  self._wall(self.site.timeouts.divert_s))
        task = asyncio.create_task(self._divert(queue, job))
        self._divert_tasks.add(task)
        task.add_done_callback(self._divert_tasks.discard)

    async def _divert(self, queue: DeviceQueue, job: Job) -> None:
        try:
            await queue.run(job)
        except DeviceFailed as exc:
            self._counters["divert_failures"] += 1
            log.info("divert %s: %s", job.command_id, exc)

    def _route(self, order: Order) -> Route:
        carrier = self._carriers[order.carrier]
        route = Route(order.id, carrier.lane, carrier.sorter)
        self._routes[order.tote or ""] = route
        return route

    def _unroute(self, order: Order) -> None:
        if order.tote:
            self._routes.pop(order.tote, None)
            self._recirculations.pop(order.tote, None)

    # ---- device events -------------------------------------------------------------------------
    def _on_event(self, event: DeviceEvent) -> None:
        try:
            if isinstance(event, ScanRead):
                self._on_scan(event)
            elif isinstance(event, Diverted):
                if event.lane is None and event.barcode:
                    self._recirculations[event.barcode] += 1
                    self._counters["recirculations"] += 1
            elif isinstance(event, DeviceStatus):
                queue = self.queues.get(event.device_id)
                if queue is not None:
                    queue.update_status(event)
                    if event.kind is DeviceKind.PRINTER:
                        self._refresh_printers()
        except Exception:  # an event handler must never take the adapters down
            log.exception("device event %r", event)
            self._counters["event_errors"] += 1

    def count(self, event: str) -> None:
        self._counters[event] += 1

    @property
    def counters(self) -> Counter[str]:
        """The engine's own event counts and the adapters' (bad payloads, reconnects, ...)."""
        merged = Counter(self._counters)
        for hub in self.hubs:
            for name, n in getattr(hub, "counters", {}).items():
                merged[f"{type(hub).__name__.lower().removesuffix('hub')}_{name}"] += n
        return merged

    def _timing_row(self, row: dict[str, Any]) -> None:
        self.command_counts[(row["device_kind"], row["outcome"])] += 1
        self.writer.timing(row)

    def _device_finished(self, device: Device, seconds: float) -> None:
        self.stats.record_device(device.device_id, device.kind.value, seconds, time.time())

    # ---- helpers -----------------------------------------------------------------------------
    async def _run(self, order: Order, task: Task, device: Any, command: str, part: int | str,
                   send: Callable[[str], Awaitable[CommandTicket]], timeout_s: float) -> Completion:
        command_id = order.command_id(task, part)
        job = Job(_priority(order), command_id, command, task.value, order.id, lambda: send(command_id),
                  self._wall(timeout_s))
        try:
            return await self.queues[device.device_id].run(job)
        except DeviceFailed as exc:
            exc.where = exc.where or f"{task.value} at {device.device_id}"
            raise

    def _wall(self, floor_seconds: float) -> float:
        return floor_seconds / self.speed

    def _device(self, device_id: str) -> Any:
        return self.queues[device_id].device

    def _conveyor_to(self, station: str) -> str:
        candidates = [cv.id for cv in self.site.conveyors if station in cv.destinations]
        return min(candidates, key=lambda cid: self.queues[cid].load if cid in self.queues else math.inf)

    def _choose_station(self) -> str:
        """The pack station with the fewest totes queued, packing or on their way; ties take turns."""
        queues = [q for q in self.queues.values() if q.device.kind is DeviceKind.PACK_STATION]
        usable = [q for q in queues if q.usable] or queues
        return min(usable, key=lambda q: (self._inbound[q.device.device_id], q.served)).device.device_id

    async def _available_printer(self) -> str:
        while True:
            usable = [q for q in self.queues.values() if q.device.kind is DeviceKind.PRINTER and q.usable]
            if usable:
                return min(usable, key=DeviceQueue.preference).device.device_id
            self._printer_ready.clear()
            await self._printer_ready.wait()

    def _refresh_printers(self) -> None:
        if any(q.usable for q in self.queues.values() if q.device.kind is DeviceKind.PRINTER):
            self._printer_ready.set()

    def _enter(self, order: Order, state: S, reason: str | None = None) -> None:
        now = time.time()
        order.enter(state, now, reason)
        self.writer.update_order(order.id, state=state.value, reason=reason,
                                 resume_state=order.resume_state.value if order.resume_state else None,
                                 **{f"{state.value}_at": now})

    def _fail(self, order: Order, reason: str) -> None:
        log.info("order %s -> exception: %s", order.id, reason)
        now = time.time()
        order.fail(now, reason)
        self.writer.update_order(order.id, state=S.EXCEPTION.value, reason=reason,
                                 resume_state=order.resume_state.value if order.resume_state else None,
                                 exception_at=now)
        self.stats.record_order(now - order.stamps.get("received", now), now, "exception")
        self._counters["order_exceptions"] += 1

    def _finish(self, order: Order) -> None:
        self.orders.pop(order.id, None)
        self._by_external.pop(order.external_id, None)

    def _put_stock(self, loc: StockLocation) -> None:
        self.writer.put_stock(loc.location, loc.sku, loc.on_hand, loc.reserved)

    def _retry_held(self) -> None:
        for order in sorted((o for o in self.orders.values() if o.state is S.HELD), key=_priority):
            self._spawn(order)

    async def _retry_held_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.held_retry_s)
            self._retry_held()

    # ---- snapshots for the API and the panel ----------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        out = []
        for q in self.queues.values():
            st = q.device.status
            out.append({"device_id": q.device.device_id, "kind": q.device.kind.value, "protocol": q.device.protocol,
                        "online": st.online, "state": st.state, "fault": st.fault, "queue_length": q.queued,
                        "in_flight": q.in_flight, "in_rotation": q.in_rotation})
        return out

    def health(self) -> dict[str, Any]:
        """Links up (the broker, each PLC's devices), faulted devices, and the work in hand."""
        broker = all(bool(getattr(hub, "connected", True)) for hub in self.hubs)
        plcs = {plc.id: all(q.device.status.online for q in self.queues.values()
                            if self._plc_of.get(q.device.device_id) == plc.id) for plc in self.site.plcs}
        faults = {q.device.device_id: q.device.status.fault for q in self.queues.values() if q.device.status.fault}
        return {"ok": self._started and broker and all(plcs.values()), "broker": broker, "plcs": plcs,
                "faults": faults, "writer_backlog": self.writer.backlog, "active_orders": len(self.orders)}


def _priority(order: Order) -> tuple[Any, ...]:
    return (-order.priority, order.due_at if order.due_at is not None else math.inf, order.id)


def _since(order: Order, state: S) -> float:
    return time.time() - order.stamps.get(state.value, time.time())


def _reserved(line: OrderLine) -> int:
    """What a line still holds reserved: derived, so it survives a restart without a column."""
    return line.qty - line.picked_qty if line.location is not None and not line.picked else 0


def _order_row(order: Order) -> dict[str, Any]:
    row: dict[str, Any] = {"id": order.id, "external_id": order.external_id, "carrier": order.carrier,
                           "priority": order.priority, "due_at": order.due_at, "state": order.state.value,
                           "attempt": 0, "label_attempt": 0}
    for stage, at in order.stamps.items():
        row[f"{stage}_at"] = at
    return row


def _line_row(order_id: int, line: OrderLine) -> dict[str, Any]:
    return {"order_id": order_id, "line_no": line.line_no, "sku": line.sku, "qty": line.qty,
            "location": None, "picked_qty": 0, "picked": False}
