"""`floorctl conformance` against the shipped simulators (real Mosquitto, real OPC UA), and against
deliberately broken variants of them: each must fail the check that names its fault."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua

from controller.cli import main
from controller.conformance.checks import Result, Status
from controller.conformance.report import junit
from controller.conformance.run import Options, run_conformance
from controller.contract.mqtt import Channel
from controller.site import Site
from simulators.broker import EmbeddedBroker
from simulators.mqtt import MqttFloor
from simulators.mqtt.device import FloorContext
from simulators.mqtt.printer import SimPrinter
from simulators.plc import PlcSimulator, plc_floor
from tests.conftest import REPO_ROOT, free_port

SPEED = 20.0  # demo picks ~0.15 s, packs ~0.3 s, a conveyor ride 1.2 s of test time
QUIET_S = 0.3


class PrinterThatNeverAcks(SimPrinter):
    """Does the work, answers `done`, never `ack`."""

    def _publish(self, channel: Channel, body: dict[str, Any]) -> None:
        if channel != Channel.ACK:
            super()._publish(channel, body)


class _Forgetful(dict[str, Any]):
    def __setitem__(self, key: str, value: Any) -> None:
        pass  # remembers no command id: a repeated one is executed again

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        raise KeyError("nothing remembered")


class PrinterThatExecutesDuplicates(SimPrinter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memory = _Forgetful()  # type: ignore[assignment]


def _broken(floor: MqttFloor, site: Site, url: str, device_id: str, cls: type[SimPrinter]) -> None:
    spec = next(p for p in site.printers if p.id == device_id)
    context = FloorContext(site, url, SPEED, site.simulation.seed, floor.counters)
    floor._devices[device_id] = cls(device_id, context, media_labels=spec.media_labels,
                                    print_s=site.simulation.printer.print_s)


@pytest.fixture
async def plcs(demo_site: Site) -> AsyncIterator[dict[str, PlcSimulator]]:
    async with plc_floor(demo_site, speed=SPEED, ports={p.id: 0 for p in demo_site.plcs}) as sims:
        yield sims


def _site(demo_site: Site, broker: EmbeddedBroker) -> Site:
    return demo_site.with_broker_url(broker.url)


def _impatient(site: Site) -> Site:
    """Short time-outs: a broken device makes the checks wait for what never comes."""
    timeouts = site.timeouts.model_copy(update={"ack_s": 0.5, "print_s": 1.0, "pick_s": 2.0, "pack_s": 2.0})
    return site.model_copy(update={"timeouts": timeouts})


def _by_check(results: list[Result], device: str) -> dict[str, Result]:
    return {r.check: r for r in results if r.device == device}


async def test_the_simulators_conform(demo_site: Site, broker: EmbeddedBroker,
                                      plcs: dict[str, PlcSimulator]) -> None:
    site = _site(demo_site, broker)
    floor = MqttFloor(site, speed=SPEED)
    await floor.start()
    lines: list[str] = []
    try:
        results = await run_conformance(
            site, Options(allow_motion=True, quiet_s=QUIET_S,
                          endpoints={pid: sim.endpoint for pid, sim in plcs.items()}),
            ["ptl-01", "prn-1", "PS-1", "plc-1"], say=lines.append)
    finally:
        await floor.stop()
    failed = [f"{r.device} {r.check}: {r.detail}" for r in results if r.status is Status.FAIL]
    assert not failed, "\n".join(lines)
    assert {r.device for r in results} == {"ptl-01", "prn-1", "PS-1", "plc-1", "loop-1", "sorter-1"}
    ran = {(r.device, r.check) for r in results if r.status is Status.PASS}
    assert {("prn-1", "dedupe.executes_once"), ("prn-1", "fault.silent_printer"), ("ptl-01", "last_will"),
            ("loop-1", "conveyor.transport"), ("sorter-1", "sorter.induct_divert"),
            ("plc-1", "plc.estop_and_reset"), ("PS-1", "pack.done")} <= ran
    assert lines[0] == "ptl-01 (pick_light, MQTT)" and any(line.startswith("  pass") for line in lines)
    suites = ET.fromstring(junit(results, site.site, 1.0))
    assert suites.get("failures") == "0" and len(suites.findall("testsuite")) == 6


async def test_without_motion_the_physical_steps_are_skipped(demo_site: Site, broker: EmbeddedBroker,
                                                              plcs: dict[str, PlcSimulator]) -> None:
    site = _site(demo_site, broker)
    results = await run_conformance(site, Options(quiet_s=QUIET_S, endpoints={
        pid: sim.endpoint for pid, sim in plcs.items()}), ["loop-1"], say=lambda line: None)
    checks = _by_check(results, "loop-1")
    assert checks["conveyor.transport"].status is Status.SKIP
    assert checks["conveyor.transport"].detail == "needs --allow-motion"
    assert checks["nodes.types"].status is Status.PASS
    assert plcs["plc-1"].conveyor("loop-1").executed == {}  # nothing moved


async def test_broken_printers_fail_the_check_that_names_the_fault(demo_site: Site,
                                                                   broker: EmbeddedBroker) -> None:
    site = _impatient(_site(demo_site, broker))
    floor = MqttFloor(site, speed=SPEED)
    _broken(floor, site, broker.url, "prn-1", PrinterThatNeverAcks)
    _broken(floor, site, broker.url, "prn-2", PrinterThatExecutesDuplicates)
    await floor.start()
    try:
        results = await run_conformance(site, Options(allow_motion=True, quiet_s=QUIET_S), ["prn-1", "prn-2"],
                                        say=lambda line: None)
    finally:
        await floor.stop()
    never_acks, duplicates = _by_check(results, "prn-1"), _by_check(results, "prn-2")
    assert never_acks["ack.before_done"].status is Status.FAIL
    assert never_acks["ack.before_done"].detail.startswith("no ack for reset within")
    assert never_acks["state.birth"].status is Status.PASS
    assert duplicates["dedupe.executes_once"].status is Status.FAIL
    assert "printed twice" in duplicates["dedupe.executes_once"].detail \
        or "executed twice" in duplicates["dedupe.executes_once"].detail
    assert duplicates["ack.before_done"].status is Status.PASS
    assert floor.printer("prn-2").executions  # it did execute commands; the repeat twice over
    assert max(floor.printer("prn-2").executions.values()) >= 2


async def test_a_plc_with_a_wrong_state_type_fails_nodes_types(demo_site: Site,
                                                               plcs: dict[str, PlcSimulator]) -> None:
    await plcs["plc-1"].force_value("loop-1", "State", ua.Variant(1.5, ua.VariantType.Double))
    results = await run_conformance(demo_site, Options(quiet_s=QUIET_S, endpoints={
        pid: sim.endpoint for pid, sim in plcs.items()}), ["loop-1", "sorter-1"], say=lambda line: None)
    wrong = _by_check(results, "loop-1")["nodes.types"]
    assert wrong.status is Status.FAIL
    assert "State (ns=2;s=loop-1.State) is a Double 1.5" in wrong.detail
    assert _by_check(results, "sorter-1")["nodes.types"].status is Status.PASS


def test_the_command_says_clearly_when_the_broker_cannot_be_reached(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    data["broker"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
    data["broker"]["connect_timeout_s"] = 1.0
    (site_file := tmp_path / "site.yaml").write_text(yaml.safe_dump(data))
    junit_file = tmp_path / "c.xml"
    argv = ["conformance", "--site", str(site_file), "--device", "ptl-01", "--junit", str(junit_file)]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "cannot reach the broker at mqtt://127.0.0.1:" in err and "Traceback" not in err
    assert main(["conformance", "--site", str(site_file), "--device", "nope"]) == 2
    assert "no device 'nope' in site demo" in capsys.readouterr().err
