"""The machine a run was measured on: figures mean little without it."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

import psutil

LIBRARIES = ("asyncua", "paho-mqtt", "sqlalchemy", "sqlmodel", "aiosqlite", "psycopg", "asyncpg", "fastapi")


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else None
    return None


def describe() -> dict[str, Any]:
    """Blocking (reads /proc, runs `mosquitto -h`): call it off the event loop."""
    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": versions,
        "mosquitto": _version(["mosquitto", "-h"]),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
