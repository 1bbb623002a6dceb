"""What-if scenario files (docs/whatif.md): a base site file, changes to it, an order profile and a
duration. Every time in a scenario is floor time: what the planner means by "ten minutes"."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from controller.site import Site, SiteError, format_validation, parse_site, read_yaml
from simulators.faults import Timeline, TimelineError, load_timeline

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|min|m|h))?\s*$")


def seconds(value: Any) -> float:
    """`90`, `90s`, `1.5m`, `2h`, `250ms` → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration like 30s, 5m or 1h")  # noqa: TRY004  pydantic reports ValueError
    if isinstance(value, int | float):
        number, unit = float(value), "s"
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration like 30s, 5m or 1h")
        number, unit = float(match.group(1)), match.group(2) or "s"
    return number * _UNITS[unit]


def per_second(value: Any) -> float:
    """`0.5`, `0.5/s`, `30/min`, `1800/h` → per second."""
    if isinstance(value, bool):
        raise ValueError("a rate like 0.5/s, 30/min or 1800/h")  # noqa: TRY004  pydantic reports ValueError
    if isinstance(value, int | float):
        return float(value)
    match = _RATE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a rate like 0.5/s, 30/min or 1800/h")
    return float(match.group(1)) / _UNITS[match.group(2) or "s"]


Seconds = Annotated[float, BeforeValidator(seconds), Field(ge=0)]
PerSecond = Annotated[float, BeforeValidator(per_second), Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Peak(_Model):
    """Demand multiplied by `multiplier` from `start` to `end`, reached over `ramp` on each side."""

    multiplier: float = Field(gt=0)
    start: Seconds = 0.0
    end: Seconds | None = None  # None: to the end of the scenario
    ramp: Seconds = 0.0


class Generated(_Model):
    rate: PerSecond = Field(description="orders per second of floor time outside the peak")
    peak: Peak | None = None
    sku_skew: float = Field(0.0, ge=0, description="Zipf exponent of SKU popularity (0: uniform)")
    lines: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.6, 0.3, 0.1], description="share of orders with 1, 2, 3... lines")
    express_share: float = Field(0.1, ge=0, le=1)
    express_priority: int = 5
    express_due: Seconds = 900.0
    standard_due: Seconds | None = 4 * 3600.0
    carriers: dict[str, float] | None = None  # share per carrier id; None: every carrier alike

    def rate_at(self, t: float, duration: float) -> float:
        if self.peak is None:
            return self.rate
        p = self.peak
        end = duration if p.end is None else p.end
        if t < p.start - p.ramp or t > end + p.ramp:
            share = 0.0
        elif t < p.start:
            share = 1 - (p.start - t) / p.ramp
        elif t > end:
            share = 1 - (t - end) / p.ramp
        else:
            share = 1.0
        return self.rate * (1 + (p.multiplier - 1) * share)


class Recorded(_Model):
    """Orders a floorctl database received in [since, until), replayed at their recorded offsets."""

    database_url: str
    since: float | str
    until: float | str | None = None
    rate_multiplier: float = Field(1.0, gt=0, description="replay N times faster (a peak of the same mix)")


class OrderProfile(_Model):
    generated: Generated | None = None
    csv: str | None = None  # received_at, lines, carrier, priority, due_at (docs/whatif.md)
    recorded: Recorded | None = None

    @model_validator(mode="after")
    def _one(self) -> OrderProfile:
        given = [name for name in ("generated", "csv", "recorded") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"orders: give exactly one of generated, csv, recorded (got {given or 'none'})")
        return self


class Changes(_Model):
    release: Literal["due", "fifo"] | None = None
    add: dict[Literal["pack_stations", "printers", "pick_lights", "locations", "zones"],
              list[dict[str, Any]]] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list, description="pack station or printer ids")
    slowdown: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    conveyor_speed: Annotated[float, Field(gt=0)] | dict[str, Annotated[float, Field(gt=0)]] | None = None
    simulation: dict[str, Any] = Field(default_factory=dict, description="merged into simulation:")


class ScenarioFile(_Model):
    name: str | None = None
    site: str
    duration: Seconds = Field(gt=0)
    drain: Seconds | None = None  # how long after the last order to let the floor finish (default: duration)
    speed: float | None = Field(None, gt=0, le=200)
    seed: int = 1
    changes: Changes = Changes()
    orders: OrderProfile
    faults: str | None = None  # a fault timeline (docs/faults.md), relative to the scenario file


class Scenario:
    """A scenario, loaded: the changed site, ready to run."""

    def __init__(self, path: Path, spec: ScenarioFile, site: Site) -> None:
        self.path = path
        self.spec = spec
        self.site = site
        self.name = spec.name or path.stem

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def faults(self) -> Timeline | None:
        """The scenario's fault timeline, read and checked against its site (None: no faults)."""
        if self.spec.faults is None:
            return None
        try:
            timeline = load_timeline(self.base_dir / self.spec.faults)
            timeline.check(self.site)
        except TimelineError as exc:
            raise SiteError(f"{self.path}: faults: {exc}") from None
        return timeline


def load_scenario(path: str | Path, *, seed: int | None = None) -> Scenario:
    """Read a scenario and build its site, or raise `SiteError` naming the file and the key."""
    path = Path(path)
    data = read_yaml(path, "scenario file")
    if not isinstance(data, dict):
        raise SiteError(f"{path}: a scenario file must be a YAML mapping at the top level")
    try:
        spec = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise SiteError(format_validation(path, exc, "scenario file")) from None
    if seed is not None:
        spec = spec.model_copy(update={"seed": seed})
    site_path = (path.parent / spec.site).resolve()
    base = read_yaml(site_path, "site file")
    if not isinstance(base, dict):
        raise SiteError(f"{site_path}: the site file must be a YAML mapping at the top level")
    try:
        changed = apply_changes(base, spec.changes)
    except ValueError as exc:
        raise SiteError(f"{path}: changes: {exc}") from None
    try:
        site = parse_site(changed, site_path)
    except SiteError as exc:
        raise SiteError(f"{path}: the site after the scenario's changes is not valid:\n{exc}") from None
    scenario = Scenario(path, spec, site)
    scenario.faults()  # a fault timeline that does not fit the site is refused now, not mid-run
    return scenario


def apply_changes(base: dict[str, Any], changes: Changes) -> dict[str, Any]:
    """The site file's data with the scenario's changes made (the base is left as it was)."""
    site = copy.deepcopy(base)
    if changes.release is not None:
        site["release"] = changes.release
    for section, items in changes.add.items():
        site.setdefault(section, []).extend(copy.deepcopy(items))
        if section == "pack_stations":  # a new station is reached by every conveyor that reaches one
            for conveyor in site.get("conveyors", []):
                conveyor.setdefault("destinations", []).extend(
                    item["id"] for item in items if item.get("id") not in conveyor["destinations"])
    for device_id in changes.remove:
        found = False
        for section in ("pack_stations", "printers"):
            kept = [item for item in site.get(section, []) if item.get("id") != device_id]
            found |= len(kept) != len(site.get(section, []))
            site[section] = kept
        if not found:
            raise ValueError(f"remove: no pack station or printer {device_id!r} in the site")
        for conveyor in site.get("conveyors", []):
            conveyor["destinations"] = [d for d in conveyor.get("destinations", []) if d != device_id]
    simulation = site.setdefault("simulation", {})
    _merge(simulation, copy.deepcopy(changes.simulation))
    if changes.slowdown:
        simulation.setdefault("slowdown", {}).update(changes.slowdown)
    if changes.conveyor_speed is not None:
        factors = changes.conveyor_speed
        for conveyor in site.get("conveyors", []):
            factor = factors if isinstance(factors, float) else factors.get(conveyor["id"], 1.0)
            for segment in conveyor.get("segments", []):
                segment["speed_mps"] = segment.get("speed_mps", 1.0) * factor
        if isinstance(factors, dict):
            unknown = set(factors) - {c["id"] for c in site.get("conveyors", [])}
            if unknown:
                raise ValueError(f"conveyor_speed: no conveyor {', '.join(sorted(unknown))} in the site")
    return site


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
