"""One time scale for every simulated delay, so that a test runs a shift in seconds."""

from __future__ import annotations

import asyncio
import random


class SimClock:
    """Floor time runs `speed` times faster than wall time. Delays are given in floor seconds."""

    def __init__(self, speed: float = 1.0, seed: int | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self.random = random.Random(seed)

    def wall(self, floor_seconds: float) -> float:
        return max(0.0, floor_seconds) / self.speed

    async def sleep(self, floor_seconds: float) -> None:
        await asyncio.sleep(self.wall(floor_seconds))

    def jitter(self, mean_s: float, spread_s: float) -> float:
        """A floor-time delay around `mean_s`, never negative (seeded)."""
        return max(0.0, self.random.gauss(mean_s, spread_s)) if spread_s > 0 else max(0.0, mean_s)

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.random.random() < rate
