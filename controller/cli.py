"""floorctl: sim | demo | run | bench | credentials | users | tokens | whatif | report."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from controller import loops
from controller.config_files import config_file
from controller.site import Site, SiteError, load_site, parse_broker_url


def default_site() -> Path:
    """config/demo.yaml of the current directory, else of the checkout, else the installed copy."""
    if Path("config/demo.yaml").exists():
        return Path("config/demo.yaml")
    try:
        return config_file("demo.yaml")
    except FileNotFoundError:
        return Path("config/demo.yaml")


class UsageError(Exception):
    pass


def _broker(value: str) -> str:
    try:
        parse_broker_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {port}")
    return port


def ensure_port_free(host: str, port: int) -> None:
    """Fail before starting anything when the API's port is taken (another demo, most often)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server will: a port left in TIME_WAIT by a killed predecessor is free to take.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise UsageError(f"port {port} on {host} is in use (another floorctl?); "
                             "choose one with --port") from None


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _row_count(value: str) -> int:
    """A whole number of rows, with an optional k or M: 5000000, 5M, 500k."""
    scale = {"k": 1_000, "m": 1_000_000}.get(value[-1:].lower(), 1)
    try:
        rows = int(float(value[:-1] if scale > 1 else value) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of rows: {value!r} (e.g. 50M, 500k)") from None
    if rows < 10_000:
        raise argparse.ArgumentTypeError(f"at least 10k rows, not {value!r}")
    return rows


BENCH_STEPS = ("mqtt", "opcua", "divert", "surge", "writer", "memory", "standby", "whatif")


def _bench_steps(value: str) -> tuple[str, ...]:
    """Steps of `floorctl bench`, comma-separated: divert,surge."""
    steps = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in steps if s not in BENCH_STEPS]
    if unknown or not steps:
        named = ", ".join(unknown) if unknown else repr(value)
        raise argparse.ArgumentTypeError(f"unknown step {named}; the steps are " + ", ".join(BENCH_STEPS))
    return steps


def _moment(value: str) -> tuple[str, float]:
    """("at", epoch seconds) for ISO 8601 or epoch seconds; ("ago", seconds) for 90m, 2h, 1d, 30s."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = value.strip()
    if text[-1:] in units:
        try:
            return "ago", float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    from controller.api.instants import parse_instant

    try:
        return "at", parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or a time ago such as 90m, 2h or 1d") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floorctl",
                                     description="Warehouse control system: orders across the floor.")
    parser.add_argument("--log-level", default=os.environ.get("FLOORCTL_LOG_LEVEL", "WARNING"),
                        help="DEBUG, INFO, WARNING (default) or ERROR")
    parser.add_argument("--loop", choices=loops.CHOICES, default=None,
                        help="event loop: asyncio (the default), uvloop, or auto (uvloop where installed; "
                             "also FLOORCTL_LOOP)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, site_default: bool = True) -> None:
        if site_default:
            p.add_argument("--site", type=Path, default=default_site(),
                           help="site file (default: config/demo.yaml)")
        else:
            p.add_argument("--site", type=Path, required=True, help="site file describing the floor")
        p.add_argument("--broker", type=_broker,
                       help="MQTT broker, mqtt://HOST:PORT (default: the site file's)")

    def storage(p: argparse.ArgumentParser, data_dir: str) -> None:
        p.add_argument("--data-dir", type=Path, default=Path(data_dir),
                       help=f"SQLite and broker data (default {data_dir})")
        p.add_argument("--database-url",
                       help="e.g. postgresql://user@host/db (default: FLOORCTL_DATABASE_URL, "
                            "else SQLite in --data-dir)")

    sim = sub.add_parser("sim", help="run the simulated devices of a site against a broker")
    common(sim)
    sim.add_argument("--speed", type=_positive, default=1.0, help="time scale for every simulated delay")
    sim.add_argument("--seed", type=int, help="random seed (default: the site file's)")
    sim.add_argument("--faults", type=Path, metavar="FILE",
                     help="play this fault timeline (docs/faults.md) once the simulators are up")

    demo = sub.add_parser("demo", help="embedded broker + simulators + controller + API, fed with orders")
    demo.add_argument("--site", type=Path, default=default_site(),
                      help="site file (default: config/demo.yaml)")
    demo.add_argument("--broker", type=_broker,
                      help="use this MQTT broker, mqtt://HOST:PORT "
                           "(default: start an embedded one on a free port)")
    storage(demo, "data/demo")
    demo.add_argument("--keep-data", action="store_true",
                      help="resume the orders left in --data-dir by an earlier demo (default: start afresh)")
    demo.add_argument("--port", type=_port, default=8000, help="API and panel port (default 8000)")
    demo.add_argument("--orders", type=int, help="submit this many orders (default: a stream until Ctrl-C)")
    demo.add_argument("--rate", type=_positive, default=10.0,
                      help="orders offered per second (default 10, within the demo floor's packing capacity)")
    demo.add_argument("--speed", type=_positive, default=50.0, help="simulators' time scale (default 50)")
    demo.add_argument("--exit-when-done", action="store_true", help="exit once every order is finished")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.add_argument("--timeout", type=_positive, default=900.0, help="give up after this many seconds")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the order generator")
    demo.add_argument("--faults", type=Path, metavar="FILE",
                      help="play this fault timeline (docs/faults.md) once the floor is up")
    demo.add_argument("--no-auth", action="store_true",
                      help="let every API request in without logging in (benchmarks on this machine)")

    run = sub.add_parser("run", help="the controller and API against real devices")
    common(run, site_default=False)
    storage(run, "data")
    run.add_argument("--host", default="127.0.0.1", help="address the API listens on (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=8000, help="API and panel port (default 8000)")
    run.add_argument("--standby", action="store_true",
                     help="one of a hot-standby pair on PostgreSQL: lead when elected, else follow the "
                          "floor and serve reads (docs/standby.md; also the site file's ha.enabled)")
    run.add_argument("--instance", help="its name in the pair (default: ha.instance, else the host name)")
    run.add_argument("--no-auth", action="store_true",
                     help="no login (benchmarks): refused unless --host is a loopback address")

    creds = sub.add_parser("credentials",
                           help="write a site's broker accounts, ACL, CA and TLS certificates")
    creds.add_argument("--site", type=Path, required=True, help="site file describing the floor")
    creds.add_argument("--out", type=Path, required=True,
                       help="directory for the files (made if missing; a CA already in it is reused)")
    creds.add_argument("--broker-host", action="append", default=[], metavar="HOST",
                       help="a name or address clients reach the broker at, for its certificate "
                            "(repeatable; the site's broker host, localhost and 127.0.0.1 always)")
    creds.add_argument("--rotate", action="store_true",
                       help="new passwords and certificates for every account (the CA stays)")

    from controller.security.auth_cli import add_arguments as account_commands

    account_commands(sub, storage)

    conformance = sub.add_parser("conformance", help="check devices against the wire contract "
                                 "(docs/conformance.md)")
    common(conformance)
    from controller.conformance.command import add_arguments as conformance_arguments

    conformance_arguments(conformance)

    commission = sub.add_parser("commission", help="the site's I/O check, with a report to sign off "
                                "(docs/commissioning.md)")
    common(commission, site_default=False)
    storage(commission, "data")
    commission.add_argument("--allow-motion", action="store_true",
                            help="also light each pick light, print a test label on each printer, run "
                                 "totes on every conveyor and sorter lane")
    commission.add_argument("--light-seconds", type=float, default=1.0, metavar="S",
                            help="how long each test light stays on, one light after the other "
                                 "(default 1; 0 to 60)")
    commission.add_argument("--out", type=Path, default=Path("commission-report"),
                            help="where commission.json and commission.html go (default commission-report/)")

    bench = sub.add_parser("bench", help="measure the controller against the bare protocol stacks")
    bench.add_argument("--quick", action="store_true", help="about a minute instead of the full run")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--database-url",
                       help="PostgreSQL for the writer benchmark (default: FLOORCTL_DATABASE_URL, "
                            "else the local server at 127.0.0.1:5432/test; skipped, with the "
                            "reason, when it cannot be reached)")
    bench.add_argument("--data-scale", type=_row_count, nargs="?", const=50_000_000, metavar="ROWS",
                       help="only the data-at-scale step: ROWS timing rows on PostgreSQL (default 50M), a "
                            "tenth on SQLite, a tenth as many orders; the read requests' p95 and the writer")
    bench.add_argument("--only", type=_bench_steps, metavar="STEP[,STEP]",
                       help="only these steps of the run, in its order: " + ", ".join(BENCH_STEPS))
    bench.add_argument("--growth", action="store_true",
                       help="only how cost grows: the controller's CPU per order and RSS on floors of 18, "
                            "258 and 1,000 simulated devices with 1k, 10k and 20k active orders (about 5 "
                            "minutes; not part of the full run; with --quick, shorter windows)")
    whatif = sub.add_parser("whatif", help="run what-if scenarios on the simulated floor and compare them")
    whatif.add_argument("scenarios", nargs="+", type=Path, metavar="SCENARIO",
                        help="scenario files (docs/whatif.md), e.g. config/whatif/*.yaml")
    whatif.add_argument("--out", type=Path, default=Path("whatif-report"),
                        help="where the results and the comparison go (default whatif-report/)")
    whatif.add_argument("--jobs", type=int, help="scenarios run at once (default: one per core)")
    whatif.add_argument("--seed", type=int, help="the same seed for every scenario (default: each file's)")
    whatif.add_argument("--speed", type=_positive,
                        help="floor seconds per wall second (default: the file's, else chosen from its load)")

    report = sub.add_parser("report", help="what limited the floor over a window: HTML with charts, and JSON")
    report.add_argument("--database-url", required=True,
                        help="the floorctl database, e.g. sqlite:///data/floorctl.db or postgresql://user@host/db")
    report.add_argument("--site", type=Path, required=True, help="the site file of the floor it recorded")
    report.add_argument("--since", type=_moment, required=True,
                        help="window start: ISO 8601, epoch seconds, or a time before --until (90m, 2h, 1d)")
    report.add_argument("--until", type=_moment,
                        help="window end: ISO 8601, epoch seconds, or a time before now (default: now)")
    report.add_argument("--time-scale", type=_positive, default=1.0,
                        help="floor seconds per wall second the floor ran at (a demo's or what-if's --speed; "
                             "default 1: a real floor)")
    report.add_argument("--out", type=Path, required=True, help="directory for report.html and report.json")
    return parser


def load(args: argparse.Namespace) -> Site:
    site = load_site(args.site)
    if getattr(args, "broker", None):
        site = site.with_broker_url(args.broker)
    return site


def load_faults(path: Path | None, site: Site, *, broker_restart: str | None = None) -> Any:
    """The fault timeline of --faults, checked against the site, or None; `broker_restart` is why a
    broker restart cannot be played here (None: it can)."""
    if path is None:
        return None
    from simulators.faults import TimelineError, load_timeline

    try:
        timeline = load_timeline(path)
        timeline.check(site)
    except TimelineError as exc:
        raise UsageError(str(exc)) from None
    if timeline.needs_broker and broker_restart:
        raise UsageError(f"{path}: broker_restart: {broker_restart}")
    return timeline


async def cmd_sim(args: argparse.Namespace) -> int:
    site = load(args)
    timeline = load_faults(args.faults, site, broker_restart="floorctl sim runs against your broker, "
                           "which it cannot restart (floorctl demo can)")
    from controller.bootstrap import freeze_startup_heap
    from simulators.faults.player import playing
    from simulators.site_devices import simulated_floor

    async with simulated_floor(site, broker_url=site.broker.url, speed=args.speed, seed=args.seed) as floor, \
            playing(timeline, floor, args.speed):
        freeze_startup_heap()
        mqtt = [*(d.id for d in site.pick_lights), *(d.id for d in site.printers),
                *(d.id for d in site.pack_stations)]
        print(f"floorctl sim: {site.site} at {args.speed:g}x speed\n"
              f"  MQTT {site.broker.url}: {len(mqtt)} devices under {site.broker.topic_root}/\n"
              + "".join(f"  OPC UA {pid}: {url}\n" for pid, url in floor.endpoints.items())
              + "Ctrl-C to stop.", flush=True)
        await _until_signalled()
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    site = load(args)
    from controller.demo import DemoOptions, run_demo

    if args.orders is not None and args.orders <= 0:
        raise UsageError("--orders must be > 0")
    if args.exit_when_done and args.orders is None:
        raise UsageError("--exit-when-done needs --orders N")
    ensure_port_free("127.0.0.1", args.port)
    faults = load_faults(args.faults, site, broker_restart="--broker is your broker, which the demo cannot "
                         "restart" if args.broker else None)
    opts = DemoOptions(site=site, site_path=args.site, port=args.port, keep_data=args.keep_data,
                       broker_url=args.broker, orders=args.orders, rate=args.rate,
                       speed=args.speed, exit_when_done=args.exit_when_done, as_json=args.json,
                       data_dir=args.data_dir, database_url=args.database_url, seed=args.seed,
                       timeout_s=args.timeout, no_auth=args.no_auth, faults=faults)
    return await _cancel_on_signal(run_demo(opts))


async def cmd_run(args: argparse.Namespace) -> int:
    site = load(args)
    if args.no_auth and not _loopback(args.host):
        raise UsageError(f"--no-auth lets anyone who reaches the API do anything: refused on {args.host}; "
                         "only with --host 127.0.0.1 (or ::1)")
    ensure_port_free(args.host, args.port)
    from controller.bootstrap import Controller, Settings, StandbyError, freeze_startup_heap

    settings = Settings(site=site, data_dir=args.data_dir, database_url=args.database_url,
                        broker_url=site.broker.url, host=args.host, port=args.port,
                        standby=args.standby, instance=args.instance,
                        auth=not args.no_auth)
    stop = _signalled()
    while True:  # one of a hot-standby pair that steps down starts again, afresh, as a standby
        try:
            controller = Controller(settings)
        except StandbyError as exc:
            raise UsageError(str(exc)) from None
        await controller.start()
        freeze_startup_heap()
        pair = f" as {controller.instance} of a hot-standby pair" if controller.leadership else ""
        print(f"floorctl run: site {site.site}{pair}; API and panel on {controller.api_url}/", flush=True)
        stepped_down = asyncio.ensure_future(controller.stepped_down())
        signalled = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([stepped_down, signalled], return_when=asyncio.FIRST_COMPLETED)
        finally:
            signalled.cancel()
            if not stepped_down.done():
                stepped_down.cancel()
            await controller.stop()
        if stop.is_set():
            return 0
        print(f"floorctl run: {controller.instance} stepped down ({stepped_down.result()}); "
              "starting again as a standby", flush=True)


def _signalled() -> asyncio.Event:
    """Set by Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def cmd_credentials(args: argparse.Namespace) -> int:
    site = load_site(args.site)
    from controller.security.credentials import write_credentials
    from controller.security.mqtt_accounts import AccountError
    from controller.security.pki import PkiError

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    try:
        report = write_credentials(site, args.out, broker_hosts=args.broker_host, rotate=args.rotate)
    except (AccountError, PkiError) as exc:
        raise UsageError(str(exc)) from None
    print(f"floorctl credentials: site {site.site} in {args.out}/")
    accounts = {args.out / "secrets", args.out / "clients"}
    for label, rows in (("wrote", report.written), ("kept", report.kept)):
        for path, what in rows:
            if path.parent not in accounts:
                print(f"  {label:5} {path}  ({what})")
        per_account = [path for path, _ in rows if path.parent in accounts]
        if per_account:
            print(f"  {label:5} {len(per_account)} account files: {args.out}/secrets/NAME.password "
                  f"(passwords), {args.out}/clients/NAME.crt and .key (client certificates)")
    for path in report.removed:
        print(f"  removed {path}  (an account the site no longer has)")
    from controller.security.credentials import site_file_gaps

    gaps = site_file_gaps(site, args.out)
    out = args.out
    print("\nNext steps (docs/security.md, MQTT):\n"
          f"  1. Broker: copy {out}/ca.crt, broker.crt, broker.key, passwd and acl to\n"
          "     /etc/mosquitto/floorctl/ (readable by the mosquitto user only) and start Mosquitto with\n"
          f"     config/mosquitto-secure.conf; or try it here: mosquitto -c {out}/mosquitto.conf\n"
          "  2. Devices: each logs in as its device id with secrets/ID.password, over TLS with\n"
          "     clients/ID.crt and ID.key, trusting ca.crt.\n"
          f"  3. Controller: floorctl run --site {args.site} (its broker section names\n"
          f"     secrets/{report.controller}.password and clients/{report.controller}.crt, .key).\n"
          "  4. PLCs (docs/security.md, OPC UA): each gets opcua/PLC/PLC.der and PLC.key.der as its\n"
          "     certificate, trusts opcua/PLC/trust/ (the controller's certificate) only, and takes the\n"
          "     site file's user name with opcua/PLC/password; no anonymous sessions.")
    if args.rotate:
        print("  After a rotation: SIGHUP the broker (new passwd and acl), restart it (new certificate),\n"
              "  then restart the controller and give the devices their new secrets.")
    if gaps:
        print(f"\nThe site file {args.site} does not point at these files yet:")
        for gap in gaps:
            print(f"  {gap}")
    print(f"\nKeep {args.out}/ secret: ca.key signs certificates every peer trusts.")
    return 0


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def cmd_users(args: argparse.Namespace) -> int:
    from controller.security.auth_cli import AccountsUsageError
    from controller.security.auth_cli import cmd_users as users

    try:
        return await users(args)
    except AccountsUsageError as exc:
        raise UsageError(str(exc)) from None


async def cmd_tokens(args: argparse.Namespace) -> int:
    from controller.security.auth_cli import AccountsUsageError
    from controller.security.auth_cli import cmd_tokens as tokens

    try:
        return await tokens(args)
    except AccountsUsageError as exc:
        raise UsageError(str(exc)) from None


async def cmd_conformance(args: argparse.Namespace) -> int:
    from controller.conformance.command import cmd_conformance as conformance

    try:
        return await conformance(args, load(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from controller.bench import run_bench
    except ImportError:
        raise UsageError("the benchmark is not part of this build yet") from None
    return await run_bench(args)


async def cmd_whatif(args: argparse.Namespace) -> int:
    from controller.whatif.compare import render_text, run_many, write_comparison

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    print(f"floorctl whatif: {len(args.scenarios)} scenario(s), results in {args.out}/", file=sys.stderr)
    jobs = await run_many(args.scenarios, args.out, jobs=args.jobs, seed=args.seed, speed=args.speed)
    json_path, html_path = await asyncio.to_thread(write_comparison, jobs, args.out)
    done = [job.result for job in jobs if job.result is not None]
    if done:
        print(render_text(done))
    for job in jobs:
        if job.error is not None:
            print(f"floorctl whatif: {job.path}: {job.error}", file=sys.stderr)
    print(f"floorctl whatif: comparison in {html_path} and {json_path}", file=sys.stderr)
    return 0 if len(done) == len(jobs) else 1


async def cmd_report(args: argparse.Namespace) -> int:
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from controller.report import write_report
    from controller.store.db import make_engine, normalise_url

    site = load_site(args.site)
    now = time.time()
    kind, value = args.until or ("ago", 0.0)
    until = value if kind == "at" else now - value
    kind, value = args.since
    since = value if kind == "at" else until - value
    if since >= until:
        raise UsageError("--since must be before --until")
    url = normalise_url(args.database_url)
    if url.startswith("sqlite") and ":memory:" not in url:
        path = Path(url.split(":///", 1)[-1])
        if not path.is_file():
            raise UsageError(f"no database at {path}")
    db = make_engine(url)
    interactive = sys.stderr.isatty()

    def progress(message: str) -> None:
        if interactive:
            print(f"\rfloorctl report: {message}\x1b[K", end="", file=sys.stderr, flush=True)
        else:
            print(f"floorctl report: {message}", file=sys.stderr, flush=True)

    try:
        written = await write_report(db, site, since, until, args.out, time_scale=args.time_scale,
                                     progress=progress)
    except SQLAlchemyError as exc:
        why = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise UsageError(f"cannot read the database: {why}") from None
    finally:
        await db.dispose()
    if interactive:
        print(file=sys.stderr)
    print(written.insight.verdict)
    print(f"floorctl report: {written.html} and {written.json}", file=sys.stderr)
    return 0


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _cancel_on_signal(work: Awaitable[int]) -> int:
    """Run `work`; Ctrl-C or SIGTERM cancels it so that it shuts down cleanly and still reports."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def cmd_commission(args: argparse.Namespace) -> int:
    site = load(args)
    import time

    from controller.commission import Walk, summarise, write_report
    from controller.store.db import database_url

    motion = "with motion" if args.allow_motion else "no motion (--allow-motion for lights, labels, totes)"
    print(f"floorctl commission: site {site.site} ({args.site}), {motion}", file=sys.stderr, flush=True)
    started = time.time()
    if not 0 <= args.light_seconds <= 60:
        print(f"floorctl commission: --light-seconds must be 0 to 60, not {args.light_seconds:g}",
              file=sys.stderr)
        return 2
    walk = Walk(site, database_url(args.data_dir, args.database_url), allow_motion=args.allow_motion,
                light_s=args.light_seconds,
                progress=lambda check: print(check.line(), file=sys.stderr, flush=True))
    checks = await walk.run()
    report = summarise(checks, site=site.site, site_file=str(args.site), allow_motion=args.allow_motion,
                       started_at=started, finished_at=time.time())
    json_path, html_path = write_report(report, args.out)
    counts = report["counts"]
    print(f"floorctl commission: {report['result'].upper()}: {counts['pass']} passed, "
          f"{counts['fail']} failed, {counts['skip']} skipped in {report['duration_s']:.1f} s; "
          f"report {html_path} and {json_path}",
          file=sys.stderr)
    return 1 if counts["fail"] else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "sim": cmd_sim, "demo": cmd_demo, "run": cmd_run, "bench": cmd_bench, "credentials": cmd_credentials,
    "conformance": cmd_conformance,
    "users": cmd_users, "commission": cmd_commission, "tokens": cmd_tokens, "whatif": cmd_whatif,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return loops.run(COMMANDS[args.command](args), args.loop)
    except loops.LoopUnavailable as exc:
        print(f"floorctl: {exc}", file=sys.stderr)
        return 2
    except SiteError as exc:
        print(f"floorctl: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"floorctl {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"floorctl {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
