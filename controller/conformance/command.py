"""`floorctl conformance`: its arguments and what it prints (docs/conformance.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from controller.conformance.checks import Unreachable
from controller.conformance.report import summary, write_junit
from controller.conformance.run import Options, UnknownDevice, run_conformance
from controller.contract.mqtt import CONTRACT_VERSION

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", action="append", default=[], metavar="ID",
                        help="check only this device (repeatable; a PLC id checks the PLC and its devices)")
    parser.add_argument("--allow-motion", action="store_true",
                        help="also run the steps that light, print, pack, move totes or knock a device off "
                             "the broker for a moment")
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write the results as JUnit XML")
    parser.add_argument("--client-id", action="append", default=[], metavar="DEVICE=ID",
                        help="the MQTT client id a device connects with, for its last-will check "
                             "(default: the simulators' SITE-sim-DEVICE)")
    parser.add_argument("--quiet-s", type=float, default=1.0, metavar="SECONDS",
                        help="how long a device must stay silent to count as not answering (default 1)")


def _client_ids(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        device, sep, client_id = value.partition("=")
        if not sep or not device or not client_id:
            raise argparse.ArgumentTypeError(f"--client-id takes DEVICE=ID, got {value!r}")
        pairs[device] = client_id
    return pairs


async def cmd_conformance(args: argparse.Namespace, site: Any) -> int:
    """Exit 0 when every check passed (skips allowed), 1 when one failed, 3 when the broker or a PLC
    could not be reached; 2 (from the caller) for bad arguments or a bad site file."""
    try:
        options = Options(allow_motion=args.allow_motion, quiet_s=args.quiet_s,
                          client_ids=_client_ids(args.client_id))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None
    motion = "with motion" if args.allow_motion else "without motion (--allow-motion runs the rest)"
    print(f"floorctl conformance: site {site.site}, contract {CONTRACT_VERSION} (docs/devices.md), {motion}",
          flush=True)
    started = time.monotonic()
    try:
        results = await run_conformance(site, options, args.device,
                                        say=lambda text: print(text, flush=True))
    except UnknownDevice as exc:
        raise ValueError(str(exc)) from None
    except Unreachable as exc:
        print(f"floorctl conformance: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    seconds = time.monotonic() - started
    print(summary(results, seconds))
    if args.junit is not None:
        write_junit(args.junit, results, site.site, seconds)
        print(f"JUnit XML: {args.junit}")
    return 0 if all(r.status != "fail" for r in results) else EXIT_FAILED
