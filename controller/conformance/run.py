"""One conformance run: which devices, one probe per broker and per PLC, the checks of each device, the
lines as each device finishes, the results for the report."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.conformance import mqtt, opcua
from controller.conformance.checks import Result, Unreachable, run_checks
from controller.conformance.mqtt_probe import MqttProbe
from controller.conformance.opcua_probe import PlcProbe
from controller.conformance.report import device_heading, line
from controller.contract.kinds import DeviceKind
from controller.site import ConveyorSpec, Site, SorterSpec

MQTT_KINDS = (DeviceKind.PICK_LIGHT, DeviceKind.PRINTER, DeviceKind.PACK_STATION)
PARALLEL_DEVICES = 32


class UnknownDevice(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    device_id: str
    kind: str  # a DeviceKind, or "plc"
    plc: str | None = None  # the PLC of an OPC UA device (itself for a PLC)

    @property
    def protocol(self) -> str:
        return "OPC UA" if self.plc else "MQTT"


@dataclass(frozen=True, slots=True)
class Options:
    allow_motion: bool = False
    quiet_s: float = 1.0
    client_ids: dict[str, str] = field(default_factory=dict)  # device id -> its MQTT client id
    endpoints: dict[str, str] = field(default_factory=dict)  # PLC id -> endpoint, over the site file's


def targets(site: Site, only: Sequence[str] = ()) -> list[Target]:
    """Every device of the site in site-file order (a PLC before its conveyors and sorters), or those
    named in `only` (a PLC id brings its conveyors and sorters)."""
    every = [Target(d.id, DeviceKind.PICK_LIGHT) for d in site.pick_lights]
    every += [Target(d.id, DeviceKind.PRINTER) for d in site.printers]
    every += [Target(d.id, DeviceKind.PACK_STATION) for d in site.pack_stations]
    for plc in site.plcs:
        every.append(Target(plc.id, opcua.PLC, plc.id))
        machines: list[ConveyorSpec | SorterSpec] = [*site.conveyors, *site.sorters]
        every += [Target(d.id, d.kind, plc.id) for d in machines if d.plc == plc.id]
    if not only:
        return every
    known = {t.device_id for t in every}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UnknownDevice(f"no device {', '.join(map(repr, unknown))} in site {site.site} "
                            f"(known: {', '.join(sorted(known))})")
    wanted = set(only)
    return [t for t in every if t.device_id in wanted or (t.plc in wanted and t.kind != opcua.PLC)
            or (t.kind == opcua.PLC and any(o.plc == t.plc and o.device_id in wanted for o in every))]


async def run_conformance(site: Site, options: Options, only: Sequence[str] = (),
                          say: Callable[[str], None] = print) -> list[Result]:
    """Run every check of the chosen devices; `say` gets the lines, device by device, in site-file
    order. Raises Unreachable before any check when the broker or a PLC cannot be reached."""
    chosen = targets(site, only)
    run_id = f"{int(time.time()) % 100000:05d}{secrets.token_hex(2)}"
    probes: list[MqttProbe | PlcProbe] = []
    try:
        mqtt_probe = None
        if any(t.plc is None for t in chosen):
            mqtt_probe = MqttProbe(site.broker.url, site.broker,
                                   client_id=f"{site.broker.client_id}-conformance")
            await mqtt_probe.connect()
            probes.append(mqtt_probe)
            await mqtt_probe.subscribe(f"{site.broker.topic_root}/#")
        plc_probes: dict[str, PlcProbe] = {}
        for plc_id in dict.fromkeys(t.plc for t in chosen if t.plc):
            plc = site.plc(plc_id)
            probe = PlcProbe(site, plc, options.endpoints.get(plc_id, plc.endpoint))
            await probe.connect()
            probes.append(probe)
            plc_probes[plc_id] = probe
        return await _run(site, chosen, options, run_id, mqtt_probe, plc_probes, say)
    finally:
        for opened in probes:
            await opened.close()


async def _run(site: Site, chosen: list[Target], options: Options, run_id: str, mqtt_probe: MqttProbe | None,
               plc_probes: dict[str, PlcProbe], say: Callable[[str], None]) -> list[Result]:
    slots = asyncio.Semaphore(PARALLEL_DEVICES)
    mqtt_options = mqtt.MqttOptions(options.allow_motion, options.quiet_s, options.client_ids)
    plc_options = opcua.PlcOptions(options.allow_motion, options.quiet_s)
    mqtt_limit = max(site.timeouts.pick_s, site.timeouts.print_s,
                     site.timeouts.pack_s) + mqtt.COME_BACK_S + 10
    plc_limit = site.timeouts.transport_s + site.timeouts.divert_s + 10
    plc_done = {plc_id: asyncio.Event() for plc_id in plc_probes}

    async def check(target: Target) -> list[Result]:
        if target.plc is None:
            assert mqtt_probe is not None
            device = mqtt.MqttDevice(mqtt_probe, site, DeviceKind(target.kind), target.device_id,
                                     mqtt_options,
                                     run_id)
            async with slots:
                return await run_checks(mqtt.CHECKS.of_kind(target.kind), device, device=target.device_id,
                                        kind=target.kind, allow_motion=options.allow_motion,
                                        limit_s=mqtt_limit)
        probe = plc_probes[target.plc]
        if target.kind != opcua.PLC and any(t.device_id == target.plc for t in chosen):
            await plc_done[target.plc].wait()  # the PLC's own checks (its e-stop) first
        plc_device = opcua.PlcDevice(probe, site, target.device_id, plc_options, run_id, {})
        try:
            async with slots:
                return await run_checks(opcua.CHECKS.of_kind(target.kind), plc_device,
                                        device=target.device_id,
                                        kind=target.kind, allow_motion=options.allow_motion,
                                        limit_s=plc_limit)
        finally:
            if target.kind == opcua.PLC:
                plc_done[target.plc].set()

    tasks = [asyncio.ensure_future(check(t)) for t in chosen]
    results: list[Result] = []
    try:
        for target, task in zip(chosen, tasks, strict=True):
            own = await task
            say(device_heading(target.device_id, target.kind, target.protocol))
            for result in own:
                say(line(result))
            results += own
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


__all__ = ["Options", "Target", "UnknownDevice", "Unreachable", "run_conformance", "targets"]
