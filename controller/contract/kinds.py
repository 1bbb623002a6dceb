"""The kinds of device floorctl drives: the `kind` of an MQTT topic, of a site-file entry, of a port."""

from __future__ import annotations

from enum import StrEnum


class DeviceKind(StrEnum):
    PICK_LIGHT = "pick_light"
    PRINTER = "printer"
    PACK_STATION = "pack_station"
    CONVEYOR = "conveyor"
    SORTER = "sorter"
