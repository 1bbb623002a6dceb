"""OPC UA devices: conveyors and sorters on PLCs, driven through the contract in docs/devices.md
(OPC UA devices)."""

from adapters.opcua.hub import OpcUaHub
from controller.ports import CommandRejected

__all__ = ["CommandRejected", "OpcUaHub"]
