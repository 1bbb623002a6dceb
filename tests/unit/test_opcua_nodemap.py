"""Node maps (defaults, site-file overrides, errors) and the decoding of what a PLC sends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua

from adapters.opcua import decode
from adapters.opcua.nodemap import node_id, resolve
from adapters.opcua.wiring import wire
from controller.contract.kinds import DeviceKind
from controller.contract.opcua import (
    CONTRACT_NAMESPACE,
    CONVEYOR_SIGNALS,
    SCAN_POINT_SIGNALS,
    SORTER_SIGNALS,
    MachineryItemState,
    MachineryOperationMode,
    NodeMapError,
    namespace_indexes,
)
from controller.site import Site, device_node_map, floor_node_maps


def with_nodes(site: Site, conveyor: dict[str, str] | None = None,
               sorter: dict[str, str] | None = None) -> Site:
    return site.model_copy(update={
        "conveyors": [c.model_copy(update={"nodes": conveyor or {}}) for c in site.conveyors],
        "sorters": [s.model_copy(update={"nodes": sorter or {}}) for s in site.sorters]})


def test_defaults_put_every_signal_under_the_device_id_in_namespace_2(demo_site: Site) -> None:
    conveyor = device_node_map(demo_site.conveyors[0])
    assert conveyor.kind is DeviceKind.CONVEYOR and conveyor.owner == "conveyors.loop-1"
    assert dict(conveyor.nodes) == {
        "Object": "ns=2;s=loop-1", "State": "ns=2;s=loop-1.State",
        "OperationMode": "ns=2;s=loop-1.OperationMode", "Fault": "ns=2;s=loop-1.Fault",
        "EStop": "ns=2;s=loop-1.EStop", "Transport": "ns=2;s=loop-1.Transport"}
    sorter = device_node_map(demo_site.sorters[0])
    assert sorter["Induct"] == "ns=2;s=sorter-1.Induct" and sorter["Divert"] == "ns=2;s=sorter-1.Divert"
    assert set(SORTER_SIGNALS) - set(CONVEYOR_SIGNALS) == {"Induct", "Divert"}


def test_every_scan_point_gets_an_object_under_its_device(demo_site: Site) -> None:
    conveyor = device_node_map(demo_site.conveyors[0])
    assert list(conveyor.scan_points) == ["sp-induct", "sp-pack"]
    assert dict(conveyor.scan_points["sp-pack"]) == {
        "ScanPoint": "ns=2;s=loop-1.sp-pack", "LastBarcode": "ns=2;s=loop-1.sp-pack.LastBarcode",
        "LastScanId": "ns=2;s=loop-1.sp-pack.LastScanId", "LastReadAt": "ns=2;s=loop-1.sp-pack.LastReadAt",
        "ReadCount": "ns=2;s=loop-1.sp-pack.ReadCount", "NoReadCount": "ns=2;s=loop-1.sp-pack.NoReadCount"}
    sorter = device_node_map(demo_site.sorters[0])
    assert list(sorter.scan_points) == ["sp-sort"]
    assert set(SCAN_POINT_SIGNALS).isdisjoint(sorter.nodes)  # not the device's own signals


def test_scan_point_node_ids_are_mapped_like_the_others(demo_site: Site) -> None:
    site = with_nodes(demo_site, conveyor={"ScanPoint": "ns=3;s=PLC_A/{id}/{scan_point}",
                                           "ReadCount": "nsu=urn:vendor;s={scan_point}/Reads"})
    conveyor = device_node_map(site.conveyors[0])
    assert conveyor.scan_points["sp-induct"]["ScanPoint"] == "ns=3;s=PLC_A/loop-1/sp-induct"
    assert conveyor.scan_points["sp-pack"]["ReadCount"] == "nsu=urn:vendor;s=sp-pack/Reads"
    assert conveyor.scan_points["sp-pack"]["LastBarcode"] == "ns=2;s=loop-1.sp-pack.LastBarcode"


def test_a_scan_point_mapping_without_the_scan_point_repeats_a_node_id(demo_site: Site) -> None:
    site = with_nodes(demo_site, conveyor={"ReadCount": "ns=3;s=Conv1/Reads"})  # two scan points, one node
    with pytest.raises(NodeMapError,
                       match=r"conveyors\.0\.nodes\.ReadCount \(scan point 'sp-pack'\): node id "
                             r"'ns=3;s=Conv1/Reads' is already used by conveyors\.0\.nodes\.ReadCount "
                             r"\(scan point 'sp-induct'\)"):
        floor_node_maps(site, "plc-1")
    assert device_node_map(with_nodes(demo_site, sorter={"ReadCount": "ns=3;s=Sorter/Reads"}).sorters[0])


def test_the_scan_point_placeholder_only_belongs_to_scan_point_signals(demo_site: Site) -> None:
    with pytest.raises(NodeMapError, match=r"conveyors\.loop-1\.nodes\.State: \{scan_point\} only belongs"):
        device_node_map(with_nodes(demo_site, conveyor={"State": "ns=2;s={scan_point}.State"}).conveyors[0])


def test_the_site_file_overrides_some_signals_and_id_is_replaced(demo_site: Site) -> None:
    site = with_nodes(demo_site, conveyor={"State": "ns=3;s=PLC_A/{id}/State", "Transport": "ns=3;i=17"})
    conveyor = device_node_map(site.conveyors[0])
    assert conveyor["State"] == "ns=3;s=PLC_A/loop-1/State"
    assert conveyor["Transport"] == "ns=3;i=17"
    assert conveyor["Fault"] == "ns=2;s=loop-1.Fault"  # not mapped: the default


def test_an_unknown_signal_is_an_error_naming_it_and_the_known_ones(demo_site: Site) -> None:
    site = with_nodes(demo_site, sorter={"Sate": "ns=2;s=x", "Divert": "ns=2;s=d"})
    with pytest.raises(NodeMapError) as error:
        device_node_map(site.sorters[0])
    message = str(error.value)
    assert message.startswith("sorters.sorter-1.nodes.Sate: unknown signal 'Sate'")
    assert "Divert" in message and "State" in message and "Induct" in message and "ReadCount" in message


def test_a_signal_a_conveyor_does_not_have_is_unknown(demo_site: Site) -> None:
    with pytest.raises(NodeMapError, match=r"conveyors\.loop-1\.nodes\.Divert: unknown signal 'Divert'"):
        device_node_map(with_nodes(demo_site, conveyor={"Divert": "ns=2;s=d"}).conveyors[0])


def test_namespace_0_is_refused(demo_site: Site) -> None:
    with pytest.raises(NodeMapError, match=r"conveyors\.loop-1\.nodes\.State: 'i=2258' is in namespace 0"):
        device_node_map(with_nodes(demo_site, conveyor={"State": "i=2258"}).conveyors[0])


def test_two_signals_on_one_node_are_refused(demo_site: Site) -> None:
    site = with_nodes(demo_site, conveyor={"Fault": "ns=2;s=Shared"}, sorter={"Fault": "ns=2;s=Shared"})
    with pytest.raises(NodeMapError, match=r"sorters\.0\.nodes\.Fault: node id 'ns=2;s=Shared' is already "
                                           r"used by conveyors\.0\.nodes\.Fault"):
        floor_node_maps(site, "plc-1")


def test_an_unknown_plc_is_an_error(demo_site: Site) -> None:
    with pytest.raises(NodeMapError, match="unknown PLC 'plc-9'"):
        floor_node_maps(demo_site, "plc-9")


def test_the_plc_map_comes_first_and_uses_the_contract_namespace(demo_site: Site) -> None:
    maps = floor_node_maps(demo_site, "plc-1")
    assert [m.owner for m in maps] == ["plcs.0", "conveyors.0", "sorters.0"]  # site key paths
    assert maps[0].kind is None
    assert maps[0]["ContractVersion"] == f"nsu={CONTRACT_NAMESPACE};s=Plc.ContractVersion"
    site = with_nodes(demo_site, conveyor={"State": "ns=5;s=x"}, sorter={"State": "nsu=urn:vendor;s=y"})
    assert namespace_indexes(floor_node_maps(site, "plc-1")) == (5, {CONTRACT_NAMESPACE, "urn:vendor"})


def test_resolve_looks_namespace_uris_up_on_the_server() -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:server", "urn:vendor"]
    assert resolve("nsu=urn:vendor;s=Belt/State", namespaces) == node_id("Belt/State", 2)
    assert resolve("ns=7;i=42", namespaces) == node_id(42, 7)
    with pytest.raises(NodeMapError, match="the server has no namespace 'urn:other'"):
        resolve("nsu=urn:other;s=x", namespaces)


def test_wiring_maps_nodes_back_to_devices_and_selects_every_contract_field(demo_site: Site) -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:server", "urn:plc", CONTRACT_NAMESPACE]
    wiring = wire(floor_node_maps(demo_site, "plc-1"), namespaces)
    assert wiring.sources == {node_id("loop-1", 2): "loop-1", node_id("sorter-1", 2): "sorter-1"}
    assert wiring.variables[node_id("sorter-1.EStop", 2)] == ("sorter-1", "EStop")
    assert node_id("Plc.ContractVersion", 3) not in wiring.variables  # read once, not watched
    selected = [(op.BrowsePath[0].Name,
                 op.BrowsePath[0].NamespaceIndex) for op in wiring.event_filter.SelectClauses]
    assert selected[:3] == [("EventType", 0), ("SourceNode", 0), ("Time", 0)]
    assert {name for name, ns in selected[3:] if ns == 3} == {
        "ScanPoint", "ScanId", "Barcode", "CommandId", "ToteId", "Destination", "Outcome", "Reason", "Lane"}


@pytest.mark.parametrize(("value", "state"), [
    ("Executing", MachineryItemState.EXECUTING),
    (ua.LocalizedText("OutOfService"), MachineryItemState.OUT_OF_SERVICE),
    (2, MachineryItemState.NOT_EXECUTING),  # the enumeration index
    (0, MachineryItemState.NOT_AVAILABLE),
    (4, None), (-1, None), (True, None), ("executing", None), (None, None), (2.0, None),
])
def test_machinery_state_accepts_names_and_indexes_only(value: object,
                                                        state: MachineryItemState | None) -> None:
    assert decode.machinery_state(value) is state


def test_other_decoders_refuse_the_wrong_type() -> None:
    assert decode.operation_mode("Processing") is MachineryOperationMode.PROCESSING
    assert decode.operation_mode(3) is MachineryOperationMode.PROCESSING
    assert decode.operation_mode("Running") is None
    assert decode.text("jam:main") == "jam:main" and decode.text(42) is None
    assert decode.flag(False) is False and decode.flag(0) is None and decode.flag("true") is None
    assert decode.wall_time(datetime(2024, 1, 1, tzinfo=UTC)) == 1704067200.0
    assert decode.wall_time(datetime(2024, 1, 1)) == 1704067200.0  # naive: UTC, as on the wire
    assert decode.wall_time("2024-01-01") is None
