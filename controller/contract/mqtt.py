"""The MQTT devices' contract (docs/devices.md, MQTT devices): topic layout
`{topic_root}/{kind}/{device_id}/{channel}`, message headers and the JSON codec. Free of paho and
asyncio, so the adapter, the simulated devices and the unit tests use the same few functions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from controller.contract.kinds import DeviceKind

CONTRACT_VERSION = "1.0"
MQTT_KINDS: frozenset[str] = frozenset({DeviceKind.PICK_LIGHT, DeviceKind.PRINTER, DeviceKind.PACK_STATION})
QOS = 1  # every message on the contract is QoS1; duplicates are handled by command-id dedupe


class Channel(StrEnum):
    CMD = "cmd"  # controller -> device
    ACK = "ack"  # device -> controller: accepted or rejected
    DONE = "done"  # device -> controller: finished or failed
    STATE = "state"  # device -> anyone, retained; last-will on the same topic
    ALERT = "alert"  # printer pushes (like Zebra ^SX)


class Action(StrEnum):
    """The `action` of a command (docs/devices.md, Commands), by device kind in ACTIONS."""

    SHOW = "show"  # pick light: light a quantity
    CLEAR = "clear"  # pick light: switch off; what it showed ends `failed` `cleared`
    PRINT = "print"  # printer: one ZPL label
    HOST_STATUS = "host_status"  # printer: ~HS flags
    CANCEL = "cancel"  # printer: drop the labels it holds and is not printing (ZPL ~JA)
    PACK = "pack"  # pack station
    RESET = "reset"  # every kind: clear a fault the device can clear by itself


ACTIONS: dict[str, frozenset[Action]] = {
    DeviceKind.PICK_LIGHT: frozenset({Action.SHOW, Action.CLEAR, Action.RESET}),
    DeviceKind.PRINTER: frozenset({Action.PRINT, Action.HOST_STATUS, Action.CANCEL, Action.RESET}),
    DeviceKind.PACK_STATION: frozenset({Action.PACK, Action.RESET}),
}
IMMEDIATE_ACTIONS = frozenset({Action.CLEAR, Action.HOST_STATUS, Action.CANCEL, Action.RESET})
"""Carried out the moment they arrive, ahead of anything queued."""
ANSWERED_WHILE_SILENT = frozenset({Action.CANCEL, Action.RESET})
"""What a faulted printer still answers (it is silent to everything else)."""


class Connection(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"  # said by the device itself on an orderly shutdown
    CONNECTIONBROKEN = "CONNECTIONBROKEN"  # said by the broker (last-will) when the link died


class WireError(ValueError):
    """A payload that does not follow the contract."""


@dataclass(frozen=True, slots=True)
class Topics:
    root: str

    def device(self, kind: str, device_id: str, channel: str) -> str:
        return f"{self.root}/{kind}/{device_id}/{channel}"

    def all_devices(self, channel: str) -> str:
        return f"{self.root}/+/+/{channel}"

    @property
    def controller_state(self) -> str:
        return f"{self.root}/controller/state"

    def inject(self, device_id: str) -> str:
        return f"{self.root}/sim/{device_id}/inject"

    def parse(self, topic: str) -> tuple[str, str, str] | None:
        """`(kind, device_id, channel)` of a device topic, or None if the topic is not one."""
        prefix_len = len(self.root) + 1
        if not topic.startswith(self.root) or topic[prefix_len - 1:prefix_len] != "/":
            return None
        parts = topic[prefix_len:].split("/")
        if len(parts) != 3 or parts[0] not in MQTT_KINDS or not parts[1]:
            return None
        return parts[0], parts[1], parts[2]


def utc_timestamp() -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2025-01-31T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Headers:
    """Stamps the `header` of every message one sender publishes; message ids count up per topic."""

    __slots__ = ("_ids", "sender")

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self._ids: dict[str, int] = {}

    def next(self, topic: str) -> dict[str, Any]:
        message_id = self._ids.get(topic, 0) + 1
        self._ids[topic] = message_id
        return {"message_id": message_id, "timestamp": utc_timestamp(), "device_id": self.sender,
                "version": CONTRACT_VERSION}


def _no_constant(name: str) -> Any:
    raise WireError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WireError(f"{text} does not fit a double")
    return value


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_loads = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite).decode


def encode(message: dict[str, Any]) -> bytes:
    return _dumps(message).encode()


def decode(payload: bytes) -> dict[str, Any]:
    """A contract message as a dict with a `header` dict, or WireError. Strict JSON: `NaN`,
    `Infinity` and numbers beyond a double (`1e400`) are refused, as is nesting deeper than the
    parser's stack."""
    try:
        message = _loads(payload.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser's stack: no traceback per message
        raise WireError("not JSON: nested too deeply") from None
    if type(message) is not dict:
        raise WireError("not a JSON object")
    if type(message.get("header")) is not dict:
        raise WireError("no header")
    return message


def text_field(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if type(value) is not str or not value:
        raise WireError(f"{key} must be a non-empty string")
    return value


def object_field(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key, {})
    if type(value) is not dict:
        raise WireError(f"{key} must be an object")
    return value
