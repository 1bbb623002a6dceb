"""Where a sorter sends a tote: the divert decision, a pure function of the routes and the counts.

The sorter's scanner reads a tote a few metres before the divert; the controller's answer must land
in the PLC before the tote gets there (about 10 ms at speed). `Sortation.decide` is that answer,
with nothing on its path but dictionary lookups: no I/O, no asyncio.

The rule (docs/devices.md, "Sorter"): a tote with a route goes to its carrier's lane until it has
gone round `max_recirculations` times; from then on, and for any tote the controller does not
know, the answer is the sorter's exception lane. A no-read gets no answer: the sorter recirculates
it and scans it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class DivertReason(StrEnum):
    ROUTE = "route"  # the carrier's lane
    UNKNOWN_TOTE = "unknown_tote"  # no order waits for this tote at this sorter
    RECIRCULATION_LIMIT = "recirculation_limit"  # went round too often: a person must look at it


@dataclass(frozen=True, slots=True)
class SorterRules:
    sorter: str
    scan_point: str
    exception_lane: str
    max_recirculations: int


@dataclass(frozen=True, slots=True)
class Route:
    """Where the tote of a labelled order must go."""

    order_id: int
    lane: str
    sorter: str


@dataclass(frozen=True, slots=True)
class Divert:
    """The answer to one scan: which sorter, which lane, for which order (None: unknown tote)."""

    sorter: str
    lane: str
    order_id: int | None
    reason: DivertReason


class Sortation:
    """The routes of the totes on their way to a sorter, and how often each went round."""

    def __init__(self, sorters: Iterable[SorterRules]) -> None:
        self._by_scan_point = {rules.scan_point: rules for rules in sorters}
        self._routes: dict[str, Route] = {}  # by tote id
        self._recirculations: dict[str, int] = {}
        self._last: dict[str, DivertReason] = {}  # the last answer given for each routed tote
        # Totes of active orders that are not routed yet: after a restart or a take-over one may be
        # on the loop already while its order catches up. It goes round unanswered until routed.
        self._expected: set[str] = set()

    def is_sorter_scan(self, scan_point: str) -> bool:
        return scan_point in self._by_scan_point

    def route(self, tote: str, route: Route) -> None:
        self._routes[tote] = route
        self._expected.discard(tote)

    def expect(self, tote: str) -> None:
        """This tote belongs to an active order that will route it: no answer for it until then."""
        if tote not in self._routes:
            self._expected.add(tote)

    def unroute(self, tote: str) -> None:
        self._expected.discard(tote)
        self._routes.pop(tote, None)
        self._recirculations.pop(tote, None)
        self._last.pop(tote, None)

    def route_of(self, tote: str) -> Route | None:
        return self._routes.get(tote)

    def recirculated(self, tote: str) -> int:
        """The sorter reported the tote going round again; returns how often it has."""
        count = self._recirculations.get(tote, 0) + 1
        if tote in self._routes:  # unknown totes are not tracked: nothing would ever forget them
            self._recirculations[tote] = count
        return count

    def recirculations(self, tote: str) -> int:
        return self._recirculations.get(tote, 0)

    def last_reason(self, tote: str) -> DivertReason | None:
        """Why the last answer for this tote was what it was (None: never answered)."""
        return self._last.get(tote)

    def decide(self, scan_point: str, barcode: str | None) -> Divert | None:
        """The answer to a scan, or None when there is none to give (not a sorter, a no-read)."""
        rules = self._by_scan_point.get(scan_point)
        if rules is None or barcode is None:
            return None
        route = self._routes.get(barcode)
        if route is None and barcode in self._expected:
            return None  # its order has not caught up yet: let it go round
        if route is None or route.sorter != rules.sorter:
            return Divert(rules.sorter, rules.exception_lane, None, DivertReason.UNKNOWN_TOTE)
        if self._recirculations.get(barcode, 0) >= rules.max_recirculations:
            reason = DivertReason.RECIRCULATION_LIMIT
            lane = rules.exception_lane
        else:
            reason = DivertReason.ROUTE
            lane = route.lane
        self._last[barcode] = reason
        return Divert(rules.sorter, lane, route.order_id, reason)
