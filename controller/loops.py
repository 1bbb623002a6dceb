"""The event loop a floorctl process runs on: asyncio's own, or uvloop (libuv) where it is installed.

`floorctl --loop auto|uvloop|asyncio` (or `FLOORCTL_LOOP`) chooses; asyncio is the default (the full
bench runs on both did not show uvloop ahead: docs/benchmarks.md item 10), and `auto` takes
uvloop when it imports and asyncio's loop otherwise. asyncua, paho's socket callbacks (add_reader/add_writer),
asyncpg, aiosqlite and uvicorn all run on either; the bench measures both (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")
DEFAULT = "asyncio"


class LoopUnavailable(RuntimeError):
    """uvloop was asked for by name and cannot be imported here."""


def chosen(name: str | None = None) -> str:
    """`auto`, `uvloop` or `asyncio` resolved to the loop that will run: `uvloop` or `asyncio`."""
    name = (name or os.environ.get("FLOORCTL_LOOP") or DEFAULT).strip().lower()
    if name not in CHOICES:
        raise LoopUnavailable(f"unknown event loop {name!r}: one of {', '.join(CHOICES)}")
    if name == "asyncio":
        return "asyncio"
    available = importlib.util.find_spec("uvloop") is not None
    if name == "uvloop" and not available:
        raise LoopUnavailable("uvloop is not installed (pip install uvloop), or choose --loop asyncio")
    return "uvloop" if available else "asyncio"


def loop_factory(name: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What asyncio.Runner makes its loop with (None: asyncio's default)."""
    if chosen(name) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(main: Coroutine[Any, Any, T], name: str | None = None) -> T:
    """asyncio.run on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)


def running() -> str:
    """The loop this code runs on, for reports: `uvloop` or `asyncio`."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
