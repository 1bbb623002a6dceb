"""The order engine: drives every released order across the floor through the device ports.

One coroutine per active order walks it through its stages; the domain decides (the order's state
machine, stock allocation, which station, printer or lane), this module coordinates: it sends
commands to the device queues (controller.engine.dispatch), saves through the repository, and
records the floor's statistics. All state lives in memory for active orders and is written behind;
the moments where a choice must survive a crash (allocation, the pack station, the printer) wait
for their batch to commit before the command goes out. Command ids are deterministic, so a
restarted engine re-sends exactly what it had sent and devices dedupe.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from controller.contract.reasons import is_command_error
from controller.domain.choice import choose_conveyor, choose_pack_station, choose_printer
from controller.domain.devices import ControlEvent, ControlRefused, DeviceAction, DeviceNotFound, WaitingOn
from controller.domain.label import shipping_label
from controller.domain.model import (
    TERMINAL,
    InvalidTransition,
    NewOrder,
    Order,
    OrderConflict,
    OrderLine,
    OrderNotFound,
    OrderRejected,
    OrderState,
    Received,
    Stock,
    StockLocation,
    Task,
    check_new_orders,
    differences,
)
from controller.domain.routing import DivertReason, Route
from controller.engine.devices import FloorDevices
from controller.engine.dispatch import CommandGate, DeviceFailed, DeviceQueue, Job
from controller.engine.sortation import SortDesk
from controller.engine.stats import FloorStats
from controller.ports import (
    CommandRejected,
    CommandTicket,
    Completion,
    Device,
    DeviceEvent,
    DeviceHub,
    DeviceKind,
    DeviceStatus,
    DeviceUnavailable,
    Diverted,
    Printer,
    ScanRead,
)
from controller.site import Site
from controller.store.repository import OrderRepository
from controller.store.writer import StoreWriter

log = logging.getLogger(__name__)

S = OrderState

# Stages timed from the moment the order entered the state before them (picking and conveying are
# timed from when their commands start, in the stage itself).
_STAGE_OF = {S.ALLOCATED: ("allocation", S.RECEIVED), S.PACKED: ("packing", S.CONVEYED),
             S.LABELLED: ("labelling", S.PACKED), S.SORTED: ("sorting", S.LABELLED)}


class Engine:
    def __init__(self, site: Site, hubs: list[DeviceHub], writer: StoreWriter, db: AsyncEngine, *,
                 speed: float = 1.0, gate: CommandGate | None = None) -> None:
        self.site = site
        self.hubs = hubs
        self.writer = writer
        self.repo = OrderRepository(db, writer)
        self.speed = speed
        self.stats = FloorStats()
        self._counters: Counter[str] = Counter()
        self.command_counts: Counter[tuple[str, str]] = Counter()  # (device kind, outcome)
        self.orders: dict[int, Order] = {}  # active orders only; finished ones live in the database
        self.floor = FloorDevices(site, hubs, timing=self._timing_row, on_finished=self._device_finished,
                                  speed=speed, gate=gate)
        self.queues = self.floor.queues
        self.sorting = SortDesk(site, self.floor.sorters, self.floor.queues, self._counters,
                                divert_timeout_s=self._wall(site.timeouts.divert_s))
        self.stock = Stock([])
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._by_external: dict[str, int] = {}
        self._next_id = 1
        self._intake = asyncio.Lock()
        # Totes heading for each pack station (chosen, not yet packed): without them every order that
        # chooses in the same instant sees the same empty queue and herds to one station.
        self._inbound: Counter[str] = Counter()
        self._locations = {loc.id: loc for loc in site.locations}
        self._sorters = {s.id: s for s in site.sorters}
        self._carriers = {c.id: c for c in site.carriers}
        self._skus = site.skus()
        self._held_task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()  # fire-and-forget commands (label cancels)
        # Called with every device control, refused ones too (the audit trail, the alarms).
        self.control_listeners: list[Callable[[ControlEvent], None]] = []
        # Called when a device goes online or offline, or its fault starts, changes or ends (the alarm
        # monitor checks at once, not on its tick); not for busy/idle, which a busy floor reports
        # hundreds of times a second.
        self.status_listeners: list[Callable[[DeviceStatus], None]] = []
        self._conditions: dict[str, tuple[bool, str | None]] = {}  # device -> (online, fault) last told
        self._controls = itertools.count(1)
        self._started = False
        self._watching = False  # the hubs are up and the queues attached (a standby stops here)
        self._routing = False  # the active orders are loaded: scans are answered from here on
        self.held_retry_s = 5.0
        # Who leads, in a hot-standby pair (controller/ha): merged into health() when set.
        self.role: Callable[[], dict[str, Any]] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.lead()

    async def watch(self) -> None:
        """Connect to the devices and follow their state, without driving any order: what a hot
        standby does until it leads."""
        if self._watching:
            return
        for hub in self.hubs:
            await hub.start(self.on_event)
        self.floor.attach()
        self._watching = True

    async def lead(self) -> None:
        """Load the active orders and drive them: every command still in flight goes out again with
        its own id (devices dedupe), as after a restart."""
        await self._load()
        self._routing = True
        await self.watch()
        self._started = True
        for order in sorted(self.orders.values(), key=self._release_key):
            if order.state is not S.EXCEPTION:
                self._spawn(order)
        self._held_task = asyncio.create_task(self._retry_held_periodically(), name="held-orders")
        log.info("engine started: %d active orders, %d devices", len(self.orders), len(self.queues))

    async def stop(self) -> None:
        """Stop driving orders (they resume on the next start) and write everything out."""
        self._started = False
        tasks = [*self._tasks.values(), *self._side_tasks, *([self._held_task] if self._held_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sorting.stop()
        await self.floor.stop()
        await self.repo.flush()

    async def _load(self) -> None:
        seed = [StockLocation(loc.id, loc.sku, loc.stock) for loc in self.site.locations]
        loaded = await self.repo.load(seed)
        self.stock = Stock(loaded.stock)
        self._next_id = loaded.next_id
        for order in loaded.orders:
            self.orders[order.id] = order
            self._by_external[order.external_id] = order.id
            if order.pack_station and "packed" not in order.stamps:
                self._inbound[order.pack_station] += 1
            if order.tote and order.state is S.LABELLED:
                self._route(order)
            elif order.tote and order.state is not S.SORTED:
                # Its tote may be on the sorter already (the state written last lags what happened):
                # it goes round unanswered until the order routes it, not to the exception lane.
                self.sorting.sortation.expect(order.tote)

    # ---- intake, cancel, resolve ---------------------------------------------------------------
    async def receive(self, new_orders: list[NewOrder]) -> list[Received]:
        self._validate(new_orders)
        async with self._intake:
            asked = {o.external_id for o in new_orders}
            known: dict[str, tuple[int, S]] = {
                ext: (self._by_external[ext], self.orders[self._by_external[ext]].state)
                for ext in asked if ext in self._by_external}
            known.update(await self.repo.known_external_ids(asked - known.keys()))  # finished ones
            await self._check_same(new_orders, known)
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
                order.receive(now)
                self.repo.add(order)
                known[new.external_id] = (order.id, S.RECEIVED)
                self.orders[order.id] = order
                self._by_external[order.external_id] = order.id
                created.append(order)
                results.append(Received(order.id, new.external_id, S.RECEIVED, created=True))
        if created:
            await self.repo.flush()  # acknowledged to the WMS only once it is durable
            for order in created:
                self._spawn(order)
        return results

    async def _check_same(self, new_orders: list[NewOrder], known: dict[str, tuple[int, S]]) -> None:
        """A re-post is idempotent only with the same content; other content is a conflict."""
        if not known:
            return
        active = (self.orders.get(oid) for oid, _ in known.values())
        stored = {o.external_id: o.as_received() for o in active if o is not None}
        missing = [oid for ext, (oid, _) in known.items() if ext not in stored]
        if missing:
            stored.update({n.external_id: n for n in (await self.repo.as_received(missing)).values()})
        conflicts = {new.external_id: diff for new in new_orders if new.external_id in stored
                     if (diff := differences(new, stored[new.external_id]))}
        if conflicts:
            self._counters["orders_conflicting"] += 1
            raise OrderConflict(conflicts)

    def _validate(self, new_orders: list[NewOrder]) -> None:
        try:
            check_new_orders(new_orders, self._skus, self._carriers.keys())
        except OrderRejected:
            self._counters["orders_rejected"] += 1
            raise

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
                self.repo.put_stock(loc)
        self._unroute(order)
        if order.pack_station and order.stamps.get("packed") is None:
            self._inbound[order.pack_station] -= 1
        self._enter(order, S.CANCELLED)
        self.stats.record_order(order.stamps["cancelled"] - order.stamps.get("received",
                                                                             order.stamps["cancelled"]),
                                order.stamps["cancelled"], "cancelled")
        self._finish(order)
        await self.repo.flush()
        self._retry_held()
        return order.state

    async def resolve(self, order_id: int) -> S:
        """Retry an order in exception from the stage where it failed (new command ids)."""
        order = self.orders.get(order_id)
        if order is None:
            raise await self._why_not_active(order_id, "resolve")
        order.resolve(time.time())
        self.repo.save_state(order)
        await self.repo.flush()
        self._spawn(order)
        return order.state

    async def _why_not_active(self, order_id: int, verb: str) -> Exception:
        state = await self.repo.state_of(order_id)
        if state is None:
            return OrderNotFound(f"no order {order_id}")
        return InvalidTransition(f"cannot {verb} order {order_id}: it is {state.value}")

    # ---- the lifecycle -------------------------------------------------------------------------
    def _release_key(self, order: Order) -> tuple[Any, ...]:
        return release_key(order, self.site.release)

    def _spawn(self, order: Order) -> None:
        if self._started and order.id not in self._tasks:
            self._tasks[order.id] = asyncio.create_task(self._drive(order), name=f"order-{order.id}")

    async def _drive(self, order: Order) -> None:
        steps: dict[S, Callable[[Order], Awaitable[None]]] = {
            S.RECEIVED: self._allocate, S.HELD: self._allocate, S.ALLOCATED: self._pick,
            S.PICKING: self._pick, S.CONVEYED: self._pack, S.PACKED: self._label, S.LABELLED: self._sort,
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
            if order.state not in TERMINAL and order.state is not S.EXCEPTION:
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
        self._save_allocation(order, order.lines)
        self._enter(order, S.ALLOCATED)
        await self.repo.flush()  # the locations are fixed before any light shows them

    def _save_allocation(self, order: Order, lines: list[OrderLine]) -> None:
        for line in lines:
            self.repo.save_line(order, line)
            self.repo.put_stock(self.stock.by_location[line.location or ""])

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
            for ln, rem in zip(unallocated, remainder, strict=True):
                ln.location = rem.location
            self._save_allocation(order, unallocated)
            await self.repo.flush()
        started = time.time()
        results = await asyncio.gather(*(self._pick_line(order, ln) for ln in open_lines),
                                       return_exceptions=True)
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
                self.repo.save_line(order, ln)
            raise DeviceFailed("failed", f"short pick: {detail}")
        self.stats.record_stage("picking", time.time() - started, time.time())
        await self._convey(order)

    async def _pick_line(self, order: Order, line: OrderLine) -> None:
        while True:
            location = self._locations[line.location or ""]
            if not self.queues[location.pick_light].usable and self._move_pick(order, line):
                continue
            qty = line.qty - line.picked_qty
            light = self.floor.pick_lights[location.pick_light]
            # The location is part of the id: a line moved to another location is another command.
            part = f"{line.line_no}@{location.id}"
            clear_id = f"{order.command_id(Task.PICK, part)}.clear"
            try:
                completion = await self._run(order, Task.PICK, light, "show", part,
                                             functools.partial(light.show, location=location.id, qty=qty),
                                             self.site.timeouts.pick_s,
                                             after_timeout=functools.partial(light.clear, clear_id))
            except DeviceFailed as exc:
                if exc.reason.startswith("rerouted"):
                    self._move_pick(order, line)  # elsewhere if the SKU is, else here again (it waits)
                    continue
                raise
            break
        picked = _picked(completion.result, qty)
        line.picked_qty += picked
        self.repo.put_stock(self.stock.confirm_pick(line.location or "", shown=qty, picked=picked))
        line.picked = line.picked_qty >= line.qty
        self.repo.save_line(order, line)

    def _move_pick(self, order: Order, line: OrderLine) -> bool:
        """The light of the line's location takes no work: reserve the rest at a location whose
        light does, if the SKU has one with stock."""
        avoid = {loc.id for loc in self.site.locations if not self.queues[loc.pick_light].usable}
        changed = self.stock.move([line], avoid=avoid)
        if changed is None:
            return False
        for loc in changed:
            self.repo.put_stock(loc)
        self.repo.save_line(order, line)
        log.info("order %s line %s moved to %s", order.id, line.line_no, line.location)
        return True

    async def _convey(self, order: Order) -> None:
        started = time.time()
        if order.pack_station is None:
            stations = self.floor.candidates(self.floor.pack_stations, self._inbound)
            order.pack_station = choose_pack_station(stations)
            self._inbound[order.pack_station] += 1
            order.tote = order.tote or f"T{order.id:08d}"
            self.repo.save_assignment(order)
            await self.repo.flush()  # the choice survives a restart before the tote moves
        station, tote = order.pack_station, order.tote or ""
        reaching = self.floor.candidates(self.floor.conveyors_to(station))
        conveyor = self.floor.conveyors[choose_conveyor(reaching)]
        await self._run(order, Task.CONVEY, conveyor, "transport", 0,
                        lambda cid: conveyor.transport(cid, tote, station), self.site.timeouts.transport_s)
        self._enter(order, S.CONVEYED)
        self.stats.record_stage("conveying", time.time() - started, time.time())

    async def _pack(self, order: Order) -> None:
        station = self.floor.pack_stations[order.pack_station or ""]
        await self._run(order, Task.PACK, station, "pack", 0,
                        lambda cid: station.pack(cid, str(order.id), order.tote or "", order.items),
                        self.site.timeouts.pack_s)
        self._inbound[order.pack_station or ""] -= 1
        self._enter(order, S.PACKED)

    async def _label(self, order: Order) -> None:
        carrier = self._carriers[order.carrier]
        zpl = shipping_label(order_id=order.id, external_id=order.external_id, carrier=carrier.id,
                             tote=order.tote or "", lane=carrier.lane, items=order.items)
        for _ in range(2 * len(self.floor.printers) + 1):
            if order.printer is None or not self.queues[order.printer].usable:
                if order.printer is not None:  # it went away before printing: use a new id elsewhere
                    order.label_attempt += 1
                order.printer = await self._available_printer()
                self.repo.save_assignment(order)
                await self.repo.flush()
            printer = self.floor.printers[order.printer]
            try:
                await self._run(order, Task.LABEL, printer, "print", 0,
                                functools.partial(printer.print_label, zpl=zpl), self.site.timeouts.print_s)
            except DeviceFailed as exc:
                if is_command_error(exc.reason.removeprefix("rejected: ")):
                    raise  # the label itself is wrong: a person must look
                if not exc.reason.startswith("rerouted"):
                    # The printer holds the label: cancel it there, so that it does not come out of
                    # that printer too once the fault is cleared.
                    self._cancel_held_labels(printer, order.command_id(Task.LABEL))
                    self.floor.take_out_of_rotation(printer.device_id, exc.reason)
                order.printer = None
                order.label_attempt += 1
                continue
            self._enter(order, S.LABELLED)
            return
        raise DeviceFailed("failed", "no printer could print the label", where="label")

    def _cancel_held_labels(self, printer: Printer, label_id: str) -> None:
        async def cancel() -> None:
            try:
                await printer.cancel_queued(f"{label_id}.cancel")
            except Exception as exc:  # noqa: BLE001  best effort: the label is rerouted either way
                log.warning("%s: cancelling held labels failed: %s", printer.device_id, exc)
        task = asyncio.create_task(cancel(), name=f"cancel-labels-{printer.device_id}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _available_printer(self) -> str:
        while True:
            chosen = choose_printer(self.floor.candidates(self.floor.printers))
            if chosen is not None:
                return chosen
            self.floor.printer_ready.clear()
            await self.floor.printer_ready.wait()

    async def _sort(self, order: Order) -> None:
        route = self._route(order)
        sorter = self.floor.sorters[route.sorter]
        tote = order.tote or ""
        timeout = self.site.timeouts.divert_s * (self._sorters[route.sorter].max_recirculations + 2)
        try:
            completion = await self._run(order, Task.INDUCT, sorter, "induct", 0,
                                         lambda cid: sorter.induct(cid, tote), timeout)
        except DeviceFailed as exc:
            raise self._sort_failure(route, tote, exc.reason) from None
        lane = completion.result.get("lane")
        if lane != route.lane:
            raise self._sort_failure(route, tote, f"sorted to {lane or 'no lane'} instead of {route.lane}")
        self._unroute(order)
        order.lane = lane
        self.repo.save_assignment(order)
        self._enter(order, S.SORTED)

    def _sort_failure(self, route: Route, tote: str, reason: str) -> DeviceFailed:
        """Why a tote did not reach its lane. Past the recirculation limit the reason is the same
        whichever answer came first: the controller's exception-lane divert, or the sorter's own."""
        sortation = self.sorting.sortation
        rounds = sortation.recirculations(tote)
        limit = (sortation.last_reason(tote) is DivertReason.RECIRCULATION_LIMIT
                 or "recirculation_limit" in reason)
        self._unroute_tote(tote)
        if limit:  # the rounds seen by this controller: none while it was down
            seen = f" after {rounds} rounds" if rounds else ""
            reason = f"sent to {self._sorters[route.sorter].exception_lane}{seen}: recirculation_limit"
        return DeviceFailed("failed", reason, where=f"sort at {route.sorter}")

    async def _ship(self, order: Order) -> None:
        self._enter(order, S.SHIPPED)
        self.stats.record_order(order.stamps["shipped"] - order.stamps["received"], time.time(), "shipped")

    def _route(self, order: Order) -> Route:
        carrier = self._carriers[order.carrier]
        route = Route(order.id, carrier.lane, carrier.sorter)
        self.sorting.route(order.tote or "", route)
        return route

    def _unroute(self, order: Order) -> None:
        if order.tote:
            self._unroute_tote(order.tote)

    def _unroute_tote(self, tote: str) -> None:
        self.sorting.unroute(tote)

    # ---- device events -------------------------------------------------------------------------
    def on_event(self, event: DeviceEvent) -> None:
        """The hubs' event sink: must not block or raise."""
        try:
            if isinstance(event, ScanRead):
                if self._routing:  # a standby answers no scan: the leader does
                    self.sorting.on_scan(event)
            elif isinstance(event, Diverted):
                self.sorting.on_diverted(event)
            elif isinstance(event, DeviceStatus):
                self.floor.on_status(event)
                condition = (event.online, event.fault)
                if self._conditions.get(event.device_id) != condition:
                    self._conditions[event.device_id] = condition
                    for listener in self.status_listeners:
                        listener(event)
        except Exception:  # an event handler must never take the adapters down
            log.exception("device event %r", event)
            self._counters["event_errors"] += 1

    def count(self, event: str) -> None:
        self._counters[event] += 1

    @property
    def counters(self) -> Counter[str]:
        """The engine's own event counts and the adapters' (bad payloads, reconnects, ...)."""
        return self._counters + self.floor.counters()

    def _timing_row(self, row: dict[str, Any]) -> None:
        self.command_counts[(row["device_kind"], row["outcome"])] += 1
        self.repo.timing(row)

    def _device_finished(self, device: Device, seconds: float) -> None:
        self.stats.record_device(device.device_id, device.kind.value, seconds, time.time())

    # ---- helpers -----------------------------------------------------------------------------
    async def _run(self, order: Order, task: Task, device: Device, command: str, part: int | str,
                   send: Callable[[str], Awaitable[CommandTicket]], timeout_s: float, *,
                   after_timeout: Callable[[], Awaitable[CommandTicket]] | None = None) -> Completion:
        queue = self.queues[device.device_id]
        base = order.command_id(task, part)
        for again in itertools.count():
            # A device that failed a command for its own state remembers that id: a new one.
            command_id = base if again == 0 else f"{base}.f{again}"
            job = Job(self._release_key(order), command_id, command, task.value, order.id,
                      functools.partial(send, command_id), self._wall(timeout_s), after_timeout=after_timeout)
            try:
                return await queue.run(job)
            except DeviceFailed as exc:
                if (device.kind in _WAITS_OUT_FAULTS and exc.outcome == "failed"
                        and again < self.site.timeouts.retries and _device_state(exc.reason)):
                    # Failed for a fault the device raised while it held the command: the new
                    # command waits for the device to be back (or for the wait limit).
                    log.info("%s: %s failed for the device's state (%s); again when it is back",
                             device.device_id, command_id, exc.reason)
                    continue
                exc.where = exc.where or f"{task.value} at {device.device_id}"
                raise
        raise AssertionError("unreachable")

    def _wall(self, floor_seconds: float) -> float:
        return floor_seconds / self.speed

    def _enter(self, order: Order, state: S, reason: str | None = None) -> None:
        now = time.time()
        stage = _STAGE_OF.get(state)
        since = order.stamps.get(stage[1].value, now) if stage else now
        order.enter(state, now, reason)
        self.repo.save_state(order)
        if stage is not None:
            self.stats.record_stage(stage[0], now - since, now)

    def _fail(self, order: Order, reason: str) -> None:
        log.info("order %s -> exception: %s", order.id, reason)
        now = time.time()
        order.fail(now, reason)
        self.repo.save_state(order)
        self.stats.record_order(now - order.stamps.get("received", now), now, "exception")
        self._counters["order_exceptions"] += 1

    def _finish(self, order: Order) -> None:
        self.orders.pop(order.id, None)
        self._by_external.pop(order.external_id, None)

    def _retry_held(self) -> None:
        for order in sorted((o for o in self.orders.values() if o.state is S.HELD), key=self._release_key):
            self._spawn(order)

    async def _retry_held_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.held_retry_s)
            self._retry_held()

    # ---- device controls --------------------------------------------------------------------------
    async def control(self, device_id: str, action: DeviceAction | str, actor: str) -> dict[str, Any]:
        """A supervisor's action on a device; returns the device's row. Every control, refused ones
        too, goes to `control_listeners`. Raises DeviceNotFound or ControlRefused."""
        queue = self.queues.get(device_id)
        if queue is None:
            raise DeviceNotFound(f"no device {device_id}")
        try:
            act = DeviceAction(action)
        except ValueError:
            known = ", ".join(a.value for a in DeviceAction)
            raise ControlRefused(f"unknown action {action!r} (known: {known})") from None
        detail: str | None = None
        try:
            detail = await self._apply(queue, act, actor)
        except ControlRefused as exc:
            self._tell_control(ControlEvent(time.time(), actor, device_id, act, f"refused: {exc}"))
            raise
        self._tell_control(ControlEvent(time.time(), actor, device_id, act, "ok", detail))
        return self.floor.row(queue)

    async def _apply(self, queue: DeviceQueue, action: DeviceAction, actor: str) -> str | None:
        device = queue.device
        match action:
            case DeviceAction.TAKE_OUT:
                queue.take_out_of_rotation(f"taken out by {actor}", by_controller=False)
            case DeviceAction.PUT_BACK:
                queue.put_back()
            case DeviceAction.PAUSE:
                queue.pause()
            case DeviceAction.RESUME:
                queue.resume()
            case DeviceAction.RESET | DeviceAction.ESTOP_RESET:
                on_plc = device.kind in (DeviceKind.CONVEYOR, DeviceKind.SORTER)
                if action is DeviceAction.ESTOP_RESET and not on_plc:
                    raise ControlRefused(f"{device.device_id} is a {device.kind.value}: no e-stop to reset")
                return await self._reset(queue)
        if device.kind is DeviceKind.PRINTER:
            self.floor.refresh_printers()
        return None

    async def _reset(self, queue: DeviceQueue) -> str:
        device = queue.device
        role = self.floor.role_of(device.device_id)
        command_id = f"r.{device.device_id}.{int(time.time() * 1000)}.{next(self._controls)}"
        try:
            ticket = await role.reset(command_id)
            await asyncio.wait_for(asyncio.shield(ticket.acked), self.site.timeouts.ack_s)
            completion = await asyncio.wait_for(asyncio.shield(ticket.done), self.site.timeouts.ack_s)
        except TimeoutError:
            raise ControlRefused(f"{device.device_id} did not answer the reset") from None
        except CommandRejected as exc:
            raise ControlRefused(f"{device.device_id} refused the reset: {exc.reason}") from None
        except DeviceUnavailable as exc:
            raise ControlRefused(f"{device.device_id} cannot be reached: {exc}") from None
        if not completion.ok:
            raise ControlRefused(f"{device.device_id} could not reset: {completion.reason}")
        return command_id

    def _tell_control(self, event: ControlEvent) -> None:
        log.info("control %s %s by %s: %s", event.action.value, event.device_id, event.actor, event.outcome)
        for listener in self.control_listeners:
            try:
                listener(event)
            except Exception:
                log.exception("control listener failed on %s", event)

    # ---- what an order waits for, and its commands in hand ------------------------------------------
    def waiting_on(self, order_id: int) -> WaitingOn | None:
        """The device an active order's command waits on, while that device takes no work."""
        for queue in self.queues.values():
            if queue.unavailable_since is not None and order_id in queue.order_ids():
                return queue.waiting_on()
        return None

    def in_hand(self, order_id: int) -> list[dict[str, Any]]:
        """The timing rows of the order's commands queued or in flight now (not yet written), with
        what they have waited on their device so far."""
        return [queue.row_now(row) for queue in self.queues.values() for row in queue.live.values()
                if row["order_id"] == order_id]

    # ---- snapshots for the API and the panel ----------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        return self.floor.snapshot()

    def health(self) -> dict[str, Any]:
        """Links up (the broker, each PLC's devices), why a PLC's session is down (`plc_errors`, only
        the PLCs whose link says), faulted devices, and the work in hand."""
        broker = self.floor.links().get("mqtt", True)
        plcs = self.floor.plc_links()
        health = {"ok": self._watching and broker and all(plcs.values()), "broker": broker, "plcs": plcs,
                  "plc_errors": self.floor.plc_errors(), "faults": self.floor.faults(),
                  "writer_backlog": self.repo.backlog, "active_orders": len(self.orders)}
        if self.role is not None:
            health.update(self.role())
        return health


# Kinds whose commands wait out a fault the device raised while holding them (a printer's work goes
# to another printer instead; a conveyor's or sorter's failure means a tote is not where it was).
_WAITS_OUT_FAULTS = frozenset({DeviceKind.PICK_LIGHT, DeviceKind.PACK_STATION})


def _device_state(reason: str) -> bool:
    """A failure that says something of the device's state, not of the command."""
    if reason.startswith(("rerouted", "waited", "rejected", "not delivered")):
        return False
    return not is_command_error(reason)


def _picked(result: dict[str, Any], shown: int) -> int:
    """What the operator confirmed, within what was shown (the adapter checked the type)."""
    picked = result.get("picked", shown)
    return max(0, min(picked, shown)) if type(picked) is int else shown


def release_key(order: Order, policy: str) -> tuple[Any, ...]:
    """The order work is released and served in, at every device queue and when stock frees up.
    `due`: higher priority first, then the earliest due (orders without one last), then arrival;
    `fifo`: arrival order alone."""
    if policy == "fifo":
        return (order.id,)
    return (-order.priority, order.due_at if order.due_at is not None else math.inf, order.id)


def _reserved(line: OrderLine) -> int:
    """What a line still holds reserved: derived, so it survives a restart without a column."""
    return line.qty - line.picked_qty if line.location is not None and not line.picked else 0
