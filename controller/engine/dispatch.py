"""Per-device command queues: priority order, capacity, time-outs, retries with the same id, timings.

Each device has one `DeviceQueue`. An order's coroutine calls `queue.run(job)`; the job waits its
turn (higher priority first), is sent through the device's port, and its acknowledgement and
completion are awaited with time-outs. A time-out re-sends the SAME command id (the device dedupes),
so a retry never executes twice. A device that is offline holds up only its own queue: time-outs
do not count while the link is down. Every finished command leaves one timing row.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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


TimingSink = Callable[[dict[str, Any]], None]


class DeviceQueue:
    def __init__(self, device: Device, *, ack_timeout_s: float, retries: int, timing: TimingSink,
                 on_finished: Callable[[Device, float], None] | None = None) -> None:
        self.device = device
        self.capacity = CAPACITY[device.kind]
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self._timing = timing
        self._on_finished = on_finished
        self._heap: list[Job] = []
        self._seq = itertools.count()
        self.in_flight = 0
        self.served = 0  # commands taken, so that equally loaded devices take turns
        self.in_rotation = True  # printers are taken out of rotation when they fail or go silent
        # A printer's work can go to another printer: its queue hands jobs back instead of holding
        # them while it is faulted or away. Every other device's orders wait for that device.
        self.reroutes = device.kind is DeviceKind.PRINTER
        self._usable = asyncio.Event()
        self.update_status(device.status)

    # ---- status ----------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        status = self.device.status
        return status.online and self.in_rotation and not (self.reroutes and status.fault)

    @property
    def load(self) -> int:
        return len(self._heap) + self.in_flight

    @property
    def queued(self) -> int:
        return len(self._heap)

    def preference(self) -> tuple[int, int]:
        """Least loaded first; among equals, the one that has served least."""
        return (self.load, self.served)

    def update_status(self, status: DeviceStatus) -> None:
        if self.reroutes and status.online and not status.fault:
            self.in_rotation = True  # back from a fault: the printer says it is ready
        if self.usable:
            self._usable.set()
            self._pump()
        else:
            self._usable.clear()
            if self.reroutes:
                self.fail_waiting(status.fault or "offline")

    def take_out_of_rotation(self, reason: str) -> None:
        log.warning("%s taken out of rotation: %s", self.device.device_id, reason)
        self.in_rotation = False
        self._usable.clear()
        self.fail_waiting(reason)

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
        job.go = asyncio.get_running_loop().create_future()
        self.served += 1
        job.sort_key = (*job.sort_key, next(self._seq))
        heapq.heappush(self._heap, job)
        self._pump()
        try:
            await job.go
        except asyncio.CancelledError:
            if job in self._heap:
                self._heap.remove(job)
                heapq.heapify(self._heap)
            elif job.go.done() and not job.go.cancelled() and job.go.exception() is None:
                self._release()  # it was admitted just as it was cancelled
            self._record(self._row(job, "cancelled", "cancelled while queued"))
            raise
        except DeviceFailed as exc:  # handed back while queued: the order takes it elsewhere
            self._record(self._row(job, exc.outcome, exc.reason))
            raise
        try:
            return await self._execute(job)
        finally:
            self._release()

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
            "reason": reason, "retries": 0,
        }

    async def _execute(self, job: Job) -> Completion:
        row = self._row(job, "timed_out")
        try:
            attempts = 0
            while True:
                await self._wait_usable()
                try:
                    ticket = await job.issue()
                except DeviceUnavailable:
                    await asyncio.sleep(min(0.5, self.ack_timeout_s))  # link just went down: try again
                    continue
                row["sent_at"] = ticket.sent_at or time.time()
                try:
                    if not ticket.acked.done():
                        await asyncio.wait_for(asyncio.shield(ticket.acked), self.ack_timeout_s)
                    row["acked_at"] = ticket.acked.result()
                    completion = await asyncio.wait_for(asyncio.shield(ticket.done), job.done_timeout_s)
                    break
                except TimeoutError:
                    status = self.device.status
                    if not status.online or (status.fault and not self.reroutes):
                        # The link is down, or the belt is jammed / e-stopped: the command waits for
                        # the device to come back; this does not count as a retry.
                        continue
                    attempts += 1
                    if attempts > self.retries:
                        what = "acknowledgement" if not ticket.acked.done() else "completion"
                        raise DeviceFailed("timed_out", f"no {what} from {self.device.device_id}") from None
                    row["retries"] = attempts
                    log.info("%s: %s timed out, re-sending (retry %d)", self.device.device_id, job.command_id,
                             attempts)
                except (DeviceFailed, asyncio.CancelledError):
                    raise
                except CommandRejected as exc:
                    raise DeviceFailed("failed", f"rejected: {exc.reason}") from None
                except Exception as exc:  # an adapter's own failure to deliver, e.g. the link closing
                    raise DeviceFailed("failed", f"not delivered: {exc}") from None
            row["completed_at"] = completion.at
            if not completion.ok:
                raise DeviceFailed("failed", completion.reason or "failed")
            row["outcome"] = "ok"
            return completion
        except DeviceFailed as exc:
            row["outcome"], row["reason"] = exc.outcome, exc.reason
            raise
        except asyncio.CancelledError:
            row["outcome"], row["reason"] = "cancelled", "order cancelled or controller stopping"
            raise
        finally:
            self._record(row)

    async def _wait_usable(self) -> None:
        while not self.usable:
            if self.reroutes:
                raise DeviceFailed("failed", f"rerouted: {self.device.device_id} unavailable")
            await self._usable.wait()

    def _record(self, row: dict[str, Any]) -> None:
        # Keep the timeline consistent (queued <= sent <= acked <= completed) across clocks.
        previous = row["queued_at"]
        for key in ("sent_at", "acked_at", "completed_at"):
            if row[key] is not None:
                row[key] = max(row[key], previous)
                previous = row[key]
        self._timing(row)
        if self._on_finished is not None and row["completed_at"] is not None:
            self._on_finished(self.device, row["completed_at"] - row["queued_at"])
