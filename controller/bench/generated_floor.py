"""A site of any size, for measuring how the controller's cost grows with the number of devices.

The floor is made of cells shaped like config/peak.yaml's halves: one PLC with a conveyor loop and a
sorter, four pack stations and three printers; the pick lights fill the rest, sixty to a zone.
"""

from __future__ import annotations

from typing import Any

PACK_STATIONS_PER_CELL = 4
PRINTERS_PER_CELL = 3
DEVICES_PER_CELL = 125  # about 1,000 devices in 8 cells
LOCATIONS_PER_ZONE = 60
LANES = ("lane-1", "lane-2", "lane-3")
FIRST_PLC_PORT = 48401


def floor_devices(data: dict[str, Any]) -> int:
    """The devices of a site file's data: pick lights, pack stations, printers, conveyors, sorters."""
    return sum(len(data[section]) for section in ("pick_lights", "pack_stations", "printers", "conveyors",
                                                  "sorters"))


def generated_floor(devices: int) -> dict[str, Any]:
    """Site file data with `devices` devices in all (at least one cell and one pick light)."""
    cells = max(1, round(devices / DEVICES_PER_CELL))
    lights = max(1, devices - cells * (2 + PACK_STATIONS_PER_CELL + PRINTERS_PER_CELL))
    zones = -(-lights // LOCATIONS_PER_ZONE)
    data: dict[str, Any] = {
        "site": f"generated-{devices}",
        "broker": {"url": "mqtt://127.0.0.1:1883", "client_id": "floorctl", "topic_root": "floorctl/v1"},
        "timeouts": {"ack_s": 2.0, "pick_s": 60, "transport_s": 120, "pack_s": 120, "print_s": 20,
                     "divert_s": 60, "retries": 2},
        "simulation": {"seed": 13},
        "zones": [{"id": f"Z{z + 1}"} for z in range(zones)],
        "pick_lights": [{"id": f"ptl-{n + 1:04d}"} for n in range(lights)],
        "locations": [{"id": f"L-{n + 1:04d}", "zone": f"Z{n // LOCATIONS_PER_ZONE + 1}",
                       "sku": f"SKU-{n + 1:04d}", "stock": 10_000_000, "pick_light": f"ptl-{n + 1:04d}"}
                      for n in range(lights)],
        "pack_stations": [], "printers": [], "plcs": [], "conveyors": [], "sorters": [], "carriers": [],
    }
    for c in range(1, cells + 1):
        stations = [f"PS-{c}-{s + 1}" for s in range(PACK_STATIONS_PER_CELL)]
        data["pack_stations"] += [{"id": s} for s in stations]
        data["printers"] += [{"id": f"prn-{c}-{p + 1}", "media_labels": 10_000_000}
                             for p in range(PRINTERS_PER_CELL)]
        data["plcs"].append({"id": f"plc-{c}", "endpoint": f"opc.tcp://127.0.0.1:{FIRST_PLC_PORT + c - 1}"
                                                          f"/floorctl/plc-{c}",
                             "timeout_s": 2.0, "publishing_interval_ms": 2})
        data["conveyors"].append({
            "id": f"loop-{c}", "plc": f"plc-{c}",
            "segments": [{"id": "pick-out", "length_m": 20, "speed_mps": 1.5},
                         {"id": "main", "length_m": 40, "speed_mps": 1.5},
                         {"id": "to-pack", "length_m": 6, "speed_mps": 1.5}],
            "scan_points": [{"id": f"sp-induct-{c}", "segment": "pick-out"},
                            {"id": f"sp-pack-{c}", "segment": "to-pack"}],
            "destinations": stations})
        data["sorters"].append({"id": f"sorter-{c}", "plc": f"plc-{c}", "scan_point": f"sp-sort-{c}",
                                "lanes": list(LANES), "exception_lane": "lane-x", "loop_length_m": 60,
                                "speed_mps": 2.5, "scan_to_divert_m": 3.0, "max_recirculations": 2})
        data["carriers"] += [{"id": f"C{c}-{lane[-1]}", "sorter": f"sorter-{c}", "lane": lane}
                             for lane in LANES]
    return data
