"""The simulated conveyor and sorter logic without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import count

import pytest

from controller.contract.opcua import MachineryItemState
from controller.site import Site
from simulators.clock import SimClock
from simulators.plc.conveyor import SimConveyor
from simulators.plc.drive import Drive
from simulators.plc.reports import Completed, DivertReport, Report, Scanned, StatusChanged
from simulators.plc.sorter import SimSorter
from tests.conftest import eventually

SPEED = 200.0  # demo conveyor: 0.12 s; a sorter pass (30 m at 2 m/s): 75 ms


class Reports(list[Report]):
    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [r for r in self if isinstance(r, kind)]


def scan_ids() -> Callable[[], str]:
    numbers = count(1)
    return lambda: f"s{next(numbers)}"


def conveyor(site: Site, reports: Reports, no_read_rate: float = 0.0) -> SimConveyor:
    machine = SimConveyor(site.conveyors[0], SimClock(SPEED, 1), reports.append, no_read_rate=no_read_rate,
                          next_scan_id=scan_ids())
    machine.changed()
    return machine


def sorter(site: Site, reports: Reports, no_read_rate: float = 0.0, **geometry: float) -> SimSorter:
    spec = site.sorters[0].model_copy(update=geometry)
    machine = SimSorter(spec, SimClock(SPEED, 1), reports.append, no_read_rate=no_read_rate,
                        next_scan_id=scan_ids())
    machine.changed()
    return machine


async def test_a_transport_passes_its_scan_points_and_arrives(demo_site: Site) -> None:
    reports = Reports()
    belt = conveyor(demo_site, reports)
    assert belt.transport("t1", "TOTE-1", "PS-1") == "accepted"
    assert belt.state is MachineryItemState.EXECUTING
    await eventually(lambda: bool(reports.of(Completed)))
    assert [(s.scan_point, s.barcode) for s in reports.of(Scanned)] == [("sp-induct", "TOTE-1"),
                                                                        ("sp-pack", "TOTE-1")]
    (done,) = reports.of(Completed)
    assert (done.command_id, done.tote_id, done.destination, done.ok) == ("t1", "TOTE-1", "PS-1", True)
    assert [s.state for s in reports.of(StatusChanged)] == ["NotExecuting", "Executing", "NotExecuting"]


async def test_a_repeated_transport_is_answered_again_never_executed_twice(demo_site: Site) -> None:
    reports = Reports()
    belt = conveyor(demo_site, reports)
    assert belt.transport("t1", "TOTE-1", "PS-1") == belt.transport("t1", "TOTE-1", "PS-1") == "accepted"
    assert not reports.of(Completed)  # still on its way: nothing to repeat yet
    await eventually(lambda: bool(reports.of(Completed)))
    assert belt.transport("t1", "TOTE-1", "PS-1") == "accepted"
    assert len(reports.of(Completed)) == 2 and reports.of(Completed)[0] == reports.of(Completed)[1]
    assert belt.executed["t1"] == 1 and len(reports.of(Scanned)) == 2


async def test_refusals_are_not_remembered(demo_site: Site) -> None:
    reports = Reports()
    belt = conveyor(demo_site, reports)
    assert belt.transport("t1", "TOTE-1", "PS-7") == "rejected:unknown_destination"
    assert belt.transport("", "TOTE-1", "PS-1") == "rejected:bad_arguments"
    belt.set_estop(True)
    assert belt.transport("t2", "TOTE-2", "PS-1") == "rejected:estop"
    belt.reset()
    assert belt.transport("t2", "TOTE-2", "PS-1") == "accepted"
    assert belt.transport("t2", "TOTE-2", "PS-1") == "accepted"  # from here on it is remembered
    await eventually(lambda: bool(reports.of(Completed)))
    assert belt.executed["t2"] == 1


async def test_a_sorter_forgets_an_induct_refused_during_an_estop(demo_site: Site) -> None:
    reports = Reports()
    loop = sorter(demo_site, reports)
    loop.set_estop(True)
    assert loop.induct("i1", "TOTE-1") == "rejected:estop"
    loop.reset()
    assert loop.induct("i1", "TOTE-1") == loop.induct("i1", "TOTE-1") == "accepted"
    assert loop.executed["i1"] == 1


async def test_a_jam_holds_every_tote_until_cleared(demo_site: Site) -> None:
    reports = Reports()
    belt = conveyor(demo_site, reports)
    belt.transport("t1", "TOTE-1", "PS-1")
    belt.inject_jam("main")
    assert (belt.state, belt.fault) == (MachineryItemState.OUT_OF_SERVICE, "jam:main")
    await asyncio.sleep(0.3)  # more than the whole trip
    assert not reports.of(Completed)
    belt.clear()
    await eventually(lambda: bool(reports.of(Completed)))
    with pytest.raises(ValueError, match="no segment 'nowhere'"):
        belt.inject_jam("nowhere")


async def test_clearing_a_jam_by_removing_the_totes_fails_their_transports(demo_site: Site) -> None:
    reports = Reports()
    belt = conveyor(demo_site, reports)
    belt.transport("t1", "TOTE-1", "PS-1")
    belt.inject_jam("to-pack")
    belt.clear(remove_totes=True)  # the tote is still on pick-out: it stays
    belt.inject_jam("pick-out")
    belt.clear(remove_totes=True)
    (failed,) = reports.of(Completed)
    assert (failed.ok, failed.reason) == (False, "jam:pick-out")
    assert belt.state is MachineryItemState.NOT_EXECUTING


async def test_a_sorter_diverts_when_the_target_lands_before_the_divert(demo_site: Site) -> None:
    reports = Reports()
    loop = sorter(demo_site, reports, scan_to_divert_m=100.0, loop_length_m=200.0)  # 0.25 s to answer
    assert loop.induct("i1", "TOTE-1") == "accepted"
    await eventually(lambda: bool(reports.of(Scanned)))
    (scan,) = reports.of(Scanned)
    assert (scan.scan_point, scan.barcode) == ("sp-sort", "TOTE-1")
    assert loop.divert("d1", scan.scan_id, "lane-2") == "accepted"
    assert loop.divert("d2", scan.scan_id, "lane-3") == "rejected:target_exists"
    await eventually(lambda: bool(reports.of(Completed)))
    (diverted,) = reports.of(DivertReport)
    assert diverted == DivertReport("sorter-1", scan.scan_id, "TOTE-1", "lane-2", "d1", diverted.at)
    (done,) = reports.of(Completed)
    assert (done.command_id, done.destination, done.ok) == ("i1", "lane-2", True)
    assert loop.divert("d1", scan.scan_id, "lane-2") == "accepted"  # a repeat repeats the report
    assert len(reports.of(DivertReport)) == 2
    (timing,) = loop.scans
    assert timing.scan_id == scan.scan_id and timing.read_at <= (timing.target_landed_at or 0)


async def test_without_a_target_a_tote_goes_round_then_to_the_exception_lane(demo_site: Site) -> None:
    reports = Reports()
    loop = sorter(demo_site, reports, no_read_rate=1.0)
    loop.induct("i1", "TOTE-1")
    await eventually(lambda: bool(reports.of(Completed)), timeout=5)
    assert [s.barcode for s in reports.of(Scanned)] == [None, None, None]  # max_recirculations: 2
    lanes = [(d.lane, d.command_id) for d in reports.of(DivertReport)]
    assert lanes == [(None, ""), (None, ""), ("lane-x", "")]
    (done,) = reports.of(Completed)
    assert (done.ok, done.reason, done.destination) == (False, "recirculation_limit", "lane-x")
    first = reports.of(Scanned)[0].scan_id
    assert loop.divert("d-late", first, "lane-1") == "rejected:late"
    assert loop.divert("d-x", "s999", "lane-1") == "rejected:unknown_scan"
    assert loop.divert("d-y", first, "lane-9") == "rejected:unknown_lane"


async def test_a_stopped_drive_holds_its_moves_and_resumes_with_what_was_left() -> None:
    drive = Drive(SimClock(100.0), "belt")
    arrived: list[str] = []
    drive.after(50.0, lambda: arrived.append("late"))  # 0.5 s
    drive.after(1.0, lambda: arrived.append("early"))  # 10 ms
    cancelled = drive.after(2.0, lambda: arrived.append("cancelled"))
    cancelled.cancel()
    await eventually(lambda: arrived == ["early"])
    drive.set_running(False)
    held = drive.position()
    await asyncio.sleep(0.1)
    assert arrived == ["early"] and drive.position() == held
    drive.set_running(True)
    await eventually(lambda: arrived == ["early", "late"])
    assert drive.position() >= 50.0


async def test_a_move_that_raises_does_not_stop_the_drive(caplog: pytest.LogCaptureFixture) -> None:
    drive = Drive(SimClock(100.0), "belt")
    arrived: list[int] = []
    def jammed_tote() -> None:
        raise RuntimeError("stuck")

    drive.after(0.1, jammed_tote)
    drive.after(0.2, lambda: arrived.append(1))
    await eventually(lambda: arrived == [1])
    assert "a tote movement failed" in caplog.text
