"""Device commands the way the engine sends them: a DeviceQueue per device, a timing row per command
through the StoreWriter, the adapter's ticket. What is timed is the command's acknowledgement as the
adapter stamps it, from the moment the command was handed to its queue."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from controller.bench.measure import Latencies
from controller.engine.dispatch import DeviceFailed, DeviceQueue, Job
from controller.ports import CommandTicket, Completion, Device
from controller.store.db import create_schema, make_engine
from controller.store.writer import StoreWriter

Issue = Callable[[Device, str], Awaitable[CommandTicket]]
"""Sends one command with the given id to a device and returns its ticket."""

ACK_TIMEOUT_S = 2.0
DONE_TIMEOUT_S = 30.0


async def sqlite_writer(directory: Path, name: str) -> StoreWriter:
    """A StoreWriter on a fresh SQLite file, as the controller runs it by default."""
    url = f"sqlite+aiosqlite:///{directory / f'{name}.db'}"
    db = make_engine(url)
    await create_schema(db)
    await db.dispose()
    writer = StoreWriter(url)
    await writer.start()
    return writer


class CommandPath:
    def __init__(self, writer: StoreWriter, command: str, run: str) -> None:
        self.writer = writer
        self.command = command
        self.run = run
        self._ids = itertools.count(1)
        self._runs: set[asyncio.Task[Completion]] = set()
        self.sent = 0

    def queue(self, device: Device) -> DeviceQueue:
        return DeviceQueue(device, ack_timeout_s=ACK_TIMEOUT_S, retries=0, timing=self.writer.timing)

    async def command_ack(self, queue: DeviceQueue, issue: Issue, *, wait_done: bool) -> float | None:
        """One command through its queue; seconds from queueing to the adapter's ack, None if lost.

        With `wait_done` the caller awaits the queue itself, as an order's coroutine does; without,
        the command finishes in a task of its own (as the engine's diverts do) and only the ack is
        awaited here.
        """
        command_id = f"{self.command}.{self.run}.{next(self._ids)}"
        handed: asyncio.Future[CommandTicket] = asyncio.get_running_loop().create_future()

        async def send() -> CommandTicket:
            ticket = await issue(queue.device, command_id)
            if not handed.done():
                handed.set_result(ticket)
            return ticket

        job = Job((0,), command_id, self.command, "bench", None, send, DONE_TIMEOUT_S)
        self.sent += 1
        queued = time.time()
        if wait_done:
            try:
                await queue.run(job)
            except DeviceFailed:  # timed out or rejected: counted as lost
                return None
            ticket = handed.result()
        else:
            async def hand_over() -> Completion:
                nonlocal queued
                queued = time.time()  # the task's start is the harness's, not the engine's: not timed
                return await queue.run(job)

            run = asyncio.create_task(hand_over())
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)
            try:
                ticket = await asyncio.wait_for(handed, ACK_TIMEOUT_S)
                await asyncio.wait_for(asyncio.shield(ticket.acked), ACK_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - timed out or rejected: counted as lost, the run carries on
                return None
        return ticket.acked.result() - queued

    async def sequential(self, queue: DeviceQueue, issue: Issue, count: int, *, wait_done: bool) -> Latencies:
        result = Latencies()
        started = time.perf_counter()
        for _ in range(count):
            seconds = await self.command_ack(queue, issue, wait_done=wait_done)
            if seconds is None:
                result.lost += 1
            else:
                result.add(seconds)
        result.elapsed_s = time.perf_counter() - started
        return result

    async def pipelined(self, queues: list[DeviceQueue], issue: Issue, count: int, *,
                        wait_done: bool) -> Latencies:
        """One worker per queue, each sending its next command as soon as the previous one is acked."""
        result = Latencies()
        remaining = itertools.count(count, -1)

        async def worker(queue: DeviceQueue) -> None:
            while next(remaining) > 0:
                seconds = await self.command_ack(queue, issue, wait_done=wait_done)
                if seconds is None:
                    result.lost += 1
                else:
                    result.add(seconds)

        started = time.perf_counter()
        await asyncio.gather(*(worker(q) for q in queues))
        result.elapsed_s = time.perf_counter() - started
        return result

    async def settle(self, timeout: float = 60.0) -> int:
        """Wait for every command to finish and its timing row to be committed; the rows written."""
        if self._runs:
            await asyncio.wait(list(self._runs), timeout=timeout)
        await self.writer.flush()
        return self.writer.stats.timing_rows
