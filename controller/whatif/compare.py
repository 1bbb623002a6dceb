"""`floorctl whatif SCENARIO...`: every scenario in a process of its own (as many at once as there are
cores), a progress bar while they run, then a side-by-side comparison as text, JSON and HTML."""

from __future__ import annotations

import asyncio
import html
import io
import json
import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.whatif.scenario import load_scenario


@dataclass
class Job:
    path: Path
    out: Path
    name: str
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None


async def run_many(paths: list[Path], out_dir: Path, *, jobs: int | None = None, seed: int | None = None,
                   speed: float | None = None) -> list[Job]:
    """Run the scenarios; each result lands in `out_dir/<stem>.json`. Scenario files are checked
    first, so a mistake in the last one is reported before the first one runs for minutes."""
    scenarios = [load_scenario(path, seed=seed) for path in paths]
    out_dir.mkdir(parents=True, exist_ok=True)
    stems: dict[str, int] = {}
    work: list[Job] = []
    for path, scenario in zip(paths, scenarios, strict=True):
        n = stems[path.stem] = stems.get(path.stem, 0) + 1
        stem = path.stem if n == 1 else f"{path.stem}-{n}"
        work.append(Job(path, out_dir / f"{stem}.json", scenario.name))
    slots = asyncio.Semaphore(jobs or max(1, min(len(work), os.cpu_count() or 1)))
    bar = asyncio.create_task(_show_progress(work))
    try:
        await asyncio.gather(*(_run_one(job, slots, seed, speed) for job in work))
    finally:
        bar.cancel()
        _draw(work, final=True)
    return work


async def _run_one(job: Job, slots: asyncio.Semaphore, seed: int | None, speed: float | None) -> None:
    async with slots:
        job.started = time.monotonic()
        argv = [sys.executable, "-m", "controller.whatif.run", str(job.path), "--out", str(job.out)]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if speed is not None:
            argv += ["--speed", str(speed)]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.create_task(proc.stderr.read())
        try:
            async for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if "error" in event:
                    job.error = event["error"]
                elif "floor_s" in event:
                    job.progress = event
            code = await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            raise
        job.finished = time.monotonic()
        stderr = (await errors).decode(errors="replace")
        if code == 0 and job.out.is_file():
            job.result = json.loads(job.out.read_text())
        elif job.error is None:
            tail = "\n".join(stderr.strip().splitlines()[-12:])
            job.error = f"the scenario's process ended with code {code}:\n{tail}"


async def _show_progress(work: list[Job]) -> None:
    while True:
        _draw(work)
        await asyncio.sleep(1.0 if sys.stderr.isatty() else 10.0)


def _draw(work: list[Job], final: bool = False) -> None:
    tty = sys.stderr.isatty()
    lines = []
    for job in work:
        p = job.progress
        if job.result is not None:
            state = f"done in {job.finished - job.started:.0f} s" if job.finished and job.started else "done"
            share = 1.0
        elif job.error is not None:
            state, share = "failed", 0.0
        elif p:
            total = p["duration_s"]
            share = min(1.0, p["floor_s"] / total) if total else 0.0
            if p["floor_s"] <= total:
                state = (f"{p['floor_s'] / 60:.0f}/{total / 60:.0f} min of floor time, "
                         f"{p['offered']}/{p['planned']} orders in, {p['active']} on the floor, "
                         f"{p['speed']:g}x")
            else:
                state = (f"all {p['planned']} orders in; draining, {p['active']} still on the floor "
                         f"({(p['floor_s'] - total) / 60:.0f} min after the last)")
        else:
            state, share = "waiting" if job.started is None else "starting", 0.0
        filled = int(share * 20)
        lines.append(f"  [{'#' * filled}{'.' * (20 - filled)}] {job.name[:38]:<38} {state}")
    if tty and not final:
        sys.stderr.write("\x1b[s" + "\n".join(line + "\x1b[K" for line in lines) + "\x1b[u")
    else:
        sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


# ---- the comparison ----------------------------------------------------------------------------------
def _bottleneck(result: dict[str, Any]) -> dict[str, Any] | None:
    found: dict[str, Any] | None = result["insight"]["bottleneck"]
    return found


def _resource(found: dict[str, Any] | None) -> str:
    if found is None:
        return "none"
    return str(found["label"])


def _evidence(found: dict[str, Any] | None) -> str:
    if found is None:
        return "the floor keeps up: no resource is both busy and queueing"
    return "; ".join(found["evidence"])


def _utilisation(result: dict[str, Any]) -> dict[str, float]:
    """Busy share per device, as the insight reported it."""
    return {row["resource"]: row["utilisation"] for row in result["insight"]["devices"]
            if row["utilisation"] is not None}


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def rows_of(results: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The comparison table: one row per measure, one column per scenario."""
    def on_time(r: dict[str, Any], priority: str) -> str:
        group = r["on_time"]["by_priority"].get(priority)
        return _pct(group["share"]) if group else "-"
    priorities = sorted({p for r in results for p in r["on_time"]["by_priority"]}, key=int, reverse=True)
    rows = [
        ("orders offered", [str(r["orders"]["offered"]) for r in results]),
        ("shipped", [str(r["orders"]["shipped"]) for r in results]),
        ("exception / unfinished", [f"{r['orders']['states'].get('exception', 0)} / "
                                    f"{r['orders']['unfinished']}" for r in results]),
        ("shipped per hour", [f"{r['shipped_per_hour']:.0f}" for r in results]),
        ("offered per hour", [f"{r['offered_per_s'] * 3600:.0f}" for r in results]),
        ("kept up with demand", ["yes" if r["kept_up"] else f"no (backlog {r['backlog_at_end']})"
                                 for r in results]),
        ("cycle p50 / p95 / p99 (s)", [" / ".join(_num(r["cycle_s"][p], 0) for p in ("p50", "p95", "p99"))
                                       for r in results]),
    ]
    rows += [(f"on time, priority {p}", [on_time(r, p) for r in results]) for p in priorities]
    rows += [("on time, all", [_pct(r["on_time"]["all"]["share"]) for r in results]),
             ("bottleneck", [_resource(_bottleneck(r)) for r in results]),
             ("release policy", [r["release"] for r in results]),
             ("floor speed", [f"{r['speed']:g}x, {r['wall_s']:.0f} s wall" for r in results])]
    return rows


def render_text(results: list[dict[str, Any]]) -> str:
    rows = rows_of(results)
    names = [r["scenario"] for r in results]
    first = max(len(label) for label, _ in rows)
    widths = [max(len(n), *(len(row[1][i]) for row in rows)) for i, n in enumerate(names)]
    out = [" " * first + "  " + "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    for label, cells in rows:
        out.append(label.ljust(first) + "  "
                   + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    out.append("")
    for r in results:
        found = _bottleneck(r)
        out.append(f"{r['scenario']}: bottleneck {_resource(found)}: {_evidence(found)}")
    for r in results:
        if r["orders"].get("exception_reasons"):
            out.append(f"{r['scenario']}: to the exception lane: {_exceptions(r)}")
    return "\n".join(out)


def _exceptions(result: dict[str, Any]) -> str:
    return "; ".join(f"{reason} ({n})" for reason, n in result["orders"].get("exception_reasons", {}).items())


def write_comparison(jobs: list[Job], out_dir: Path) -> tuple[Path, Path]:
    results = [job.result for job in jobs if job.result is not None]
    failed = {job.name: job.error for job in jobs if job.result is None}
    data = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scenarios": results, "failed": failed}
    json_path = out_dir / "comparison.json"
    json_path.write_text(json.dumps(data, indent=1))
    html_path = out_dir / "comparison.html"
    html_path.write_text(render_html(results, failed))
    return json_path, html_path


def render_html(results: list[dict[str, Any]], failed: dict[str, str | None]) -> str:
    names = [r["scenario"] for r in results]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                   + "</tr>" for label, cells in rows_of(results)) if results else ""
    evidence = "".join(f"<li><b>{html.escape(r['scenario'])}</b>: {html.escape(_resource(_bottleneck(r)))}"
                       f" &mdash; {html.escape(_evidence(_bottleneck(r)))}"
                       + (f"<br>To the exception lane: {html.escape(_exceptions(r))}"
                          if r["orders"].get("exception_reasons") else "") + "</li>" for r in results)
    problems = "".join(f"<li><b>{html.escape(n)}</b>: <pre>{html.escape(e or '')}</pre></li>"
                       for n, e in failed.items())
    charts = _charts(results) if results else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>floorctl what-if comparison</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #1d2433; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #d8dde6; padding: .35em .8em; text-align: left; vertical-align: top; }}
thead th {{ background: #eef1f6; }}
tbody th {{ font-weight: 500; color: #4a5468; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1em; }}
.charts figure {{ margin: 0; border: 1px solid #d8dde6; border-radius: 6px; padding: .5em; }}
.charts svg {{ width: 100%; height: auto; }}
</style></head><body>
<h1>What-if comparison</h1>
<p>Each scenario ran on the simulated floor with the real controller, faster than real time; every
figure is in floor time. How they are computed: docs/whatif.md and docs/insight.md.</p>
<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>What limits the floor</h2><ul>{evidence}</ul>
{f"<h2>Scenarios that did not finish</h2><ul>{problems}</ul>" if problems else ""}
<div class="charts">{charts}</div>
</body></html>
"""


def _charts(results: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    names = [textwrap.fill(r["scenario"], 22) for r in results]
    figures: list[tuple[str, Any]] = []

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.bar(names, [r["shipped_per_hour"] for r in results], color="#3b6fb6", label="shipped")
    ax.plot(names, [r["offered_per_s"] * 3600 for r in results], "o", color="#c0392b", label="offered")
    ax.set_ylabel("orders per hour")
    ax.legend()
    figures.append(("Shipped and offered per hour", fig))

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.8 / 3
    for i, p in enumerate(("p50", "p95", "p99")):
        ax.bar([x + i * width for x in range(len(names))], [r["cycle_s"][p] or 0 for r in results], width,
               label=p)
    ax.set_xticks([x + width for x in range(len(names))], names)
    ax.set_ylabel("cycle time, s")
    ax.legend()
    figures.append(("Cycle time, received to shipped", fig))

    devices = sorted({d for r in results for d in _utilisation(r)})
    if devices:
        fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(devices) * len(names) + 1.2))
        height = 0.8 / len(names)
        for i, r in enumerate(results):
            util = _utilisation(r)
            ax.barh([y + i * height for y in range(len(devices))], [util.get(d, 0.0) for d in devices],
                    height, label=r["scenario"])
        ax.set_yticks([y + height * (len(names) - 1) / 2 for y in range(len(devices))], devices)
        ax.set_xlim(0, 1)
        ax.set_xlabel("utilisation (busy share of capacity)")
        ax.legend(fontsize="small")
        figures.append(("Utilisation per resource", fig))

    priorities = sorted({p for r in results for p in r["on_time"]["by_priority"]}, key=int, reverse=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.8 / max(1, len(priorities))
    for i, p in enumerate(priorities):
        shares = [(r["on_time"]["by_priority"].get(p) or {}).get("share") or 0.0 for r in results]
        ax.bar([x + i * width for x in range(len(names))], shares, width, label=f"priority {p}")
    ax.set_xticks([x + width * (len(priorities) - 1) / 2 for x in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("shipped by due time")
    ax.legend()
    figures.append(("On time, per priority", fig))

    out = []
    for title, fig in figures:
        for axis in fig.axes:
            axis.tick_params(axis="x", labelsize="small")
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        plt.close(fig)
        svg = buffer.getvalue()
        svg = svg[svg.index("<svg"):]
        out.append(f"<figure><figcaption>{html.escape(title)}</figcaption>{svg}</figure>")
    return "".join(out)
