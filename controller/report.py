"""`floorctl report`: what limited the floor over a window, from a floorctl database, as one
self-contained HTML page (charts are inline SVG drawn with matplotlib: no script, nothing fetched,
it opens offline) and the same figures as JSON."""

from __future__ import annotations

import html
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from controller.domain.insight import SATURATED, Insight
from controller.site import Site
from controller.store.insight import floor_insight

FLOW_COLOURS = {"pick_light": "#3b6fb6", "conveyor": "#8e6bbf", "pack_station": "#d9822b",
                "printer": "#2e9e6b", "sorter": "#c0392b"}


@dataclass(frozen=True, slots=True)
class Written:
    html: Path
    json: Path
    insight: Insight


async def write_report(db: AsyncEngine, site: Site, since: float, until: float, out: Path, *,
                       time_scale: float = 1.0, progress: Callable[[str], None] | None = None) -> Written:
    """Read the window, work it out and write `report.html` and `report.json` into `out`."""
    insight = await floor_insight(db, site, since, until, time_scale, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    data = {"site": site.site, "generated_at": time.time(), **insight.as_dict()}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if progress is not None:
        progress("drawing the charts")
    html_path = out / "report.html"
    html_path.write_text(render_html(site.site, insight), encoding="utf-8")
    return Written(html_path, json_path, insight)


# ---- the page ----------------------------------------------------------------------------------------
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #1d2433; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 2px solid #eef1f6; }
.muted { color: #5b6478; } .small { font-size: 12px; }
.verdict { border-left: 6px solid #d9822b; background: #fff7ef; padding: .6em 1em; border-radius: 4px; }
.verdict.ok { border-color: #2e9e6b; background: #effaf4; }
.verdict h3 { margin: .2em 0; }
table { border-collapse: collapse; margin: .6em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #d8dde6; padding: .3em .7em; text-align: left; vertical-align: top; }
thead th { background: #eef1f6; }
td.num, th.num { text-align: right; } td.num { white-space: nowrap; }
tr.hot td { background: #fff1e6; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(540px, 1fr)); gap: 1em; }
figure { margin: 0; border: 1px solid #d8dde6; border-radius: 6px; padding: .5em; }
figcaption { font-weight: 600; }
figure svg { width: 100%; height: auto; }
"""


def render_html(site: str, insight: Insight) -> str:
    d = insight.as_dict()
    e = html.escape
    scale = insight.time_scale
    faster = f" at {scale:g}x: the floor ran {scale:g} times faster than the clock" if scale != 1 else ""
    window = (f"{_iso(insight.since)} to {_iso(insight.until)} (wall clock): {_dur(insight.window_s)} of "
              f"floor time{faster}")
    o = d["orders"]
    c = o["cycle"]
    orders = _table(["received", "shipped", "arrival rate", "shipping rate", "unfinished at the end",
                     "cycle p50", "p90", "p95", "p99", "max"],
                    [[o["received"], o["shipped"], _rate(o["arriving_per_s"]), _rate(o["shipped_per_s"]),
                      o["unfinished_at_end"], _dur(c["p50_s"]), _dur(c["p90_s"]), _dur(c["p95_s"]),
                      _dur(c["p99_s"]), _dur(c["max_s"])]], numeric=range(10))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>floorctl report: {e(site)}</title>
<style>{STYLE}</style></head><body>
<h1>What limited the floor <span class="muted">· {e(site)}</span></h1>
<p class="muted">{e(window)}. Durations are in seconds of floor time, rates per floor second. Written by
<code>floorctl report</code>; the model and its limits are in docs/insight.md.</p>
{_verdict(d)}
<h2>Orders</h2>
{orders}
<div class="charts">{_charts(insight)}</div>
<h2>Capacity: the order rate at which each kind saturates</h2>
{_capacities(d)}
<h2>Resources</h2>
<p class="muted small">Utilisation: the busy share of a resource's capacity. Queue wait: from a command being
queued to its being sent. Waiting: the share of all the orders' time in the window spent waiting for it.
Highlighted: the bottleneck.</p>
{_loads("Kinds", d["kinds"], d)}
{_loads("Pick zones", d["zones"], d) if d["zones"] else ""}
{_loads("Devices", d["devices"], d)}
<h2>On time (shipped by the due time)</h2>
{_on_time(d["on_time"])}
</body></html>
"""


def _table(head: list[str], rows: list[list[Any]], *, numeric: Iterable[int] = (),
           hot: Iterable[int] = ()) -> str:
    """An HTML table; cells are text (escaped) or `Markup` (as it is)."""
    right = set(numeric)
    marked = set(hot)

    def cell(tag: str, i: int, value: Any) -> str:
        text = value.html if isinstance(value, Markup) else html.escape(str(value))
        return f'<{tag} class="num">{text}</{tag}>' if i in right else f"<{tag}>{text}</{tag}>"

    top = "".join(cell("th", i, h) for i, h in enumerate(head))
    body = "".join(f"<tr{' class=hot' if r in marked else ''}>"
                   + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
                   for r, row in enumerate(rows))
    return f"<table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True, slots=True)
class Markup:
    html: str


def _verdict(d: dict[str, Any]) -> str:
    e = html.escape
    found, second = d["bottleneck"], d["runner_up"]
    if found is None:
        body = f"<h3>No bottleneck</h3><p>{e(d['verdict'])}</p>"
    else:
        items = "".join(f"<li>{e(x)}</li>" for x in found["evidence"])
        body = f"<h3>Bottleneck: {e(found['label'])}</h3><ul>{items}</ul>"
    if second is not None:
        title = "Runner-up" if found is not None else "First to saturate as the load grows"
        items = "".join(f"<li>{e(x)}</li>" for x in second["evidence"])
        body += f"<h3>{title}: {e(second['label'])}</h3><ul>{items}</ul>"
    return f'<div class="verdict{"" if found else " ok"}">{body}</div>'


def _capacities(d: dict[str, Any]) -> str:
    wall = d["time_scale"] != 1
    head = ["kind", "devices", "service", "commands per order", "orders/s", "orders/h",
            *(["orders per wall second"] if wall else []), "x arrival rate",
            "count x capacity / (service x commands per order)"]
    rows = []
    for c in d["capacities"]:
        note = f'<br><span class="muted small">{html.escape(c["note"])}</span>' if c["note"] else ""
        rows.append([c["kind"], c["devices"], _dur(c["service_s"]), _num(c["commands_per_order"]),
                     Markup(f"<b>{_num(c['orders_per_s'])}</b>"), _num(c["orders_per_hour"], 0),
                     *([_num(c["orders_per_s_wall"])] if wall else []), _times(c["headroom"]),
                     Markup(html.escape(c["formula"]) + note)])
    return _table(head, rows, numeric=range(1, len(head) - 1))


def _loads(title: str, loads: list[dict[str, Any]], d: dict[str, Any]) -> str:
    found = d["bottleneck"]
    hot = {found["resource"], *found["devices"]} if found else set()
    rows = []
    for x in loads:
        g = x["growth"]
        trend = "-" if g["slope"] is None else "yes" if g["grows"] else "no"
        if g["slope"] is not None and abs(g["slope"]) >= 0.001:
            trend += f" ({g['slope']:+.3f})"
        lit = f" · lit {_pct(x['lit_share'])}" if x.get("lit_share") is not None else ""
        rows.append([x["resource"], x["kind"], _pct(x["utilisation"]) + lit, _num(x["arrivals_per_s"]),
                     _num(x["completions_per_s"]), _dur(x["service_s"]), _dur(x["queue_wait_mean_s"]),
                     _dur(x["queue_wait_p95_s"]), trend, _pct(x["waiting_share"]),
                     f"{x['orders_waited']} / {x['orders_served']}"])
    head = ["resource", "kind", "utilisation", "arrivals/s", "completions/s", "service", "queue wait mean",
            "p95", "grows (s per s)", "waiting", "orders waited / served"]
    table = _table(head, rows, numeric=range(2, len(head)),
                   hot=[i for i, x in enumerate(loads) if x["resource"] in hot])
    return f"<h3>{html.escape(title)}</h3>{table}"


def _on_time(on_time: dict[str, Any]) -> str:
    if not on_time["all"]["orders"]:
        return (f"<p class=\"muted\">No order in the window carried a due time "
                f"({on_time['without_due']} shipped without one).</p>")
    groups = [("all orders", on_time["all"]),
              *((f"priority {p}", v) for p, v in on_time["by_priority"].items()),
              *((f"carrier {c}", v) for c, v in on_time["by_carrier"].items())]
    rows = [[name, v["orders"], v["on_time"], v["late"], Markup(f"<b>{_pct(v['share'])}</b>")]
            for name, v in groups]
    note = f'<p class="muted small">{on_time["without_due"]} orders shipped without a due time.</p>'
    return (_table(["", "orders", "on time", "late", "share"], rows, numeric=range(1, 5))
            + (note if on_time["without_due"] else ""))


# ---- the charts ----------------------------------------------------------------------------------------
def _charts(insight: Insight) -> str:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "floorctl"})
    s = insight.series
    minutes = [(t - insight.since) * insight.time_scale / 60 for t in s.starts]
    mid = [m + s.bucket_s / 120 for m in minutes]
    figures: list[tuple[str, Any]] = []

    devices = [d for d in insight.devices if d.utilisation is not None]
    fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.22 * len(devices) + 0.9)))
    ax.barh(range(len(devices)), [d.utilisation or 0.0 for d in devices],
            color=[FLOW_COLOURS.get(d.kind, "#777") for d in devices])
    ax.set_yticks(range(len(devices)), [d.resource for d in devices], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(SATURATED, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlim(0, max(1.0, *(d.utilisation or 0.0 for d in devices)) if devices else 1.0)
    ax.set_xlabel(f"utilisation (busy share of capacity; dashed: {SATURATED:.0%})")
    figures.append(("Utilisation per resource", fig))

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for name, waits in s.queue_wait_s.items():
        ax.plot(*_known(mid, waits), marker=".", linewidth=1.2, label=name)
    ax.set_xlabel("floor minutes into the window")
    ax.set_ylabel("mean queue wait, s")
    if s.queue_wait_s:
        ax.legend(fontsize="small")
    figures.append(("Queue wait over time, the resources that wait most", fig))

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    ax.plot(mid, [r * 3600 for r in s.received_per_s], label="received", color="#7f8aa3")
    ax.plot(mid, [r * 3600 for r in s.shipped_per_s], label="shipped", color="#3b6fb6", linewidth=2)
    for c in insight.capacities[:]:
        if insight.bottleneck is not None and c.kind == insight.bottleneck.kind and c.orders_per_s:
            ax.axhline(c.orders_per_s * 3600, color="#d9822b", linestyle="--", linewidth=1,
                       label=f"{c.kind} saturates")
    ax.set_xlabel("floor minutes into the window")
    ax.set_ylabel("orders per floor hour")
    ax.legend(fontsize="small")
    figures.append(("Throughput over time", fig))

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for values, label, width in ((s.cycle_p50_s, "p50", 1.2), (s.cycle_p95_s, "p95", 2.0)):
        ax.plot(*_known(mid, values), label=label, linewidth=width)
    ax.set_xlabel("floor minutes into the window (by when shipped)")
    ax.set_ylabel("cycle time, s")
    ax.legend(fontsize="small")
    figures.append(("Cycle time, received to shipped", fig))

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for kind, values in s.utilisation.items():
        ax.plot(*_known(mid, values), label=kind, color=FLOW_COLOURS.get(kind))
    ax.axhline(SATURATED, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("floor minutes into the window")
    ax.set_ylabel("utilisation")
    ax.legend(fontsize="small", ncol=3)
    figures.append(("Utilisation over time, per kind", fig))

    shares = [(f"priority {p}", v.share) for p, v in insight.on_time.by_priority.items()]
    shares += [(c, v.share) for c, v in insight.on_time.by_carrier.items()]
    if any(v is not None for _, v in shares):
        fig, ax = plt.subplots(figsize=(6.4, 2.8))
        ax.bar([n for n, _ in shares], [v or 0.0 for _, v in shares], color="#2e9e6b")
        ax.set_ylim(0, 1)
        ax.set_ylabel("shipped by the due time")
        figures.append(("On time, per priority and per carrier", fig))

    out = []
    for title, fig in figures:
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})  # the same rows draw the same page
        plt.close(fig)
        svg = buffer.getvalue()
        out.append(f"<figure><figcaption>{html.escape(title)}</figcaption>{svg[svg.index('<svg'):]}</figure>")
    return "".join(out)


def _known(xs: list[float], ys: list[float | None]) -> tuple[list[float], list[float]]:
    """The points of a series that have a value (a bucket with nothing in it has none)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


# ---- numbers -----------------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if digits == 0 else f"{value:.{digits}g}"


def _rate(per_s: float) -> str:
    return f"{per_s:.3g}/s ({per_s * 3600:.0f}/h)"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}x"
