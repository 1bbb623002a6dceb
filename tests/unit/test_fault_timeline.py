"""The fault timeline format: durations, the line of every mistake, and the fit to a site."""

from __future__ import annotations

import pytest

from controller.site import Site, load_site
from simulators.faults import TimelineError, parse_timeline
from simulators.faults.timeline import seconds, span
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(REPO_ROOT / "config" / "demo.yaml")


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("1m30s", 90.0), ("250ms", 0.25), ("1.5s", 1.5),
    (45, 45.0), (0, 0.0), ("1h 5m", 3900.0),
])
def test_durations(text: object, expected: float) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["2 minutes", "m", "", "-5s", "30x", "s30", True, -1, "1m-3s"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        seconds(text)


def test_span_reads_as_written() -> None:
    assert [span(s) for s in (30, 120, 3900, 1.5, 90)] == ["30s", "2m", "1h5m", "1.5s", "1m30s"]


def test_a_timeline_in_floor_seconds_ordered_by_start(site: Site) -> None:
    timeline = parse_timeline(
        "description: a bad day\n"
        "faults:\n"
        "  - {at: 3m, device: loop-1, fault: jam, segment: main, for: 45s}\n"
        "  - {at: 30s, device: prn-1, fault: paper_out, for: 2m}\n"
        "  - {at: 5m, plc: plc-1, fault: estop, for: 20s}\n"
        "  - {at: 8m, fault: broker_restart, for: 10s, kill: true}\n"
        "  - {at: 9m, device: ptl-03, fault: link_cut}\n")
    timeline.check(site)
    assert timeline.description == "a bad day"
    assert [(e.at, e.target, e.fault, e.ends) for e in timeline.entries] == [
        (30.0, "prn-1", "paper_out", 150.0), (180.0, "loop-1", "jam", 225.0),
        (300.0, "plc-1", "estop", 320.0), (480.0, "broker", "broker_restart", 490.0),
        (540.0, "ptl-03", "link_cut", None)]
    assert timeline.entries[1].segment == "main" and timeline.entries[3].kill
    assert timeline.needs_broker and timeline.length == 540.0
    assert timeline.entries[0].line == 4 and timeline.entries[0].index == 1


@pytest.mark.parametrize(("text", "message"), [
    ("faults:\n  - {at: 30s, device: prn-1, fault: paper_out, for: 2 minutes}\n",
     "line 2, faults[0]: for: '2 minutes' is not a duration"),
    ("faults:\n  - {at: 30s, fault: paper_out}\n", "line 2, faults[0]: device: 'paper_out' needs a device"),
    ("faults:\n  - at: 30s\n    device: prn-1\n", "line 2, faults[0]: fault: required key is missing"),
    ("faults:\n  - {device: prn-1, fault: paper_out}\n", "faults[0]: at: required key is missing"),
    ("faults:\n  - {at: 1s, device: prn-1, fault: paper_out, lasts: 2m}\n", "unknown key 'lasts'"),
    ("faults:\n  - {at: 1s, device: prn-1, plc: plc-1, fault: estop}\n", "give a device or a plc, not both"),
    ("faults:\n  - {at: 1s, plc: plc-1, fault: jam}\n", "a PLC's faults are estop and link_cut"),
    ("faults:\n  - {at: 1s, device: ptl-01, fault: broker_restart}\n", "broker_restart has no device"),
    ("faults:\n  - {at: 1s, device: prn-1, fault: paper_out, kill: true}\n", "only a broker_restart"),
    ("faults:\n  - {at: 1s, device: prn-1, fault: paper_out, segment: main}\n", "only a jam has a segment"),
    ("faults:\n  - {at: 1s, device: prn-1, fault: [a]}\n", "fault: must be a single value"),
    ("faults:\n  - just a string\n", "line 2, faults[0]: an entry is a mapping"),
    ("faults: 3\n", "faults: must be a list"),
    ("description: x\n", "faults: required key is missing"),
    ("- {at: 1s}\n", "a fault timeline is a mapping"),
    ("faults:\n  - {at: 1s, device: prn-1, fault: paper_out\n", "YAML syntax error at line"),
    ("faults:\n  - {at: 1s, device: prn-1, fault: paper_out, at: 2s}\n", "at: given twice"),
    (("faults:\n  - {at: 10s, device: prn-1, fault: paper_out, for: 1m}\n  - {at: 30s, device: prn-1, "
     "fault: head_open}\n"),
     "line 3, faults[1]: at: prn-1 already has paper_out from 10s until 1m10s (line 2, faults[0])"),
    (("faults:\n  - {at: 10s, device: ptl-01, fault: lamp_broken}\n  - {at: 1h, device: ptl-01, "
     "fault: display_fault}\n"), "ptl-01 already has lamp_broken from 10s for good"),
])
def test_every_mistake_is_named_with_its_line(text: str, message: str) -> None:
    with pytest.raises(TimelineError) as caught:
        parse_timeline(text, "bad.yaml")
    assert str(caught.value).startswith("bad.yaml: ")
    assert message in str(caught.value)


def test_one_fault_after_another_on_the_same_device_is_fine() -> None:
    timeline = parse_timeline("faults:\n  - {at: 10s, device: prn-1, fault: paper_out, for: 20s}\n"
                              "  - {at: 30s, device: prn-1, fault: head_open, for: 5s}\n")
    assert [e.fault for e in timeline.entries] == ["paper_out", "head_open"]


def test_every_error_at_once() -> None:
    with pytest.raises(TimelineError) as caught:
        parse_timeline("faults:\n  - {at: soon, device: prn-1, fault: paper_out}\n"
                       "  - {at: 1s, fault: jam}\n")
    assert "line 2, faults[0]: at:" in str(caught.value) and "line 3, faults[1]: device:" in str(caught.value)


@pytest.mark.parametrize(("entry", "message"), [
    ("{at: 1s, device: prn-9, fault: paper_out}", "device: unknown device 'prn-9' (known: PS-1"),
    ("{at: 1s, device: prn-1, fault: lamp_broken}", "a printer has no fault 'lamp_broken'"),
    ("{at: 1s, device: loop-1, fault: jam, segment: belt}", "loop-1 has no segment 'belt' (known: pick-out"),
    ("{at: 1s, device: sorter-1, fault: jam, segment: main}", "(known: loop)"),
    ("{at: 1s, device: loop-1, fault: estop}", "its fault is `jam`; an e-stop or a link cut is the PLC's"),
    ("{at: 1s, device: ptl-01, fault: jam}", "ptl-01 is not a conveyor or sorter"),
    ("{at: 1s, plc: plc-9, fault: estop}", "plc: unknown PLC 'plc-9' (known: plc-1)"),
])
def test_a_timeline_that_does_not_fit_the_site(site: Site, entry: str, message: str) -> None:
    timeline = parse_timeline(f"faults:\n  - {entry}\n", "day.yaml")
    with pytest.raises(TimelineError) as caught:
        timeline.check(site)
    assert "day.yaml: does not fit site 'demo'" in str(caught.value)
    assert f"line 2, faults[0]: {message.split(':')[0]}" in str(caught.value) or message in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["printer-and-jam.yaml", "broker-and-pick-light.yaml"])
def test_the_shipped_examples_fit_the_demo_floor(site: Site, name: str) -> None:
    from simulators.faults import load_timeline

    timeline = load_timeline(REPO_ROOT / "config" / "faults" / name)
    timeline.check(site)
    assert timeline.description and len(timeline.entries) >= 2
