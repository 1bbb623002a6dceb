"""Who leads a hot-standby pair, kept by renewing a lease in PostgreSQL (controller/store/lease.py).

One task per instance. A standby tries to take the lease every `renew_every_s`; it wins once the
holder has not renewed for `lease_s`. A leader renews every `renew_every_s`. Its command gate
(controller/engine/dispatch.CommandGate) is open until `lease_s - fence_margin_s` after the moment
it sent its last successful renewal: that moment is before the database stamped the renewal, so the
gate always closes before the lease can expire, whatever the renewal's round trip. A leader whose
deadline passes without a renewal, whose renewal finds another holder, or whose writer finds a
higher epoch, steps down: the gate is closed first, then the writer's epoch is dropped (nothing more
is written), then `lost` is set for the composition root, which starts the instance again as a
standby.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from controller.engine.dispatch import CommandGate
from controller.site import HaSettings
from controller.store.lease import Election, LeaseStore, WriteFence

log = logging.getLogger(__name__)

T = TypeVar("T")


class Role(StrEnum):
    STANDBY = "standby"
    LEADER = "leader"
    STEPPED_DOWN = "stepped_down"


@dataclass
class LeaseStats:
    renewals: int = 0
    renewal_failures: int = 0  # the database did not answer in time (the lease may still be ours)
    takeovers: int = 0
    renewal_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))  # recent round trips
    renewal_s_sum: float = 0.0
    cpu_s: float = 0.0  # process CPU spent in renewals (thread time of the lease thread)


class Leadership:
    """`on_elected` runs (as a task of its own; renewals go on meanwhile) when this instance wins the
    lease; `lost` is set when it steps down, with `why` saying why."""

    def __init__(self, settings: HaSettings, store: LeaseStore, gate: CommandGate, fence: WriteFence, *,
                 instance: str, on_elected: Callable[[Election], Awaitable[None]]) -> None:
        self.settings = settings
        self.store = store
        self.gate = gate
        self.fence = fence
        self.instance = instance
        self.on_elected = on_elected
        self.role = Role.STANDBY
        self.epoch: int | None = None
        self.leader: str | None = None  # the holder as last seen (this instance while it leads)
        self.leader_epoch: int | None = None
        self.took_over_at: float | None = None  # wall time this instance won the lease
        self.takeover_gap_s: float | None = None  # from the previous holder's last renewal, database clock
        self.previous_leader: str | None = None
        self.why: str | None = None
        self.stats = LeaseStats()
        self.lost = asyncio.Event()
        self._deadline = -1.0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floorctl-lease")
        self._task: asyncio.Task[None] | None = None
        self._promotion: asyncio.Task[None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start trying to lead (the lease's tables exist: controller/store/lease.create_lease_schema)."""
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Stop trying or renewing; a leader releases the lease (after the engine and the writer have
        stopped: see the composition root), so a standby takes over at its next try."""
        for task in (self._task, self._promotion):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._promotion = None

    async def release(self) -> None:
        if self.role is Role.LEADER and self.epoch is not None:
            self.gate.close()
            try:
                await self._db(self.store.release, self.instance, self.epoch, timeout=2.0)
                log.info("%s released the lease (epoch %d)", self.instance, self.epoch)
            except Exception as exc:  # noqa: BLE001  it expires on its own
                log.warning("%s could not release the lease: %s", self.instance, exc)
            self.role = Role.STANDBY

    def close(self) -> None:
        self.store.close()
        self._thread.shutdown(wait=False)

    # ---- what the API, health and metrics read ---------------------------------------------------
    @property
    def leading(self) -> bool:
        return self.role is Role.LEADER

    def describe(self) -> dict[str, Any]:
        """For /healthz (merged into the engine's health) and the panel."""
        recent = sorted(self.stats.renewal_s)
        return {
            "role": self.role.value, "instance": self.instance, "epoch": self.epoch,
            "leader": self.leader, "leader_epoch": self.leader_epoch,
            "ha": {"lease_s": self.settings.lease_s, "renew_every_s": self.settings.renew_every_s,
                   "took_over_at": self.took_over_at, "takeover_gap_s": self.takeover_gap_s,
                   "previous_leader": self.previous_leader, "why": self.why,
                   "takeovers": self.stats.takeovers, "renewals": self.stats.renewals,
                   "renewal_failures": self.stats.renewal_failures,
                   "renewal_s_sum": self.stats.renewal_s_sum, "renewal_cpu_s": self.stats.cpu_s,
                   "renewal_p50_s": recent[len(recent) // 2] if recent else None,
                   "renewal_max_s": recent[-1] if recent else None},
        }

    # ---- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        every = self.settings.renew_every_s
        while self.role is not Role.STEPPED_DOWN:
            started = time.monotonic()
            if self.role is Role.STANDBY:
                await self._try_to_lead(started)
            else:
                await self._renew(started)
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))

    async def _try_to_lead(self, sent_at: float) -> None:
        try:
            election = await self._db(self.store.try_acquire, self.instance, timeout=self.settings.lease_s)
        except Exception as exc:  # noqa: BLE001  the database is away: stay a standby, try again
            log.warning("%s: cannot reach the lease: %s", self.instance, exc)
            return
        self.leader, self.leader_epoch = election.holder, election.epoch
        if not election.won:
            return
        # Open the gate only to the deadline of this renewal, and write under the new epoch.
        self._deadline = sent_at + self.settings.lease_s - self.settings.fence_margin_s
        self.role, self.epoch = Role.LEADER, election.epoch
        self.fence.epoch = election.epoch
        self.gate.open_until(self._deadline)
        self.took_over_at = time.time()
        self.previous_leader, self.takeover_gap_s = election.previous_holder, election.gap_s
        self.stats.takeovers += 1
        gap = f"{election.gap_s:.2f} s after {election.previous_holder}'s last renewal" \
            if election.gap_s is not None else "with no live leader before"
        log.warning("%s leads the floor: epoch %d, %s", self.instance, election.epoch, gap)
        self._promotion = asyncio.create_task(self._promote(election), name="promotion")

    async def _promote(self, election: Election) -> None:
        try:
            await self.on_elected(election)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s could not take over", self.instance)
            self.step_down("the take-over failed; see the log")

    async def _renew(self, sent_at: float) -> None:
        if sent_at >= self._deadline:
            self.step_down("the lease was not renewed in time")
            return
        cpu = time.thread_time  # measured on the lease thread, below
        try:
            renewed, spent = await self._db(_timed(self.store.renew, cpu), self.instance, self.epoch or 0,
                                            timeout=self._deadline - sent_at)
        except TimeoutError:
            self.stats.renewal_failures += 1
            self.step_down("the lease was not renewed in time")
            return
        except Exception as exc:  # noqa: BLE001  try again until the deadline
            self.stats.renewal_failures += 1
            log.warning("%s: lease renewal failed: %s", self.instance, exc)
            return
        if not renewed:
            self.step_down("another instance holds the lease")
            return
        if self.role is not Role.LEADER:
            return  # stepped down while the renewal was out (the writer found a higher epoch)
        elapsed = time.monotonic() - sent_at
        self.stats.renewals += 1
        self.stats.renewal_s.append(elapsed)
        self.stats.renewal_s_sum += elapsed
        self.stats.cpu_s += spent
        self._deadline = sent_at + self.settings.lease_s - self.settings.fence_margin_s
        self.gate.open_until(self._deadline)

    def step_down(self, why: str) -> None:
        """No more commands, no more writes; then tell the composition root."""
        if self.role is Role.STEPPED_DOWN:
            return
        self.gate.close()
        self.fence.epoch = None
        was = self.role
        self.role, self.why = Role.STEPPED_DOWN, why
        if was is Role.LEADER:
            log.error("%s steps down (epoch %s): %s", self.instance, self.epoch, why)
        self.lost.set()

    async def _db(self, call: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run a blocking lease call on the lease's own thread, for at most `timeout` seconds (a
        call still hanging on a dead connection is left behind; the thread is the lease's alone)."""
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(asyncio.wrap_future(self._thread.submit(call, *args), loop=loop),
                                      max(0.01, timeout))


def _timed(call: Callable[..., T], cpu: Callable[[], float]) -> Callable[..., tuple[T, float]]:
    def timed(*args: Any) -> tuple[T, float]:
        before = cpu()
        result = call(*args)
        return result, cpu() - before
    return timed
