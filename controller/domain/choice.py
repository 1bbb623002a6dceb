"""Which device takes a piece of work: pack station, printer, conveyor. Pure functions of a snapshot.

The engine hands in one `Candidate` per device of the kind (built from its queue) and gets back a
device id; the rules live here so they can be tested without a queue, a device or an event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    device_id: str
    usable: bool  # online, in rotation, not faulted (where a fault sends work elsewhere)
    load: int = 0  # commands queued and in flight
    served: int = 0  # commands taken so far: equally loaded devices take turns
    inbound: int = 0  # totes chosen for it and not yet packed (pack stations)


def choose_pack_station(stations: Sequence[Candidate]) -> str:
    """The station with the fewest totes queued, packing or on their way; ties take turns.

    Counting totes on their way matters: without it every order that chooses in the same instant
    sees the same empty queue and herds to one station. When no station is usable the order still
    gets one, and waits for it there.
    """
    if not stations:
        raise ValueError("the site has no pack station")
    usable = [s for s in stations if s.usable] or list(stations)
    return min(usable, key=lambda s: (s.inbound, s.served)).device_id


def choose_printer(printers: Sequence[Candidate]) -> str | None:
    """The least loaded usable printer (ties: the one that has served least); None if none is usable."""
    usable = [p for p in printers if p.usable]
    if not usable:
        return None
    return min(usable, key=lambda p: (p.load, p.served)).device_id


def choose_conveyor(conveyors: Sequence[Candidate]) -> str:
    """The least loaded of the conveyors that reach a destination."""
    if not conveyors:
        raise ValueError("no conveyor reaches that destination")
    return min(conveyors, key=lambda c: c.load).device_id
