"""What the simulated devices tell the outside world, independent of the wire, and their command memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from controller.contract.opcua import MachineryItemState, MachineryOperationMode


@dataclass(frozen=True, slots=True)
class Scanned:
    device_id: str
    scan_point: str
    scan_id: str
    barcode: str | None  # None: no-read
    at: float


@dataclass(frozen=True, slots=True)
class Completed:
    """A Transport (conveyor) or Induct (sorter) finished: the tote reached `destination`."""

    device_id: str
    command_id: str
    tote_id: str
    destination: str
    ok: bool
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class DivertReport:
    """A sorter sent a scanned tote down a lane, or round again."""

    device_id: str
    scan_id: str
    barcode: str | None
    lane: str | None  # None: recirculated
    command_id: str  # the Divert that set the lane, "" when the sorter decided by itself
    at: float


@dataclass(frozen=True, slots=True)
class StatusChanged:
    device_id: str
    state: MachineryItemState
    mode: MachineryOperationMode
    fault: str
    estop: bool


Report = Scanned | Completed | DivertReport | StatusChanged
Reports = Callable[[Report], None]


class CommandLog:
    """Accepted commands by id, so a repeated id is answered again and never executed twice.

    Once a command has finished, a repeat also re-sends its final report: a controller that lost the
    report while its link was down gets it by simply re-sending what it still waits for.
    Rejections are not remembered: a command rejected during an e-stop may succeed after the reset.
    """

    def __init__(self, reports: Reports, capacity: int = 200_000) -> None:
        self._reports = reports
        self._capacity = capacity
        self._final: OrderedDict[str, Report | None] = OrderedDict()

    def repeat(self, command_id: str) -> bool:
        """True if `command_id` was accepted before (and its final report, if any, went out again)."""
        if command_id not in self._final:
            return False
        final = self._final[command_id]
        if final is not None:
            self._reports(final)
        return True

    def accepted(self, command_id: str) -> None:
        self._final[command_id] = None
        while len(self._final) > self._capacity:
            self._final.popitem(last=False)

    def finished(self, command_id: str, report: Report) -> None:
        if command_id in self._final:
            self._final[command_id] = report
        self._reports(report)
