"""A motor that moves totes: floor time advances on it only while it runs.

Every tote movement is a callback due after some floor seconds of *motion*. Stopping the drive (a jam,
an emergency stop, the PLC going down) holds every tote where it is; starting it again resumes each
with exactly the distance it had left. One asyncio timer per drive, however many totes ride on it,
so a sorter can carry thousands of totes per second without a task per tote.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from simulators.clock import SimClock

log = logging.getLogger(__name__)


class Move:
    """A pending arrival on a drive; `cancel()` takes the tote off (it never arrives)."""

    __slots__ = ("action", "due", "seq")

    def __init__(self, due: float, seq: int, action: Callable[[], None]) -> None:
        self.due = due
        self.seq = seq
        self.action: Callable[[], None] | None = action

    def __lt__(self, other: Move) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)

    def cancel(self) -> None:
        self.action = None


class Drive:
    def __init__(self, clock: SimClock, name: str) -> None:
        self.name = name
        self._speed = clock.speed
        self._running = True
        self._motion = 0.0  # floor seconds of motion before `_since`
        self._since = time.monotonic()
        self._moves: list[Move] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._running

    def position(self) -> float:
        """Floor seconds this drive has run so far."""
        if not self._running:
            return self._motion
        return self._motion + (time.monotonic() - self._since) * self._speed

    def after(self, floor_seconds: float, action: Callable[[], None]) -> Move:
        move = Move(self.position() + max(0.0, floor_seconds), next(self._seq), action)
        heapq.heappush(self._moves, move)
        if self._moves[0] is move:
            self._arm()
        return move

    def set_running(self, running: bool) -> None:
        if running == self._running:
            return
        if running:
            self._since = time.monotonic()
            self._running = True
            self._arm()
        else:
            self._motion = self.position()
            self._running = False
            self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._disarm()
        while self._moves and self._moves[0].action is None:
            heapq.heappop(self._moves)
        if not self._running or not self._moves:
            return
        delay = (self._moves[0].due - self.position()) / self._speed
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._arrive)

    def _arrive(self) -> None:
        self._timer = None
        now = self.position()
        while self._running and self._moves and self._moves[0].due <= now:
            action = heapq.heappop(self._moves).action
            if action is None:
                continue
            try:
                action()
            except Exception:  # one tote's bad luck must not stop the belt
                log.exception("drive %s: a tote movement failed", self.name)
        self._arm()
