"""What a device's `done` result must hold, per action (docs/devices.md, Commands).

A result of the wrong shape is a malformed payload: the adapter counts it and leaves the ticket
open, so the device may answer again properly or the queue's time-out applies. Nothing a device
sends can fail an order by its shape alone. Only `outcome: done` is checked: a failed command's
result carries nothing the controller books.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.contract.mqtt import Action, WireError


def _count(result: dict[str, Any], key: str, most: int | None = None) -> int:
    """An integer (never a bool, a float or a string) from 0 to `most`."""
    value = result.get(key)
    if type(value) is not int or value < 0 or (most is not None and value > most):
        bound = "" if most is None else f" up to {most}"
        raise WireError(f"result.{key} must be an integer from 0{bound}, got {value!r}"[:200])
    return value


def _flags(result: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if type(result.get(key)) is not bool:
            raise WireError(f"result.{key} must be true or false")


def _picked(params: dict[str, Any], result: dict[str, Any]) -> None:
    _count(result, "picked", params["qty"])
    _flags(result, "short")


def _printed(params: dict[str, Any], result: dict[str, Any]) -> None:
    _count(result, "labels_remaining")


def _host_status(params: dict[str, Any], result: dict[str, Any]) -> None:
    _flags(result, "paper_out", "ribbon_out", "head_open", "paused", "buffer_full")
    _count(result, "labels_remaining")


def _cancelled(params: dict[str, Any], result: dict[str, Any]) -> None:
    _count(result, "cancelled")


def _packed(params: dict[str, Any], result: dict[str, Any]) -> None:
    for key in ("order_id", "tote_id", "items"):
        if type(result.get(key)) is not type(params[key]) or result[key] != params[key]:
            raise WireError(f"result.{key} must be the {key} of the pack, {params[key]!r}")


def _reset(params: dict[str, Any], result: dict[str, Any]) -> None:
    if "fault" not in result or (result["fault"] is not None and type(result["fault"]) is not str):
        raise WireError("result.fault must be the fault code cleared, or null")


CHECKS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    Action.SHOW: _picked, Action.PRINT: _printed, Action.HOST_STATUS: _host_status,
    Action.CANCEL: _cancelled, Action.PACK: _packed, Action.RESET: _reset,
}  # `clear` has nothing to check: its result is `{}`


def check_result(action: str, params: dict[str, Any], result: dict[str, Any]) -> None:
    """Raise WireError unless `result` is what a `done` of `action` (sent with `params`) must hold."""
    check = CHECKS.get(action)
    if check is not None:
        check(params, result)
