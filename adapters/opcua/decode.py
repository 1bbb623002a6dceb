"""Turning what a PLC sends into typed values, refusing anything off-contract.

Every function returns None for a value it cannot use; the caller logs and counts it. A real PLC may
publish MachineryItemState / MachineryOperationMode as the state name (String or LocalizedText, as
OPC 40001's CurrentState) or as the enumeration index (an integer); both are accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from asyncua import ua

from controller.contract.opcua import MachineryItemState, MachineryOperationMode

E = TypeVar("E", bound=StrEnum)


def _enum(kind: type[E], value: Any) -> E | None:
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    if isinstance(value, bool):  # a bool is an int to Python, never a state to a PLC
        return None
    if isinstance(value, int):
        members = list(kind)
        return members[value] if 0 <= value < len(members) else None
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            return None
    return None


def machinery_state(value: Any) -> MachineryItemState | None:
    return _enum(MachineryItemState, value)


def operation_mode(value: Any) -> MachineryOperationMode | None:
    return _enum(MachineryOperationMode, value)


def text(value: Any) -> str | None:
    """A String field or variable; None when it is anything else."""
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    return value if isinstance(value, str) else None


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def wall_time(value: Any) -> float | None:
    """An OPC UA DateTime as time.time() seconds; a naive datetime is UTC, as on the wire."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
