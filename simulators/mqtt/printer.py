"""A simulated Zebra-style label printer speaking the MQTT contract with ZPL payloads."""

from __future__ import annotations

from collections import deque
from typing import Any

from controller.contract.kinds import DeviceKind
from controller.contract.mqtt import Action, Channel
from controller.contract.reasons import PRINTER_FAULTS, Reason, detailed
from simulators.mqtt.device import DeviceJob, FloorContext, SimulatedDevice
from simulators.mqtt.zpl import Label, ZplError, parse_label

BUFFER_LABELS = 100  # print jobs the printer holds before it refuses more (`buffer_full`)
ALERT_TEXT: dict[str, str] = {Reason.PAPER_OUT: "PAPER OUT", Reason.RIBBON_OUT: "RIBBON OUT",
                              Reason.HEAD_OPEN: "HEAD OPEN"}


class SimPrinter(SimulatedDevice):
    """Actions: `print {zpl}` -> done {"labels_remaining"}; `host_status` -> done with ~HS flags;
    `cancel` (~JA) -> done {"cancelled": n}; `reset` (its faults all need a person: refused).

    Takes `print_s` floor seconds per label copy and runs out of media after `media_labels`. While
    faulted (paper_out, ribbon_out, head_open) it is silent like a real Zebra: no ack, no done, no
    ~HS answer; commands that arrive meanwhile are dropped, so a retry after the fault is executed.
    Only `cancel` and `reset` are answered while faulted.
    It pushes an `alert` when a fault starts and ends. The label being printed when the fault struck
    is held and printed again once the fault is cleared (a cleared paper_out means a fresh roll).
    """

    kind = DeviceKind.PRINTER
    fault_codes = PRINTER_FAULTS
    silent_while_faulted = True

    def __init__(self, device_id: str, context: FloorContext, *, media_labels: int, print_s: float) -> None:
        super().__init__(device_id, context)
        self.media_labels = media_labels
        self.print_s = print_s
        self.labels_remaining = media_labels
        self.printed: deque[Label] = deque(maxlen=1000)  # the last labels that came out, for tests

    def host_status(self) -> dict[str, Any]:
        """The ~HS flags this simulator reports."""
        return {
            "paper_out": self.fault == Reason.PAPER_OUT,
            "ribbon_out": self.fault == Reason.RIBBON_OUT,
            "head_open": self.fault == Reason.HEAD_OPEN,
            "paused": self.fault is not None,
            "labels_remaining": self.labels_remaining,
            "buffer_full": self._buffer_full,
        }

    def state_detail(self) -> dict[str, Any]:
        return self.host_status()

    @property
    def _buffer_full(self) -> bool:
        return len(self._queue) + (self._current is not None) >= BUFFER_LABELS

    def _accept(self, job: DeviceJob) -> str | None:
        if job.action in (Action.HOST_STATUS, Action.CANCEL):
            return None
        if job.action != Action.PRINT:
            return detailed(Reason.UNKNOWN_ACTION, job.action)
        zpl = job.params.get("zpl")
        if type(zpl) is not str:
            return detailed(Reason.BAD_PARAMS, "zpl must be a string")
        try:
            job.detail = parse_label(zpl)
        except ZplError as exc:
            return detailed(Reason.BAD_ZPL, str(exc))
        return Reason.BUFFER_FULL if self._buffer_full else None

    def _execute(self, job: DeviceJob) -> None:
        if job.action == Action.PRINT:
            self._enqueue(job)
        elif job.action == Action.CANCEL:
            self._cancel(job)
        else:
            self._finish(job, result=self.host_status())

    def _cancel(self, job: DeviceJob) -> None:
        """Like Zebra ~JA: the labels waiting go, and the one a fault holds; one being printed stays."""
        dropped = list(self._queue)
        self._queue.clear()
        if self.fault and self._current is not None:
            dropped.insert(0, self._current)
            self._current = None
        for label in dropped:
            self._finish(label, "failed", reason=Reason.CANCELLED)
        self._finish(job, result={"cancelled": len(dropped)})
        self._state_changed()

    def _work_time(self, job: DeviceJob) -> float | None:
        label: Label = job.detail
        return self.print_s * label.copies

    def _complete(self, job: DeviceJob) -> None:
        label: Label = job.detail
        self.labels_remaining = max(0, self.labels_remaining - label.copies)
        self.printed.append(label)
        self._finish(job, result={"labels_remaining": self.labels_remaining})
        if self.labels_remaining == 0:
            self.inject(Reason.PAPER_OUT)

    def _on_fault(self, fault: str) -> None:
        self._cancel_work()  # the label under the head is held, not lost

    def _on_clear(self, fault: str) -> None:
        if fault == Reason.PAPER_OUT:
            self.labels_remaining = self.media_labels
        if self._current is not None:
            self._begin(self._current)

    def _announce(self, fault: str, *, active: bool) -> None:
        """Like Zebra ^SX: push the condition when it starts and when it clears."""
        text = ALERT_TEXT[fault] + ("" if active else " CLEARED")
        self._publish(Channel.ALERT, {"alert": fault, "active": active, "message": text})
