"""OPC UA devices: conveyors and sorters on PLCs, driven through the contract in docs/devices-opcua.md."""

from adapters.opcua.hub import OpcUaHub
from adapters.opcua.tickets import CommandRejected

__all__ = ["CommandRejected", "OpcUaHub"]
