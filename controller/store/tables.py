"""SQLModel tables. Times are wall-clock seconds since the epoch (float); the API renders ISO 8601."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class OrderRow(SQLModel, table=True):
    __tablename__ = "orders"

    id: int = Field(primary_key=True)  # assigned by the controller, in arrival order
    external_id: str = Field(unique=True, max_length=128)
    carrier: str
    priority: int = 0
    due_at: float | None = None
    state: str = Field(index=True)
    reason: str | None = None
    resume_state: str | None = None
    tote: str | None = None
    pack_station: str | None = None
    printer: str | None = None
    lane: str | None = None
    attempt: int = 0
    label_attempt: int = 0
    # Stage timestamps: when the order entered each state.
    received_at: float | None = Field(default=None, index=True)
    held_at: float | None = None
    allocated_at: float | None = None
    picking_at: float | None = None
    conveyed_at: float | None = None
    packed_at: float | None = None
    labelled_at: float | None = None
    sorted_at: float | None = None
    shipped_at: float | None = None
    exception_at: float | None = None
    cancelled_at: float | None = None


class OrderLineRow(SQLModel, table=True):
    __tablename__ = "order_lines"

    order_id: int = Field(primary_key=True, foreign_key="orders.id")
    line_no: int = Field(primary_key=True)
    sku: str
    qty: int
    location: str | None = None
    picked_qty: int = 0
    picked: bool = False


class StockRow(SQLModel, table=True):
    __tablename__ = "stock"

    location: str = Field(primary_key=True)
    sku: str = Field(index=True)
    on_hand: int
    reserved: int = 0


class DeviceCommandRow(SQLModel, table=True):
    """One row per device command: the device-level timing of an order."""

    __tablename__ = "device_commands"

    id: int | None = Field(default=None, primary_key=True)
    command_id: str = Field(unique=True, max_length=160)
    order_id: int | None = Field(default=None, index=True)
    task: str
    device_id: str = Field(index=True)
    device_kind: str
    protocol: str
    command: str
    queued_at: float = Field(index=True)
    sent_at: float | None = None
    acked_at: float | None = None
    completed_at: float | None = None
    outcome: str  # ok | failed | timed_out | cancelled
    reason: str | None = None
    retries: int = 0
