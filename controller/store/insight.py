"""What limits the floor, read from the database: the rows of a window handed to the pure analysis
(controller/domain/insight.py) with the floor's resources taken from the site file.

`floor_insight` is what the API, the panel, /metrics, the demo's summary, `floorctl report` and
`floorctl whatif` call. The reads are short and chunked (the event loop serves the floor meanwhile)
and the analysis runs on a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncEngine

from controller.domain.insight import TOTE_PITCH_M, CommandRecord, Insight, OrderRecord, Resource, analyse
from controller.site import Site
from controller.store import queries

# How far before the window the reads reach, in wall seconds. A command queued this long before the
# window may still have been waiting or in hand in it (the device wait limits are 5-10 minutes); an
# order received this long before it may still have been on the floor (older active orders are read
# by their state; an order that took longer than this and finished in the window is not counted).
COMMAND_LOOKBACK_S = 900.0
ORDER_LOOKBACK_S = 4 * 3600.0

Progress = Callable[[str], None]


def floor_resources(site: Site) -> list[Resource]:
    """Every device of the site as the analysis sees it: pick lights with the zone of their
    locations, belts with the time a tote holds their entry (pitch / speed), conveyors with the
    length of their ride (a tote held at the entry waits for the conveyor)."""
    zone_of: dict[str, str] = {}
    for location in site.locations:
        zone_of.setdefault(location.pick_light, location.zone)
    resources = [Resource(p.id, "pick_light", zone=zone_of.get(p.id)) for p in site.pick_lights]
    resources += [Resource(p.id, "pack_station", zone=p.zone) for p in site.pack_stations]
    resources += [Resource(p.id, "printer") for p in site.printers]
    for conveyor in site.conveyors:
        # A conveyor with a pitch takes on at most speed / pitch totes a second at its entry (the
        # site file's pitch_m; the simulator holds the rest there); without one, the model's default
        # pitch on its slowest segment.
        entries = conveyor.entries_per_s()
        slowest = min(segment.speed_mps for segment in conveyor.segments)
        rated = 1 / entries if entries is not None else TOTE_PITCH_M / slowest
        ride = sum(segment.length_m / segment.speed_mps for segment in conveyor.segments)
        resources.append(Resource(conveyor.id, "conveyor", rated_s=rated, ride_s=ride))
    resources += [Resource(s.id, "sorter", rated_s=TOTE_PITCH_M / s.speed_mps) for s in site.sorters]
    return resources


@dataclass(frozen=True, slots=True)
class _Needs:
    """The devices an order's work must go to, from its lines and carrier and the site file."""

    lines: dict[int, list[tuple[str, str | None]]]
    light_of: dict[str, str]  # location -> pick light
    light_of_sku: dict[str, str]  # a line not allocated yet: the first location of its SKU
    sorter_of: dict[str, str]  # carrier -> sorter

    def __call__(self, order: OrderRecord) -> tuple[str, ...]:
        lights = [self.light_of.get(location or "") or self.light_of_sku.get(sku, "")
                  for sku, location in self.lines.get(order.id, [])]
        sorter = self.sorter_of.get(order.carrier)
        return tuple(d for d in (*lights, sorter) if d)


def _needs(site: Site, lines: dict[int, list[tuple[str, str | None]]]) -> _Needs:
    light_of = {loc.id: loc.pick_light for loc in site.locations}
    light_of_sku: dict[str, str] = {}
    for loc in site.locations:
        light_of_sku.setdefault(loc.sku, loc.pick_light)
    return _Needs(lines, light_of, light_of_sku, {c.id: c.sorter for c in site.carriers})


async def floor_insight(db: AsyncEngine, site: Site, since: float, until: float, time_scale: float = 1.0, *,
                        progress: Progress | None = None) -> Insight:
    """What limited the floor in [since, until) (wall-clock epoch seconds, as the rows are stamped).
    `time_scale`: floor seconds per wall second (a simulated floor's speed); the figures are in
    floor time. `progress` is told how the reading goes, for a long window."""
    if not until > since:
        raise ValueError(f"the window must end after it starts (since {since}, until {until})")
    commands: list[CommandRecord] = []
    queued_from = since - COMMAND_LOOKBACK_S
    async for chunk in queries.insight_commands(db, queued_from, since, until):
        commands.extend(chunk)
        if progress is not None:
            progress(f"read {len(commands)} device commands")
    orders = await queries.insight_orders(db, since - ORDER_LOOKBACK_S, since, until)
    needs = _needs(site, await queries.insight_lines(db, since, until))
    orders = [replace(o, needs=needs(o)) if o.id in needs.lines else o for o in orders]
    if progress is not None:
        progress(f"read {len(orders)} orders; analysing")
    return await asyncio.to_thread(analyse, commands, orders, floor_resources(site), since, until,
                                   time_scale=time_scale)
