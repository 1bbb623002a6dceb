"""floorctl commission against the demo floor's simulators (the plugin's floor without a controller),
over real MQTT and OPC UA: every check passes, a faulted printer fails the checks that name it, and
the report carries each device's result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.commission import Walk, render_html, summarise, write_report
from controller.testing import Floor

pytestmark = pytest.mark.floorctl(controller=False, speed=50)


def walk(floor: Floor, tmp_path: Path, *, allow_motion: bool) -> Walk:
    site = floor.site.with_broker_url(floor.broker_url)
    return Walk(site, f"sqlite+aiosqlite:///{tmp_path / 'floorctl.db'}", allow_motion=allow_motion,
                endpoints=floor.plc_endpoints, light_s=0.1)


async def test_every_check_passes_on_a_healthy_floor(floor: Floor, tmp_path: Path) -> None:
    seen: list[str] = []
    commission = walk(floor, tmp_path, allow_motion=True)
    commission.progress = lambda check: seen.append(f"{check.step} {check.target} {check.status}")
    checks = await commission.run()
    assert [c for c in checks if c.status != "pass"] == []
    assert seen == [f"{c.step} {c.target} pass" for c in checks]  # reported as each one finished
    whats = {(c.target, c.what) for c in checks}
    site = floor.site
    database = f"database sqlite+aiosqlite:///{tmp_path / 'floorctl.db'}"
    assert {("broker", f"MQTT broker {floor.broker_url.split('?')[0]}"), ("database", database)} <= whats
    assert {c.target for c in checks if c.step == "devices"} == {
        *(d.id for d in site.pick_lights), *(d.id for d in site.printers),
        *(d.id for d in site.pack_stations), "loop-1", "sorter-1"}
    assert ("loop-1", "tote to PS-2") in whats and ("loop-1", "scan point sp-pack read the tote") in whats
    assert {c.what for c in checks if c.target == "sorter-1" and c.step == "motion"} == {
        "tote down lane-1", "tote down lane-2", "tote down lane-3", "tote down lane-x"}
    assert sum(1 for c in checks if c.kind == "printer" and c.what == "printed a test label") == 2
    # what really happened on the floor: one test label on each printer, the totes at their lanes
    assert all(floor.live.sims.device(p.id).executions for p in site.printers)


async def test_a_faulted_printer_fails_and_its_motion_is_skipped(floor: Floor, tmp_path: Path) -> None:
    floor.inject("prn-2", "paper_out")
    checks = await walk(floor, tmp_path, allow_motion=True).run()
    failed = [(c.step, c.target, c.detail) for c in checks if c.status == "fail"]
    assert failed == [("devices", "prn-2", "faulted: paper_out")]
    skipped = [(c.target, c.what) for c in checks if c.status == "skip"]
    assert skipped == [("prn-2", "printed a test label")]
    report = summarise(checks, site="demo", site_file="demo.yaml", allow_motion=True, started_at=0.0,
                       finished_at=1.0)
    assert report["result"] == "fail" and report["counts"]["fail"] == 1
    assert report["devices"]["prn-2"]["result"] == "fail"
    assert report["devices"]["prn-2"]["failed"] == ["online, not faulted: faulted: paper_out"]
    assert report["devices"]["prn-1"]["result"] == "pass"
    json_path, html_path = write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["devices"]["prn-2"]["result"] == "fail"
    page = html_path.read_text()
    assert "FAIL" in page and "faulted: paper_out" in page and "Sign-off" in page


async def test_without_motion_nothing_moves(floor: Floor, tmp_path: Path) -> None:
    checks = await walk(floor, tmp_path, allow_motion=False).run()
    motion = [c for c in checks if c.step == "motion"]
    assert motion and all(c.status == "skip" and "--allow-motion" in c.detail for c in motion)
    assert not any(floor.live.sims.device(p.id).executions for p in floor.site.printers)
    report = summarise(checks, site="demo", site_file="demo.yaml", allow_motion=False, started_at=0.0,
                       finished_at=1.0)
    assert report["result"] == "pass, motion not checked"
    assert "motion checks NOT run" in render_html(report)


async def test_an_unreachable_plc_and_database_fail_by_name(floor: Floor, tmp_path: Path) -> None:
    floor.cut_link("plc-1")
    commission = walk(floor, tmp_path, allow_motion=False)
    # a PLC is given 3 x its timeout_s to come up: shortened here, the failure is the same
    commission.site = commission.site.model_copy(
        update={"plcs": [plc.model_copy(update={"timeout_s": 0.5}) for plc in commission.site.plcs]})
    commission.database_url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x' / 'floorctl.db'}"
    checks = await commission.run()
    failed = {c.target: c.detail for c in checks if c.status == "fail"}
    assert set(failed) == {"plc-1", "database", "loop-1", "sorter-1"}, failed
    assert failed["loop-1"].startswith("offline")
    assert failed["loop-1"].endswith("its PLC plc-1 was not reached")
    assert failed["plc-1"] and failed["database"].startswith("OperationalError")
