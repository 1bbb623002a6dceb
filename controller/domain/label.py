"""Shipping labels in ZPL, built from an order and its carrier."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[\^~\x00-\x1f]")


def _field(text: str, limit: int = 40) -> str:
    """ZPL field data may not contain ^ or ~ (they start commands) or control characters."""
    return _UNSAFE.sub(" ", text)[:limit]


def shipping_label(*, order_id: int, external_id: str, carrier: str, tote: str, lane: str, items: int) -> str:
    return (
        "^XA^CI28^PW812^LL1218"
        f"^FO40,40^A0N,60,60^FD{_field(carrier)}^FS"
        f"^FO40,120^A0N,34,34^FDOrder {_field(external_id)}^FS"
        f"^FO40,170^A0N,34,34^FDItems {items}  Lane {_field(lane)}^FS"
        f"^FO40,240^BY3^BCN,160,Y,N,N^FD{_field(tote)}^FS"
        f"^FO40,440^A0N,28,28^FDRef {order_id}^FS"
        "^XZ"
    )
