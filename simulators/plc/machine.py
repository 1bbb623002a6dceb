"""What every simulated conveyor and sorter shares: a drive, faults and OPC 40001 state."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

from controller.contract.opcua import MachineryItemState, MachineryOperationMode
from controller.contract.reasons import Reason, jam
from simulators.clock import SimClock
from simulators.plc.drive import Drive
from simulators.plc.reports import CommandLog, Reports, Scanned, StatusChanged


class Machine:
    def __init__(self, device_id: str, clock: SimClock, reports: Reports, *, no_read_rate: float,
                 next_scan_id: Callable[[], str]) -> None:
        self.device_id = device_id
        self._no_read_rate = no_read_rate
        self._next_scan_id = next_scan_id
        self.clock = clock
        self.reports = reports
        self.drive = Drive(clock, device_id)
        self.commands = CommandLog(reports)
        self.executed: Counter[str] = Counter()  # test hook: executions per command id
        self.jammed: str | None = None  # the jammed segment
        self.estopped = False
        self._halted = False  # the PLC itself is stopped
        self._last: StatusChanged | None = None

    # --- what subclasses provide -------------------------------------------------------------
    def segments(self) -> Sequence[str]:
        raise NotImplementedError

    def busy(self) -> bool:
        """A tote is on board."""
        raise NotImplementedError

    def remove_totes(self, segment: str, reason: str) -> None:
        """An operator pulls the totes off `segment`; their commands fail with `reason`."""
        raise NotImplementedError

    # --- state ---------------------------------------------------------------------------------
    @property
    def fault(self) -> str:
        if self.estopped:
            return Reason.ESTOP
        return jam(self.jammed) if self.jammed else ""

    @property
    def state(self) -> MachineryItemState:
        if self.estopped or self.jammed:
            return MachineryItemState.OUT_OF_SERVICE
        return MachineryItemState.EXECUTING if self.busy() else MachineryItemState.NOT_EXECUTING

    def status(self) -> StatusChanged:
        return StatusChanged(self.device_id, self.state, MachineryOperationMode.PROCESSING, self.fault,
                             self.estopped)

    def changed(self) -> None:
        """Call after anything that may change state: reports it and starts or stops the drive."""
        self.drive.set_running(not (self.estopped or self.jammed or self._halted))
        status = self.status()
        if status != self._last:
            self._last = status
            self.reports(status)

    def read(self, scan_point: str, tote_id: str) -> Scanned:
        """One scanner read at a scan point: the tote's barcode, or a no-read at the configured rate."""
        barcode = None if self.clock.chance(self._no_read_rate) else tote_id
        return Scanned(self.device_id, scan_point, self._next_scan_id(), barcode, time.time())

    # --- faults --------------------------------------------------------------------------------
    def inject_jam(self, segment: str | None = None) -> None:
        segment = segment or self.segments()[0]
        if segment not in self.segments():
            known = ", ".join(self.segments())
            raise ValueError(f"{self.device_id}: no segment {segment!r} (known: {known})")
        self.jammed = segment
        self.changed()

    def clear(self, *, remove_totes: bool = False) -> None:
        """Clear a jam. With `remove_totes` the operator took the jammed totes off instead of freeing them."""
        if self.jammed and remove_totes:
            self.remove_totes(self.jammed, self.fault)
        self.jammed = None
        self.changed()

    def set_estop(self, pressed: bool) -> None:
        self.estopped = pressed
        self.changed()

    def reset(self) -> None:
        """The reset button after an e-stop or a fault: clears both, totes carry on."""
        self.estopped = False
        self.jammed = None
        self.changed()

    def halt(self, halted: bool) -> None:
        """The PLC stops or starts (its server goes down or up); totes hold their place meanwhile."""
        self._halted = halted
        self.changed()
