"""Per-device command queues: priority order, capacity, time-outs, retries with the same id, timings.

Each device has one `DeviceQueue`. An order's coroutine calls `queue.run(job)`; the job waits its
turn (higher priority first), is sent through the device's port, and its acknowledgement and
completion are awaited with time-outs. A time-out re-sends the SAME command id (the device dedupes),
so a retry never executes twice. Every finished command leaves one timing row.

The fault policy (docs/operations.md): a device that is offline, faulted, paused or out of rotation
gets no new commands. A printer's queue hands its waiting work back (another printer takes it);
every other queue holds it, and what the device already holds waits with it: its time-outs do not
count, and a refusal for the device's own state (an e-stop, a fault) is sent again, same id, once
the device is back. A job that has waited longer than the kind's `wait_limit_s` fails, naming the
device and how long: that is for a person.

A command's timing row also counts the seconds it waited while its device took no work, before it
was sent (`down_queued_s`) and after (`down_in_hand_s`: what the device holds waits with it), and
when the controller stopped waiting for it (`ended_at`, whatever the outcome): the order's time
breakdown (controller.domain.breakdown) tells a down device from a busy one by them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from controller.contract.reasons import is_command_error
from controller.domain.devices import Availability, WaitingOn
from controller.ports import (
    CommandRejected,
    CommandTicket,
    Completion,
    Device,
    DeviceKind,
    DeviceStatus,
    DeviceUnavailable,
)

log = logging.getLogger(__name__)

# How many commands a device works on at once: a pick light shows one pick, a packer packs one tote,
# a printer prints one label; belts carry many totes.
CAPACITY = {
    DeviceKind.PICK_LIGHT: 1,
    DeviceKind.PACK_STATION: 1,
    DeviceKind.PRINTER: 2,  # one printing, one in the printer's buffer
    DeviceKind.CONVEYOR: 10_000,
    DeviceKind.SORTER: 10_000,
}


class DeviceFailed(Exception):
    """The device could not do the command: it failed with a reason, timed out, or was taken away."""

    def __init__(self, outcome: str, reason: str, where: str | None = None) -> None:
        super().__init__(outcome, reason)
        self.outcome = outcome
        self.reason = reason
        self.where = where  # e.g. "convey at loop-1", filled in by the engine

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


@dataclass(order=True)
class Job:
    sort_key: tuple[Any, ...]
    command_id: str = field(compare=False)
    command: str = field(compare=False)
    task: str = field(compare=False)
    order_id: int | None = field(compare=False)
    issue: Callable[[], Awaitable[CommandTicket]] = field(compare=False, repr=False)
    done_timeout_s: float = field(compare=False)
    queued_at: float = field(compare=False, default_factory=time.time)
    go: asyncio.Future[None] | None = field(compare=False, default=None, repr=False)
    # Sent even while the device is faulted (a sorter takes divert targets through a jam or e-stop).
    while_faulted: bool = field(compare=False, default=False)
    # Run, holding the device, when the command timed out: e.g. `clear` on a pick light whose
    # operator never confirmed, before anything else is shown there.
    after_timeout: Callable[[], Awaitable[CommandTicket]] | None = field(compare=False, default=None,
                                                                         repr=False)


TimingSink = Callable[[dict[str, Any]], None]


class CommandGate:
    """May this controller command devices now? Every queue asks before it puts a command on the
    wire. A lone controller's gate is always open. In a hot-standby pair (controller/ha) it is open
    only while this instance leads, and only until a deadline that each lease renewal moves on: the
    deadline falls before the lease can expire, so a leader that stops renewing (frozen, cut from
    the database) has stopped commanding before any other instance may start. The deadline is read
    from the monotonic clock at every check, so a process that wakes up from a freeze finds the
    gate closed before it sends anything."""

    def __init__(self, *, open_: bool = True) -> None:
        self._until = math.inf if open_ else -math.inf
        self._changed = asyncio.Event()

    def is_open(self) -> bool:
        return time.monotonic() < self._until

    def open_until(self, deadline: float) -> None:
        """Open until `deadline` (time.monotonic())."""
        self._until = deadline
        self._changed.set()

    def close(self) -> None:
        self._until = -math.inf
        self._changed.set()

    async def wait_open(self) -> None:
        while not self.is_open():
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 1.0)
            except TimeoutError:
                pass


class DeviceQueue:
    def __init__(self, device: Device, *, ack_timeout_s: float, retries: int, timing: TimingSink,
                 on_finished: Callable[[Device, float], None] | None = None,
                 wait_limit_s: float | None = None, gate: CommandGate | None = None) -> None:
        self.device = device
        self.gate = gate or CommandGate()
        self.capacity = CAPACITY[device.kind]
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.wait_limit_s = wait_limit_s  # wall seconds a job may wait on the device; None: no limit
        self._timing = timing
        self._on_finished = on_finished
        self._heap: list[Job] = []
        self._seq = itertools.count()
        self.in_flight = 0
        self.served = 0  # commands taken, so that equally loaded devices take turns
        self.in_rotation = True
        self.rotation_note: str | None = None  # who or what took it out of rotation
        self._auto_out = False  # taken out by the controller (a printer that failed): back when ready
        self.paused = False
        self.unavailable_since: float | None = None
        self.last_progress_at: float | None = None  # when a command of this device last completed
        self.live: dict[str, dict[str, Any]] = {}  # timing rows of the commands queued or in hand
        # Waits on the device while it takes no work: command id -> (since, the row's column counting
        # it), for the commands waiting now; the device's (online, faulted, usable) they were taken at.
        self._waits: dict[str, tuple[float, str]] = {}
        self._down_key: tuple[bool, bool, bool] | None = None
        self._through_faults: set[str] = set()  # command ids of jobs sent even while it is faulted
        # A printer's work can go to another printer: its queue hands jobs back instead of holding
        # them while it is faulted or away. Every other device's orders wait for that device.
        self.reroutes = device.kind is DeviceKind.PRINTER
        # A pick light hands back the picks queued at it when it stops taking work: their order may
        # find the SKU at a location whose light works (or queues here again, and waits).
        self.hands_back = self.reroutes or device.kind is DeviceKind.PICK_LIGHT
        self._usable = asyncio.Event()
        # One timer for the whole queue, at the first moment a queued job's wait limit runs out (not
        # one per job: 20,000 queued jobs each looking again every few seconds kept a core busy).
        self._limit_timer: asyncio.TimerHandle | None = None
        self.update_status(device.status)

    # ---- status ----------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        status = self.device.status
        return status.online and self.in_rotation and not self.paused and not status.fault

    @property
    def availability(self) -> Availability:
        status = self.device.status
        return Availability.of(online=status.online, fault=status.fault, in_rotation=self.in_rotation,
                               paused=self.paused, rotation_note=self.rotation_note)

    @property
    def load(self) -> int:
        return len(self._heap) + self.in_flight

    @property
    def queued(self) -> int:
        return len(self._heap)

    def preference(self) -> tuple[int, int]:
        """Least loaded first; among equals, the one that has served least."""
        return (self.load, self.served)

    def waiting_on(self) -> WaitingOn | None:
        """What the orders of this queue wait for, while the device takes no work."""
        if self.unavailable_since is None:
            return None
        return WaitingOn(self.device.device_id, self.unavailable_since, str(self.availability))

    def order_ids(self) -> set[int]:
        """The orders with a command queued or in hand here."""
        return {row["order_id"] for row in self.live.values() if row["order_id"] is not None}

    def update_status(self, status: DeviceStatus | None = None) -> None:
        """The device's status changed, or a control did: admit work, or hold (or hand back) it."""
        current = self.device.status
        if status is not None and self._auto_out and current.online and not current.fault:
            self._auto_out = False  # back from a fault: the printer says it is ready
            self.in_rotation, self.rotation_note = True, None
        self._count_down_time()
        if self.usable:
            self.unavailable_since = None
            self._usable.set()
            self._pump()
        else:
            self._usable.clear()
            if self.reroutes or (self.unavailable_since is None and self.hands_back):
                self.fail_waiting(str(self.availability))  # a pick light: once, as it goes
            if self.unavailable_since is None:
                self.unavailable_since = time.time()
        self._arm_wait_limit()

    # ---- time waited on the device while it takes no work ----------------------------------------------
    def _count_down_time(self) -> None:
        """The device's availability may have changed: end the waits it ends, begin those it begins."""
        status = self.device.status
        key = (status.online, bool(status.fault), self.usable)
        if key == self._down_key:
            return
        self._down_key = key
        now = time.time()
        for row in self.live.values():
            self._end_wait(row, now)
            self._begin_wait(row, now)

    def _begin_wait(self, row: dict[str, Any], now: float) -> None:
        """Does the command wait on the device now? A queued one waits while the device takes no new
        work; one in hand while the device is offline, or faulted and holding it (a printer's work
        goes elsewhere instead; a divert target goes through a fault)."""
        status = self.device.status
        through = row["command_id"] in self._through_faults
        if row["sent_at"] is None:
            waits = not status.online if through else not self.usable
            column = "down_queued_s"
        else:
            waits = not status.online or (bool(status.fault) and not self.reroutes and not through)
            column = "down_in_hand_s"
        if waits:
            self._waits[row["command_id"]] = (now, column)

    def _end_wait(self, row: dict[str, Any], now: float) -> None:
        began = self._waits.pop(row["command_id"], None)
        if began is not None:
            since, column = began
            row[column] += max(0.0, now - since)

    def row_now(self, row: dict[str, Any]) -> dict[str, Any]:
        """A copy of a live timing row as it stands, its wait on the device so far counted in."""
        now_row = dict(row)
        began = self._waits.get(row["command_id"])
        if began is not None:
            since, column = began
            now_row[column] += max(0.0, time.time() - since)
        return now_row

    def take_out_of_rotation(self, reason: str, *, by_controller: bool = True) -> None:
        """No new work until put back. `by_controller`: a printer that failed comes back by itself
        when it reports ready; one a person took out waits for a person."""
        log.warning("%s taken out of rotation: %s", self.device.device_id, reason)
        self.in_rotation, self.rotation_note, self._auto_out = False, reason, by_controller
        self.update_status()

    def put_back(self) -> None:
        self.in_rotation, self.rotation_note, self._auto_out = True, None, False
        self.update_status()

    def pause(self) -> None:
        """Drain: finish what is in hand, take nothing new."""
        self.paused = True
        self.update_status()

    def resume(self) -> None:
        self.paused = False
        self.update_status()

    def fail_waiting(self, reason: str) -> None:
        """Hand queued jobs back to their orders so they can go to another device."""
        for job in self._heap:
            if job.go is not None and not job.go.done():
                job.go.set_exception(DeviceFailed("failed", f"rerouted: {reason}"))
        self._heap.clear()

    # ---- running a command -------------------------------------------------------------------
    async def run(self, job: Job) -> Completion:
        if self.reroutes and not self.usable:
            # It went away between the order choosing it and queueing here: choose again.
            raise DeviceFailed("failed", f"rerouted: {self.device.device_id} unavailable")
        row = self.live[job.command_id] = self._row(job, "queued")
        self.served += 1
        if job.while_faulted:
            self._through_faults.add(job.command_id)
        self._begin_wait(row, row["queued_at"])
        if job.while_faulted:
            self.in_flight += 1  # a divert target: no waiting behind the order's work
        else:
            job.go = asyncio.get_running_loop().create_future()
            job.sort_key = (*job.sort_key, next(self._seq))
            heapq.heappush(self._heap, job)
            self._pump()
            try:
                await self._admitted(job)
            except asyncio.CancelledError:
                if job in self._heap:
                    self._heap.remove(job)
                    heapq.heapify(self._heap)
                elif job.go.done() and not job.go.cancelled() and job.go.exception() is None:
                    self._release()  # it was admitted just as it was cancelled
                row["outcome"], row["reason"] = "cancelled", "cancelled while queued"
                self._record(row)
                raise
            except DeviceFailed as exc:  # handed back while queued: the order takes it elsewhere
                row["outcome"], row["reason"] = exc.outcome, exc.reason
                self._record(row)
                raise
        try:
            return await self._execute(job, row)
        finally:
            self._release()

    async def _admitted(self, job: Job) -> None:
        """Wait for the job's turn. Past the wait limit on an unusable device the queue's timer fails
        it (`_wait_limit_reached`), and so does a hand-back (`fail_waiting`)."""
        assert job.go is not None
        if not job.go.done() and self._limit_timer is None:
            self._arm_wait_limit()  # queued while the device takes no work: the first to wait
        await job.go

    def _arm_wait_limit(self, not_before: float = 0.0) -> None:
        """Set the queue's timer at the earliest wait deadline of its queued jobs, if the device takes
        no work now (none otherwise). A job queued later has a later deadline, so a timer already set
        stands for it too."""
        if self._limit_timer is not None:
            self._limit_timer.cancel()
            self._limit_timer = None
        if self.wait_limit_s is None or self.unavailable_since is None:
            return
        waiting = [job.queued_at for job in self._heap if job.go is not None and not job.go.done()]
        if not waiting:
            return
        deadline = max(self.unavailable_since, min(waiting)) + self.wait_limit_s
        loop = asyncio.get_running_loop()
        self._limit_timer = loop.call_at(loop.time() + max(deadline, not_before) - time.time(),
                                         self._wait_limit_reached)

    def _wait_limit_reached(self) -> None:
        """Fail the queued jobs whose wait is over, then look again at the next deadline (not sooner
        than a second from now: jobs queued one after another fail in batches, not one timer each)."""
        self._limit_timer = None
        if self.unavailable_since is None:
            return
        over = {id(job) for job in self._heap
                if job.go is not None and not job.go.done() and self._wait_left(job) == 0}
        if over:
            for job in self._heap:
                if id(job) in over:
                    assert job.go is not None
                    job.go.set_exception(self._waited_too_long(job))
            self._heap = [job for job in self._heap if id(job) not in over]
            heapq.heapify(self._heap)
        self._arm_wait_limit(not_before=time.time() + 1.0)

    def _wait_left(self, job: Job) -> float | None:
        """Seconds the job may still wait (None: no limit applies now; 0: it is over)."""
        if self.wait_limit_s is None or self.unavailable_since is None:
            return None if self.wait_limit_s is None else self.wait_limit_s
        waited = time.time() - max(self.unavailable_since, job.queued_at)
        return max(0.0, self.wait_limit_s - waited)

    def _waited_too_long(self, job: Job) -> DeviceFailed:
        since = self.unavailable_since or job.queued_at
        return DeviceFailed("failed", f"waited {time.time() - since:.0f} s on {self.device.device_id} "
                                      f"({self.availability})")

    def _release(self) -> None:
        self.in_flight -= 1
        self._pump()

    def _pump(self) -> None:
        while self._heap and self.in_flight < self.capacity and self.usable:
            job = heapq.heappop(self._heap)
            if job.go is None or job.go.done():
                continue
            self.in_flight += 1
            job.go.set_result(None)

    def _row(self, job: Job, outcome: str, reason: str | None = None) -> dict[str, Any]:
        return {
            "command_id": job.command_id, "order_id": job.order_id, "task": job.task,
            "device_id": self.device.device_id, "device_kind": self.device.kind.value,
            "protocol": self.device.protocol, "command": job.command, "queued_at": job.queued_at,
            "sent_at": None, "acked_at": None, "completed_at": None, "outcome": outcome,
            "reason": reason, "retries": 0, "ended_at": None, "down_queued_s": 0.0, "down_in_hand_s": 0.0,
        }

    async def _execute(self, job: Job, row: dict[str, Any]) -> Completion:
        try:
            attempts = refusals = 0
            while True:
                await self._wait_usable(job)
                if not self.gate.is_open():
                    await self.gate.wait_open()  # not leading (any more): nothing goes out
                    continue
                try:
                    ticket = await job.issue()
                except DeviceUnavailable:
                    await asyncio.sleep(min(0.5, self.ack_timeout_s))  # link just went down: try again
                    continue
                if row["sent_at"] is None:
                    row["sent_at"] = sent = ticket.sent_at or time.time()
                    if self._waits:  # went out as the device went away: the wait is now in hand
                        self._end_wait(row, sent)
                        self._begin_wait(row, sent)
                row["outcome"] = "sent"
                try:
                    if not ticket.acked.done():
                        await asyncio.wait_for(asyncio.shield(ticket.acked), self.ack_timeout_s)
                    row["acked_at"] = ticket.acked.result()
                    row["outcome"] = "acked"
                    completion = await asyncio.wait_for(asyncio.shield(ticket.done), job.done_timeout_s)
                    break
                except TimeoutError:
                    if not self._holds(job):
                        # The link is down, or the device is faulted / e-stopped / jammed: the command
                        # waits for the device to come back; this does not count as a retry.
                        continue
                    attempts += 1
                    if attempts > self.retries:
                        what = "acknowledgement" if not ticket.acked.done() else "completion"
                        if job.after_timeout is not None:
                            await self._after_timeout(job)
                        raise DeviceFailed("timed_out", f"no {what} from {self.device.device_id}") from None
                    row["retries"] = attempts
                    log.info("%s: %s timed out, re-sending (retry %d)", self.device.device_id, job.command_id,
                             attempts)
                except (DeviceFailed, asyncio.CancelledError):
                    raise
                except CommandRejected as exc:
                    if is_command_error(exc.reason) or self.reroutes:
                        raise DeviceFailed("failed", f"rejected: {exc.reason}") from None
                    # Refused for the device's own state (an e-stop, a fault): the same id goes again
                    # once the device is back. A refused id is not remembered, by the device or by us.
                    row["outcome"], row["reason"] = "queued", f"refused for now: {exc.reason}"
                    await self._until_state_known()
                    refusals = refusals + 1 if self.usable else 0
                    if refusals > self.retries:  # it says ready and refuses all the same
                        raise DeviceFailed("failed", f"rejected: {exc.reason}") from None
                except Exception as exc:  # noqa: BLE001  an adapter's own failure to deliver, e.g. the link closing
                    raise DeviceFailed("failed", f"not delivered: {exc}") from None
            row["completed_at"] = completion.at
            self.last_progress_at = completion.at
            if not completion.ok:
                raise DeviceFailed("failed", completion.reason or "failed")
            row["outcome"], row["reason"] = "ok", None
            return completion
        except DeviceFailed as exc:
            row["outcome"], row["reason"] = exc.outcome, exc.reason
            raise
        except asyncio.CancelledError:
            row["outcome"], row["reason"] = "cancelled", "order cancelled or controller stopping"
            raise
        finally:
            self._record(row)

    def _holds(self, job: Job) -> bool:
        """Does a time-out count now? Not while the device takes no work (it holds the command)."""
        status = self.device.status
        if not status.online or not self.gate.is_open():
            return False
        return not (status.fault and not self.reroutes and not job.while_faulted)

    async def _until_state_known(self) -> None:
        """After a refusal for the device's state: give its status report time to arrive, so the
        command waits for the device to be back rather than being refused again at once."""
        await asyncio.sleep(min(1.0, self.ack_timeout_s))

    async def _after_timeout(self, job: Job) -> None:
        assert job.after_timeout is not None
        if not self.gate.is_open():
            return
        try:
            ticket = await job.after_timeout()
            await asyncio.wait_for(asyncio.shield(ticket.done), self.ack_timeout_s)
        except Exception as exc:  # noqa: BLE001  best effort: the time-out is reported either way
            log.warning("%s: clean-up after %s timed out failed: %s", self.device.device_id, job.command_id,
                        exc)

    async def _wait_usable(self, job: Job) -> None:
        while not self.usable:
            if job.while_faulted and self.device.status.online:
                return
            if self.reroutes:
                raise DeviceFailed("failed", f"rerouted: {self.device.device_id} unavailable")
            limit = self._wait_left(job)
            if limit == 0:
                raise self._waited_too_long(job)
            try:
                await asyncio.wait_for(self._usable.wait(), None if limit is None else min(limit, 5.0))
            except TimeoutError:
                pass

    def _record(self, row: dict[str, Any]) -> None:
        now = time.time()
        self.live.pop(row["command_id"], None)
        self._end_wait(row, now)
        self._through_faults.discard(row["command_id"])
        # Keep the timeline consistent (queued <= sent <= acked <= completed <= ended) across clocks.
        previous = row["queued_at"]
        for key in ("sent_at", "acked_at", "completed_at"):
            if row[key] is not None:
                row[key] = max(row[key], previous)
                previous = row[key]
        row["ended_at"] = max(now, previous)
        self._timing(row)
        if self._on_finished is not None and row["completed_at"] is not None:
            self._on_finished(self.device, row["completed_at"] - row["queued_at"])
