"""A simulated conveyor: totes ride its segments in order, pass scan points, arrive at a pack station."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.contract.opcua import ACCEPTED, rejected
from controller.contract.reasons import Reason
from controller.site import ConveyorSpec
from simulators.clock import SimClock
from simulators.plc.drive import Move
from simulators.plc.machine import Machine
from simulators.plc.reports import Completed, Reports


@dataclass(slots=True)
class _Tote:
    command_id: str
    tote_id: str
    destination: str
    segment: int = 0
    move: Move | None = None


class SimConveyor(Machine):
    def __init__(self, spec: ConveyorSpec, clock: SimClock, reports: Reports, *, no_read_rate: float,
                 next_scan_id: Callable[[], str]) -> None:
        super().__init__(spec.id, clock, reports, no_read_rate=no_read_rate, next_scan_id=next_scan_id)
        self.spec = spec
        self._scan_points = {seg.id: [sp.id for sp in spec.scan_points if sp.segment == seg.id]
                             for seg in spec.segments}
        self._totes: dict[str, _Tote] = {}  # by command id
        self._next_entry = 0.0  # drive position (floor seconds) at which the next tote may go on

    def segments(self) -> Sequence[str]:
        return [s.id for s in self.spec.segments]

    def busy(self) -> bool:
        return bool(self._totes)

    def transport(self, command_id: str, tote_id: str, destination: str) -> str:
        if self.commands.repeat(command_id):
            return ACCEPTED
        if not command_id or not tote_id:
            return rejected(Reason.BAD_ARGUMENTS)
        if destination not in self.spec.destinations:
            return rejected(Reason.UNKNOWN_DESTINATION)
        if self.estopped:
            return rejected(Reason.ESTOP)
        self.commands.accepted(command_id)
        self.executed[command_id] += 1
        tote = _Tote(command_id, tote_id, destination)
        self._totes[command_id] = tote
        entries = self.spec.entries_per_s()
        if entries is None:
            self._ride(tote)
        else:  # one tote per pitch: a tote waits at the entry until the one before it has moved on
            now = self.drive.position()
            wait = max(0.0, self._next_entry - now)
            self._next_entry = max(now, self._next_entry) + 1 / entries
            tote.move = self.drive.after(wait, lambda: self._ride(tote)) if wait > 0 else None
            if wait == 0:
                self._ride(tote)
        self.changed()
        return ACCEPTED

    def _ride(self, tote: _Tote) -> None:
        segment = self.spec.segments[tote.segment]
        tote.move = self.drive.after(segment.length_m / segment.speed_mps, lambda: self._segment_end(tote))

    def _segment_end(self, tote: _Tote) -> None:
        for scan_point in self._scan_points[self.spec.segments[tote.segment].id]:
            self.reports(self.read(scan_point, tote.tote_id))
        tote.segment += 1
        if tote.segment < len(self.spec.segments):
            self._ride(tote)
        else:
            self._finish(tote, ok=True, reason="")

    def _finish(self, tote: _Tote, *, ok: bool, reason: str) -> None:
        del self._totes[tote.command_id]
        self.commands.finished(tote.command_id, Completed(
            self.device_id, tote.command_id, tote.tote_id, tote.destination, ok, reason, time.time()))
        self.changed()

    def remove_totes(self, segment: str, reason: str) -> None:
        index = self.segments().index(segment)
        for tote in [t for t in self._totes.values() if t.segment == index]:
            if tote.move is not None:
                tote.move.cancel()
            self._finish(tote, ok=False, reason=reason)
