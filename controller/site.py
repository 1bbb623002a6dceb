"""The site file: what an integrator edits to describe a floor.

Loaded and validated once, at the edge, into typed objects. Every error names the file, the key path
and what is wrong; callers print `SiteError` and exit non-zero, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.nodemap import node_map_errors, parse_node_id

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class SiteError(Exception):
    """A site file that cannot be used. `str()` is the message for the user."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Model):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class BrokerSettings(_Model):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "floorctl"
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    keepalive_s: int = Field(15, ge=2, le=3600)
    session_expiry_s: int = Field(3600, ge=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    topic_root: str = Field("floorctl/v1", pattern=r"^[^#+]+[^/#+]$")

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """`mqtt://host:port` or `mqtts://host:port` -> (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"broker URL has no host: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker URL has a bad port: {url!r}") from exc
    tls = parts.scheme in ("mqtts", "ssl")
    return parts.hostname, port or (8883 if tls else 1883), tls


class OpcUaSecurity(_Model):
    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy and mode must both be None or both be set")
        if self.policy != "None" and not (self.certificate and self.private_key):
            raise ValueError("a security policy needs certificate and private_key")
        return self


class Plc(_Model):
    """One OPC UA endpoint (a PLC, or a simulator standing in for one)."""

    id: Id
    endpoint: str
    username: str | None = None
    password: str | None = None
    security: OpcUaSecurity = OpcUaSecurity()
    timeout_s: float = Field(2.0, gt=0, le=60)
    reconnect_max_delay_s: float = Field(5.0, gt=0, le=300)
    publishing_interval_ms: float = Field(5.0, ge=0, le=10_000)

    @field_validator("endpoint")
    @classmethod
    def _opc_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError(f"OPC UA endpoint must look like opc.tcp://host:port/path, got {value!r}")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"OPC UA endpoint has a bad port: {value!r}") from exc
        return value


def _check_nodes(value: dict[str, str]) -> dict[str, str]:
    """The form of each node id; what the signals are and where they land is checked with the whole
    site (controller/nodemap.py), as node ids must not repeat on one PLC."""
    for signal, node in value.items():
        try:
            parse_node_id(node)
        except ValueError as exc:
            raise ValueError(f"nodes.{signal}: {exc}") from None
    return value


class Segment(_Model):
    id: Id
    length_m: float = Field(gt=0)
    speed_mps: float = Field(gt=0)


class ScanPoint(_Model):
    id: Id
    segment: Id  # the scanner sits at the end of this segment


class Conveyor(_Model):
    id: Id
    plc: Id
    segments: list[Segment] = Field(min_length=1)
    scan_points: list[ScanPoint] = []
    destinations: list[Id] = Field(min_length=1, description="pack stations reachable from this conveyor")
    nodes: dict[str, str] = {}

    _nodes = field_validator("nodes")(_check_nodes)


class Sorter(_Model):
    id: Id
    plc: Id
    scan_point: Id
    lanes: list[Id] = Field(min_length=1)
    exception_lane: Id
    loop_length_m: float = Field(30.0, gt=0)
    speed_mps: float = Field(2.0, gt=0)
    scan_to_divert_m: float = Field(2.0, gt=0, description="distance from the scanner to the first divert")
    max_recirculations: int = Field(2, ge=0)
    nodes: dict[str, str] = {}

    _nodes = field_validator("nodes")(_check_nodes)


class Zone(_Model):
    id: Id
    name: str = ""


class PickLight(_Model):
    id: Id


class Location(_Model):
    id: Id
    zone: Id
    sku: Id
    stock: int = Field(ge=0)
    pick_light: Id


class PackStation(_Model):
    id: Id
    zone: Id | None = None


class Printer(_Model):
    id: Id
    media_labels: int = Field(1000, ge=1, description="labels on a fresh roll (simulator)")


class Carrier(_Model):
    id: Id
    sorter: Id
    lane: Id


class OperatorModel(_Model):
    mean_s: float = Field(4.0, ge=0)
    spread_s: float = Field(1.5, ge=0)
    short_pick_rate: float = Field(0.0, ge=0, le=1)
    no_answer_rate: float = Field(0.0, ge=0, le=1)


class PackerModel(_Model):
    mean_s: float = Field(8.0, ge=0)
    spread_s: float = Field(2.0, ge=0)


class PrinterModel(_Model):
    print_s: float = Field(0.6, ge=0)


class ScannerModel(_Model):
    no_read_rate: float = Field(0.0, ge=0, le=1)


class Simulation(_Model):
    """How the simulated floor behaves. Ignored by `floorctl run` (real devices)."""

    seed: int = 1
    operator: OperatorModel = OperatorModel()
    packer: PackerModel = PackerModel()
    printer: PrinterModel = PrinterModel()
    scanner: ScannerModel = ScannerModel()


class Timeouts(_Model):
    """Controller time-outs per command, in seconds of floor time (divided by the time scale)."""

    ack_s: float = Field(2.0, gt=0)
    pick_s: float = Field(60.0, gt=0)
    transport_s: float = Field(120.0, gt=0)
    pack_s: float = Field(120.0, gt=0)
    print_s: float = Field(20.0, gt=0)
    divert_s: float = Field(60.0, gt=0)
    retries: int = Field(2, ge=0, le=10)


class Site(_Model):
    site: Id
    broker: BrokerSettings = BrokerSettings()
    timeouts: Timeouts = Timeouts()
    simulation: Simulation = Simulation()
    zones: list[Zone] = Field(min_length=1)
    pick_lights: list[PickLight] = Field(min_length=1)
    locations: list[Location] = Field(min_length=1)
    pack_stations: list[PackStation] = Field(min_length=1)
    printers: list[Printer] = Field(min_length=1)
    plcs: list[Plc] = Field(min_length=1)
    conveyors: list[Conveyor] = Field(min_length=1)
    sorters: list[Sorter] = Field(min_length=1)
    carriers: list[Carrier] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Site:
        errors: list[str] = []
        device_ids: dict[str, str] = {}
        for section in ("zones", "pick_lights", "locations", "pack_stations", "printers", "plcs",
                        "conveyors", "sorters", "carriers"):
            seen: set[str] = set()
            for index, item in enumerate(getattr(self, section)):
                if item.id in seen:
                    errors.append(f"{section}.{index}.id: duplicate id {item.id!r}")
                seen.add(item.id)
                if section in ("pick_lights", "pack_stations", "printers", "conveyors", "sorters"):
                    if item.id in device_ids and device_ids[item.id] != section:
                        errors.append(f"{section}.{index}.id: {item.id!r} is already a device in {device_ids[item.id]}")
                    device_ids.setdefault(item.id, section)

        def must(kind: str, ids: set[str], ref: str, where: str) -> None:
            if ref not in ids:
                errors.append(f"{where}: unknown {kind} {ref!r} (known: {', '.join(sorted(ids)) or 'none'})")

        zones = {z.id for z in self.zones}
        lights = {p.id for p in self.pick_lights}
        stations = {p.id for p in self.pack_stations}
        plcs = {p.id for p in self.plcs}
        sorters = {s.id: s for s in self.sorters}
        skus: set[str] = set()
        for i, loc in enumerate(self.locations):
            must("zone", zones, loc.zone, f"locations.{i}.zone")
            must("pick light", lights, loc.pick_light, f"locations.{i}.pick_light")
            skus.add(loc.sku)
        for i, st in enumerate(self.pack_stations):
            if st.zone is not None:
                must("zone", zones, st.zone, f"pack_stations.{i}.zone")
        scan_ids: set[str] = set()
        for i, cv in enumerate(self.conveyors):
            must("PLC", plcs, cv.plc, f"conveyors.{i}.plc")
            segs = {s.id for s in cv.segments}
            for j, sp in enumerate(cv.scan_points):
                must("segment", segs, sp.segment, f"conveyors.{i}.scan_points.{j}.segment")
                if sp.id in scan_ids:
                    errors.append(f"conveyors.{i}.scan_points.{j}.id: duplicate scan point {sp.id!r}")
                scan_ids.add(sp.id)
            for j, dest in enumerate(cv.destinations):
                must("pack station", stations, dest, f"conveyors.{i}.destinations.{j}")
        for i, so in enumerate(self.sorters):
            must("PLC", plcs, so.plc, f"sorters.{i}.plc")
            if so.scan_point in scan_ids:
                errors.append(f"sorters.{i}.scan_point: duplicate scan point {so.scan_point!r}")
            scan_ids.add(so.scan_point)
            if so.exception_lane in so.lanes:
                errors.append(f"sorters.{i}.exception_lane: {so.exception_lane!r} is also a carrier lane")
        for i, ca in enumerate(self.carriers):
            if ca.sorter not in sorters:
                must("sorter", set(sorters), ca.sorter, f"carriers.{i}.sorter")
            else:
                must("lane", set(sorters[ca.sorter].lanes), ca.lane, f"carriers.{i}.lane")
        served = {d for cv in self.conveyors for d in cv.destinations}
        for i, st in enumerate(self.pack_stations):
            if st.id not in served:
                errors.append(f"pack_stations.{i}: no conveyor reaches pack station {st.id!r}")
        errors.extend(node_map_errors(self))
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # Lookups the rest of the code uses; cheap enough to derive on demand.
    def plc(self, plc_id: str) -> Plc:
        return next(p for p in self.plcs if p.id == plc_id)

    def skus(self) -> set[str]:
        return {loc.sku for loc in self.locations}

    def with_broker_url(self, url: str) -> Site:
        parse_broker_url(url)
        return self.model_copy(update={"broker": self.broker.model_copy(update={"url": url})})


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid site file"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        if err["loc"]:
            lines.append(f"  {loc}: {msg}")
        else:  # cross-reference errors already carry their own key paths
            lines.extend(f"  {part}" for part in msg.split("; "))
    return "\n".join(lines)


def parse_site(data: Any, path: Path) -> Site:
    if not isinstance(data, dict):
        raise SiteError(f"{path}: the site file must be a YAML mapping at the top level")
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise SiteError(_format_validation(path, exc)) from None


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file, or raise `SiteError` with a message for the user."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SiteError(f"{path}: no such site file") from None
    except OSError as exc:
        raise SiteError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SiteError(f"{path}: YAML syntax error{where}: {problem}") from None
    return parse_site(data, path)
