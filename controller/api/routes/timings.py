"""Device command timings across all orders: a page of JSON, or every matching row as CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api.auth import can
from controller.api.deps import DbDep, Limit, Offset, SessionDep
from controller.api.instants import Instant
from controller.api.schemas import NO_NUL, CommandTiming, Paged, timing_values
from controller.domain.access import Permission
from controller.domain.model import Task
from controller.ports import DeviceKind
from controller.store import queries
from controller.store.queries import TimingFilter

router = APIRouter(prefix="/api/timings", tags=["timings"], dependencies=[can(Permission.READ)])

CSV_COLUMNS = list(CommandTiming.model_fields)
CSV_READ = 2000  # rows per database read
# Rows formatted per slice. Formatting runs on the event loop (~10 us a row): between slices the
# export yields, so device traffic never waits more than a couple of milliseconds behind a download.
CSV_SLICE = 200


@router.get(
    "",
    response_model=Paged[CommandTiming],
    responses={200: {"content": {"text/csv": {}},
                     "description": "JSON page, or CSV of every match with format=csv"}},
)
async def list_timings(
    session: SessionDep,
    db: DbDep,
    device_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    device_kind: DeviceKind | None = None,
    task: Task | None = None,
    outcome: Literal["ok", "failed", "timed_out", "cancelled"] | None = None,
    since: Annotated[Instant | None,
                     Query(description="queued at or after: ISO 8601 or epoch seconds")] = None,
    until: Annotated[Instant | None, Query(description="queued before: ISO 8601 or epoch seconds")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """Commands in the order they were queued. `format=csv` ignores limit/offset and streams them all."""
    filt = TimingFilter(device_id=device_id, device_kind=device_kind.value if device_kind else None,
                        task=task.value if task else None, outcome=outcome,
                        since=since, until=until)
    if format == "csv":
        return StreamingResponse(csv_chunks(db, filt), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="timings.csv"'})
    page = await queries.timings_page(session, filt, limit=limit, offset=offset)
    return Paged[CommandTiming](items=[CommandTiming.of(row) for row in page.items], total=page.total,
                                limit=limit, offset=offset)


async def csv_chunks(db: AsyncEngine, filt: TimingFilter) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buffer)
    async for rows in queries.timings_in_chunks(db, filt, chunk=CSV_READ):
        for start in range(0, len(rows), CSV_SLICE):
            writer.writerows(timing_values(row) for row in rows[start:start + CSV_SLICE])
            yield _drain(buffer)
            await asyncio.sleep(0)  # sending may not suspend; let the engine's tasks run


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
