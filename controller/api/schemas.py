"""What goes over the wire: request bodies (`...Create`) and responses (`...Public`, pages).

Stored rows keep float epoch seconds; responses carry ISO 8601 UTC. State names are the lower-case
`OrderState` values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from controller.api.instants import epoch, iso
from controller.domain.alarms import Alarm, AlarmKind, Severity, SourceKind
from controller.domain.breakdown import Breakdown, Part
from controller.domain.devices import DeviceAction, WaitingOn
from controller.domain.model import STAGE_STAMPS, NewOrder, OrderState, Received
from controller.store.repository import stamps_of

T = TypeVar("T")


def _iso_of_epoch(value: Any) -> Any:
    return iso(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# A time the engine holds as epoch seconds, answered as ISO 8601 UTC.
IsoTime = Annotated[str | None, BeforeValidator(_iso_of_epoch)]


# No NUL character: PostgreSQL's text cannot hold one (a 500 otherwise). A lone surrogate ("\ud800" in
# JSON: not UTF-8) fails the pattern too, as `string_unicode`.
NO_NUL = r"^[^\x00]*$"


class _Body(BaseModel):
    # A misspelt key ("quantity") is an error, not silently dropped.
    model_config = ConfigDict(extra="forbid")


class OrderLineCreate(_Body):
    sku: str = Field(min_length=1, max_length=64, pattern=NO_NUL, examples=["SKU-0001"])
    qty: int = Field(gt=0, le=100_000, strict=True, description="items of this SKU, a whole number > 0")


class OrderCreate(_Body):
    external_id: str = Field(min_length=1, max_length=128, pattern=NO_NUL,
                             description="the WMS/ERP's order id; re-posting it is harmless")
    lines: list[OrderLineCreate] = Field(min_length=1, max_length=1000)
    carrier: str = Field(min_length=1, max_length=64, pattern=NO_NUL, examples=["DHL"])
    priority: int = Field(0, ge=-1000, le=1000, strict=True, description="higher goes first")
    due_at: datetime | None = Field(None, description="ISO 8601; without a zone it is taken as UTC")

    def to_new_order(self) -> NewOrder:
        return NewOrder(
            external_id=self.external_id,
            lines=tuple((line.sku, line.qty) for line in self.lines),
            carrier=self.carrier,
            priority=self.priority,
            due_at=epoch(self.due_at) if self.due_at is not None else None,
        )


def _one_or_many(body: Any) -> str:
    return "orders" if isinstance(body, list) else "order"


# One order or a list of them. The tag picks the branch up front, so a bad body gets the errors of
# the shape it was sent in (loc ["body", "order", ...] or ["body", "orders", 3, ...]), not both.
OrderPayload = Annotated[
    Annotated[OrderCreate, Tag("order")] | Annotated[list[OrderCreate], Field(min_length=1), Tag("orders")],
    Discriminator(_one_or_many),
]


class OrderPublic(BaseModel):
    id: int
    external_id: str
    state: OrderState
    created: bool = Field(description="false when the external id was already known")

    @classmethod
    def of(cls, received: Received) -> OrderPublic:
        return cls(id=received.id, external_id=received.external_id, state=received.state,
                   created=received.created)


class OrderStateChange(BaseModel):
    id: int
    state: OrderState


class OrderSummary(BaseModel):
    id: int
    external_id: str
    state: str
    reason: str | None
    carrier: str
    priority: int
    tote: str | None
    pack_station: str | None
    printer: str | None
    lane: str | None
    received_at: str | None
    due_at: str | None

    @classmethod
    def of(cls, row: Any) -> OrderSummary:
        return cls(**_columns(row, cls.model_fields), received_at=iso(row.received_at),
                   due_at=iso(row.due_at))


class OrderLinePublic(BaseModel):
    line_no: int
    sku: str
    qty: int
    location: str | None
    picked_qty: int
    picked: bool


class WaitingOnPublic(BaseModel):
    device: str
    since: str = Field(description="when the device stopped taking work")
    reason: str = Field(description="why: offline, faulted: <code>, paused, out_of_rotation: <who>")


class OrderDetail(OrderSummary):
    resume_state: str | None = Field(description="where a resolved exception resumes")
    attempt: int
    lines: list[OrderLinePublic]
    stages: dict[str, str | None] = Field(description="when the order entered each state (null: not yet)")
    waiting_on: WaitingOnPublic | None = Field(
        None, description="the device this active order's work waits on while it takes no work; else null")

    @classmethod
    def of_order(cls, row: Any, lines: list[Any], waiting: WaitingOn | None = None) -> OrderDetail:
        summary = OrderSummary.of(row).model_dump()
        stamps = stamps_of(row)
        return cls(
            **summary,
            resume_state=row.resume_state,
            attempt=row.attempt,
            lines=[OrderLinePublic(**_columns(line, OrderLinePublic.model_fields)) for line in lines],
            stages={stage: iso(stamps.get(stage)) for stage in STAGE_STAMPS},
            waiting_on=None if waiting is None else WaitingOnPublic(
                device=waiting.device_id, since=iso(waiting.since) or "", reason=waiting.reason),
        )


def _ms(start: float | None, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if start is not None and end is not None else None


class CommandTiming(BaseModel):
    """One device command: when it was queued, on the wire, accepted and finished."""

    command_id: str
    order_id: int | None
    task: str
    device_id: str
    device_kind: str
    protocol: str
    command: str
    queued_at: str
    sent_at: str | None
    acked_at: str | None
    completed_at: str | None
    wait_ms: float | None = Field(description="queued -> sent")
    ack_ms: float | None = Field(description="sent -> acked")
    exec_ms: float | None = Field(description="acked -> completed")
    total_ms: float | None = Field(description="queued -> completed")
    outcome: str
    reason: str | None
    retries: int

    @classmethod
    def of(cls, row: Any) -> CommandTiming:
        return cls(**dict(zip(cls.model_fields, timing_values(row), strict=True)))


def timing_values(row: Any) -> tuple[Any, ...]:
    """A timing row's `CommandTiming` fields as a tuple, in field order: the CSV export writes these
    directly, a million rows without building a model for each."""
    queued, sent, acked, completed = row.queued_at, row.sent_at, row.acked_at, row.completed_at
    return (row.command_id, row.order_id, row.task, row.device_id, row.device_kind, row.protocol, row.command,
            iso(queued), iso(sent), iso(acked), iso(completed),
            _ms(queued, sent), _ms(sent, acked), _ms(acked, completed), _ms(queued, completed),
            row.outcome, row.reason, row.retries)


class OrderTimeline(BaseModel):
    order_id: int
    items: list[CommandTiming] = Field(
        description="finished commands, then those in hand (completed_at null; outcome queued, sent, acked)")


class DeviceSeconds(BaseModel):
    device_id: str
    seconds: float


class BreakdownPart(BaseModel):
    part: Part = Field(description="held, queued, device_down, transmission, execution, transit, exception, "
                                   "controller (docs/insight.md)")
    seconds: float
    share: float = Field(description="of the cycle time, 0 .. 1")
    devices: list[DeviceSeconds] = Field(
        description="the devices whose commands the part was counted for, most first (commands of one part "
                    "on two devices at once each count the whole overlap); empty for held, exception and "
                    "controller")


class OrderBreakdown(BaseModel):
    """Where the order's time went: its cycle time split into parts that add up to it."""

    order_id: int
    state: OrderState
    finished: bool = Field(description="shipped or cancelled; else the cycle runs to now")
    received_at: str
    until: str = Field(description="when it shipped or was cancelled; now for an active order")
    cycle_s: float = Field(description="received -> until, in seconds: the sum of the parts' seconds")
    parts: list[BreakdownPart] = Field(description="every part, in this order, zero or not")

    @classmethod
    def of(cls, order_id: int, state: OrderState, found: Breakdown) -> OrderBreakdown:
        cycle = found.cycle_s
        parts = [BreakdownPart(part=p.part, seconds=round(p.seconds, 6),
                               share=round(p.seconds / cycle, 6) if cycle > 0 else 0.0,
                               devices=[DeviceSeconds(device_id=d, seconds=round(s, 6))
                                        for d, s in p.devices.items()])
                 for p in found.parts.values()]
        return cls(order_id=order_id, state=state, finished=found.finished,
                   received_at=iso(found.start) or "", until=iso(found.end) or "", cycle_s=round(cycle, 6),
                   parts=parts)


class StockPublic(BaseModel):
    location: str
    sku: str
    on_hand: int
    reserved: int
    available: int

    @classmethod
    def of(cls, row: Any) -> StockPublic:
        return cls(location=row.location, sku=row.sku, on_hand=row.on_hand, reserved=row.reserved,
                   available=row.on_hand - row.reserved)


class DevicePublic(BaseModel):
    device_id: str
    kind: str
    protocol: str
    online: bool
    state: str
    fault: str | None
    queue_length: int
    in_flight: int
    in_rotation: bool
    paused: bool = False
    available: bool = Field(True, description="takes new work now")
    unavailable: str | None = Field(None, description='why not, e.g. "faulted: paper_out"')
    unavailable_since: IsoTime = None
    waiting_orders: int = Field(0, description="orders whose work waits on this device")
    last_progress_at: IsoTime = Field(None, description="when a command of this device last finished")


class DeviceControl(_Body):
    action: DeviceAction = Field(description="take_out | put_back | pause | resume | reset | estop_reset")


class DeviceControlPublic(BaseModel):
    """One control in the audit trail."""

    at: str
    actor: str
    device_id: str
    action: str
    outcome: str = Field(description='"ok", or "refused: <why>"')
    detail: str | None

    @classmethod
    def of(cls, row: Any) -> DeviceControlPublic:
        """From the audit trail's row of a control (action `device.<action>`, target `device:<id>`)."""
        return cls(at=iso(row.at) or "", actor=row.actor, device_id=row.target.partition(":")[2],
                   action=row.action.removeprefix("device."), outcome=row.outcome, detail=row.detail)


class AlarmPublic(BaseModel):
    id: int
    kind: AlarmKind
    severity: Severity
    source_kind: SourceKind
    source: str = Field(description="a device id, a stage name or due_at, broker or a PLC id, writer")
    text: str
    active: bool = Field(description="the condition still holds (not cleared)")
    raised_at: str
    cleared_at: str | None
    acked_at: str | None
    acked_by: str | None

    @classmethod
    def of(cls, alarm: Alarm) -> AlarmPublic:
        return cls(id=alarm.id, kind=alarm.kind, severity=alarm.severity, source_kind=alarm.source_kind,
                   source=alarm.source, text=alarm.text, active=alarm.active,
                   raised_at=iso(alarm.raised_at) or "", cleared_at=iso(alarm.cleared_at),
                   acked_at=iso(alarm.acked_at), acked_by=alarm.acked_by)


class Paged(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def _columns(row: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The row's columns that a model has a field of the same name for (times excepted)."""
    mapping = row._mapping
    return {name: mapping[name] for name in fields if name in mapping and not name.endswith("_at")}


# ---- users, tokens, logins and the audit trail ---------------------------------------------------------
class AuditPublic(BaseModel):
    """One state-changing request and what came of it."""

    id: int
    at: str
    actor: str = Field(description="a user's name, token:<id>, no-auth, or anonymous")
    role: str | None
    address: str | None = Field(description="where the request came from (left out of an order's view)")
    action: str = Field(description="order.create, order.cancel, device.pause, alarm.ack, login, ...")
    target: str | None = Field(description="order:42, device:loop-1, alarm:17, user:sam, token:t1a2...")
    outcome: str = Field(description='"ok", "denied: ...", "refused: ...", "not found: ...", "failed: ..."')
    detail: str | None

    @classmethod
    def of(cls, row: Any, *, address: bool = True) -> AuditPublic:
        return cls(id=row.id, at=iso(row.at) or "", actor=row.actor, role=row.role,
                   address=row.address if address else None, action=row.action, target=row.target,
                   outcome=row.outcome, detail=row.detail)


UserName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")]
PersonRole = Literal["viewer", "operator", "supervisor", "admin"]


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    name: str
    role: str
    via: str = Field(description="session, token or open (--no-auth)")
    permissions: list[str]
    csrf: str | None = Field(None, description="a session's CSRF token, to send as X-CSRF-Token")
    idle_s: float | None = Field(None, description="a session ends after this long without activity")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: UserName
    role: PersonRole
    password: str = Field(min_length=1, max_length=1024)


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: PersonRole | None = None
    password: str | None = Field(None, min_length=1, max_length=1024)
    disabled: bool | None = None


class UserPublic(BaseModel):
    name: str
    role: str
    disabled: bool
    created_at: str
    changed_at: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=128, description="what the token is for (the WMS's name)")
    role: Literal["integration", "viewer", "operator", "supervisor", "admin"] = "integration"
    scopes: list[Literal["read", "orders:write"]] = Field(default_factory=list, max_length=2,
                                                          description="an integration token's scopes")
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86400,
                                       description="seconds from now; null: until revoked")


class TokenPublic(BaseModel):
    id: str
    label: str
    role: str
    scopes: list[str]
    status: Literal["active", "expired", "revoked"]
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret: shown this once, send it as Authorization: Bearer <token>")
