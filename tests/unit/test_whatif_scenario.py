"""What-if scenario files and order profiles: pure parsing and planning, no floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.site import SiteError
from controller.whatif.profile import generate, read_csv
from controller.whatif.run import choose_speed
from controller.whatif.scenario import Generated, Peak, load_scenario, per_second, seconds

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.yaml"


def scenario_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"site: {DEMO}\n" + body)
    return path


@pytest.mark.parametrize(("text", "expected"), [(90, 90.0), ("90s", 90.0), ("1.5m", 90.0), ("2h", 7200.0),
                                                ("250ms", 0.25), ("3 min", 180.0)])
def test_durations(text: object, expected: float) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize(("text", "expected"), [(0.5, 0.5), ("0.5/s", 0.5), ("30/min", 0.5), ("1800/h", 0.5)])
def test_rates(text: object, expected: float) -> None:
    assert per_second(text) == expected


def test_the_shipped_examples_load() -> None:
    for path in sorted((ROOT / "config" / "whatif").glob("*.yaml")):
        scenario = load_scenario(path)
        assert scenario.spec.duration == 3600
    more = load_scenario(ROOT / "config" / "whatif" / "promo-3x-one-more-packer.yaml")
    assert [p.id for p in more.site.pack_stations] == ["PS-1", "PS-2", "PS-3"]
    assert "PS-3" in more.site.conveyors[0].destinations  # a new station is reached by the conveyor


def test_changes_make_a_valid_site(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "duration: 10m\norders: {generated: {rate: 0.2/s}}\nchanges:\n"
                         "  release: fifo\n  remove: [prn-2]\n  slowdown: {PS-1: 4, Z1: 2}\n"
                         "  conveyor_speed: 0.5\n  simulation: {packer: {mean_s: 9}}\n")
    site = load_scenario(path).site
    assert site.release == "fifo"
    assert [p.id for p in site.printers] == ["prn-1"]
    assert site.simulation.slowdown == {"PS-1": 4, "Z1": 2}
    assert site.simulation.packer.mean_s == 9
    assert site.simulation.packer.spread_s == 2.0  # merged into the section, not replacing it
    assert {s.speed_mps for s in site.conveyors[0].segments} == {0.5}


@pytest.mark.parametrize(("body", "message"), [
    ("duration: soon\norders: {generated: {rate: 1}}\n", "duration: 'soon' is not a duration"),
    ("duration: 1m\norders: {}\n", "give exactly one of generated, csv, recorded"),
    ("duration: 1m\norders: {generated: {rate: 1}}\nchanges: {remove: [PS-9]}\n",
     "changes: remove: no pack station or printer 'PS-9'"),
    ("duration: 1m\norders: {generated: {rate: 1}}\nchanges: {slowdown: {nobody: 2}}\n",
     "simulation.slowdown.nobody: unknown pick light, pack station, printer or zone"),
    ("duration: 1m\norders: {generated: {rate: 1}}\nchanges: {remove: [PS-1, PS-2]}\n",
     "the site after the scenario's changes is not valid"),
    ("duration: 1m\norders: {generated: {rate: 1}}\nspeed: 0\n", "speed: Input should be greater than 0"),
    ("duration: 1m\norders: {generated: {rate: 1}}\nfaults: f.yaml\n", "faults: "),
])
def test_bad_scenarios_are_refused_with_the_key(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "f.yaml").write_text("faults:\n  - {at: 1s, device: prn-9, fault: paper_out}\n")
    with pytest.raises(SiteError) as err:
        load_scenario(scenario_file(tmp_path, body))
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_generated_orders_are_seeded_and_follow_the_peak() -> None:
    site = load_scenario(ROOT / "config" / "whatif" / "demo-1x.yaml").site
    profile = Generated(rate=0.2, peak=Peak(multiplier=3, start=1200, end=2400, ramp=0), express_share=0.25)
    first, again, other = (generate(profile, site, 3600, seed) for seed in (1, 1, 2))
    assert first == again and first != other
    before = sum(1 for o in first if o.at_s < 1200)
    during = sum(1 for o in first if 1200 <= o.at_s < 2400)
    assert 2.3 < during / before < 3.7  # three times the rate, Poisson noise aside
    express = [o for o in first if o.priority == 5]
    assert 0.15 < len(express) / len(first) < 0.35 and all(o.due_in_s == 900 for o in express)
    assert all(sku in site.skus() for o in first for sku, _ in o.lines)


def test_csv_profiles(tmp_path: Path) -> None:
    site = load_scenario(ROOT / "config" / "whatif" / "demo-1x.yaml").site
    good = tmp_path / "o.csv"
    good.write_text("received_at,lines,carrier,priority,due_at\n90,SKU-0001x2 SKU-0003,DHL,5,15m\n"
                    "10s,SKU-0002,UPS,,\n")
    planned = read_csv(good, site)
    assert [(o.at_s, o.lines, o.carrier, o.priority, o.due_in_s) for o in planned] == [
        (10.0, (("SKU-0002", 1),), "UPS", 0, None),
        (90.0, (("SKU-0001", 2), ("SKU-0003", 1)), "DHL", 5, 900.0)]
    bad = tmp_path / "b.csv"
    bad.write_text("received_at,lines,carrier\n1,SKU-0001,DHL\n2,SKU-9999,DHL\n")
    with pytest.raises(SiteError, match=r"b.csv, line 3: unknown SKU 'SKU-9999'"):
        read_csv(bad, site)


def test_the_chosen_speed_keeps_the_busiest_minute_within_the_wall_rate() -> None:
    site = load_scenario(ROOT / "config" / "whatif" / "demo-1x.yaml").site
    calm = generate(Generated(rate=0.2), site, 3600, 1)
    busy = generate(Generated(rate=5.0), site, 600, 1)
    assert choose_speed(calm, 3600) == 20.0
    assert choose_speed(busy, 600) < 4
