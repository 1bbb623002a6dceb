"""A simulated loop sorter: inducted totes circle past one scanner; a divert target that lands before
the tote reaches the divert sends it down a lane, otherwise it goes round again."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.contract.opcua import ACCEPTED, rejected
from controller.contract.reasons import Reason
from controller.site import SorterSpec
from simulators.clock import SimClock
from simulators.plc.drive import Move
from simulators.plc.machine import Machine
from simulators.plc.reports import Completed, DivertReport, Reports

INDUCT_TO_SCAN_M = 1.0  # the induction belt joins the loop this far ahead of the scanner
LOOP = "loop"  # the sorter's only segment, for jams


@dataclass(slots=True)
class ScanTiming:
    """Test hook: when a scan was read and when its divert target landed in the PLC (wall clock)."""

    scan_id: str
    read_at: float
    target_landed_at: float | None = None


@dataclass(slots=True)
class _Tote:
    command_id: str
    tote_id: str
    recirculations: int = 0
    move: Move | None = None


@dataclass(slots=True)
class _Pass:
    """One tote passing the scanner, until it reaches the divert."""

    tote: _Tote
    barcode: str | None
    timing: ScanTiming
    lane: str | None = None
    divert_command: str = ""


class SimSorter(Machine):
    def __init__(self, spec: SorterSpec, clock: SimClock, reports: Reports, *, no_read_rate: float,
                 next_scan_id: Callable[[], str]) -> None:
        super().__init__(spec.id, clock, reports, no_read_rate=no_read_rate, next_scan_id=next_scan_id)
        self.spec = spec
        self._lanes = {*spec.lanes, spec.exception_lane}
        self._totes: dict[str, _Tote] = {}  # by induct command id
        self._passes: dict[str, _Pass] = {}  # by scan id, until the divert decision
        self._decided: OrderedDict[str, None] = OrderedDict()  # recent scan ids past their divert
        self.scans: list[ScanTiming] = []

    def segments(self) -> Sequence[str]:
        return [LOOP]

    def busy(self) -> bool:
        return bool(self._totes)

    def _travel(self, metres: float) -> float:
        return max(0.0, metres) / self.spec.speed_mps

    def induct(self, command_id: str, tote_id: str) -> str:
        if self.commands.repeat(command_id):
            return ACCEPTED
        if not command_id or not tote_id:
            return rejected(Reason.BAD_ARGUMENTS)
        if self.estopped:
            return rejected(Reason.ESTOP)
        self.commands.accepted(command_id)
        self.executed[command_id] += 1
        tote = _Tote(command_id, tote_id)
        self._totes[command_id] = tote
        tote.move = self.drive.after(self._travel(INDUCT_TO_SCAN_M), lambda: self._scan(tote))
        self.changed()
        return ACCEPTED

    def _scan(self, tote: _Tote) -> None:
        scan = self.read(self.spec.scan_point, tote.tote_id)
        timing = ScanTiming(scan.scan_id, scan.at)
        self.scans.append(timing)
        self._passes[timing.scan_id] = _Pass(tote, scan.barcode, timing)
        self.reports(scan)
        tote.move = self.drive.after(self._travel(self.spec.scan_to_divert_m),
                                     lambda: self._decide(timing.scan_id))

    def divert(self, command_id: str, scan_id: str, lane: str) -> str:
        if self.commands.repeat(command_id):
            return ACCEPTED
        if not command_id or not scan_id:
            return rejected(Reason.BAD_ARGUMENTS)
        if lane not in self._lanes:
            return rejected(Reason.UNKNOWN_LANE)
        passing = self._passes.get(scan_id)
        if passing is None:
            return rejected(Reason.LATE if scan_id in self._decided else Reason.UNKNOWN_SCAN)
        if passing.divert_command:
            # First target wins: two live answers for one scan would make the outcome ambiguous.
            return rejected(Reason.TARGET_EXISTS)
        passing.lane = lane
        passing.divert_command = command_id
        passing.timing.target_landed_at = time.time()
        self.commands.accepted(command_id)
        return ACCEPTED

    def _decide(self, scan_id: str) -> None:
        passing = self._passes.pop(scan_id)
        self._decided[scan_id] = None
        while len(self._decided) > 100_000:
            self._decided.popitem(last=False)
        tote = passing.tote
        if passing.lane is not None:
            self._leave(passing, passing.lane, ok=True, reason="")
        elif tote.recirculations >= self.spec.max_recirculations:
            self._leave(passing, self.spec.exception_lane, ok=False, reason=Reason.RECIRCULATION_LIMIT)
        else:
            tote.recirculations += 1
            self.reports(DivertReport(self.device_id, scan_id, passing.barcode, None, "", time.time()))
            loop_rest = self.spec.loop_length_m - self.spec.scan_to_divert_m
            tote.move = self.drive.after(self._travel(loop_rest), lambda: self._scan(tote))

    def _leave(self, passing: _Pass, lane: str, *, ok: bool, reason: str) -> None:
        at = time.time()
        diverted = DivertReport(self.device_id, passing.timing.scan_id, passing.barcode, lane,
                                passing.divert_command, at)
        if passing.divert_command:
            self.commands.finished(passing.divert_command, diverted)
        else:
            self.reports(diverted)
        tote = passing.tote
        del self._totes[tote.command_id]
        self.commands.finished(tote.command_id,
                               Completed(self.device_id, tote.command_id, tote.tote_id, lane, ok, reason, at))
        self.changed()

    def remove_totes(self, segment: str, reason: str) -> None:
        for tote in list(self._totes.values()):
            if tote.move is not None:
                tote.move.cancel()
            for scan_id in [s for s, p in self._passes.items() if p.tote is tote]:
                del self._passes[scan_id]
            del self._totes[tote.command_id]
            self.commands.finished(tote.command_id, Completed(
                self.device_id, tote.command_id, tote.tote_id, "", False, reason, time.time()))
        self.changed()
