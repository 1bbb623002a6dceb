"""A simulated pick-to-light unit: shows a quantity, the operator picks and presses confirm."""

from __future__ import annotations

from typing import Any

from controller.contract.kinds import DeviceKind
from controller.contract.mqtt import Action
from controller.contract.reasons import Reason, detailed
from controller.site import OperatorModel
from simulators.mqtt.device import DeviceJob, FloorContext, SimulatedDevice


class SimPickLight(SimulatedDevice):
    """Actions: `show {location, qty, colour}` -> done {"picked", "short"}; `clear`.

    The operator confirms after a seeded random delay, sometimes short-picks (picked < qty,
    short=true) and sometimes never answers (the light stays lit until `clear`). A `clear` switches
    the unit off: the pick it showed and those waiting fail with reason `cleared`. A `reset` clears
    any fault (SimulatedDevice).
    """

    kind = DeviceKind.PICK_LIGHT

    def __init__(self, device_id: str, context: FloorContext, operator: OperatorModel) -> None:
        super().__init__(device_id, context)
        self.operator = operator

    def state_detail(self) -> dict[str, Any]:
        shown = self._current.params if self._current is not None else None
        return {"display": shown, "queued": len(self._queue)}

    def _accept(self, job: DeviceJob) -> str | None:
        if job.action == Action.CLEAR:
            return None
        if job.action != Action.SHOW:
            return detailed(Reason.UNKNOWN_ACTION, job.action)
        location, qty, colour = (job.params.get(key) for key in ("location", "qty", "colour"))
        if type(location) is not str or not location:
            return detailed(Reason.BAD_PARAMS, "location must be a non-empty string")
        if type(qty) is not int or qty < 1:
            return detailed(Reason.BAD_PARAMS, "qty must be a positive integer")
        if colour is not None and type(colour) is not str:
            return detailed(Reason.BAD_PARAMS, "colour must be a string")
        job.params = {"location": location, "qty": qty, "colour": colour or "green"}
        return None

    def _execute(self, job: DeviceJob) -> None:
        if job.action == Action.SHOW:
            self._enqueue(job)
            return
        self._cancel_work()
        for shown in self._drain():
            self._finish(shown, "failed", reason=Reason.CLEARED)
        self._finish(job)
        self._state_changed()

    def _work_time(self, job: DeviceJob) -> float | None:
        if self.clock.chance(self.operator.no_answer_rate):
            return None
        return self.clock.jitter(self.operator.mean_s, self.operator.spread_s)

    def _complete(self, job: DeviceJob) -> None:
        qty: int = job.params["qty"]
        short = self.clock.chance(self.operator.short_pick_rate)
        picked = self.clock.random.randrange(qty) if short else qty
        self._finish(job, result={"picked": picked, "short": short})
