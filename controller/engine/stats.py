"""Rolling floor statistics: throughput, stage and device durations over a time window.

The engine records as things finish; the API asks for a `snapshot`. Recording is O(1) amortised
(append, then drop what fell out of the window from the left) and memory is bounded twice: by the
window and by a cap on samples per series, so a burst cannot grow the process. Percentiles are exact
(nearest rank) over the samples kept, which is plenty for a supervisor's view and simple to trust.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from itertools import islice
from typing import Any

RECENT_S = 60.0  # "right now": the slowest stage/device is judged over the last minute
OUTCOMES = ("shipped", "exception", "cancelled")


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list (q in 0..100)."""
    rank = max(1, math.ceil(q * len(ordered) / 100 - 1e-9))  # the epsilon absorbs float noise
    return ordered[rank - 1]


def summarise(values: list[float]) -> dict[str, Any]:
    """Count and p50/p95/p99/max in seconds; the percentiles are None when there are no samples."""
    if not values:
        return {"count": 0, "p50_s": None, "p95_s": None, "p99_s": None, "max_s": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_s": percentile(ordered, 50),
        "p95_s": percentile(ordered, 95),
        "p99_s": percentile(ordered, 99),
        "max_s": ordered[-1],
    }


class Samples:
    """Durations inside the window, oldest first, at most `cap` of them.

    Times and durations live in two parallel deques so a snapshot copies the durations with one C
    call instead of unpacking tuples in Python, which roughly halves a snapshot at peak.
    """

    __slots__ = ("ats", "seconds")

    def __init__(self, cap: int) -> None:
        self.ats: deque[float] = deque(maxlen=cap)
        self.seconds: deque[float] = deque(maxlen=cap)

    def add(self, at: float, seconds: float, horizon: float) -> None:
        self.ats.append(at)
        self.seconds.append(seconds)
        self.prune(horizon)

    def prune(self, horizon: float) -> None:
        ats, seconds = self.ats, self.seconds
        while ats and ats[0] < horizon:
            ats.popleft()
            seconds.popleft()

    def values(self) -> list[float]:
        return list(self.seconds)

    def since(self, horizon: float) -> list[float]:
        """The newest samples back to `horizon`. Samples arrive in time order (give or take a few
        ms between tasks), so walking from the right and stopping early is exact enough and cheap."""
        count = 0
        for at in reversed(self.ats):
            if at < horizon:
                break
            count += 1
        return list(islice(reversed(self.seconds), count))


@dataclass(frozen=True, slots=True)
class Finished:
    at: float
    cycle_s: float
    outcome: str


class FloorStats:
    """What the floor did in the last `window_s` seconds. Times are wall-clock epoch seconds."""

    def __init__(self, window_s: float = 900, max_samples: int = 20_000) -> None:
        if window_s < RECENT_S:
            raise ValueError(f"window_s must be at least {RECENT_S:.0f} s, got {window_s}")
        self.window_s = float(window_s)
        self.max_samples = max_samples
        self.stages: dict[str, Samples] = {}
        self.devices: dict[str, Samples] = {}
        self.kinds: dict[str, Samples] = {}
        self.device_kind: dict[str, str] = {}
        self.orders: deque[Finished] = deque(maxlen=max_samples)
        self.totals: Counter[str] = Counter()  # since start, by outcome

    # ---- what the engine records ---------------------------------------------------------------
    def record_stage(self, stage: str, seconds: float, at: float) -> None:
        self._series(self.stages, stage).add(at, seconds, at - self.window_s)

    def record_device(self, device_id: str, kind: str, seconds: float, at: float) -> None:
        self.device_kind[device_id] = kind
        horizon = at - self.window_s
        self._series(self.devices, device_id).add(at, seconds, horizon)
        self._series(self.kinds, kind).add(at, seconds, horizon)

    def record_order(self, cycle_s: float, at: float, outcome: str) -> None:
        self.totals[outcome] += 1
        self.orders.append(Finished(at, cycle_s, outcome))
        horizon = at - self.window_s
        while self.orders and self.orders[0].at < horizon:
            self.orders.popleft()

    def _series(self, table: dict[str, Samples], key: str) -> Samples:
        series = table.get(key)
        if series is None:
            series = table[key] = Samples(self.max_samples)
        return series

    # ---- what the API reads ---------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        horizon = now - self.window_s
        recent = now - RECENT_S
        for table in (self.stages, self.devices, self.kinds):
            for series in table.values():
                series.prune(horizon)

        stages = {name: self._describe(series, recent) for name, series in sorted(self.stages.items())}
        devices = {
            device_id: {"kind": self.device_kind[device_id], **self._describe(series, recent)}
            for device_id, series in sorted(self.devices.items())
        }
        kinds = {
            kind: {**self._describe(series, recent),
                   "slowest": _slowest({d: v for d, v in devices.items() if v["kind"] == kind})}
            for kind, series in sorted(self.kinds.items())
        }
        slowest_stage = _slowest(stages)
        slowest_device = _slowest(devices)
        return {
            "at": now,
            "window_s": self.window_s,
            "throughput": self._throughput(now),
            "orders": self._orders(horizon),
            "stages": stages,
            "devices": devices,
            "kinds": kinds,
            "slowest_stage": slowest_stage and {"stage": slowest_stage,
                                                "recent_p95_s": stages[slowest_stage]["recent_p95_s"]},
            "slowest_device": slowest_device and {"device_id": slowest_device,
                                                  "kind": devices[slowest_device]["kind"],
                                                  "recent_p95_s": devices[slowest_device]["recent_p95_s"]},
        }

    @staticmethod
    def _describe(series: Samples, recent: float) -> dict[str, Any]:
        described = summarise(series.values())  # pruned: everything left is inside the window
        last_minute = sorted(series.since(recent))
        described["recent_count"] = len(last_minute)
        described["recent_p95_s"] = percentile(last_minute, 95) if last_minute else None
        return described

    def _throughput(self, now: float) -> dict[str, Any]:
        """Shipped orders per minute: the last 60 s, and a series of whole minutes ending now."""
        minutes = max(1, math.ceil(self.window_s / 60))
        start = now - minutes * 60
        per_minute = [0] * minutes
        for done in self.orders:
            if done.outcome == "shipped" and start < done.at <= now:
                per_minute[min(minutes - 1, int((done.at - start) // 60))] += 1
        return {
            "last_minute": per_minute[-1],
            "per_minute": [{"start": start + i * 60, "shipped": n} for i, n in enumerate(per_minute)],
        }

    def _orders(self, horizon: float) -> dict[str, Any]:
        finished = [done for done in self.orders if done.at >= horizon]
        in_window = Counter(done.outcome for done in finished)
        outcomes = [*OUTCOMES, *sorted(set(self.totals) - set(OUTCOMES))]
        return {
            "in_window": {outcome: in_window.get(outcome, 0) for outcome in outcomes},
            "totals": {outcome: self.totals.get(outcome, 0) for outcome in outcomes},
            "cycle": summarise([done.cycle_s for done in finished if done.outcome == "shipped"]),
        }


def _slowest(described: dict[str, dict[str, Any]]) -> str | None:
    """The key with the highest p95 over the last minute, or None when nothing finished recently."""
    candidates = [(v["recent_p95_s"], key) for key, v in described.items() if v["recent_p95_s"] is not None]
    return max(candidates)[1] if candidates else None
