"""A simulated Zebra-style label printer speaking the MQTT contract with ZPL payloads."""

from __future__ import annotations

from collections import deque
from typing import Any

from adapters.mqtt.wire import Channel
from controller.ports import DeviceKind
from simulators.mqtt.device import FloorContext, Job, SimulatedDevice
from simulators.mqtt.zpl import Label, ZplError, parse_label

BUFFER_LABELS = 100  # print jobs the printer holds before it refuses more (`buffer_full`)
ALERT_TEXT = {"paper_out": "PAPER OUT", "ribbon_out": "RIBBON OUT", "head_open": "HEAD OPEN"}


class SimPrinter(SimulatedDevice):
    """Actions: `print {zpl}` -> done {"labels_remaining"}; `host_status` -> done with ~HS flags.

    Takes `print_s` floor seconds per label copy and runs out of media after `media_labels`. While
    faulted (paper_out, ribbon_out, head_open) it is silent like a real Zebra: no ack, no done, no
    ~HS answer; commands that arrive meanwhile are dropped, so a retry after the fault is executed.
    It pushes an `alert` when a fault starts and ends. The label being printed when the fault struck
    is held and printed again once the fault is cleared (a cleared paper_out means a fresh roll).
    """

    kind = DeviceKind.PRINTER
    fault_codes = frozenset(ALERT_TEXT)
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
            "paper_out": self.fault == "paper_out",
            "ribbon_out": self.fault == "ribbon_out",
            "head_open": self.fault == "head_open",
            "paused": self.fault is not None,
            "labels_remaining": self.labels_remaining,
            "buffer_full": self._buffer_full,
        }

    def state_detail(self) -> dict[str, Any]:
        return self.host_status()

    @property
    def _buffer_full(self) -> bool:
        return len(self._queue) + (self._current is not None) >= BUFFER_LABELS

    def _accept(self, job: Job) -> str | None:
        if job.action == "host_status":
            return None
        if job.action != "print":
            return f"unknown_action: {job.action}"
        zpl = job.params.get("zpl")
        if type(zpl) is not str:
            return "bad_params: zpl must be a string"
        try:
            job.detail = parse_label(zpl)
        except ZplError as exc:
            return f"bad_zpl: {exc}"
        return "buffer_full" if self._buffer_full else None

    def _execute(self, job: Job) -> None:
        if job.action == "print":
            self._enqueue(job)
        else:
            self._finish(job, result=self.host_status())

    def _work_time(self, job: Job) -> float | None:
        label: Label = job.detail
        return self.print_s * label.copies

    def _complete(self, job: Job) -> None:
        label: Label = job.detail
        self.labels_remaining = max(0, self.labels_remaining - label.copies)
        self.printed.append(label)
        self._finish(job, result={"labels_remaining": self.labels_remaining})
        if self.labels_remaining == 0:
            self.inject("paper_out")

    def _on_fault(self, fault: str) -> None:
        self._cancel_work()  # the label under the head is held, not lost

    def _on_clear(self, fault: str) -> None:
        if fault == "paper_out":
            self.labels_remaining = self.media_labels
        if self._current is not None:
            self._begin(self._current)

    def _announce(self, fault: str, *, active: bool) -> None:
        """Like Zebra ^SX: push the condition when it starts and when it clears."""
        text = ALERT_TEXT[fault] + ("" if active else " CLEARED")
        self._publish(Channel.ALERT, {"alert": fault, "active": active, "message": text})
