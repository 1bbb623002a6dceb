"""The floor's devices as the engine sees them: each by its role's port, each with its command queue.

`FloorDevices` takes the devices the hubs own, checks each one satisfies the port of its kind,
gives each a `DeviceQueue`, routes status events to the queues, and answers the questions the
engine asks (which printers can print now, which conveyors reach a station) and the snapshots the
API reads.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from controller.domain.choice import Candidate
from controller.engine.dispatch import CommandGate, DeviceQueue, TimingSink
from controller.ports import (
    Conveyor,
    Device,
    DeviceHub,
    DeviceKind,
    DeviceStatus,
    ExplainsLinks,
    PackStation,
    PickLight,
    Printer,
    Sorter,
)
from controller.site import Site

# type[object]: a port is a Protocol, which mypy does not accept where a concrete type[Device] is due
ROLES: dict[DeviceKind, type[object]] = {
    DeviceKind.PICK_LIGHT: PickLight,
    DeviceKind.PRINTER: Printer,
    DeviceKind.PACK_STATION: PackStation,
    DeviceKind.CONVEYOR: Conveyor,
    DeviceKind.SORTER: Sorter,
}


class DeviceRoleError(TypeError):
    """A hub handed over a device that does not implement the port of its kind."""


class FloorDevices:
    def __init__(self, site: Site, hubs: Iterable[DeviceHub], *, timing: TimingSink,
                 on_finished: Callable[[Device, float], None], speed: float = 1.0,
                 gate: CommandGate | None = None) -> None:
        self.site = site
        self.gate = gate or CommandGate()  # one for every queue: may this controller command now?
        self.speed = speed
        self.hubs = list(hubs)
        self.queues: dict[str, DeviceQueue] = {}
        self.pick_lights: dict[str, PickLight] = {}
        self.printers: dict[str, Printer] = {}
        self.pack_stations: dict[str, PackStation] = {}
        self.conveyors: dict[str, Conveyor] = {}
        self.sorters: dict[str, Sorter] = {}
        self._timing = timing
        self._on_finished = on_finished
        self._plc_of = {cv.id: cv.plc for cv in site.conveyors} | {s.id: s.plc for s in site.sorters}
        self._conveyors_to: dict[str, list[str]] = {}
        for cv in site.conveyors:
            for destination in cv.destinations:
                self._conveyors_to.setdefault(destination, []).append(cv.id)
        self.printer_ready = asyncio.Event()

    def attach(self) -> None:
        """Queue every device of every hub (after the hubs have started)."""
        t = self.site.timeouts
        by_role: dict[DeviceKind, dict[str, Any]] = {
            DeviceKind.PICK_LIGHT: self.pick_lights, DeviceKind.PRINTER: self.printers,
            DeviceKind.PACK_STATION: self.pack_stations, DeviceKind.CONVEYOR: self.conveyors,
            DeviceKind.SORTER: self.sorters}
        for hub in self.hubs:
            for device in hub.devices():
                role = ROLES[device.kind]
                if not isinstance(device, role):
                    raise DeviceRoleError(f"{device.device_id} ({type(device).__name__}) is a "
                                          f"{device.kind.value} but does not implement the "
                                          f"{role.__name__} port")
                by_role[device.kind][device.device_id] = device
                # Real seconds, not floor seconds: a person fixes the device at a person's pace.
                wait_limit_s = getattr(t.wait_on_device_s, device.kind.value)
                self.queues[device.device_id] = DeviceQueue(
                    device, ack_timeout_s=t.ack_s, retries=t.retries, timing=self._timing,
                    on_finished=self._on_finished, wait_limit_s=wait_limit_s, gate=self.gate)
        self.refresh_printers()

    # ---- status events ---------------------------------------------------------------------------
    def on_status(self, status: DeviceStatus) -> None:
        queue = self.queues.get(status.device_id)
        if queue is not None:
            queue.update_status(status)
            if status.kind is DeviceKind.PRINTER:
                self.refresh_printers()

    def refresh_printers(self) -> None:
        if any(self.queues[p].usable for p in self.printers):
            self.printer_ready.set()

    # ---- what the engine asks ----------------------------------------------------------------------
    def role_of(self, device_id: str) -> PickLight | Printer | PackStation | Conveyor | Sorter:
        """The device by its role's port."""
        for by_role in (self.pick_lights, self.printers, self.pack_stations, self.conveyors, self.sorters):
            device = by_role.get(device_id)
            if device is not None:
                return device
        raise KeyError(device_id)

    def queue(self, device_id: str) -> DeviceQueue:
        return self.queues[device_id]

    def candidates(self, device_ids: Iterable[str], inbound: Counter[str] | None = None) -> list[Candidate]:
        out = []
        for device_id in device_ids:
            q = self.queues.get(device_id)
            if q is not None:
                out.append(Candidate(device_id, q.usable, q.load, q.served,
                                     inbound[device_id] if inbound is not None else 0))
        return out

    def conveyors_to(self, station: str) -> list[str]:
        return self._conveyors_to.get(station, [])

    def take_out_of_rotation(self, device_id: str, reason: str) -> None:
        self.queues[device_id].take_out_of_rotation(reason)
        self.refresh_printers()

    def links(self) -> dict[str, bool]:
        """Each hub by name: are all of its links up?"""
        return {hub.name: hub.connected for hub in self.hubs}

    def counters(self) -> Counter[str]:
        """The hubs' counts of what they did not expect on the wire, prefixed with the hub's name."""
        merged: Counter[str] = Counter()
        for hub in self.hubs:
            for name, n in hub.counters.items():
                merged[f"{hub.name}_{name}"] += n
        return merged

    # ---- snapshots for the API and the panel ----------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        return [self.row(q) for q in self.queues.values()]

    def row(self, q: DeviceQueue) -> dict[str, Any]:
        """One device as the API and the panel see it."""
        st = q.device.status
        availability = q.availability
        return {"device_id": q.device.device_id, "kind": q.device.kind.value, "protocol": q.device.protocol,
                "online": st.online, "state": st.state, "fault": st.fault, "queue_length": q.queued,
                "in_flight": q.in_flight, "in_rotation": q.in_rotation, "paused": q.paused,
                "available": availability.available,
                "unavailable": None if availability.available else str(availability),
                "unavailable_since": q.unavailable_since, "waiting_orders": len(q.order_ids()),
                "last_progress_at": q.last_progress_at}

    def plc_links(self) -> dict[str, bool]:
        """Each PLC: are all of its devices online?"""
        return {plc.id: all(q.device.status.online for q in self.queues.values()
                            if self._plc_of.get(q.device.device_id) == plc.id) for plc in self.site.plcs}

    def plc_errors(self) -> dict[str, str]:
        """Why each PLC whose session is down could not connect, by PLC id (from the hubs that say)."""
        return {plc: reason for hub in self.hubs if isinstance(hub, ExplainsLinks)
                for plc, reason in hub.link_errors().items()}

    def faults(self) -> dict[str, str]:
        return {q.device.device_id: q.device.status.fault for q in self.queues.values()
                if q.device.status.fault}

    async def stop(self) -> None:
        for hub in self.hubs:
            await hub.stop()
