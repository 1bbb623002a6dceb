"""The OPC UA wire contract between floorctl and a PLC: names, types and value sets.

Shared by the adapter and the PLC simulator so that both sides speak exactly the same contract.
Node ids are not here (they come from the site file, see controller/nodemap.py); what is here is fixed by the
contract version and must be implemented as-is by any PLC that floorctl drives. docs/devices.md (OPC UA devices)
is the prose version of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from asyncua import ua

from controller import nodemap

CONTRACT_VERSION = "1.0"
CONTRACT_NAMESPACE = nodemap.CONTRACT_NAMESPACE  # defined with the PLC-level nodes' defaults, which use it

ACCEPTED = "accepted"
REJECTED = "rejected:"


class MachineryItemState(StrEnum):
    """OPC 40001 MachineryItemState; the index is the value a PLC may publish as an Int32."""

    NOT_AVAILABLE = "NotAvailable"
    OUT_OF_SERVICE = "OutOfService"
    NOT_EXECUTING = "NotExecuting"
    EXECUTING = "Executing"


class MachineryOperationMode(StrEnum):
    """OPC 40001 MachineryOperationMode; the index is the value a PLC may publish as an Int32."""

    NONE = "None"
    MAINTENANCE = "Maintenance"
    SETUP = "Setup"
    PROCESSING = "Processing"


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class EventType:
    """A custom event type (subtype of BaseEventType) and its String fields, in CONTRACT_NAMESPACE."""

    name: str
    fields: tuple[str, ...]


# Modelled on OPC 30010 AutoIdScanEventType, flattened so no structured type is needed:
# ScanPoint is AutoID's DeviceName, Barcode is ScanResult.ScanData ("" on a no-read),
# the standard Time field is ScanResult.Timestamp (the moment of the read).
SCAN_EVENT = EventType("ScanEventType", ("ScanPoint", "ScanId", "Barcode"))
# A Transport (conveyor) or an Induct (sorter) finished; Time is the moment of arrival / exit.
TRANSPORT_COMPLETED_EVENT = EventType(
    "TransportCompletedEventType", ("CommandId", "ToteId", "Destination", "Outcome", "Reason")
)
# A sorter decided what to do with a scanned tote: Lane "" means recirculated. CommandId is the Divert
# command that set the lane, "" when the sorter decided by itself (no target, recirculation limit).
DIVERTED_EVENT = EventType("DivertedEventType", ("ScanId", "ToteId", "Lane", "CommandId"))

EVENT_TYPES = (SCAN_EVENT, TRANSPORT_COMPLETED_EVENT, DIVERTED_EVENT)
EVENT_FIELD_TYPE = ua.VariantType.String


def event_type_node(event: EventType) -> str:
    return f"nsu={CONTRACT_NAMESPACE};s={event.name}"


def event_field_node(event: EventType, field: str) -> str:
    return f"nsu={CONTRACT_NAMESPACE};s={event.name}.{field}"


def rejected(reason: str) -> str:
    return f"{REJECTED}{reason}"
