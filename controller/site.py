"""The site file: what an integrator edits to describe a floor.

Loaded and validated once, at the edge, into typed objects. Every error names the file, the key path
and what is wrong; callers print `SiteError` and exit non-zero, never a traceback. The `*Spec` classes
are site-file entries (a device's ports are in controller/ports.py); the OPC UA node maps of the
conveyors and sorters are built here, from the contract's signal tables (controller/contract/opcua.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.contract import opcua
from controller.contract.kinds import DeviceKind
from controller.contract.opcua import NodeMap, NodeMapError, parse_node_id

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


class SimulatorAccounts(_Model):
    """Where each simulated MQTT device finds its own account, by its device id: the password in
    `secrets_dir/{id}.password` and, for a broker that asks for client certificates, the certificate
    and key in `certs_dir/{id}.crt` and `{id}.key` (the layout `floorctl credentials` writes). Only
    the simulators read these; a real device keeps its secrets in its own configuration."""

    secrets_dir: str
    certs_dir: str | None = None


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Account(_Model):
    """A user name and where its password is: a file (its first line) or an environment variable.
    `password` in clear is for throw-away test sites only. Read when the link is made, not when the
    site is loaded, so `floorctl credentials` can read a site whose secrets it is about to write."""

    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    password_env: str | None = Field(None, pattern=ENV_NAME)

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        given = [key for key in ("password", "password_file", "password_env") if getattr(self, key)]
        if len(given) > 1:
            raise ValueError(f"give one of password, password_file, password_env (got {', '.join(given)})")
        if given and not self.username:
            raise ValueError(f"{given[0]} needs username")
        return self

    def _password_at(self, where: str) -> str | None:
        """The password from wherever the site file says it is (`where`: its key path, for errors);
        SiteError if it cannot be read."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise SiteError(f"{where}.password_env: the environment variable {self.password_env} "
                                "is not set")
            return value
        if self.password_file:
            return read_secret(self.password_file, f"{where}.password_file")
        return self.password


class BrokerSettings(_Account):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "floorctl"
    tls: TlsSettings | None = None
    simulators: SimulatorAccounts | None = None
    keepalive_s: int = Field(15, ge=2, le=3600)
    session_expiry_s: int = Field(3600, ge=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    topic_root: str = Field("floorctl/v1", pattern=r"^[^#+]+[^/#+]$")
    # While any device is offline, the controller announces ONLINE again this often (0: never), so a
    # device whose state message was lost (a broker crash) publishes it again.
    state_refresh_s: float = Field(30.0, ge=0)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    def resolved_password(self) -> str | None:
        """The controller's password; SiteError if it cannot be read."""
        return self._password_at("broker")

    def for_device(self, device_id: str) -> BrokerSettings:
        """What a simulated device connects with: its own account and client certificate when the
        site names `simulators`, else the controller's settings as they are (one shared identity)."""
        if self.simulators is None:
            return self
        accounts = self.simulators
        password = read_secret(str(Path(accounts.secrets_dir) / f"{device_id}.password"),
                               "broker.simulators.secrets_dir")
        tls = self.tls
        if accounts.certs_dir is not None:
            certs = Path(accounts.certs_dir)
            tls = (tls or TlsSettings()).model_copy(update={"cert_file": str(certs / f"{device_id}.crt"),
                                                            "key_file": str(certs / f"{device_id}.key")})
        return self.model_copy(update={"username": device_id, "password": password, "password_file": None,
                                       "password_env": None, "tls": tls, "simulators": None})


def read_secret(path: str, key: str) -> str:
    """The first line of a secret file, or SiteError naming the site-file key that points at it."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SiteError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SiteError(f"{key}: {path} is not UTF-8 text") from None
    if not lines or not lines[0]:
        raise SiteError(f"{key}: {path} is empty")
    return lines[0]


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
    """The controller's side of a PLC's secure session. Nothing is trusted on first use: with a
    policy, the PLC's certificate must be pinned (`server_certificate`) or signed by a CA in `trust`."""

    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    trust: str | None = Field(None, description="a directory (or file) of CA and pinned certificates")

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy and mode must both be None or both be set")
        if self.policy != "None" and not (self.certificate and self.private_key):
            raise ValueError("a security policy needs certificate and private_key")
        if self.policy != "None" and not (self.server_certificate or self.trust):
            raise ValueError("a security policy needs server_certificate (the PLC's, pinned) or trust "
                             "(a directory holding the site's CA certificate): no certificate is "
                             "trusted on first use")
        return self

    def trusted(self) -> list[str]:
        """Where the certificates the controller trusts for this PLC are (files or directories)."""
        return [p for p in (self.server_certificate, self.trust) if p]


class PlcSimulatorSecurity(_Model):
    """The PLC simulator's own certificate and key, and the certificates it trusts (files or a
    directory: the controller's certificate, or a CA). Read by the simulator only; a real PLC keeps
    these in its own configuration."""

    certificate: str
    private_key: str
    trust: str


class PlcSpec(_Account):
    """One OPC UA endpoint (a PLC, or a simulator standing in for one), and the account the
    controller logs in with."""

    id: Id
    endpoint: str
    security: OpcUaSecurity = OpcUaSecurity()
    simulator: PlcSimulatorSecurity | None = None
    timeout_s: float = Field(2.0, gt=0, le=60)
    reconnect_max_delay_s: float = Field(5.0, gt=0, le=300)
    publishing_interval_ms: float = Field(5.0, ge=0, le=10_000)

    def resolved_password(self) -> str | None:
        """The account's password; SiteError if it cannot be read."""
        return self._password_at(f"plcs.{self.id}")

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
    site (`Site._references`), as node ids must not repeat on one PLC."""
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


class ConveyorSpec(_Model):
    kind: ClassVar[DeviceKind] = DeviceKind.CONVEYOR
    section: ClassVar[str] = "conveyors"

    id: Id
    plc: Id
    segments: list[Segment] = Field(min_length=1)
    scan_points: list[ScanPoint] = []
    destinations: list[Id] = Field(min_length=1, description="pack stations reachable from this conveyor")
    # The least distance between two totes where they go on the conveyor: at most
    # speed / pitch totes a second enter its first segment; the rest wait their turn. None: no limit.
    pitch_m: float | None = Field(None, gt=0)
    nodes: dict[str, str] = {}

    def entries_per_s(self) -> float | None:
        """How many totes a second the conveyor takes on, at most (None: no limit is configured)."""
        return None if self.pitch_m is None else self.segments[0].speed_mps / self.pitch_m

    _nodes = field_validator("nodes")(_check_nodes)

    def scan_point_ids(self) -> list[str]:
        return [sp.id for sp in self.scan_points]


class SorterSpec(_Model):
    kind: ClassVar[DeviceKind] = DeviceKind.SORTER
    section: ClassVar[str] = "sorters"

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

    def scan_point_ids(self) -> list[str]:
        return [self.scan_point]


class Zone(_Model):
    id: Id
    name: str = ""


class PickLightSpec(_Model):
    id: Id


class Location(_Model):
    id: Id
    zone: Id
    sku: Id
    stock: int = Field(ge=0)
    pick_light: Id


class PackStationSpec(_Model):
    id: Id
    zone: Id | None = None


class PrinterSpec(_Model):
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
    # How many times slower than its model one device works: a pack station's packer, a printer, the
    # operator at a pick light; a zone's id slows every pick light of that zone.
    slowdown: dict[Id, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)

    def slower(self, *ids: str) -> float:
        """The factor for a device (the first of `ids` named in `slowdown`; 1 when none is)."""
        return next((self.slowdown[i] for i in ids if i in self.slowdown), 1.0)


class WaitLimits(_Model):
    """How long work may wait on a device that takes none (offline, faulted, paused, out of
    rotation) before its order goes to the exception lane, per kind, in seconds of real time: a
    person's time to put a device right, which a simulation's speed does not shorten."""

    pick_light: float = Field(300.0, gt=0)
    pack_station: float = Field(300.0, gt=0)
    printer: float = Field(300.0, gt=0)
    conveyor: float = Field(600.0, gt=0)
    sorter: float = Field(600.0, gt=0)


class Timeouts(_Model):
    """Controller time-outs per command, in seconds of floor time (divided by the time scale)."""

    ack_s: float = Field(2.0, gt=0)
    pick_s: float = Field(60.0, gt=0)
    transport_s: float = Field(120.0, gt=0)
    pack_s: float = Field(120.0, gt=0)
    print_s: float = Field(20.0, gt=0)
    divert_s: float = Field(60.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    wait_on_device_s: WaitLimits = WaitLimits()


# Order states an order can stay in for too long, and how long (floor seconds) before an alarm says so.
StageName = Literal["received", "held", "allocated", "picking", "conveyed", "packed", "labelled", "sorted",
                    "exception"]
STAGE_LIMITS_S: dict[StageName, float | None] = {
    "received": 60.0, "held": 1800.0, "allocated": 120.0, "picking": 600.0, "conveyed": 600.0,
    "packed": 300.0, "labelled": 600.0, "sorted": 300.0, "exception": 1800.0}


class AlarmLimits(_Model):
    """When the alarm monitor raises (docs/operations.md). Seconds are floor time, like `timeouts`."""

    check_every_s: float = Field(1.0, ge=0.1, le=60, description="wall-clock seconds between checks")
    no_progress_s: float = Field(60.0, gt=0, description="a conveyor or sorter holding commands, none done")
    stage_s: dict[StageName, Annotated[float, Field(gt=0)] | None] = Field(
        default_factory=lambda: dict(STAGE_LIMITS_S),
        description="per state; the ones left out keep their default, null turns one off")
    due_at_risk_s: float = Field(1800.0, ge=0, description="due within this and not yet labelled")
    writer_backlog: int = Field(50_000, ge=1, description="rows waiting for the store writer")

    @field_validator("stage_s")
    @classmethod
    def _over_defaults(cls, value: dict[StageName, float | None]) -> dict[StageName, float | None]:
        return {**STAGE_LIMITS_S, **value}


OpenPath = Literal["/healthz", "/metrics"]
# scheme://host[:port], no path and no wildcard: each origin is named
CorsOrigin = Annotated[str, Field(pattern=r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")]


class ApiSettings(_Model):
    """Who may reach the HTTP API and the panel without logging in, and how long a login lasts
    (docs/security.md, API and panel)."""

    open_paths: list[OpenPath] = Field(default_factory=lambda: list[OpenPath](["/healthz"]),
                                       description="answered without credentials; all else needs them")
    session_idle_s: float = Field(1800.0, ge=60, le=7 * 86400, description="a login ends after this idle")
    session_max_s: float = Field(43200.0, ge=60, le=30 * 86400, description="and after this, however busy")
    login_free_failures: int = Field(3, ge=1, le=100, description="failed logins before the back-off")
    login_max_wait_s: float = Field(300.0, ge=1, le=86400, description="the longest back-off")
    # HTTP hardening (docs/api.md, Limits): a larger body is a 413, a larger batch of orders a 422
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="largest request body, bytes")
    max_batch: int = Field(1000, ge=1, le=10_000, description="most orders in one POST /api/orders")
    cors_origins: list[CorsOrigin] = Field(
        default_factory=list, description="browser origins allowed to call the API (CORS); none: no CORS")


class HaSettings(_Model):
    """A hot-standby pair (docs/standby.md): two or more `floorctl run` instances on one PostgreSQL
    database, one leading. `enabled` here or `floorctl run --standby` turns it on."""

    enabled: bool = False
    instance: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                                 description="this instance's name (default: the host name)")
    lease_s: float = Field(3.0, ge=0.5, le=60,
                           description="a leader not renewed for this long may be replaced")
    renew_every_s: float = Field(0.5, gt=0, le=30, description="how often the leader renews, a standby tries")
    fence_margin_s: float = Field(1.0, gt=0, le=30,
                                  description="commands stop this long before the lease could expire")

    @model_validator(mode="after")
    def _renewal_fits(self) -> HaSettings:
        if self.renew_every_s >= self.lease_s - self.fence_margin_s:
            raise ValueError(f"renew_every_s ({self.renew_every_s}) must be shorter than lease_s - "
                             f"fence_margin_s ({self.lease_s - self.fence_margin_s:g}): a leader must "
                             "get a renewal in before its commands stop")
        return self


class RetentionSettings(_Model):
    """How long device-command timing rows are kept (docs/site-file.md, retention). Each UTC day
    older than `timing_days` whole days is exported to `export_dir`, then removed."""

    timing_days: int | None = Field(None, ge=1, le=3650, strict=True,
                                    description="days kept before today; null: kept for ever")
    export_dir: str | None = Field("timing-exports", min_length=1, max_length=1024,
                                   description="gzip CSV of a day before it goes, relative to the data "
                                               "directory; null: removed without an export")
    days_ahead: int = Field(3, ge=1, le=60, strict=True,
                            description="PostgreSQL: the day tables made this many days ahead")
    every_s: float = Field(3600.0, ge=60, le=86400, description="how often retention runs")


class Site(_Model):
    site: Id
    api: ApiSettings = ApiSettings()
    broker: BrokerSettings = BrokerSettings()
    timeouts: Timeouts = Timeouts()
    alarms: AlarmLimits = AlarmLimits()
    ha: HaSettings = HaSettings()
    retention: RetentionSettings = RetentionSettings()
    simulation: Simulation = Simulation()
    release: Literal["due", "fifo"] = Field(
        "due", description="order of release and service: due (priority, then earliest due) or fifo")
    zones: list[Zone] = Field(min_length=1)
    pick_lights: list[PickLightSpec] = Field(min_length=1)
    locations: list[Location] = Field(min_length=1)
    pack_stations: list[PackStationSpec] = Field(min_length=1)
    printers: list[PrinterSpec] = Field(min_length=1)
    plcs: list[PlcSpec] = Field(min_length=1)
    conveyors: list[ConveyorSpec] = Field(min_length=1)
    sorters: list[SorterSpec] = Field(min_length=1)
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
                        errors.append(f"{section}.{index}.id: {item.id!r} is already a device in "
                                      f"{device_ids[item.id]}")
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
        slowable = lights | stations | {p.id for p in self.printers} | zones
        for key in self.simulation.slowdown:
            must("pick light, pack station, printer or zone", slowable, key, f"simulation.slowdown.{key}")
        served = {d for cv in self.conveyors for d in cv.destinations}
        for i, st in enumerate(self.pack_stations):
            if st.id not in served:
                errors.append(f"pack_stations.{i}: no conveyor reaches pack station {st.id!r}")
        errors.extend(_node_map_errors(self))
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # Lookups the rest of the code uses; cheap enough to derive on demand.
    def plc(self, plc_id: str) -> PlcSpec:
        return next(p for p in self.plcs if p.id == plc_id)

    def skus(self) -> set[str]:
        return {loc.sku for loc in self.locations}

    def with_broker_url(self, url: str) -> Site:
        parse_broker_url(url)
        return self.model_copy(update={"broker": self.broker.model_copy(update={"url": url})})


# --- the node maps of the site's conveyors and sorters (controller.contract.opcua) ---------------

def _node_map(device: ConveyorSpec | SorterSpec, owner: str, errors: list[str]) -> NodeMap:
    return opcua.device_node_map(owner, device.id, device.kind, device.nodes, device.scan_point_ids(), errors)


def device_node_map(device: ConveyorSpec | SorterSpec) -> NodeMap:
    """One device's map on its own (owner `conveyors.<id>` / `sorters.<id>`); NodeMapError if it is bad."""
    errors: list[str] = []
    node_map = _node_map(device, f"{device.section}.{device.id}", errors)
    if errors:
        raise NodeMapError("; ".join(errors))
    return node_map


@dataclass(slots=True)
class _PlcMaps:
    """The node maps of one PLC (its own first) and what is wrong with them."""

    maps: list[NodeMap] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _site_maps(site: Site) -> dict[str, _PlcMaps]:
    """Every node map of the site by PLC id; devices on an unknown PLC get one of their own."""
    plcs = {plc.id: _PlcMaps([opcua.plc_node_map(plc.id, f"plcs.{i}")]) for i, plc in enumerate(site.plcs)}
    devices: list[Sequence[ConveyorSpec | SorterSpec]] = [site.conveyors, site.sorters]
    for section in devices:
        for i, device in enumerate(section):
            plc = plcs.setdefault(device.plc, _PlcMaps())
            plc.maps.append(_node_map(device, f"{device.section}.{i}", plc.errors))
    for plc in plcs.values():
        plc.errors.extend(opcua.duplicate_nodes(plc.maps))
    return plcs


def _node_map_errors(site: Site) -> list[str]:
    """What is wrong with the site's node mappings, one message per key path (site-file validation)."""
    # dict: a scan point signal's error comes once per scan point, and says the same each time
    return list(dict.fromkeys(error for plc in _site_maps(site).values() for error in plc.errors))


def floor_node_maps(site: Site, plc_id: str) -> list[NodeMap]:
    """The PLC's own map followed by one map per conveyor and sorter on it; no node id twice."""
    if not any(p.id == plc_id for p in site.plcs):
        raise NodeMapError(f"plcs: unknown PLC {plc_id!r} (known: {', '.join(p.id for p in site.plcs)})")
    plc = _site_maps(site)[plc_id]
    if plc.errors:
        raise NodeMapError("; ".join(dict.fromkeys(plc.errors)))
    return plc.maps


def format_validation(path: Path, exc: ValidationError, what: str = "site file") -> str:
    lines = [f"{path}: invalid {what}"]
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
        raise SiteError(format_validation(path, exc)) from None


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file, or raise `SiteError` with a message for the user."""
    path = Path(path)
    return parse_site(read_yaml(path, "site file"), path)


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file's data, or `SiteError` naming the file and where it went wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SiteError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise SiteError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise SiteError(f"{path}: not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at line {line} "
                        f"(offset {exc.start}); save the {what} as UTF-8") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SiteError(f"{path}: YAML syntax error{where}: {problem}") from None
