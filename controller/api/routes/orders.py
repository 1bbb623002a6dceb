"""Orders: release them to the floor, look them up, cancel or resolve them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status
from fastapi.exceptions import RequestValidationError

from controller.api.deps import EngineDep, Limit, Offset, SessionDep
from controller.api.schemas import (
    CommandTiming,
    OrderCreate,
    OrderDetail,
    OrderPayload,
    OrderPublic,
    OrderStateChange,
    OrderSummary,
    OrderTimeline,
    Paged,
)
from controller.domain.model import OrderNotFound, OrderRejected, OrderState
from controller.store import queries

router = APIRouter(prefix="/api/orders", tags=["orders"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no order with this id"}}


@router.post(
    "",
    response_model=OrderPublic | list[OrderPublic],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "every external id was already known: nothing new was created"}},
)
async def receive_orders(payload: Annotated[OrderPayload, Body()], engine: EngineDep, response: Response) -> Any:
    """Release one order (object in, object out) or a batch (list in, list out).

    Idempotent on `external_id`: re-posting returns the existing order with `created: false`.
    201 when at least one order is new, else 200. Unknown SKUs or carriers are a 422 naming the field.
    """
    many = isinstance(payload, list)
    orders: list[OrderCreate] = payload if isinstance(payload, list) else [payload]
    try:
        received = await engine.receive([order.to_new_order() for order in orders])
    except OrderRejected as exc:
        raise RequestValidationError(rejection_errors(exc.problems, orders, many)) from None
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


@router.get("", response_model=Paged[OrderSummary])
async def list_orders(
    session: SessionDep,
    state: Annotated[list[OrderState] | None, Query(description="repeat to ask for several states")] = None,
    carrier: str | None = None,
    external_id: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Any:
    """Orders in arrival order, filtered by state(s), carrier or external id."""
    page = await queries.orders_page(session, states=[s.value for s in state or ()], carrier=carrier,
                                     external_id=external_id, limit=limit, offset=offset)
    return Paged[OrderSummary](items=[OrderSummary.of(row) for row in page.items], total=page.total,
                               limit=limit, offset=offset)


@router.get("/{order_id}", response_model=OrderDetail, responses=NOT_FOUND)
async def read_order(order_id: int, session: SessionDep) -> Any:
    """State, reason, lines, where it is (tote, pack station, printer, lane) and when it entered each state."""
    found = await queries.order_with_lines(session, order_id)
    if found is None:
        raise OrderNotFound(f"order {order_id} not found")
    return OrderDetail.of_order(*found)


@router.get("/{order_id}/timeline", response_model=OrderTimeline, responses=NOT_FOUND)
async def order_timeline(order_id: int, session: SessionDep) -> Any:
    """The order's device commands in the order they were queued, with per-phase durations."""
    rows = await queries.order_timeline(session, order_id)
    if not rows and not await queries.order_exists(session, order_id):
        raise OrderNotFound(f"order {order_id} not found")
    return OrderTimeline(order_id=order_id, items=[CommandTiming.of(row) for row in rows])


CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {**NOT_FOUND, 409: {"description": "the order's state does not allow this"}}


@router.post("/{order_id}/cancel", response_model=OrderStateChange, responses=CHANGE_ERRORS)
async def cancel_order(order_id: int, engine: EngineDep) -> Any:
    """Cancel an order that has not shipped; its reservations are given back."""
    return OrderStateChange(id=order_id, state=await engine.cancel(order_id))


@router.post("/{order_id}/resolve", response_model=OrderStateChange, responses=CHANGE_ERRORS)
async def resolve_order(order_id: int, engine: EngineDep) -> Any:
    """Resolve an exception: the order retries the stage it was stopped in."""
    return OrderStateChange(id=order_id, state=await engine.resolve(order_id))
