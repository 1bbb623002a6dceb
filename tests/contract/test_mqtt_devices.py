"""Each MqttHub device against its simulator, through a real Mosquitto."""

from __future__ import annotations

import asyncio

import pytest

from adapters.mqtt import CommandRejected, MqttPackStation, MqttPickLight, MqttPrinter
from controller.ports import Completion, Device, PackStation, PickLight, Printer
from controller.site import Site
from tests.conftest import MqttRig, RigFactory, with_simulation

LABEL = "^XA^FO50,50^A0N,30,30^FDOrder 1001^FS^FO50,100^BCN,80,Y,N,N^FD1Z999AA10123456784^FS^XZ"

def _adapters_satisfy_the_ports(light: MqttPickLight, printer: MqttPrinter,
                                station: MqttPackStation) -> tuple[PickLight, Printer, PackStation]:
    return light, printer, station  # checked by mypy, not run: the port Protocols are not runtime-checkable


async def test_devices_implement_the_ports(rig: MqttRig) -> None:
    kinds = {type(device) for device in rig.hub.devices()}
    assert kinds == {MqttPickLight, MqttPrinter, MqttPackStation}
    assert all(isinstance(device, Device) and device.protocol == "mqtt" and device.status.online
               for device in rig.hub.devices())
    assert rig.hub.device("prn-1").status.detail["labels_remaining"] == 5000


async def test_pick_light_show_is_acked_then_done_with_picked(rig: MqttRig) -> None:
    light = rig.hub.device("ptl-03")
    assert isinstance(light, MqttPickLight)
    ticket = await light.show("pick-1", "A-03", 4, "blue")
    assert ticket.sent_at is not None and ticket.sends == 1
    acked_at = await asyncio.wait_for(ticket.acked, 2)
    done = await asyncio.wait_for(ticket.done, 2)
    assert done == Completion("pick-1", ok=True, at=done.at, result={"picked": 4, "short": False})
    assert ticket.sent_at <= acked_at <= done.at
    assert rig.floor.pick_light("ptl-03").executions["pick-1"] == 1


async def test_pick_light_short_pick(demo_site: Site, make_rig: RigFactory) -> None:
    rig = await make_rig(with_simulation(demo_site, "operator", short_pick_rate=1.0))
    ticket = await rig.hub.device("ptl-01").show("pick-short", "A-01", 5)  # type: ignore[attr-defined]
    done = await asyncio.wait_for(ticket.done, 2)
    assert done.ok and done.result["short"] is True
    assert 0 <= done.result["picked"] < 5


async def test_pick_light_without_answer_stays_lit_until_cleared(demo_site: Site,
                                                                  make_rig: RigFactory) -> None:
    rig = await make_rig(with_simulation(demo_site, "operator", no_answer_rate=1.0, mean_s=0.0))
    light = rig.hub.device("ptl-02")
    assert isinstance(light, MqttPickLight)
    shown = await light.show("pick-lost", "A-02", 1)
    await asyncio.wait_for(shown.acked, 2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(shown.done), 0.3)  # ~30 s of floor time, nobody picks
    assert rig.floor.pick_light("ptl-02").state_detail()["display"]["location"] == "A-02"
    cleared = await light.clear("clear-1")
    assert (await asyncio.wait_for(cleared.done, 2)).ok
    failed = await asyncio.wait_for(shown.done, 2)
    assert not failed.ok and failed.reason == "cleared"


async def test_pick_light_rejects_bad_quantity(rig: MqttRig) -> None:
    ticket = await rig.hub.device("ptl-04").show("pick-bad", "A-04", 0)  # type: ignore[attr-defined]
    with pytest.raises(CommandRejected) as rejected:
        await asyncio.wait_for(ticket.acked, 2)
    assert rejected.value.reason.startswith("bad_params")
    done = await asyncio.wait_for(ticket.done, 2)
    assert not done.ok and done.reason == rejected.value.reason
    assert rig.floor.pick_light("ptl-04").executions["pick-bad"] == 0


async def test_printer_prints_valid_zpl(rig: MqttRig) -> None:
    printer = rig.hub.device("prn-1")
    assert isinstance(printer, MqttPrinter)
    ticket = await printer.print_label("label-1", LABEL)
    await asyncio.wait_for(ticket.acked, 2)
    done = await asyncio.wait_for(ticket.done, 2)
    assert done.ok and done.result == {"labels_remaining": 4999}
    printed = rig.floor.printer("prn-1").printed[-1]
    assert [f.data for f in printed.fields] == ["Order 1001", "1Z999AA10123456784"]
    assert printed.fields[1].barcode == "BC"


@pytest.mark.parametrize(("zpl", "detail"), [
    ("^XA^FO50,50^FDno end^FS", "missing ^XZ"),
    ("^XA^FO50,50^QQ1^FDx^FS^XZ", "unknown command ^QQ"),
    ("", "empty label"),
])
async def test_printer_rejects_malformed_zpl_with_reason(rig: MqttRig, zpl: str, detail: str) -> None:
    ticket = await rig.hub.device("prn-2").print_label("label-bad", zpl)  # type: ignore[attr-defined]
    with pytest.raises(CommandRejected) as rejected:
        await asyncio.wait_for(ticket.acked, 2)
    assert rejected.value.reason.startswith("bad_zpl: ") and detail in rejected.value.reason
    assert not (await ticket.done).ok
    assert len(rig.floor.printer("prn-2").printed) == 0


async def test_printer_host_status_reports_flags(rig: MqttRig) -> None:
    ticket = await rig.hub.device("prn-1").host_status("hs-1")  # type: ignore[attr-defined]
    done = await asyncio.wait_for(ticket.done, 2)
    assert done.result == {"paper_out": False, "ribbon_out": False, "head_open": False, "paused": False,
                           "labels_remaining": 5000, "buffer_full": False}


async def test_pack_station_packs(rig: MqttRig) -> None:
    station = rig.hub.device("PS-2")
    assert isinstance(station, MqttPackStation)
    ticket = await station.pack("pack-1", "order-77", "tote-9", 3)
    done = await asyncio.wait_for(ticket.done, 2)
    assert done.ok and done.result == {"order_id": "order-77", "tote_id": "tote-9", "items": 3}


async def test_a_busy_device_works_its_queue_in_order(rig: MqttRig) -> None:
    station = rig.hub.device("PS-1")
    tickets = [await station.pack(f"pack-{n}", f"order-{n}", f"tote-{n}", 1)  # type: ignore[attr-defined]
               for n in range(5)]
    done = await asyncio.wait_for(asyncio.gather(*(t.done for t in tickets)), 5)
    assert all(c.ok for c in done)
    assert [c.at for c in done] == sorted(c.at for c in done)


async def test_unknown_action_is_rejected(rig: MqttRig) -> None:
    printer = rig.hub.device("prn-1")
    assert isinstance(printer, MqttPrinter)
    ticket = await printer._submit("odd-1", "self_destruct", {})
    with pytest.raises(CommandRejected, match="unknown_action: self_destruct"):
        await asyncio.wait_for(ticket.acked, 2)
