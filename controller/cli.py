"""floorctl: sim | demo | run | bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from controller.site import Site, SiteError, load_site, parse_broker_url

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"


def default_site() -> Path:
    """config/demo.yaml of the checkout, else of the current directory."""
    for candidate in (Path("config/demo.yaml"), REPO_CONFIG / "demo.yaml"):
        if candidate.exists():
            return candidate
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
            raise UsageError(f"port {port} on {host} is in use (another floorctl?); choose one with --port") from None


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floorctl", description="Warehouse control system: orders across the floor.")
    parser.add_argument("--log-level", default=os.environ.get("FLOORCTL_LOG_LEVEL", "WARNING"),
                        help="DEBUG, INFO, WARNING (default) or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, site_default: bool = True) -> None:
        if site_default:
            p.add_argument("--site", type=Path, default=default_site(), help="site file (default: config/demo.yaml)")
        else:
            p.add_argument("--site", type=Path, required=True, help="site file describing the floor")
        p.add_argument("--broker", type=_broker, help="MQTT broker, mqtt://HOST:PORT (default: the site file's)")

    def storage(p: argparse.ArgumentParser, data_dir: str) -> None:
        p.add_argument("--data-dir", type=Path, default=Path(data_dir), help=f"SQLite and broker data (default {data_dir})")
        p.add_argument("--database-url", help="e.g. postgresql://user@host/db (default: FLOORCTL_DATABASE_URL, "
                                              "else SQLite in --data-dir)")

    sim = sub.add_parser("sim", help="run the simulated devices of a site against a broker")
    common(sim)
    sim.add_argument("--speed", type=_positive, default=1.0, help="time scale for every simulated delay")
    sim.add_argument("--seed", type=int, help="random seed (default: the site file's)")

    demo = sub.add_parser("demo", help="embedded broker + simulators + controller + API, fed with orders")
    demo.add_argument("--site", type=Path, default=default_site(), help="site file (default: config/demo.yaml)")
    demo.add_argument("--broker", type=_broker,
                      help="use this MQTT broker, mqtt://HOST:PORT (default: start an embedded one on a free port)")
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

    run = sub.add_parser("run", help="the controller and API against real devices")
    common(run, site_default=False)
    storage(run, "data")
    run.add_argument("--host", default="127.0.0.1", help="address the API listens on (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=8000, help="API and panel port (default 8000)")

    bench = sub.add_parser("bench", help="measure the controller against the bare protocol stacks")
    bench.add_argument("--quick", action="store_true", help="about a minute instead of the full run")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--database-url", help="PostgreSQL for the writer benchmark (default: FLOORCTL_DATABASE_URL, "
                                              "else the local server at 127.0.0.1:5432/test; skipped, with the "
                                              "reason, when it cannot be reached)")
    return parser


def load(args: argparse.Namespace) -> Site:
    site = load_site(args.site)
    if getattr(args, "broker", None):
        site = site.with_broker_url(args.broker)
    return site


async def cmd_sim(args: argparse.Namespace) -> int:
    site = load(args)
    from controller.bootstrap import freeze_startup_heap
    from simulators.floor import simulated_floor

    async with simulated_floor(site, broker_url=site.broker.url, speed=args.speed, seed=args.seed) as floor:
        freeze_startup_heap()
        mqtt = [d.id for d in (*site.pick_lights, *site.printers, *site.pack_stations)]
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
    opts = DemoOptions(site=site, site_path=args.site, port=args.port, keep_data=args.keep_data, broker_url=args.broker, orders=args.orders, rate=args.rate,
                       speed=args.speed, exit_when_done=args.exit_when_done, as_json=args.json,
                       data_dir=args.data_dir, database_url=args.database_url, seed=args.seed,
                       timeout_s=args.timeout)
    return await _cancel_on_signal(run_demo(opts))


async def cmd_run(args: argparse.Namespace) -> int:
    site = load(args)
    ensure_port_free(args.host, args.port)
    from controller.bootstrap import Controller, Settings, freeze_startup_heap

    controller = Controller(Settings(site=site, data_dir=args.data_dir, database_url=args.database_url,
                                     broker_url=site.broker.url, host=args.host, port=args.port))
    await controller.start()
    freeze_startup_heap()
    print(f"floorctl run: site {site.site}; API and panel on {controller.api_url}/", flush=True)
    try:
        await _until_signalled()
    finally:
        await controller.stop()
    return 0


async def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from controller.bench import run_bench
    except ImportError:
        raise UsageError("the benchmark is not part of this build yet") from None
    return await run_bench(args)


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


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "sim": cmd_sim, "demo": cmd_demo, "run": cmd_run, "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(COMMANDS[args.command](args))
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
