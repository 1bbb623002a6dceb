"""What a conformance run says: one line per check for people, JUnit XML for CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from controller.conformance.checks import Result, Status

LABEL = {Status.PASS: "pass", Status.FAIL: "FAIL", Status.SKIP: "skipped"}


def device_heading(device: str, kind: str, protocol: str) -> str:
    return f"{device} ({kind}, {protocol})"


def line(result: Result, width: int = 34) -> str:
    """`  pass     state.birth    ONLINE, idle` / `  skipped  show.done  needs --allow-motion`."""
    detail = f"  {result.detail}" if result.detail else ""
    if result.status is Status.SKIP:
        detail = f"  ({result.detail})"
    return f"  {LABEL[result.status]:<8} {result.check:<{width}}{detail}"


def summary(results: Sequence[Result], seconds: float) -> str:
    counts = {status: sum(r.status is status for r in results) for status in Status}
    verdict = "conformant" if counts[Status.FAIL] == 0 else "NOT conformant"
    return (f"{verdict}: {counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, "
            f"{counts[Status.SKIP]} skipped in {seconds:.1f} s")


def junit(results: Sequence[Result], site: str, seconds: float) -> bytes:
    """One <testsuite> per device, one <testcase> per check (classname conformance.<kind>.<device>)."""
    root = ET.Element("testsuites", name=f"floorctl conformance {site}", tests=str(len(results)),
                      failures=str(sum(r.status is Status.FAIL for r in results)),
                      skipped=str(sum(r.status is Status.SKIP for r in results)), time=f"{seconds:.3f}")
    devices: dict[str, list[Result]] = {}
    for result in results:
        devices.setdefault(result.device, []).append(result)
    for device, own in devices.items():
        suite = ET.SubElement(root, "testsuite", name=device, tests=str(len(own)),
                              failures=str(sum(r.status is Status.FAIL for r in own)), errors="0",
                              skipped=str(sum(r.status is Status.SKIP for r in own)),
                              time=f"{sum(r.seconds for r in own):.3f}")
        for result in own:
            case = ET.SubElement(suite, "testcase", name=result.check,
                                 classname=f"conformance.{result.kind}.{device}",
                                 time=f"{result.seconds:.3f}")
            if result.status is Status.FAIL:
                ET.SubElement(case, "failure", message=result.detail,
                              type="nonconformance").text = result.detail
            elif result.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=result.detail)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: Path, results: Sequence[Result], site: str, seconds: float) -> None:
    path.write_bytes(junit(results, site, seconds))
