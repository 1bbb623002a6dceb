"""A simulated pack station: a packer packs one tote at a time and confirms on the station's screen."""

from __future__ import annotations

from typing import Any

from controller.contract.kinds import DeviceKind
from controller.contract.mqtt import Action
from controller.contract.reasons import Reason, detailed
from controller.site import PackerModel
from simulators.mqtt.device import DeviceJob, FloorContext, SimulatedDevice


class SimPackStation(SimulatedDevice):
    """Action: `pack {order_id, tote_id, items}` -> done {"order_id", "tote_id", "items"}; `reset`
    clears any fault (SimulatedDevice)."""

    kind = DeviceKind.PACK_STATION

    def __init__(self, device_id: str, context: FloorContext, packer: PackerModel) -> None:
        super().__init__(device_id, context)
        self.packer = packer

    def state_detail(self) -> dict[str, Any]:
        packing = self._current.params if self._current is not None else {}
        return {"order_id": packing.get("order_id"), "tote_id": packing.get("tote_id"),
                "queued": len(self._queue)}

    def _accept(self, job: DeviceJob) -> str | None:
        if job.action != Action.PACK:
            return detailed(Reason.UNKNOWN_ACTION, job.action)
        order_id, tote_id, items = (job.params.get(key) for key in ("order_id", "tote_id", "items"))
        if type(order_id) is not str or not order_id or type(tote_id) is not str or not tote_id:
            return detailed(Reason.BAD_PARAMS, "order_id and tote_id must be non-empty strings")
        if type(items) is not int or items < 0:
            return detailed(Reason.BAD_PARAMS, "items must be a non-negative integer")
        return None

    def _execute(self, job: DeviceJob) -> None:
        self._enqueue(job)

    def _work_time(self, job: DeviceJob) -> float | None:
        return self.clock.jitter(self.packer.mean_s, self.packer.spread_s)

    def _complete(self, job: DeviceJob) -> None:
        self._finish(job, result={key: job.params[key] for key in ("order_id", "tote_id", "items")})
