"""Times at the API edge: the store keeps float epoch seconds, people read and write ISO 8601 UTC."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

EPOCH = datetime(1970, 1, 1)


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds, e.g. 2024-05-01T08:30:00.125Z.

    Rounded to the millisecond, not truncated: 2.003 stored as 2.0029999 still reads .003.
    """
    if ts is None:
        return None
    return (EPOCH + timedelta(milliseconds=round(ts * 1000))).isoformat(timespec="milliseconds") + "Z"


def epoch(moment: datetime) -> float:
    """A datetime -> epoch seconds. A time without a zone is taken as UTC, the floor's clock."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_instant(value: Any) -> float:
    """Epoch seconds (`1714552200.5`) or ISO 8601 (`2024-05-01T08:30:00Z`) -> epoch seconds."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, datetime):
        return epoch(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            try:
                return epoch(datetime.fromisoformat(value.strip()))
            except ValueError:
                pass
    if number is not None and math.isfinite(number):
        return number
    raise ValueError(f"expected ISO 8601 (e.g. 2024-05-01T08:30:00Z) or epoch seconds, got {value!r}")


Instant = Annotated[float, BeforeValidator(parse_instant)]
