"""Reason codes (docs/devices.md): why a device refused a command, why one failed, what fault it has.

A reason on the wire is a code, optionally followed by a detail for people: `bad_zpl: missing ^XZ`
in an MQTT ack or done, `jam:<segment>` in a PLC's `Fault`. Compare codes with `code_of`, never by
the whole string. A device may use fault codes of its own (a pick light's `display_fault`, a pack
station's `station_blocked`); the ones below are those the contract names.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # MQTT devices, in an ack (the command is refused)
    BAD_PARAMS = "bad_params"  # a parameter is missing or of the wrong type
    UNKNOWN_ACTION = "unknown_action"  # the device has no such action
    BAD_ZPL = "bad_zpl"  # the label does not parse
    BUFFER_FULL = "buffer_full"  # the printer already holds its maximum of labels
    OPERATOR_REQUIRED = "operator_required"  # `reset`: the fault needs a person at the device
    # MQTT devices, in a done (the command failed)
    CLEARED = "cleared"  # a `clear` switched the pick light off before the operator confirmed
    CANCELLED = "cancelled"  # a printer's `cancel` dropped the label before it was printed
    # printer faults (a faulted printer answers nothing)
    PAPER_OUT = "paper_out"
    RIBBON_OUT = "ribbon_out"
    HEAD_OPEN = "head_open"
    # PLC faults, in `Fault` and in a failed TransportCompleted
    ESTOP = "estop"  # also a refusal of Transport and Induct while the e-stop is pressed
    JAM = "jam"  # `jam:<segment>`
    RECIRCULATION_LIMIT = "recirculation_limit"  # a tote left a sorter by its exception lane
    # PLC methods, after `rejected:`
    BAD_ARGUMENTS = "bad_arguments"  # wrong number or type of arguments, or an empty id
    UNKNOWN_DESTINATION = "unknown_destination"  # Transport: the conveyor does not reach it
    UNKNOWN_LANE = "unknown_lane"  # Divert: not a lane of this sorter
    UNKNOWN_SCAN = "unknown_scan"  # Divert: no such scan
    LATE = "late"  # Divert: the tote has already passed the divert
    TARGET_EXISTS = "target_exists"  # Divert: another Divert already set this scan's lane
    # the controller's own, on a ticket it fails itself
    NOT_DELIVERED = "not_delivered"  # a PLC `Reset` that may not have reached the PLC (never re-sent)
    # the simulators' InjectFault method, after `rejected:`
    UNKNOWN_TARGET = "unknown_target"
    UNKNOWN_FAULT = "unknown_fault"
    UNKNOWN_SEGMENT = "unknown_segment"


PRINTER_FAULTS = frozenset({Reason.PAPER_OUT, Reason.RIBBON_OUT, Reason.HEAD_OPEN})
NEEDS_PERSON = PRINTER_FAULTS
"""Faults a `reset` cannot clear (refused with `operator_required`): a roll, a ribbon, a head to close.
Every other fault of an MQTT device (a pick light's `lamp_broken`, a pack station's `scale_error`, a
display fault) is cleared by a `reset`."""


def detailed(code: Reason, detail: str) -> str:
    """An MQTT reason with a detail for people: `bad_params: qty must be a positive integer`."""
    return f"{code}: {detail}"


def jam(segment: str) -> str:
    """A PLC's fault code for a jam on one segment."""
    return f"{Reason.JAM}:{segment}"


def code_of(reason: str) -> str:
    """The code of a reason, without its detail: `bad_zpl: no ^XZ` -> `bad_zpl`, `jam:main` -> `jam`."""
    return reason.partition(":")[0]


# Refusals and failures that say the command itself is wrong: sending it again cannot help, so the
# order needs a person. Every other reason is a state of the device (a fault, an e-stop, a jam, no
# paper): the command waits until the device is back and then goes again.
COMMAND_ERRORS = frozenset({
    Reason.BAD_PARAMS, Reason.UNKNOWN_ACTION, Reason.BAD_ZPL, Reason.BAD_ARGUMENTS,
    Reason.UNKNOWN_DESTINATION, Reason.UNKNOWN_LANE, Reason.UNKNOWN_SCAN, Reason.LATE,
    Reason.TARGET_EXISTS, Reason.RECIRCULATION_LIMIT, Reason.CLEARED,
})


def is_command_error(reason: str) -> bool:
    """True when `reason` (a code, with or without its detail) says the command itself is wrong."""
    return code_of(reason) in COMMAND_ERRORS
