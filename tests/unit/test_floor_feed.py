"""The panel's floor feed: one snapshot per tick shared by every stream, and a nudge (an alarm) that
retakes it at once and wakes every waiting stream. Snapshots come from a counter; no I/O."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from controller.api.routes.events import FloorFeed


def counting_feed(tick_s: float) -> tuple[FloorFeed, list[int]]:
    taken: list[int] = []

    async def take() -> dict[str, Any]:
        taken.append(len(taken) + 1)
        return {"n": len(taken)}

    return FloorFeed(take, tick_s=tick_s), taken


async def test_readers_within_a_tick_share_one_snapshot() -> None:
    feed, taken = counting_feed(tick_s=60)
    bodies = await asyncio.gather(*(feed.current() for _ in range(5)))
    assert taken == [1] and {body for _, body in bodies} == {b'{"n":1}'}


async def test_a_nudge_wakes_every_waiting_stream_with_a_fresh_snapshot() -> None:
    feed, taken = counting_feed(tick_s=60)
    seen, _ = await feed.current()
    waiting = [asyncio.create_task(feed.after(seen)) for _ in range(3)]
    await asyncio.sleep(0.02)
    assert not any(task.done() for task in waiting)  # the next tick is a minute away
    started = time.monotonic()
    feed.nudge()
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert time.monotonic() - started < 0.2
    assert taken == [1, 2] and {json.loads(body)["n"] for _, body in answers} == {2}
