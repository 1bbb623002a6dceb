"""What a conformance check is, how one runs, and what it yields.

A check is a small async function of one device's probe context, registered in a protocol module's
`CheckList` under a dotted name (`ack.before_done`): it returns a detail for people when the device
does what docs/devices.md says, raises `Failed` naming what it did instead, or `Skipped` when it
cannot apply (the device offers no fault injection). A check marked `motion` moves, prints or lights
something and runs only when the user allows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

C = TypeVar("C")

NEEDS_MOTION = "needs --allow-motion"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skipped"


class Failed(Exception):
    """The device is off the contract; the message says how, in words for its maker."""


class Skipped(Exception):
    """The check does not apply to this device; the message says why."""


class Unreachable(Exception):
    """The broker or a PLC cannot be reached (or refuses the site file's credentials)."""


@dataclass(frozen=True, slots=True)
class Check(Generic[C]):
    name: str
    run: Callable[[C], Awaitable[str | None]]
    kinds: frozenset[str]
    motion: bool

    @property
    def summary(self) -> str:
        """The first paragraph of the check's docstring: what it asks of the device."""
        paragraph = (self.run.__doc__ or self.name).strip().split("\n\n")[0]
        return " ".join(paragraph.split())


class CheckList(Generic[C]):
    """The checks of one protocol, in the order they run on a device."""

    def __init__(self) -> None:
        self.checks: list[Check[C]] = []

    def add(self, name: str, *, kinds: Iterable[str], motion: bool = False
            ) -> Callable[[Callable[[C], Awaitable[str | None]]], Callable[[C], Awaitable[str | None]]]:
        def register(run: Callable[[C], Awaitable[str | None]]) -> Callable[[C], Awaitable[str | None]]:
            if any(c.name == name for c in self.checks):
                raise ValueError(f"two checks named {name!r}")
            self.checks.append(Check(name, run, frozenset(kinds), motion))
            return run

        return register

    def of_kind(self, kind: str) -> list[Check[C]]:
        return [c for c in self.checks if kind in c.kinds]


@dataclass(frozen=True, slots=True)
class Result:
    device: str
    kind: str
    check: str
    status: Status
    detail: str
    seconds: float


async def run_checks(checks: Iterable[Check[C]], context: C, *, device: str, kind: str, allow_motion: bool,
                     limit_s: float) -> list[Result]:
    """Run `checks` one after another on one device. Nothing a device does stops the run: a check that
    takes longer than `limit_s` fails, and an unexpected error fails that check only."""
    results = []
    for check in checks:
        started = time.monotonic()
        if check.motion and not allow_motion:
            status, detail = Status.SKIP, NEEDS_MOTION
        else:
            try:
                async with asyncio.timeout(limit_s):
                    status, detail = Status.PASS, await check.run(context) or ""
            except Failed as exc:
                status, detail = Status.FAIL, str(exc)
            except Skipped as exc:
                status, detail = Status.SKIP, str(exc)
            except TimeoutError:
                status, detail = Status.FAIL, f"did not finish within {limit_s:g} s"
            except Exception as exc:  # noqa: BLE001 - one check's surprise must not hide the others
                status, detail = Status.FAIL, f"unexpected error: {exc!r}"
        results.append(Result(device, kind, check.name, status, detail, time.monotonic() - started))
    return results
