"""Garbage-collector pauses: while CPython's cyclic collector runs, no other Python code does.

A full (generation 2) collection walks every tracked object of the process; an asyncua server holds
its whole address space as Python objects, so one such pause can be tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any, Self

from controller.bootstrap import GC_THRESHOLDS


class GcPauses:
    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> Self:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        full = [s for g, s in self.pauses if g == 2]
        return {"collections": len(self.pauses), "full_collections": len(full),
                "max_ms": round(max((s for _, s in self.pauses), default=0.0) * 1000, 1),
                "full_max_ms": round(max(full, default=0.0) * 1000, 1)}


@contextlib.contextmanager
def frozen_start_up() -> Iterator[None]:
    """What `floorctl run` and `floorctl demo` do once the controller has started: everything alive
    now (imports, the started controller) is moved out of the collector's sight, so that a full
    collection walks only what was made since, and the collector runs less often. The bench
    measures the controller as it ships."""
    gc.collect()  # freezing garbage would keep it forever
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
