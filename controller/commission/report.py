"""The commissioning report: one JSON file for tools and one HTML page a site lead signs off."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.commission.walk import Check

STEPS = (("reach", "1. Reach"), ("devices", "2. Devices"), ("motion", "3. Motion"))


def summarise(checks: Sequence[Check], *, site: str, site_file: str, allow_motion: bool,
              started_at: float, finished_at: float) -> dict[str, Any]:
    counts = {status: sum(1 for c in checks if c.status == status) for status in ("pass", "fail", "skip")}
    devices: dict[str, dict[str, Any]] = {}
    for check in checks:
        entry = devices.setdefault(check.target, {"kind": check.kind, "result": "pass", "checks": 0,
                                                  "failed": [], "duration_s": 0.0})
        entry["checks"] += 1
        entry["duration_s"] = round(entry["duration_s"] + check.duration_s, 3)
        if check.status == "fail":
            entry["result"] = "fail"
            entry["failed"].append(f"{check.what}: {check.detail}")
        elif check.status == "skip" and entry["result"] == "pass":
            entry["result"] = "incomplete"
    return {
        "site": site,
        "site_file": site_file,
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "duration_s": round(finished_at - started_at, 3),
        "allow_motion": allow_motion,
        "result": "fail" if counts["fail"] else "pass" if not counts["skip"] else "pass, motion not checked",
        "counts": counts,
        "devices": devices,
        "checks": [{**c.as_dict(), "started_at": _iso(c.started_at), "duration_s": round(c.duration_s, 4)}
                   for c in checks],
    }


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "commission.json", out / "commission.html"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def render_html(r: dict[str, Any]) -> str:
    e = html.escape
    counts = r["counts"]
    verdict = "fail" if counts["fail"] else "pass" if not counts["skip"] else "skip"
    sections = []
    for step, title in STEPS:
        rows = [c for c in r["checks"] if c["step"] == step]
        if not rows:
            continue
        body = "".join(
            f"<tr class={c['status']}><td>{e(c['target'])}</td><td>{e(c['kind'])}</td><td>{e(c['what'])}</td>"
            f"<td class=st>{c['status']}</td><td>{e(c['detail'])}</td>"
            f"<td class=num>{_took(c['duration_s']) if c['status'] != 'skip' else ''}</td></tr>"
            for c in rows)
        sections.append(f"<h2>{title}</h2><table><thead><tr><th>target</th><th>kind</th><th>check</th>"
                        f"<th>result</th><th>detail</th><th>time</th></tr></thead><tbody>{body}</tbody></table>")
    device_rows = "".join(
        f"<tr class={'pass' if d['result'] == 'pass' else 'fail' if d['result'] == 'fail' else 'skip'}>"
        f"<td>{e(name)}</td><td>{e(d['kind'])}</td><td class=st>{e(d['result'])}</td>"
        f"<td class=num>{d['checks']}</td><td class=num>{_took(d['duration_s'])}</td>"
        f"<td>{e('; '.join(d['failed']))}</td></tr>"
        for name, d in r["devices"].items())
    motion = ("motion checks run (--allow-motion)" if r["allow_motion"]
              else "motion checks NOT run: lights, labels and totes need --allow-motion")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Commissioning {e(r['site'])}: {e(r['result'])}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}}
h1{{margin-bottom:.2em}} .meta{{color:#555}} table{{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}}
th,td{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f4f4f4}} .num{{text-align:right;white-space:nowrap}} .st{{font-weight:600}}
tr.pass .st{{color:#1a7f37}} tr.fail .st{{color:#c62828}} tr.skip .st{{color:#8a6d00}}
tr.fail{{background:#fff3f3}}
.verdict{{display:inline-block;padding:.3em .8em;border-radius:4px;color:#fff;font-weight:700}}
.verdict.pass{{background:#1a7f37}} .verdict.fail{{background:#c62828}} .verdict.skip{{background:#8a6d00}}
.sign{{border:1px solid #999;padding:1em;margin-top:2em}} .sign td{{border:none;height:2.2em}}
.sign td.line{{border-bottom:1px solid #333;width:35%}}
</style></head><body>
<h1>Site I/O check: {e(r['site'])}</h1>
<p class=meta>site file {e(r['site_file'])} &middot; started {e(r['started_at'])}
 &middot; took {_took(r['duration_s'])} &middot; {e(motion)}</p>
<p><span class="verdict {verdict}">{e(r['result'].upper())}</span>
 &nbsp; {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped</p>
<h2>Devices</h2><table><thead><tr><th>device</th><th>kind</th><th>result</th><th>checks</th><th>time</th>
<th>what failed</th></tr></thead><tbody>{device_rows}</tbody></table>
{''.join(sections)}
<div class=sign><strong>Sign-off</strong><table>
<tr><td>Site lead</td><td class=line></td><td>Date</td><td class=line></td></tr>
<tr><td>Integrator</td><td class=line></td><td>Signature</td><td class=line></td></tr>
</table></div>
</body></html>
"""


def _took(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
