"""`floorctl commission`: the site-level I/O check and its sign-off report (docs/commissioning.md)."""

from controller.commission.report import render_html, summarise, write_report
from controller.commission.walk import Check, Walk

__all__ = ["Check", "Walk", "render_html", "summarise", "write_report"]
