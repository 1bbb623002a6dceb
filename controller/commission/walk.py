"""`floorctl commission`: the site's I/O check, in the order an integrator walks a new floor.

1. Reach: the broker, each PLC endpoint (with its security settings), the database.
2. Devices: every device online and not faulted; a conveyor's or sorter's node map resolved on its PLC
   (the OPC UA link resolves every map when its session comes up, and refuses one that does not).
3. Motion, only when allowed: each pick light lit in a test colour, then cleared; a test label on each
   printer; one tote to each destination of each conveyor, read at its scan points; one tote down
   each sorter lane (and the exception lane).

It talks to the devices through the controller's own adapters (the same links `floorctl run` uses),
as a controller would, so run it while the site's controller is stopped. Each check is reported as it
finishes; the result (controller/commission/report.py) is for a site lead to sign off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import text

from adapters.mqtt import MqttHub
from adapters.opcua import OpcUaHub
from controller.ports import (
    CommandRejected,
    CommandTicket,
    DeviceEvent,
    DeviceStatus,
    DeviceUnavailable,
    PickLight,
    Printer,
    ScanRead,
)
from controller.site import ConveyorSpec, Site, SorterSpec, device_node_map
from controller.store.db import make_engine

Status = Literal["pass", "fail", "skip"]
TEST_COLOUR = "blue"  # not the green of a real pick: whoever walks the floor sees which light is on test
LIGHT_S = 1.0  # how long a test light stays on before it is cleared
STATUS_WAIT_S = 5.0  # for every device's first status after its link is up
NEEDS_MOTION = "needs --allow-motion (it moves totes, lights lights, prints labels)"


@dataclass
class Check:
    step: str  # reach, devices, motion
    target: str  # a device, a PLC, broker or database
    kind: str  # broker, plc, database, or the device's kind
    what: str  # what was checked, in the integrator's words
    status: Status = "pass"
    detail: str = ""
    started_at: float = 0.0  # wall clock
    duration_s: float = 0.0

    def line(self) -> str:
        took = f"{self.duration_s * 1000:.0f} ms" if self.duration_s < 10 else f"{self.duration_s:.1f} s"
        detail = f": {self.detail}" if self.detail else ""
        return (f"  {self.status:<4}  {self.step:<7}  {self.target:<10}  {self.what}{detail}"
                + ("" if self.status == "skip" else f"  ({took})"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Failed(Exception):
    """A check failed; `str()` says what was seen."""


@dataclass
class Walk:
    site: Site
    database_url: str
    allow_motion: bool = False
    light_s: float = LIGHT_S  # how long each test light stays on
    endpoints: dict[str, str] = field(default_factory=dict)  # PLC id -> endpoint, overriding the site's
    progress: Callable[[Check], None] = lambda check: None
    checks: list[Check] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: f"cms{int(time.time()):x}")

    def __post_init__(self) -> None:
        self._statuses: dict[str, DeviceStatus] = {}
        self._scans: list[ScanRead] = []
        self._changed = asyncio.Event()
        self._count = 0

    # --- the walk --------------------------------------------------------------------------------
    async def run(self) -> list[Check]:
        mqtt = MqttHub(self.site, client_id=f"{self.site.broker.client_id}-commission")
        opcua = OpcUaHub(self.site, endpoints=self.endpoints or None, client_name="floorctl commission")
        try:
            await self._reach(mqtt, opcua)
            await self._devices(mqtt, opcua)
            await self._motion(mqtt, opcua)
        finally:
            await opcua.stop()
            await mqtt.stop()
        return self.checks

    async def _reach(self, mqtt: MqttHub, opcua: OpcUaHub) -> None:
        broker = self.site.broker
        async with self._check("reach", "broker", "broker", f"MQTT broker {mqtt_url(broker.url)}"):
            await mqtt.start(self._sink)
            if not await mqtt.wait_connected(broker.connect_timeout_s):
                raise Failed(f"no MQTT session within {broker.connect_timeout_s:g} s (URL, account, TLS?)")
        started = time.time()
        await opcua.start(self._sink)
        for plc in self.site.plcs:
            security = plc.security
            how = (f"{security.policy}/{security.mode}" if security.policy != "None" else "no security")
            how += f", user {plc.username}" if plc.username else ", anonymous"
            endpoint = self.endpoints.get(plc.id, plc.endpoint)
            async with self._check("reach", plc.id, "plc", f"PLC {endpoint} ({how})", started=started):
                devices = [d.id for d in self._machines().values() if d.plc == plc.id]
                deadline = time.monotonic() + plc.timeout_s * 3
                while not all(self._online(d) for d in devices):
                    if time.monotonic() > deadline:
                        why = opcua.link_errors().get(plc.id, "no session")
                        raise Failed(why)
                    await self._wait(deadline)
        async with self._check("reach", "database", "database", f"database {redact(self.database_url)}"):
            engine = make_engine(self.database_url)
            try:
                async with asyncio.timeout(10), engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            except TimeoutError:
                raise Failed("no answer within 10 s") from None
            except Exception as exc:  # noqa: BLE001  any driver's error: the report says which
                raise Failed(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
            finally:
                await engine.dispose()

    async def _devices(self, mqtt: MqttHub, opcua: OpcUaHub) -> None:
        deadline = time.monotonic() + STATUS_WAIT_S
        devices = [*mqtt.devices(), *opcua.devices()]
        while not all(self._online(d.device_id) for d in devices) and time.monotonic() < deadline:
            await self._wait(deadline)
        machines = self._machines()
        for device in devices:
            status = self._statuses.get(device.device_id)
            what = "online, not faulted"
            spec = machines.get(device.device_id)
            if spec is not None:
                what += f", node map resolved ({len(device_node_map(spec).signals)} signals on {spec.plc})"
            async with self._check("devices", device.device_id, str(device.kind), what, started=time.time()):
                if status is None or not status.online:
                    plc = f": its PLC {spec.plc} was not reached" if spec is not None else ""
                    seen = "offline" if status is not None else "offline, never reported a state"
                    raise Failed(seen + plc)
                if status.fault:
                    raise Failed(f"faulted: {status.fault}")
                self.checks[-1].detail = status.state

    async def _motion(self, mqtt: MqttHub, opcua: OpcUaHub) -> None:
        timeouts = self.site.timeouts
        lights: dict[str, str] = {}
        for loc in self.site.locations:
            lights.setdefault(loc.pick_light, loc.id)
        for light in self.site.pick_lights:
            location = lights.get(light.id, light.id)
            what = f"lit {TEST_COLOUR} at {location}, then cleared"
            if self._skipped("pick_light", light.id, what):
                continue
            async with self._check("motion", light.id, "pick_light", what):
                unit = mqtt.device(light.id)
                assert isinstance(unit, PickLight)
                shown = await unit.show(self._id(light.id), location, 1, TEST_COLOUR)
                await self._acked(shown, timeouts.ack_s)
                await asyncio.sleep(self.light_s)
                await self._done(await unit.clear(self._id(light.id)), timeouts.ack_s * 2)
        for printer in self.site.printers:
            if self._skipped("printer", printer.id, "printed a test label"):
                continue
            async with self._check("motion", printer.id, "printer", "printed a test label"):
                printing = mqtt.device(printer.id)
                assert isinstance(printing, Printer)
                label = test_label(self.site.site, printer.id, self.run_id)
                result = await self._done(await printing.print_label(self._id(printer.id), label),
                                          timeouts.print_s)
                self.checks[-1].detail = _result(result)
        for conveyor in self.site.conveyors:
            reads: set[str] = set()
            for destination in conveyor.destinations:
                tote = f"{self.run_id}-{conveyor.id}-{destination}"
                if self._skipped("conveyor", conveyor.id, f"tote to {destination}"):
                    continue
                async with self._check("motion", conveyor.id, "conveyor", f"tote to {destination}"):
                    mark = len(self._scans)
                    belt = opcua.conveyor(conveyor.id)
                    ticket = await belt.transport(self._id(conveyor.id), tote, destination)
                    await self._done(ticket, timeouts.transport_s)
                    seen = [s.scan_point for s in self._scans[mark:] if s.barcode == tote]
                    reads.update(seen)
                    self.checks[-1].detail = "read at " + (", ".join(seen) or "no scan point")
            for scan_point in conveyor.scan_point_ids():
                what = f"scan point {scan_point} read the tote"
                if self._skipped("conveyor", conveyor.id, what):
                    continue
                async with self._check("motion", conveyor.id, "conveyor", what):
                    if scan_point not in reads:
                        raise Failed(f"no read of a test tote at {scan_point}")
        for sorter in self.site.sorters:
            for lane in [*sorter.lanes, sorter.exception_lane]:
                tote = f"{self.run_id}-{sorter.id}-{lane}"
                if self._skipped("sorter", sorter.id, f"tote down {lane}"):
                    continue
                async with self._check("motion", sorter.id, "sorter", f"tote down {lane}"):
                    device = opcua.sorter(sorter.id)
                    mark = len(self._scans)
                    inducted = await device.induct(self._id(sorter.id), tote)
                    await self._acked(inducted, timeouts.ack_s)
                    scan = await self._scan(sorter.scan_point, tote, mark, timeouts.divert_s)
                    diverted = await self._done(await device.divert(self._id(sorter.id), scan.scan_id, lane),
                                                timeouts.divert_s)
                    went = diverted.get("lane")
                    if went != lane:
                        raise Failed(f"the tote went to {went or 'recirculation'}, not {lane}")
                    self.checks[-1].detail = f"scanned at {sorter.scan_point}, diverted to {lane}"

    # --- helpers ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _check(self, step: str, target: str, kind: str, what: str,
                     started: float | None = None) -> AsyncIterator[Check]:
        check = Check(step, target, kind, what, started_at=started or time.time())
        self.checks.append(check)
        clock = time.monotonic() - (time.time() - check.started_at)
        try:
            yield check
        except Failed as exc:
            check.status, check.detail = "fail", str(exc)
        except CommandRejected as exc:
            check.status, check.detail = "fail", f"refused: {exc.reason}"
        except DeviceUnavailable as exc:
            check.status, check.detail = "fail", f"unavailable: {exc}"
        except TimeoutError:
            check.status, check.detail = "fail", "no answer in time"
        check.duration_s = time.monotonic() - clock
        self.progress(check)

    def _skipped(self, kind: str, target: str, what: str) -> bool:
        """True, with the check reported as skipped, when motion is not allowed or the device is not
        ready for it (offline or faulted: its device check already failed)."""
        if self.allow_motion and self._online(target) and not self._statuses[target].fault:
            return False
        why = NEEDS_MOTION if not self.allow_motion else "the device is not ready (see its device check)"
        check = Check("motion", target, kind, what, "skip", why, time.time())
        self.checks.append(check)
        self.progress(check)
        return True

    def _machines(self) -> dict[str, ConveyorSpec | SorterSpec]:
        machines: dict[str, ConveyorSpec | SorterSpec] = {d.id: d for d in self.site.conveyors}
        machines.update((d.id, d) for d in self.site.sorters)
        return machines

    def _sink(self, event: DeviceEvent) -> None:
        if isinstance(event, DeviceStatus):
            self._statuses[event.device_id] = event
        elif isinstance(event, ScanRead):
            self._scans.append(event)
        self._changed.set()

    def _online(self, device_id: str) -> bool:
        status = self._statuses.get(device_id)
        return status is not None and status.online

    async def _wait(self, deadline: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(0.0, min(0.2, deadline - time.monotonic())))

    async def _scan(self, scan_point: str, tote: str, mark: int, timeout: float) -> ScanRead:
        deadline = time.monotonic() + timeout
        while True:
            for scan in self._scans[mark:]:
                if scan.scan_point == scan_point and scan.barcode == tote:
                    return scan
            if time.monotonic() > deadline:
                raise Failed(f"no read of the tote at {scan_point} within {timeout:g} s")
            await self._wait(deadline)

    def _id(self, device_id: str) -> str:
        self._count += 1
        return f"{self.run_id}.{device_id}.{self._count}"

    @staticmethod
    async def _acked(ticket: CommandTicket, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(ticket.acked), timeout)
        except TimeoutError:
            raise Failed(f"no acknowledgement within {timeout:g} s") from None

    @staticmethod
    async def _done(ticket: CommandTicket, timeout: float) -> dict[str, Any]:
        try:
            completion = await asyncio.wait_for(asyncio.shield(ticket.done), timeout)
        except TimeoutError:
            raise Failed(f"not done within {timeout:g} s") from None
        if not completion.ok:
            raise Failed(f"failed: {completion.reason}")
        return completion.result


def _result(result: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in result.items())


def test_label(site: str, printer: str, run_id: str) -> str:
    """A ZPL label that says what it is, so nobody ships it."""
    return ("^XA^CI28"
            f"^FO40,40^A0N,50,50^FDCOMMISSIONING TEST^FS"
            f"^FO40,110^A0N,35,35^FDsite {site}  printer {printer}^FS"
            f"^FO40,160^A0N,30,30^FD{time.strftime('%Y-%m-%d %H:%M:%S')}  run {run_id}^FS"
            f"^FO40,220^BCN,100,Y,N,N^FD{run_id}^FS"
            "^FO40,380^A0N,30,30^FDNOT A SHIPPING LABEL^FS^XZ")


def mqtt_url(url: str) -> str:
    return url.split("?", 1)[0]


def redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
