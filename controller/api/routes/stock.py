"""Stock by location, as the engine last wrote it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controller.api.auth import can
from controller.api.deps import Limit, Offset, SessionDep
from controller.api.schemas import NO_NUL, Paged, StockPublic
from controller.domain.access import Permission
from controller.store import queries

router = APIRouter(prefix="/api/stock", tags=["stock"], dependencies=[can(Permission.READ)])


@router.get("", response_model=Paged[StockPublic])
async def list_stock(session: SessionDep,
                     sku: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
                     limit: Limit = 1000, offset: Offset = 0) -> Any:
    """Every location (or those holding one SKU): on hand, reserved by orders, and available."""
    page = await queries.stock_page(session, sku=sku, limit=limit, offset=offset)
    return Paged[StockPublic](items=[StockPublic.of(row) for row in page.items], total=page.total,
                              limit=limit, offset=offset)
