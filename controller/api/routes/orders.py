"""Orders: release them to the floor, look them up, cancel or resolve them."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from controller.api.auth import Act, acting, can, outcome_of
from controller.api.deps import EngineDep, Limit, Offset, SessionDep
from controller.api.hardening import ID_MAX, too_many_orders
from controller.api.schemas import (
    NO_NUL,
    AuditPublic,
    CommandTiming,
    OrderBreakdown,
    OrderCreate,
    OrderDetail,
    OrderPayload,
    OrderPublic,
    OrderStateChange,
    OrderSummary,
    OrderTimeline,
    Paged,
)
from controller.domain.access import Permission
from controller.domain.breakdown import breakdown
from controller.domain.model import OrderNotFound, OrderRejected, OrderState
from controller.store import queries
from controller.store.queries import AuditFilter
from controller.store.repository import command_times_of, stamps_of

router = APIRouter(prefix="/api/orders", tags=["orders"])
# Past ID_MAX no order can exist (ids are 64-bit): a 422, never a database error.
OrderId = Annotated[int, Path(ge=1, le=ID_MAX, description="the order's id")]
READ = can(Permission.READ)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no order with this id"}}


@router.post(
    "",
    response_model=OrderPublic | list[OrderPublic],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "every external id was already known: nothing new was created"},
               409: {"description": "an external id was already received with other content"}},
)
async def receive_orders(payload: Annotated[OrderPayload, Body()], engine: EngineDep, response: Response,
                         request: Request,
                         act: Annotated[Act, acting(Permission.ORDERS_CREATE, "order.create")]) -> Any:
    """Release one order (object in, object out) or a batch (list in, list out).

    Idempotent on `external_id`: re-posting returns the existing order with `created: false`.
    201 when at least one order is new, else 200. Unknown SKUs or carriers are a 422 naming the field.
    The audit trail gets one row per order of the request, so each order's page says who released it.
    """
    many = isinstance(payload, list)
    orders: list[OrderCreate] = payload if isinstance(payload, list) else [payload]
    max_batch = request.app.state.limits.max_batch
    if len(orders) > max_batch:  # the site's api.max_batch: one request holds the event loop ~0.1 s per 1000
        raise RequestValidationError([too_many_orders(len(orders), max_batch)])
    try:
        received = await engine.receive([order.to_new_order() for order in orders])
    except OrderRejected as exc:
        act.record(f"refused: {'; '.join(exc.problems.values())}", detail=f"{len(orders)} orders")
        raise RequestValidationError(rejection_errors(exc.problems, orders, many)) from None
    except Exception as exc:
        act.record(outcome_of(exc), detail=f"{len(orders)} orders")
        raise
    for r in received:
        act.record("ok" if r.created else "ok: already known", target=f"order:{r.id}", detail=r.external_id)
    if not any(r.created for r in received):
        response.status_code = status.HTTP_200_OK
    public = [OrderPublic.of(r) for r in received]
    return public if many else public[0]


def rejection_errors(problems: dict[str, str], orders: list[OrderCreate], many: bool) -> list[dict[str, Any]]:
    """OrderRejected problems in FastAPI's own 422 shape, located in the body as it was sent.

    The engine names each problem by a dotted path into the list it was given ("1.lines.0.sku"),
    leaving the index out when it was given one order ("carrier"). The loc carries the index only
    when the request body was a list.
    """
    body = [order.model_dump(mode="json") for order in orders]
    errors = []
    for key, message in problems.items():
        path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".") if p]
        if not (path and isinstance(path[0], int)) and len(orders) == 1:
            path.insert(0, 0)
        loc = ["body", "orders", *path] if many else ["body", "order", *path[1:]]
        errors.append({"type": "order_rejected", "loc": loc, "msg": message, "input": _at(body, path)})
    return errors


def _at(body: Any, path: list[str | int]) -> Any:
    """The value at `path` in the request body, or None when the path leads nowhere."""
    for part in path:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    return body


@router.get("", response_model=Paged[OrderSummary], dependencies=[READ])
async def list_orders(
    session: SessionDep,
    state: Annotated[list[OrderState] | None, Query(description="repeat to ask for several states")] = None,
    carrier: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    external_id: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Any:
    """Orders in arrival order, filtered by state(s), carrier or external id."""
    page = await queries.orders_page(session, states=[s.value for s in state or ()], carrier=carrier,
                                     external_id=external_id, limit=limit, offset=offset)
    return Paged[OrderSummary](items=[OrderSummary.of(row) for row in page.items], total=page.total,
                               limit=limit, offset=offset)


@router.get("/{order_id}", response_model=OrderDetail, responses=NOT_FOUND, dependencies=[READ])
async def read_order(order_id: OrderId, session: SessionDep, engine: EngineDep) -> Any:
    """State, reason, lines, where it is (tote, pack station, printer, lane), when it entered each
    state, and what it waits on while a device it needs takes no work."""
    found = await queries.order_with_lines(session, order_id)
    if found is None:
        raise OrderNotFound(f"order {order_id} not found")
    return OrderDetail.of_order(*found, waiting=engine.waiting_on(order_id))


@router.get("/{order_id}/timeline", response_model=OrderTimeline, responses=NOT_FOUND, dependencies=[READ])
async def order_timeline(order_id: OrderId, session: SessionDep, engine: EngineDep) -> Any:
    """The order's device commands in the order they were queued, with per-phase durations; the
    commands still queued or in flight come last, as they stand (`completed_at` null)."""
    in_hand = engine.in_hand(order_id)
    rows = await queries.order_timeline(session, order_id)
    if not rows and not in_hand and not await queries.order_exists(session, order_id):
        raise OrderNotFound(f"order {order_id} not found")
    live = {row["command_id"] for row in in_hand}  # a re-sent command: its row as it stands now
    items = [CommandTiming.of(row) for row in rows if row.command_id not in live]
    in_hand.sort(key=lambda r: r["queued_at"])
    items += [CommandTiming.of(SimpleNamespace(**row)) for row in in_hand]
    return OrderTimeline(order_id=order_id, items=items)


@router.get("/{order_id}/breakdown", response_model=OrderBreakdown, responses=NOT_FOUND, dependencies=[READ])
async def order_breakdown(order_id: OrderId, session: SessionDep, engine: EngineDep) -> Any:
    """Where the order's time went: its cycle time (received -> shipped, or -> now while it is active)
    split into parts that add up to it: held for stock, queued for a device, waiting on a device that
    took no work, transmission, execution, belt and sorter travel, exception, the controller's own
    gaps. docs/insight.md says what each part counts."""
    now = time.time()  # first: the commands in hand count their waits up to a moment after it
    active = engine.orders.get(order_id)  # as it stands: the database lags it by a batch
    if active is not None:
        state, stamps = active.state, dict(active.stamps)
    elif (row := await queries.order_row(session, order_id)) is not None:
        state, stamps = OrderState(row.state), stamps_of(row)
    else:
        raise OrderNotFound(f"order {order_id} not found")
    in_hand = engine.in_hand(order_id)
    live = {r["command_id"] for r in in_hand}  # a re-sent command: its row as it stands now
    commands = [command_times_of(r) for r in await queries.order_timeline(session, order_id)
                if r.command_id not in live]
    commands += [command_times_of(SimpleNamespace(**r), under_way=True) for r in in_hand]
    return OrderBreakdown.of(order_id, state, breakdown(state, stamps, commands, now=now))


CancelAct = Annotated[Act, acting(Permission.ORDERS_CANCEL, "order.cancel", "order:{order_id}")]
ResolveAct = Annotated[Act, acting(Permission.ORDERS_RESOLVE, "order.resolve", "order:{order_id}")]
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND, 409: {"description": "the order's state does not allow this"}}


@router.post("/{order_id}/cancel", response_model=OrderStateChange, responses=CHANGE_ERRORS)
async def cancel_order(order_id: OrderId, act: CancelAct, engine: EngineDep) -> Any:
    """Cancel an order that has not shipped; its reservations are given back."""
    async with act:
        return OrderStateChange(id=order_id, state=await engine.cancel(order_id))


@router.post("/{order_id}/resolve", response_model=OrderStateChange, responses=CHANGE_ERRORS)
async def resolve_order(order_id: OrderId, act: ResolveAct, engine: EngineDep) -> Any:
    """Resolve an exception: the order retries the stage it was stopped in."""
    async with act:
        return OrderStateChange(id=order_id, state=await engine.resolve(order_id))


@router.get("/{order_id}/audit", response_model=Paged[AuditPublic], responses=NOT_FOUND,
            dependencies=[READ])
async def order_audit(order_id: OrderId, session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Any:
    """Who did what to the order (released, cancelled, resolved; refused attempts too), newest first."""
    filt = AuditFilter(target=f"order:{order_id}")
    page = await queries.audit_page(session, filt, limit=limit, offset=offset)
    if page.total == 0 and not await queries.order_exists(session, order_id):
        raise OrderNotFound(f"order {order_id} not found")
    return Paged[AuditPublic](items=[AuditPublic.of(row, address=False) for row in page.items],
                              total=page.total, limit=limit, offset=offset)
