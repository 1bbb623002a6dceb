"""SQLModel tables. Times are wall-clock seconds since the epoch (float); the API renders ISO 8601."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer
from sqlmodel import Field, SQLModel

# Ids are 64-bit: an int4 id stops at 2^31-1 (PostgreSQL's `integer`), which a busy site's command rows
# reach in years and a client can ask for in one request. SQLite's INTEGER is 64-bit already and must
# stay spelled INTEGER for a primary key to be the rowid (and so count up by itself).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class OrderRow(SQLModel, table=True):
    __tablename__ = "orders"

    id: int = Field(primary_key=True, sa_type=BigId)  # assigned by the controller, in arrival order
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


class OrderCountRow(SQLModel, table=True):
    """How many orders are in each state, kept up to date by the writer in the transaction that
    changes them (controller/store/order_counts.py): counting millions of shipped orders on every
    request would not be."""

    __tablename__ = "order_counts"

    state: str = Field(primary_key=True, max_length=32)
    orders: int = 0


class OrderLineRow(SQLModel, table=True):
    __tablename__ = "order_lines"

    order_id: int = Field(primary_key=True, foreign_key="orders.id", sa_type=BigId)
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
    # One device over a time range (its CSV for an hour, insight's reads) reads only those rows; it
    # serves a lookup by device alone too.
    __table_args__ = (Index("ix_device_commands_device_id_queued_at", "device_id", "queued_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    command_id: str = Field(unique=True, max_length=160)
    order_id: int | None = Field(default=None, index=True, sa_type=BigId)
    task: str
    device_id: str
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
    # Null in rows written before they were recorded (the columns are added to an older database).
    ended_at: float | None = None  # when the controller stopped waiting for it, whatever the outcome
    down_queued_s: float | None = None  # seconds it waited queued while its device took no work
    down_in_hand_s: float | None = None  # seconds it waited sent, its device offline or faulted


class AlarmRow(SQLModel, table=True):
    """One alarm: raised, then cleared by its condition and acknowledged by a person."""

    __tablename__ = "alarms"

    id: int = Field(primary_key=True, sa_type=BigId)  # assigned by the controller, in the order raised
    kind: str = Field(index=True, max_length=64)
    severity: str = Field(index=True, max_length=16)
    source_kind: str = Field(max_length=16)
    source: str = Field(index=True, max_length=128)
    text: str
    raised_at: float = Field(index=True)
    cleared_at: float | None = None
    acked_at: float | None = None
    acked_by: str | None = Field(default=None, max_length=128)


class AuditRow(SQLModel, table=True):
    """The audit trail: one row per state-changing request (orders, device controls, alarm
    acknowledgements, users and tokens, logins), allowed or not."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    actor: str = Field(index=True, max_length=128)  # a user's name, token:<id>, or anonymous
    role: str | None = Field(default=None, max_length=16)
    address: str | None = Field(default=None, max_length=64)  # where the request came from
    action: str = Field(index=True, max_length=64)  # order.cancel, device.pause, login, ...
    target: str | None = Field(default=None, index=True, max_length=160)  # order:42, device:loop-1, ...
    outcome: str  # ok | denied | refused: <why> | not found | failed: <why>
    detail: str | None = None


class UserRow(SQLModel, table=True):
    __tablename__ = "users"

    name: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16)
    password_hash: str
    created_at: float
    changed_at: float
    disabled: bool = False


class ApiTokenRow(SQLModel, table=True):
    """An API token: only the SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=32)  # public, names the token in lists and revocations
    digest: str = Field(unique=True, max_length=64)
    label: str = Field(max_length=128)
    role: str = Field(max_length=16)
    scopes: str = ""  # space-separated, for integration tokens
    created_at: float
    created_by: str = Field(max_length=128)
    expires_at: float | None = None
    revoked_at: float | None = None


class SessionRow(SQLModel, table=True):
    """A panel login: only the SHA-256 of the cookie's session id is kept."""

    __tablename__ = "sessions"

    digest: str = Field(primary_key=True, max_length=64)
    user: str = Field(index=True, max_length=64)
    role: str = Field(max_length=16)
    csrf: str = Field(max_length=64)
    created_at: float
    last_seen: float
    ended_at: float | None = None
