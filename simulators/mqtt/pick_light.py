"""A simulated pick-to-light unit: shows a quantity, the operator picks and presses confirm."""

from __future__ import annotations

from typing import Any

from controller.ports import DeviceKind
from controller.site import OperatorModel
from simulators.mqtt.device import FloorContext, Job, SimulatedDevice


class SimPickLight(SimulatedDevice):
    """Actions: `show {location, qty, colour}` -> done {"picked", "short"}; `clear`.

    The operator confirms after a seeded random delay, sometimes short-picks (picked < qty,
    short=true) and sometimes never answers (the light stays lit until `clear`). A `clear` switches
    the unit off: the pick it showed and those waiting fail with reason `cleared`.
    """

    kind = DeviceKind.PICK_LIGHT

    def __init__(self, device_id: str, context: FloorContext, operator: OperatorModel) -> None:
        super().__init__(device_id, context)
        self.operator = operator

    def state_detail(self) -> dict[str, Any]:
        shown = self._current.params if self._current is not None else None
        return {"display": shown, "queued": len(self._queue)}

    def _accept(self, job: Job) -> str | None:
        if job.action == "clear":
            return None
        if job.action != "show":
            return f"unknown_action: {job.action}"
        location, qty, colour = (job.params.get(key) for key in ("location", "qty", "colour"))
        if type(location) is not str or not location:
            return "bad_params: location must be a non-empty string"
        if type(qty) is not int or qty < 1:
            return "bad_params: qty must be a positive integer"
        if colour is not None and type(colour) is not str:
            return "bad_params: colour must be a string"
        job.params = {"location": location, "qty": qty, "colour": colour or "green"}
        return None

    def _execute(self, job: Job) -> None:
        if job.action == "show":
            self._enqueue(job)
            return
        self._cancel_work()
        for shown in self._drain():
            self._finish(shown, "failed", reason="cleared")
        self._finish(job)
        self._state_changed()

    def _work_time(self, job: Job) -> float | None:
        if self.clock.chance(self.operator.no_answer_rate):
            return None
        return self.clock.jitter(self.operator.mean_s, self.operator.spread_s)

    def _complete(self, job: Job) -> None:
        qty: int = job.params["qty"]
        short = self.clock.chance(self.operator.short_pick_rate)
        picked = self.clock.random.randrange(qty) if short else qty
        self._finish(job, result={"picked": picked, "short": short})
