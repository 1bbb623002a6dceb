"""A fault timeline: what goes wrong on a simulated floor, and when, in one YAML file.

```yaml
description: prn-1 runs out of paper, then the conveyor jams
faults:
  - {at: 30s, device: prn-1, fault: paper_out, for: 2m}
  - {at: 3m, device: loop-1, fault: jam, segment: main, for: 45s}
  - {at: 5m, plc: plc-1, fault: estop, for: 20s}
  - {at: 8m, fault: broker_restart, for: 10s}
  - {at: 9m, device: ptl-03, fault: link_cut, for: 1m}
```

Every time is floor time (what a planner means by "two minutes"), counted from the moment the
timeline starts playing; at 50x a `for: 2m` lasts 2.4 s of wall time. The file is read and checked
here, with the line of every mistake; `check(site)` then checks it against a floor (device ids, each
device's faults, segments). Playing it is simulators/faults/player.py. The format is documented in
docs/faults.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller.contract.reasons import PRINTER_FAULTS
from controller.site import ConveyorSpec, Site, SorterSpec
from simulators.plc.sorter import LOOP

JAM = "jam"
ESTOP = "estop"
LINK_CUT = "link_cut"
BROKER_RESTART = "broker_restart"
# A device's own fault code is any other word; these name what the player does instead.
FLOOR_FAULTS = frozenset({JAM, LINK_CUT, BROKER_RESTART})

KEYS = ("at", "device", "plc", "fault", "for", "segment", "kill", "note")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class TimelineError(ValueError):
    """A fault timeline that cannot be played. `str()` is the message for the user: the file, the
    line and the entry's field for each problem."""


def seconds(value: Any) -> float:
    """`30s`, `2m`, `1h`, `1m30s`, `250ms`, or a plain number of seconds -> seconds (>= 0)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:  # text (a bare true/false is no duration either)
        text = str(value).strip().replace(" ", "")
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration like 30s, 2m, 1h or 1m30s")
        number = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 <= number < float("inf"):
        raise ValueError(f"{value!r} must be a duration of 0 or more")
    return number


def span(seconds_: float) -> str:
    """Floor seconds as the file would say them: `30s`, `2m`, `1h5m`, `1.5s`."""
    if seconds_ < 60:
        return f"{seconds_:g}s"
    hours, rest = divmod(seconds_, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v:g}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v)


@dataclass(frozen=True, slots=True)
class FaultEntry:
    """One line of a timeline. `target` is a device id, a PLC id, or `broker`."""

    at: float  # floor seconds from the start of the timeline
    fault: str
    device: str | None = None
    plc: str | None = None
    lasts: float | None = None  # floor seconds; None: the fault stays (a broker restart: down 0 s)
    segment: str | None = None  # a jam's segment (default: the device's first)
    kill: bool = False  # broker_restart: kill -9 instead of an orderly stop
    note: str = ""
    line: int = 0
    index: int = 0

    @property
    def target(self) -> str:
        return self.device or self.plc or "broker"

    @property
    def ends(self) -> float | None:
        """When it is over, in floor seconds; None while it stays."""
        if self.fault == BROKER_RESTART:
            return self.at + (self.lasts or 0.0)
        return None if self.lasts is None else self.at + self.lasts

    @property
    def where(self) -> str:
        return f"line {self.line}, faults[{self.index}]"

    def describe(self) -> str:
        what = f"{self.target} {self.fault}" + (f" on {self.segment}" if self.segment else "")
        if self.fault == BROKER_RESTART:
            what = "broker " + ("killed" if self.kill else "stopped")
            return what + (f", back after {span(self.lasts)}" if self.lasts else ", restarted at once")
        return what + (f" for {span(self.lasts)}" if self.lasts is not None else " (stays)")


@dataclass(frozen=True, slots=True)
class Timeline:
    source: str  # the file (or "<text>"), for messages
    entries: tuple[FaultEntry, ...] = ()  # by `at`, then by their place in the file
    description: str = ""

    @property
    def length(self) -> float:
        """Floor seconds until the last entry is over (or starts, for one that stays)."""
        return max((e.ends if e.ends is not None else e.at for e in self.entries), default=0.0)

    @property
    def needs_broker(self) -> bool:
        return any(e.fault == BROKER_RESTART for e in self.entries)

    def check(self, site: Site) -> None:
        """Raise TimelineError unless every entry fits the site: its device or PLC exists and has
        that fault, a jam's segment is on the device."""
        errors = [f"{e.where}: {problem}" for e in self.entries if (problem := _misfit(e, site))]
        if errors:
            raise TimelineError(f"{self.source}: does not fit site {site.site!r}\n  " + "\n  ".join(errors))


def _misfit(entry: FaultEntry, site: Site) -> str | None:
    plcs = {p.id for p in site.plcs}
    machines: dict[str, ConveyorSpec | SorterSpec] = {d.id: d for d in site.conveyors}
    machines.update((d.id, d) for d in site.sorters)
    printers = {p.id for p in site.printers}
    mqtt = {d.id for d in site.pick_lights} | {d.id for d in site.pack_stations} | printers
    if entry.plc is not None:
        if entry.plc not in plcs:
            return f"plc: unknown PLC {entry.plc!r} (known: {', '.join(sorted(plcs))})"
        return None
    if entry.device is None:
        return None
    device = entry.device
    if device in machines:
        spec = machines[device]
        if entry.fault != JAM:
            return (f"fault: {device} is a {spec.kind} on PLC {spec.plc}: its fault is `jam`; an "
                    f"e-stop or a link cut is the PLC's (plc: {spec.plc})")
        segments = [s.id for s in spec.segments] if isinstance(spec, ConveyorSpec) else [LOOP]
        if entry.segment is not None and entry.segment not in segments:
            return f"segment: {device} has no segment {entry.segment!r} (known: {', '.join(segments)})"
        return None
    if device not in mqtt:
        known = ", ".join(sorted(mqtt | set(machines)))
        return f"device: unknown device {device!r} (known: {known})"
    if entry.fault == JAM:
        return f"fault: {device} is not a conveyor or sorter; `jam` is theirs"
    if device in printers and entry.fault not in PRINTER_FAULTS | {LINK_CUT}:
        return (f"fault: a printer has no fault {entry.fault!r} "
                f"(known: {', '.join(sorted(PRINTER_FAULTS))}, {LINK_CUT})")
    return None


def load_timeline(path: str | Path) -> Timeline:
    """Read and check a fault timeline file; TimelineError with the line of each problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TimelineError(f"{path}: no such fault timeline") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TimelineError(f"{path}: cannot read: {exc}") from None
    return parse_timeline(text, str(path))


def parse_timeline(text: str, source: str = "<text>") -> Timeline:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TimelineError(f"{source}: YAML syntax error{where}: "
                            f"{getattr(exc, 'problem', None) or exc}") from None
    return _Reader(source).timeline(root)


@dataclass
class _Reader:
    source: str
    errors: list[str] = field(default_factory=list)

    def timeline(self, root: yaml.Node | None) -> Timeline:
        if not isinstance(root, yaml.MappingNode):
            raise TimelineError(f"{self.source}: a fault timeline is a mapping with a `faults:` list "
                                "(docs/faults.md)")
        top = self._mapping(root, "", ("description", "faults"))
        description = ""
        if "description" in top:
            description = str(self._scalar(top["description"], "description") or "")
        faults = top.get("faults")
        entries: list[FaultEntry] = []
        if faults is None:
            self.errors.append(f"line {root.start_mark.line + 1}: faults: required key is missing")
        elif not isinstance(faults, yaml.SequenceNode):
            self.errors.append(f"line {faults.start_mark.line + 1}: faults: must be a list of entries")
        else:
            for index, node in enumerate(faults.value):
                entry = self._entry(node, index)
                if entry is not None:
                    entries.append(entry)
        self._overlaps(entries)
        if self.errors:
            raise TimelineError(f"{self.source}: invalid fault timeline\n  " + "\n  ".join(self.errors))
        ordered = tuple(sorted(entries, key=lambda e: (e.at, e.index)))
        return Timeline(self.source, ordered, description)

    def _mapping(self, node: yaml.MappingNode, where: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        fields: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key not in allowed:
                self.errors.append(f"line {line}{where}: unknown key {key!r} "
                                   f"(known: {', '.join(allowed)})")
            elif key in fields:
                self.errors.append(f"line {line}{where}: {key}: given twice")
            else:
                fields[key] = value
        return fields

    def _scalar(self, node: yaml.Node, name: str, where: str = "") -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.errors.append(f"line {node.start_mark.line + 1}{where}: {name}: must be a single value")
            return None
        return yaml.safe_load(yaml.serialize(node))

    def _entry(self, node: yaml.Node, index: int) -> FaultEntry | None:
        line = node.start_mark.line + 1
        where = f", faults[{index}]"
        if not isinstance(node, yaml.MappingNode):
            self.errors.append(f"line {line}{where}: an entry is a mapping such as "
                               "{at: 30s, device: prn-1, fault: paper_out, for: 2m}")
            return None
        before = len(self.errors)
        fields = self._mapping(node, where, KEYS)
        values: dict[str, Any] = {}
        for key, value_node in fields.items():
            values[key] = self._scalar(value_node, key, where)

        def fail(key: str, message: str) -> None:
            at_line = fields[key].start_mark.line + 1 if key in fields else line
            self.errors.append(f"line {at_line}{where}: {key}: {message}")

        def duration(key: str) -> float | None:
            if values.get(key) is None:
                return None
            try:
                return seconds(values[key])
            except ValueError as exc:
                fail(key, str(exc))
                return None

        for key in ("at", "fault"):
            if key not in fields:
                fail(key, "required key is missing")
        at = duration("at")
        lasts = duration("for")
        fault = values.get("fault")
        if "fault" in fields and (not isinstance(fault, str) or not fault.strip()):
            fail("fault", f"must be a fault code such as paper_out, jam, estop, {LINK_CUT} or "
                          f"{BROKER_RESTART}, not {fault!r}")
            fault = None
        texts = {}
        for key in ("device", "plc", "segment", "note"):
            value = values.get(key)
            if value is not None and not isinstance(value, str | int):
                fail(key, f"must be text, not {value!r}")
            texts[key] = None if value is None else str(value)
        device, plc = texts["device"], texts["plc"]
        kill = values.get("kill", False)
        if not isinstance(kill, bool):
            fail("kill", f"must be true or false, not {kill!r}")
        if isinstance(fault, str):
            if device is not None and plc is not None:
                fail("plc", "give a device or a plc, not both")
            if fault == BROKER_RESTART and (device is not None or plc is not None):
                fail("fault", f"{BROKER_RESTART} has no device or plc: the floor has one broker")
            if fault != BROKER_RESTART and device is None and plc is None:
                fail("device", f"{fault!r} needs a device (or a plc); only {BROKER_RESTART} has neither")
            if plc is not None and fault not in (ESTOP, LINK_CUT):
                fail("fault", f"a PLC's faults are {ESTOP} and {LINK_CUT}, not {fault!r} "
                              f"(a jam is a conveyor's or sorter's: device: ...)")
            if texts["segment"] is not None and fault != JAM:
                fail("segment", "only a jam has a segment")
            if kill and fault != BROKER_RESTART:
                fail("kill", f"only a {BROKER_RESTART} can be a kill")
        if len(self.errors) > before or at is None or not isinstance(fault, str):
            return None
        return FaultEntry(at=at, fault=fault.strip(), device=device, plc=plc, lasts=lasts,
                          segment=texts["segment"], kill=bool(kill), note=texts["note"] or "",
                          line=line, index=index)

    def _overlaps(self, entries: list[FaultEntry]) -> None:
        """One fault at a time per device, PLC or broker: a second one while the first lasts is a
        mistake (which of the two would its end clear?)."""
        by_target: dict[str, list[FaultEntry]] = {}
        for entry in sorted(entries, key=lambda e: (e.at, e.index)):
            for earlier in by_target.get(entry.target, []):
                ends = earlier.ends
                if ends is None or entry.at < ends or (entry.at == earlier.at):
                    until = "for good" if ends is None else f"until {span(ends)}"
                    self.errors.append(
                        f"{entry.where}: at: {entry.target} already has {earlier.fault} from "
                        f"{span(earlier.at)} {until} ({earlier.where}); one fault at a time per target")
                    break
            by_target.setdefault(entry.target, []).append(entry)
