"""Simulated PLCs: conveyors and sorters speaking the floorctl OPC UA contract
(docs/devices.md (OPC UA devices))."""

from simulators.plc.plcs import plc_floor
from simulators.plc.server import PlcSimulator, endpoint_with_port

__all__ = ["PlcSimulator", "endpoint_with_port", "plc_floor"]
