"""Test floors for integrators and for floorctl's own tests: the pytest plugin (`plugin.py`, loaded
through the `pytest11` entry point), the floor it starts (`floor.py`) and its API client (`api.py`).
docs/testing.md shows them in use."""

from controller.testing.api import FloorApi
from controller.testing.floor import Floor, FloorError, FloorOptions, LiveFloor, live_floor

__all__ = ["Floor", "FloorApi", "FloorError", "FloorOptions", "LiveFloor", "live_floor"]
