"""The pytest plugin's fixtures as an integrator uses them: a floor, a logged-in API client, faults
by device name and a fault timeline, on the demo floor over real MQTT and OPC UA."""

from __future__ import annotations

import time

import pytest

from controller.testing import Floor, FloorApi

SPEED = 50.0
pytestmark = pytest.mark.floorctl(speed=SPEED)


def device(api: FloorApi, device_id: str) -> dict[str, object]:
    return next(d for d in api.get("/api/devices").raise_for_status().json() if d["device_id"] == device_id)


def wait_device(api: FloorApi, device_id: str, condition: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = device(api, device_id)
        if condition in str(seen):
            return
        assert time.monotonic() < deadline, f"{device_id} never showed {condition!r}: {seen}"
        time.sleep(0.05)


def test_an_order_ships_along_its_route(floor: Floor, api: FloorApi) -> None:
    assert api.get("/api/auth/me").json()["name"] == floor.options.user
    order_id = api.submit_order({"SKU-0003": 1}, "DHL")
    order = api.wait_for_state(order_id, "shipped", timeout=30)
    api.assert_route(order_id, picked_at="A-03", packed_at=order["pack_station"],
                     labelled_by=order["printer"], sorted_to="DHL")
    with pytest.raises(AssertionError, match=r"picked at A-03, not A-04.*sorted to lane-1, not lane-2"):
        api.assert_route(order_id, picked_at="A-04", sorted_to="UPS")


def test_an_injected_fault_holds_the_order_until_cleared(floor: Floor, api: FloorApi) -> None:
    floor.inject("ptl-05", "lamp_broken")
    wait_device(api, "ptl-05", "lamp_broken")
    order_id = api.submit_order({"SKU-0005": 1}, "UPS")
    with pytest.raises(AssertionError, match=f"order {order_id} is .* after 1 s, not shipped"):
        api.wait_for_state(order_id, timeout=1)
    floor.clear("ptl-05")
    api.wait_for_state(order_id, timeout=30)
    api.assert_route(order_id, picked_at="A-05", sorted_to="UPS")


def test_a_fault_timeline_sends_labels_to_the_other_printer(floor: Floor, api: FloorApi) -> None:
    playing = floor.play("faults:\n  - {at: 0s, device: prn-1, fault: paper_out, for: 1h}\n", wait=False)
    wait_device(api, "prn-1", "paper_out")
    ids = [api.submit_order({f"SKU-000{n}": 1}, "DPD") for n in (1, 2, 3, 4)]
    for order_id in ids:
        api.wait_for_state(order_id, timeout=45)
        api.assert_route(order_id, labelled_by="prn-2", sorted_to="DPD")
    playing.cancel()  # the player ends what it started: prn-1 gets a fresh roll
    wait_device(api, "prn-1", "'fault': None")
