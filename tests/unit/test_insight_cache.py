"""The API's cache of what limits the floor: fresh answers shared, a stale one handed out at once while
a fresh one is read in the background, a very old one read again before answering. The reader is a
hand-written fake that counts its calls and can be held; no database."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api.routes.insight import InsightCache
from controller.domain.insight import Insight
from controller.site import Site


class Engine:
    site = cast("Site", object())
    speed = 1.0


class Reader:
    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self, _db: AsyncEngine, _site: Site, since: float, until: float,
                       _scale: float) -> Insight:
        self.calls.append((since, until))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("the database went away")
        return cast("Insight", {"read": len(self.calls)})


def cache(now: list[float], reader: Reader) -> InsightCache:
    return InsightCache(cast("Any", Engine()), cast("AsyncEngine", None), max_age_s=10, stale_s=60,
                        clock=lambda: now[0], read=reader)


async def test_a_fresh_answer_is_shared_and_a_stale_one_is_handed_out_while_it_is_read_again() -> None:
    now, reader = [1000.0], Reader()
    insights = cache(now, reader)
    first = await insights.get()
    assert reader.calls == [(100.0, 1000.0)]  # the last 15 minutes
    now[0] = 1005
    assert await insights.get() is first and len(reader.calls) == 1
    now[0] = 1030
    reader.gate.clear()  # the background reading takes its time
    answers = [await insights.get() for _ in range(3)]
    assert answers == [first] * 3
    await asyncio.sleep(0)
    assert len(reader.calls) == 2  # one reading in the background, however many asked
    reader.gate.set()
    await asyncio.sleep(0.01)
    assert await insights.get() == {"read": 2}


async def test_past_stale_it_is_read_before_answering_and_a_failed_refresh_keeps_the_old() -> None:
    now, reader = [1000.0], Reader()
    insights = cache(now, reader)
    await insights.get()
    now[0] = 1100  # past stale_s: wait for a fresh one
    assert await insights.get() == {"read": 2}
    now[0] = 1120
    reader.fail = True
    assert await insights.get() == {"read": 2}
    await asyncio.sleep(0.01)
    assert insights.refresh_errors == 1
    reader.fail = False
    assert await insights.get() == {"read": 2}  # still stale, read again in the background
    await asyncio.sleep(0.01)
    assert await insights.get() == {"read": 4}
    await insights.aclose()
