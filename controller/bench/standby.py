"""A hot-standby pair (docs/standby.md): how long a take-over takes, and what leading costs.

Two `floorctl run --standby` processes on one PostgreSQL database and a private broker (no devices:
the take-over is the lease's business). The leader is killed with SIGKILL, the standby takes over, a
fresh standby is started, and again, `kills` times. The take-over time is the database's own figure:
from the killed leader's last renewal to the new leader's acquisition (floorctl_leaders); the time
until the new leader's /healthz says so is reported beside it.

The cost of leading: the renewals' round trip and CPU (from the leader's /healthz), the one
`SELECT ... FOR SHARE` of the lease row every writer batch does first, and the command gate every
command passes (a monotonic clock read and a compare), against the command path's p50.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from controller.bench.context import BenchContext
from controller.bench.timing_writer import DEFAULT_POSTGRES
from controller.config_files import config_file
from controller.engine.dispatch import CommandGate
from controller.store.lease import LEASE, WriteFence, create_lease_tables
from simulators.broker import free_port


def _plain(url: str) -> str:
    return str(make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False))


def _site(ctx: BenchContext, broker_url: str, lease: dict[str, float]) -> Path:
    data = yaml.safe_load(config_file("demo.yaml").read_text(encoding="utf-8"))
    data["broker"]["url"] = broker_url
    for plc in data["plcs"]:
        plc["endpoint"] = f"opc.tcp://127.0.0.1:{free_port()}"  # no PLC: the lease is what is measured
    data["ha"] = lease
    path = ctx.scratch / "standby.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class _Instance:
    def __init__(self, name: str, site: Path, db_url: str, scratch: Path) -> None:
        self.name, self.port = name, free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "--log-level", "ERROR", "run", "--standby", "--instance",
             name, "--site", str(site), "--database-url", db_url, "--port", str(self.port),
             "--data-dir", str(scratch)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def role(self, client: httpx.AsyncClient) -> dict[str, Any]:
        with contextlib.suppress(httpx.TransportError, ValueError):
            health: dict[str, Any] = (await client.get(f"http://127.0.0.1:{self.port}/healthz")).json()
            return health
        return {}

    async def until(self, client: httpx.AsyncClient, role: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = await self.role(client)
            if health.get("role") == role:
                return health
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{self.name} did not become {role}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def run(ctx: BenchContext) -> dict[str, Any]:
    url = ctx.database_url or os.environ.get("FLOORCTL_DATABASE_URL") or DEFAULT_POSTGRES
    if not url.startswith("postgres"):
        return {"skipped": f"not a PostgreSQL URL: {make_url(url).drivername}"}
    tiny = ctx.profile.name == "tiny"
    kills = {"tiny": 1, "quick": 2}.get(ctx.profile.name, 5)
    # tiny: a short lease, for the smoke test; else the defaults
    lease = ({"lease_s": 1.0, "renew_every_s": 0.2, "fence_margin_s": 0.4} if tiny
             else {"lease_s": 3.0, "renew_every_s": 0.5, "fence_margin_s": 1.0})
    name = f"floorctl_bench_standby_{os.getpid()}"
    admin = create_engine(_plain(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - unreachable, refused: say why and carry on
        admin.dispose()
        return {"skipped": f"{make_url(url).render_as_string()}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}"}
    db_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        async with ctx.broker("standby") as (broker_url, _pid):
            result = await _measure(ctx, db_url, _site(ctx, broker_url, lease), kills)
        result["writer_fence_ms"] = await asyncio.to_thread(_fence_cost, db_url, 20 if tiny else 200)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    result["gate_check_ns"] = _gate_cost()
    result["lease"] = lease
    return result


async def _measure(ctx: BenchContext, db_url: str, site: Path, kills: int) -> dict[str, Any]:
    gaps: list[float] = []
    seen: list[float] = []
    renewals: dict[str, Any] = {}
    started: list[_Instance] = []
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            leader = _Instance("i0", site, db_url, ctx.scratch)
            started.append(leader)
            await leader.until(client, "leader")
            for n in range(1, kills + 1):
                standby = _Instance(f"i{n}", site, db_url, ctx.scratch)
                started.append(standby)
                await standby.until(client, "standby")
                await asyncio.sleep(1.0 if kills > 1 else 0.5)  # a few renewals: the lease's steady state
                health = await leader.role(client)
                renewals = health.get("ha", {}) or renewals  # the leader's, after a second of renewals
                ctx.progress(f"kill {n}/{kills}")
                leader.proc.send_signal(signal.SIGKILL)
                leader.proc.wait(10)
                killed = time.monotonic()
                health = await standby.until(client, "leader", timeout=30)
                seen.append(time.monotonic() - killed)
                gap = health.get("ha", {}).get("takeover_gap_s")
                if gap is not None:
                    gaps.append(gap)
                leader = standby
        finally:
            for instance in started:
                instance.stop()
    count = renewals.get("renewals") or 0
    cpu = renewals.get("renewal_cpu_s") or 0.0
    every = renewals.get("renew_every_s") or 0.5
    return {
        "kills": kills,
        "takeover_p50_s": round(statistics.median(gaps), 2) if gaps else None,
        "takeover_max_s": round(max(gaps), 2) if gaps else None,
        "takeover_s": [round(g, 2) for g in gaps],
        "seen_on_healthz_p50_s": round(statistics.median(seen), 2) if seen else None,
        "renewal_p50_ms": round((renewals.get("renewal_p50_s") or 0) * 1000, 2),
        "renewal_max_ms": round((renewals.get("renewal_max_s") or 0) * 1000, 2),
        "renewal_cpu_ms_each": round(cpu / count * 1000, 3) if count else None,
        "renewal_cpu_percent_of_a_core": round(cpu / count / every * 100, 3) if count else None,
    }


def _fence_cost(db_url: str, n: int = 200) -> float:
    """Milliseconds one writer batch spends on the epoch check (a transaction with and without it)."""
    engine = create_engine(_plain(db_url))
    fence = WriteFence("bench", epoch=None)
    try:
        with engine.begin() as conn:
            create_lease_tables(conn)
            conn.execute(text("CREATE TABLE IF NOT EXISTS bench_fence_probe (n integer)"))
            fence.epoch = conn.execute(
                text(f"SELECT epoch FROM floorctl_lease WHERE name = '{LEASE}'")).scalar_one()

        def batches(check: bool) -> float:
            started = time.perf_counter()
            for _ in range(n):
                with engine.begin() as conn:
                    if check:
                        fence.check(conn)
                    conn.execute(text("INSERT INTO bench_fence_probe VALUES (1)"))  # a batch commits a write
            return (time.perf_counter() - started) / n * 1000

        without, with_check = batches(False), batches(True)
        return round(max(0.0, with_check - without), 3)
    finally:
        engine.dispose()


def _gate_cost(n: int = 200_000) -> float:
    gate = CommandGate(open_=False)
    gate.open_until(time.monotonic() + 3600)
    started = time.perf_counter()
    for _ in range(n):
        gate.is_open()
    return round((time.perf_counter() - started) / n * 1e9, 1)
