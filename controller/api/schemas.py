"""What goes over the wire: request bodies (`...Create`) and responses (`...Public`, pages).

Stored rows keep float epoch seconds; responses carry ISO 8601 UTC. State names are the lower-case
`OrderState` values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from controller.api.instants import epoch, iso
from controller.domain.model import STAGE_STAMPS, NewOrder, OrderState, Received

T = TypeVar("T")


class _Body(BaseModel):
    # A misspelt key ("quantity") is an error, not silently dropped.
    model_config = ConfigDict(extra="forbid")


class OrderLineCreate(_Body):
    sku: str = Field(min_length=1, max_length=64, examples=["SKU-0001"])
    qty: int = Field(gt=0, le=100_000, strict=True, description="items of this SKU, a whole number > 0")


class OrderCreate(_Body):
    external_id: str = Field(min_length=1, max_length=128, description="the WMS/ERP's order id; re-posting it is harmless")
    lines: list[OrderLineCreate] = Field(min_length=1, max_length=1000)
    carrier: str = Field(min_length=1, max_length=64, examples=["DHL"])
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
        return cls(id=received.id, external_id=received.external_id, state=received.state, created=received.created)


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
        return cls(**_columns(row, cls.model_fields), received_at=iso(row.received_at), due_at=iso(row.due_at))


class OrderLinePublic(BaseModel):
    line_no: int
    sku: str
    qty: int
    location: str | None
    picked_qty: int
    picked: bool


class OrderDetail(OrderSummary):
    resume_state: str | None = Field(description="where a resolved exception resumes")
    attempt: int
    lines: list[OrderLinePublic]
    stages: dict[str, str | None] = Field(description="when the order entered each state (null: not yet)")

    @classmethod
    def of_order(cls, row: Any, lines: list[Any]) -> OrderDetail:
        summary = OrderSummary.of(row).model_dump()
        return cls(
            **summary,
            resume_state=row.resume_state,
            attempt=row.attempt,
            lines=[OrderLinePublic(**_columns(line, OrderLinePublic.model_fields)) for line in lines],
            stages={stage: iso(getattr(row, f"{stage}_at")) for stage in STAGE_STAMPS},
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
    items: list[CommandTiming]


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


class Paged(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def _columns(row: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The row's columns that a model has a field of the same name for (times excepted)."""
    mapping = row._mapping
    return {name: mapping[name] for name in fields if name in mapping and not name.endswith("_at")}
