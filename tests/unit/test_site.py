"""Site files: the shipped ones load; every kind of bad file is refused with a message naming the
file, the key path and what is wrong, and `floorctl` exits non-zero without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.site import SiteError, load_site

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.yaml"


def test_shipped_sites_load() -> None:
    demo = load_site(DEMO)
    assert (len(demo.locations), len(demo.pack_stations), len(demo.printers)) == (12, 2, 2)
    assert len(demo.sorters[0].lanes) == 3
    peak = load_site(ROOT / "config" / "peak.yaml")
    assert len(peak.locations) >= 200 and len(peak.pack_stations) == 8
    assert len(peak.printers) == 6 and len(peak.sorters) == 2


def write_variant(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(DEMO.read_text())
    change(data)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def refused(path: Path) -> str:
    with pytest.raises(SiteError) as err:
        load_site(path)
    message = str(err.value)
    assert message.startswith(str(path))
    return message


CASES = {
    "wrong type": (lambda d: d["locations"][0].update(stock="lots"),
                   "locations.0.stock: Input should be a valid integer"),
    "duplicate id": (lambda d: d["printers"].append({"id": "prn-1"}),
                     "printers.2.id: duplicate id 'prn-1'"),
    "unknown device in a route": (lambda d: d["conveyors"][0]["destinations"].append("PS-9"),
                                  "conveyors.0.destinations.2: unknown pack station 'PS-9'"),
    "unknown pick light": (lambda d: d["locations"][3].update(pick_light="ptl-99"),
                           "locations.3.pick_light: unknown pick light 'ptl-99'"),
    "carrier lane not on its sorter": (lambda d: d["carriers"][0].update(lane="lane-7"),
                                       "carriers.0.lane: unknown lane 'lane-7'"),
    "bad broker URL": (lambda d: d["broker"].update(url="http://broker:1883"),
                       "broker.url: broker URL must start with mqtt:// or mqtts://"),
    "bad OPC UA URL": (lambda d: d["plcs"][0].update(endpoint="tcp://plc:4840"),
                       "plcs.0.endpoint: OPC UA endpoint must look like opc.tcp://host:port/path"),
    "bad node id": (lambda d: d["sorters"][0].update(nodes={"State": "Sorter1.State"}),
                    "sorters.0.nodes: Value error, nodes.State: 'Sorter1.State' is not an OPC UA node id"),
    "unknown node-map signal": (lambda d: d["conveyors"][0].update(nodes={"Bogus": "ns=2;s=x"}),
                                "conveyors.0.nodes.Bogus: unknown signal 'Bogus' (known: EStop, Fault, "),
    "node id in namespace 0": (lambda d: d["sorters"][0].update(nodes={"State": "i=2258"}),
                               "sorters.0.nodes.State: 'i=2258' is in namespace 0"),
    "one node id for two signals on a PLC": (
        lambda d: (d["conveyors"][0].update(nodes={"Fault": "ns=2;s=Shared"}),
                   d["sorters"][0].update(nodes={"EStop": "ns=2;s=Shared"})),
        "sorters.0.nodes.EStop: node id 'ns=2;s=Shared' is already used by conveyors.0.nodes.Fault"),
    "one node for every scan point of a conveyor": (
        lambda d: d["conveyors"][0].update(nodes={"ReadCount": "ns=3;s=Reads"}),
        "conveyors.0.nodes.ReadCount (scan point 'sp-pack'): node id 'ns=3;s=Reads' is already used"),
    "unknown key": (lambda d: d["printers"][0].update(colour="red"), "printers.0.colour: unknown key"),
    "missing key": (lambda d: d.pop("carriers"), "carriers: required key is missing"),
    "slowdown of an unknown device": (lambda d: d["simulation"].update(slowdown={"PS-9": 2}),
                                      "simulation.slowdown.PS-9: unknown pick light, pack station, printer"),
    "slowdown not above zero": (lambda d: d["simulation"].update(slowdown={"PS-1": 0}),
                                "simulation.slowdown.PS-1: Input should be greater than 0"),
    "unknown release policy": (lambda d: d.update(release="lifo"),
                               "release: Input should be 'due' or 'fifo'"),
    "security without certificate": (lambda d: d["plcs"][0].update(security={"policy": "Basic256Sha256",
                                                                             "mode": "SignAndEncrypt"}),
                                     "a security policy needs certificate and private_key"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_site_files_are_refused_clearly(tmp_path: Path, case: str) -> None:
    change, expected = CASES[case]
    assert expected.replace("Value error, ",
                            "") in refused(write_variant(tmp_path, change)).replace("Value error, ", "")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("site: demo\nzones:\n  - {id: Z1\n")
    assert "YAML syntax error at line" in refused(path)


def test_duplicate_yaml_key_names_line(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(DEMO.read_text() + "\nprinters:\n  - {id: prn-9}\n")
    message = refused(path)
    assert "YAML syntax error at line" in message and "duplicate key 'printers'" in message


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    assert "no such site file" in refused(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert "must be a YAML mapping" in refused(path)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_site_file_that_is_not_utf8_is_refused_with_where(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / f"{encoding}.yaml"
    # "Lager Süd" saved by an editor in Latin-1 (or as UTF-16, Windows Notepad's "Unicode")
    path.write_bytes(DEMO.read_text().replace("site: ", "site: Lager Süd ", 1).encode(encoding))
    message = refused(path)
    assert "not UTF-8 text" in message and "save the site file as UTF-8" in message
    if encoding == "latin-1":
        line = next(i for i, text in enumerate(DEMO.read_text().splitlines(), 1) if text.startswith("site: "))
        assert f"byte 0xfc at line {line}" in message
