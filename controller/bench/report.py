"""The figures of a run, their targets, and the table a person reads."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    path: str  # "mqtt.ctl_p50_ms": where the value sits in the results
    label: str
    unit: str
    target: float | None = None
    better: str = "lower"  # "lower" or "higher" is better; how the value compares to the target
    ratio_of: str | None = None  # a value this one is a multiple of (shown as the ratio column)

    def met(self, value: float | None) -> bool | None:
        if self.target is None or value is None:
            return None
        compare: Callable[[float, float], bool] = operator.le if self.better == "lower" else operator.ge
        return compare(value, self.target)

    def target_text(self) -> str:
        if self.target is None:
            return ""
        sign = "<=" if self.better == "lower" else ">="
        return f"{sign} {_number(self.target)}{' ' + self.unit if self.unit != 'x' else 'x'}"


# `floorctl bench --data-scale`: the read requests on a big database, the writer beside them.
DATA_SCALE_REQUESTS = (
    ("order_timeline", "an order's timeline"), ("order_detail", "an order"),
    ("order_breakdown", "an order's breakdown"),
    ("timings_device_hour_json", "/api/timings, a device, an hour (JSON)"),
    ("timings_device_hour_csv", "  the same as CSV, every row"), ("insight_15_min", "/api/insight, 15 min"),
    ("stats", "/api/stats"), ("panel_latest", "panel: /api/events/latest"),
    ("panel_board_picking", "panel: the board of one state"), ("panel_board_shipped", "  of shipped orders"),
    ("panel_alarms", "panel: active alarms"), ("order_audit", "an order's audit trail"),
    ("order_by_external_id", "an order by its external id"),
)


def _data_scale_figures() -> tuple[Figure, ...]:
    figures = []
    for db, label in (("postgres", "PostgreSQL"), ("sqlite", "SQLite")):
        at = f"data_scale.{db}"
        figures.append(Figure(f"{at}.timing_rows", f"{label}: timing rows in the database", ""))
        figures.extend(Figure(f"{at}.requests.{key}.p95_ms", f"  p95 {text}", "ms", target=100)
                       for key, text in DATA_SCALE_REQUESTS)
        figures.append(Figure(f"{at}.writer.empty_rows_per_s", "  writer rows/s, empty database", "/s"))
        figures.append(Figure(f"{at}.writer.at_size_rows_per_s", "  writer rows/s at that size", "/s"))
        figures.append(Figure(f"{at}.writer.ratio", "  at that size / empty", "x", target=0.8,
                              better="higher"))
    return tuple(figures)


FIGURES: tuple[Figure, ...] = (
    Figure("mqtt.bare_p50_ms", "MQTT bare command->ack p50", "ms"),
    Figure("mqtt.bare_p99_ms", "MQTT bare command->ack p99", "ms"),
    Figure("mqtt.bare_per_s", "MQTT bare round trips/s (pipelined)", "/s"),
    Figure("mqtt.ctl_p50_ms", "MQTT controller command->ack p50", "ms", ratio_of="mqtt.bare_p50_ms"),
    Figure("mqtt.p50_ratio", "  p50 controller / bare", "x", target=1.3),
    Figure("mqtt.ctl_p99_ms", "MQTT controller command->ack p99", "ms", ratio_of="mqtt.bare_p99_ms"),
    Figure("mqtt.p99_ratio", "  p99 controller / bare", "x", target=1.5),
    Figure("mqtt.ctl_per_s", "MQTT controller round trips/s (pipelined)", "/s", ratio_of="mqtt.bare_per_s"),
    Figure("opcua.bare_p50_ms", "OPC UA bare write p50", "ms"),
    Figure("opcua.bare_p99_ms", "OPC UA bare write p99", "ms"),
    Figure("opcua.bare_call_p50_ms", "OPC UA bare Transport call p50", "ms"),
    Figure("opcua.bare_call_p99_ms", "OPC UA bare Transport call p99", "ms"),
    Figure("opcua.ctl_p50_ms", "OPC UA controller transport->ack p50", "ms",
           ratio_of="opcua.bare_call_p50_ms"),
    Figure("opcua.p50_ratio", "  p50 controller / bare call", "x", target=1.3),
    Figure("opcua.ctl_p99_ms", "OPC UA controller transport->ack p99", "ms",
           ratio_of="opcua.bare_call_p99_ms"),
    Figure("opcua.p99_ratio", "  p99 controller / bare call", "x", target=1.5),
    Figure("opcua.p50_ratio_to_write", "  p50 controller / bare write", "x"),
    Figure("opcua.bare_events_p99_ms", "OPC UA bare call p99, subscribed to the same events", "ms"),
    Figure("opcua.p99_ratio_to_events", "  p99 controller / that", "x", target=1.0),
    Figure("divert.held_per_s", "Divert scans/s held (p99 <= 10 ms)", "/s", target=2000, better="higher"),
    Figure("divert.p99_ms", "Divert read->target landed p99 at {divert.at_rate}/s", "ms", target=5),
    Figure("divert.p99_ms_without_gc_freeze", "  the same without gc.freeze() and GC_THRESHOLDS", "ms"),
    Figure("surge.orders_per_s", "Surge orders/s sustained", "/s", target=400, better="higher"),
    Figure("surge.cycle_p99_s", "  order cycle p99 at that rate", "s"),
    Figure("surge.cycle_p99_over_travel_s", "  that p99 over the travel (cycle p50 at the lowest rate)",
           "s", target=0.5),
    Figure("writer.sqlite_rows_per_s", "Timing writer rows/s, SQLite", "/s", target=50_000, better="higher"),
    Figure("writer.postgres_rows_per_s", "Timing writer rows/s, PostgreSQL", "/s", target=50_000,
           better="higher"),
    Figure("writer.stall_p99_ms", "Event loop stall p99 while writing (SQLite)", "ms", target=2),
    Figure("writer.stall_max_ms", "  worst stall", "ms"),
    Figure("writer.stall_p99_ms_without_writer", "  p99 with rows dropped instead (control)", "ms"),
    Figure("memory.rss_mb_before", "Controller RSS before", "MB"),
    Figure("memory.rss_mb_after", "Controller RSS after the orders", "MB", target=250),
    Figure("memory.growth_mb", "  growth after warm-up", "MB"),
    Figure("memory.adapter_memory.rss_mb", "  finished tickets the real adapters keep", "MB"),
    Figure("memory.rss_mb_after_with_adapter_memory", "Controller RSS after, with the adapters' tickets",
           "MB",
           target=250),
    Figure("memory.adapter_memory.full_gc_ms_after", "  a full GC pause then", "ms"),
    Figure("standby.takeover_p50_s", "Standby take-over after kill -9, p50", "s", target=5),
    Figure("standby.takeover_max_s", "  the longest", "s", target=5),
    Figure("standby.renewal_p50_ms", "  lease renewal round trip p50", "ms"),
    Figure("standby.renewal_cpu_percent_of_a_core", "  renewals' CPU, % of a core", "%"),
    Figure("standby.writer_fence_ms", "  epoch check per writer batch", "ms"),
    Figure("standby.gate_check_ns", "  command gate check per command", "ns"),
    Figure("whatif.hour_wall_s", "What-if: an hour of the demo floor at 720 orders/h, wall time", "s",
           target=300),
    Figure("whatif.orders", "  orders in the {whatif.floor_minutes} min played", ""),
    *_data_scale_figures(),
)


def lookup(results: dict[str, Any], path: str) -> Any:
    node: Any = results
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every figure with a target of the steps that ran: its value, the target and whether it was met
    (None: not measured)."""
    out = {}
    for fig in FIGURES:
        if fig.target is not None and fig.path.split(".", 1)[0] in results:
            value = lookup(results, fig.path)
            out[fig.path] = {"value": value, "target": fig.target, "better": fig.better,
                             "met": fig.met(value)}
    return out


def render(results: dict[str, Any]) -> str:
    rows = [("figure", "value", "target", "ratio", "")]
    for fig in FIGURES:
        value = lookup(results, fig.path)
        section = fig.path.split(".")[0]
        if value is None and lookup(results, f"{section}.error") is None:
            continue  # not part of this run (e.g. PostgreSQL skipped)
        shown = "error" if value is None else f"{_number(value)} {fig.unit}".rstrip()
        baseline = lookup(results, fig.ratio_of) if fig.ratio_of else None
        ratio = f"{value / baseline:.2f}x" if isinstance(value, int | float) and baseline else ""
        met = fig.met(value)
        verdict = "" if met is None else ("ok" if met else "MISSED")
        label = re.sub(r"\{([\w.]+)\}", lambda m: _number(lookup(results, m.group(1))), fig.label)
        rows.append((label, shown, fig.target_text(), ratio, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i,
                       (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if isinstance(results.get("growth"), dict) and results["growth"].get("floors"):
        lines += ["", "How cost grows (controller process only):", growth_table(results["growth"])]
    for section, result in results.items():
        if isinstance(result, dict):
            for key in ("error", "note", "postgres_skipped", "bound"):
                if result.get(key):
                    lines.append(f"{section}: {key.replace('_', ' ')}: {result[key]}")
            for part, inner in result.items():  # a step's parts (data_scale.postgres) fail on their own
                if isinstance(inner, dict) and inner.get("error"):
                    lines.append(f"{section}.{part}: error: {inner['error']}")
    return "\n".join(lines)


def growth_table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table: one row per floor and number of active orders."""
    rows = [("| devices | orders held active | CPU holding them, no flow | CPU per order shipped | CPU at "
             f"{_number(result.get('rate'))} orders/s | RSS |"),
            "|---:|---:|---:|---:|---:|---:|"]
    for floor in result.get("floors", []):
        rows.append(f"| {floor['devices']:,} | 0 | {floor['idle_cpu_percent']:.1f}% | | | "
                    f"{floor['idle_rss_mb']:.0f} MB |")
        for point in floor["points"]:
            per_order = point["cpu_ms_per_order"]
            rows.append(f"| {floor['devices']:,} | {point['parked']:,} | "
                        f"{point['holding_cpu_percent']:.1f}% | "
                        f"{'none shipped' if per_order is None else f'{per_order:.1f} ms'} | "
                        f"{point['cpu_percent']:.0f}% | {point['rss_mb']:.0f} MB |")
    return "\n".join(rows)

def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
