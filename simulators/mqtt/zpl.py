"""Enough of ZPL II to accept the labels a WCS prints and refuse malformed ones the way a Zebra would.

A label is `^XA ... ^XZ`. Commands are `^` or `~` plus a two-letter code (`^A` takes the font name as
its next character). A field is `^FO x,y` (or `^FT`), optional font / barcode commands, then
`^FD data ^FS`. Anything the parser does not know is refused: a printer that silently ignores a typo
prints a label nobody can scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Format and field commands of ZPL II that a shipping label may use.
KNOWN_COMMANDS = frozenset({
    "XA", "XZ", "FO", "FT", "FD", "FS", "FB", "FH", "FR", "FX", "FW", "FV", "FN", "SN", "SF",
    "A", "A@", "CF", "CI", "CC", "CD", "CT", "BY", "BC", "B3", "BQ", "BE", "B2", "BX", "B7", "BU",
    "GB", "GC", "GD", "GE", "GF", "LH", "LL", "LR", "LS", "LT", "PW", "PQ", "PR", "PO", "PM",
    "MM", "MN", "MT", "MD", "JM", "JZ", "XG", "IM",
})
BARCODES = frozenset({"BC", "B3", "BQ", "BE", "B2", "BX", "B7", "BU"})
_COMMAND = re.compile(r"[\^~](A@|A|[A-Z0-9@]{2})", re.IGNORECASE)
_INT = re.compile(r"^\s*-?\d+\s*$")


class ZplError(ValueError):
    """A label the printer refuses. The message is the reason code's detail (`bad_zpl: <message>`)."""


@dataclass(frozen=True, slots=True)
class Field:
    x: int
    y: int
    data: str
    font: str | None = None
    barcode: str | None = None  # the ZPL barcode command, e.g. "BC" for Code 128


@dataclass(frozen=True, slots=True)
class Label:
    fields: tuple[Field, ...]
    copies: int = 1
    commands: tuple[str, ...] = field(default=(), repr=False)


def _ints(params: str, command: str, count: int) -> list[int]:
    values = params.split(",")[:count]
    if len(values) < count or not all(_INT.match(v) for v in values):
        raise ZplError(f"^{command} needs {count} integers, got {params!r}")
    return [int(v) for v in values]


def parse_label(text: str) -> Label:
    """Parse one `^XA ... ^XZ` label, or raise ZplError saying what is wrong."""
    source = text.strip()
    if not source:
        raise ZplError("empty label")
    tokens = _tokens(source)
    if not tokens or tokens[0][0] != "XA":
        raise ZplError("a label must start with ^XA")
    if tokens[-1][0] != "XZ":
        raise ZplError("missing ^XZ at the end of the label")
    if any(code in ("XA", "XZ") for code, _ in tokens[1:-1]):
        raise ZplError("one label per print command: found a second ^XA or ^XZ")

    fields: list[Field] = []
    origin: tuple[int, int] | None = None
    font: str | None = None
    barcode: str | None = None
    copies = 1
    pending_data: str | None = None
    for code, params in tokens[1:-1]:
        if pending_data is not None and code != "FS":
            raise ZplError("^FD must be closed by ^FS")
        if code in ("FO", "FT"):
            x, y = _ints(params, code, 2)
            origin = (x, y)
        elif code == "A":
            font = params[:1] or None
            if font is None:
                raise ZplError("^A needs a font name")
        elif code in BARCODES:
            barcode = code
        elif code == "FD":
            pending_data = params
        elif code == "FS":
            if pending_data is None:
                origin, font, barcode = None, None, None  # ^FS also closes a graphic field (^GB ...)
                continue
            if barcode == "BC" and not pending_data.isascii():
                raise ZplError("Code 128 (^BC) data must be ASCII")
            x, y = origin or (0, 0)
            fields.append(Field(x, y, pending_data, font, barcode))
            origin, font, barcode, pending_data = None, None, None, None
        elif code == "PQ":
            copies = _ints(params, code, 1)[0]
            if copies < 1:
                raise ZplError("^PQ copies must be at least 1")
    if pending_data is not None:
        raise ZplError("^FD must be closed by ^FS")
    if not fields:
        raise ZplError("the label has no ^FD field: it would print blank")
    return Label(tuple(fields), copies, tuple(code for code, _ in tokens))


def _tokens(source: str) -> list[tuple[str, str]]:
    """(command, parameters) pairs. Text before the first command is an error, as are unknown codes."""
    matches = list(_COMMAND.finditer(source))
    if not matches or matches[0].start() != 0:
        raise ZplError("a label must start with ^XA")
    tokens: list[tuple[str, str]] = []
    for index, match in enumerate(matches):
        code = match.group(1).upper()
        end = matches[index + 1].start() if index + 1 < len(matches) else len(source)
        params = source[match.end():end]  # ^A0N,30,30 is command A with font "0" first in its parameters
        if code not in KNOWN_COMMANDS:
            raise ZplError(f"unknown command {match.group(0)[:1]}{code}")
        tokens.append((code, params if code == "FD" else params.strip()))
    return tokens
