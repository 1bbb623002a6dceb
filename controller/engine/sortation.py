"""The sorters' scanners ask, the controller answers within their budget: scan events in, divert
commands out. The decision itself is `controller.domain.routing.Sortation.decide`; this module
only turns it into a command on the sorter's queue and counts what happened."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable

from controller.domain.model import Task
from controller.domain.routing import Divert, Route, Sortation, SorterRules
from controller.engine.dispatch import DeviceFailed, DeviceQueue, Job
from controller.ports import Diverted, ScanRead, Sorter
from controller.site import Site

log = logging.getLogger(__name__)


def sorter_rules(site: Site) -> Iterable[SorterRules]:
    return [SorterRules(s.id, s.scan_point, s.exception_lane, s.max_recirculations) for s in site.sorters]


class SortDesk:
    def __init__(self, site: Site, sorters: dict[str, Sorter], queues: dict[str, DeviceQueue],
                 counters: Counter[str], *, divert_timeout_s: float) -> None:
        self.sortation = Sortation(sorter_rules(site))
        self._sorters = sorters
        self._queues = queues
        self._counters = counters
        self._timeout_s = divert_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        # Called with every scan as it arrives, before it is answered (the bench times arrivals).
        self.watchers: list[Callable[[ScanRead], None]] = []

    def route(self, tote: str, route: Route) -> None:
        self.sortation.route(tote, route)

    def unroute(self, tote: str) -> None:
        self.sortation.unroute(tote)

    def on_scan(self, scan: ScanRead) -> None:
        for watch in self.watchers:
            watch(scan)
        if not self.sortation.is_sorter_scan(scan.scan_point):
            self._counters["scans_conveyor"] += 1
            return
        divert = self.sortation.decide(scan.scan_point, scan.barcode)
        if divert is None:
            self._counters["no_reads"] += 1
            return  # nothing to answer: the sorter recirculates the tote and scans it again
        if divert.order_id is None:
            self._counters["unknown_totes"] += 1
        self.answer(scan.scan_id, divert)

    def answer(self, scan_id: str, divert: Divert) -> None:
        """Send the divert target for a scan to the sorter, without waiting for it."""
        queue = self._queues.get(divert.sorter)
        sorter = self._sorters.get(divert.sorter)
        if queue is None or sorter is None:
            return
        command_id = f"d.{divert.sorter}.{scan_id}"
        lane = divert.lane
        job = Job((0,), command_id, "divert", Task.DIVERT.value, divert.order_id,
                  lambda: sorter.divert(command_id, scan_id, lane), self._timeout_s, while_faulted=True)
        task = asyncio.create_task(self._divert(queue, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_diverted(self, event: Diverted) -> None:
        if event.lane is None and event.barcode:
            self.sortation.recirculated(event.barcode)
            self._counters["recirculations"] += 1

    async def _divert(self, queue: DeviceQueue, job: Job) -> None:
        try:
            await queue.run(job)
        except DeviceFailed as exc:
            self._counters["divert_failures"] += 1
            log.info("divert %s: %s", job.command_id, exc)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
