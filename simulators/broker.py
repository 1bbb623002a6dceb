"""A private MQTT broker for tests and `floorctl demo`.

Mosquitto with the tuned config/mosquitto.conf when the binary is installed; otherwise amqtt (pure
Python, MQTT 3.1.1 only, no persistence across restarts). The broker runs as a child process in both
cases, so stopping, killing and restarting it on the same port and data directory behaves like the
real thing.

The broker ends with the process that started it, however that process ends (a `kill -9` too): on
Linux the child asks the kernel for a SIGTERM when its parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal, Self

from controller.config_files import config_file

log = logging.getLogger(__name__)

BrokerKind = Literal["mosquitto", "amqtt"]
READY_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent SIGTERM when the process (strictly: the thread) that
    started it dies, so a killed parent leaves no orphan. None where the kernel has no such thing.

    Everything is looked up before the fork; the child only makes one libc call and two system calls
    (a preexec_fn must not take locks that another thread of the parent may have held at the fork).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will signal us
            os.kill(os.getpid(), sigterm)

    return in_child


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available_kind() -> BrokerKind:
    return "mosquitto" if shutil.which("mosquitto") else "amqtt"


class BrokerError(Exception):
    """The broker process did not come up."""


class EmbeddedBroker:
    """One broker process on a fixed port and data directory that can be stopped and started again.

    `kind=None` picks Mosquitto when installed. The URL of an amqtt broker asks clients for MQTT
    3.1.1 (`?protocol=3.1.1`), which adapters.mqtt understands.
    """

    def __init__(self, port: int | None = None, data_dir: Path | None = None,
                 kind: BrokerKind | None = None, *, secure: Path | None = None) -> None:
        """`secure`: a directory written by `floorctl credentials`; the broker then runs
        config/mosquitto-secure.conf on it (accounts, ACL, TLS with client certificates; Mosquitto
        only) and its URL is `mqtts://`."""
        self.port = port or free_port()
        self.secure = secure
        if secure is not None and kind is None and available_kind() != "mosquitto":
            raise BrokerError("the secure broker configuration needs Mosquitto, which is not installed")
        self.kind: BrokerKind = kind or available_kind()
        if kind is None and self.kind == "amqtt":
            log.warning("mosquitto is not installed: falling back to the amqtt broker (pure Python, "
                        "MQTT 3.1.1, slower, no persistence across restarts)")
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="floorctl-broker-")
            data_dir = Path(self._own_dir.name)
        self.data_dir = data_dir
        self._process: asyncio.subprocess.Process | None = None
        self._log_file: Path = self.data_dir / f"{self.kind}.log"

    @property
    def url(self) -> str:
        suffix = "?protocol=3.1.1" if self.kind == "amqtt" else ""
        scheme = "mqtts" if self.secure is not None else "mqtt"
        return f"{scheme}://127.0.0.1:{self.port}{suffix}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "mosquitto":
            argv = ["mosquitto", "-c", str(self._write_mosquitto_conf())]
        else:
            argv = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(self._write_amqtt_conf())]
        with self._log_file.open("ab") as out:
            self._process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                preexec_fn=die_with_parent())
        await self._wait_ready()
        log.debug("%s broker listening on %s (pid %s)", self.kind, self.url, self._process.pid)

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM lets Mosquitto save its persistence file; `kill=True` is a crash."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self, *, kill: bool = False) -> None:
        await self.stop(kill=kill)
        await self.start()

    async def close(self) -> None:
        await self.stop()
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _write_mosquitto_conf(self) -> Path:
        conf = self.data_dir / "mosquitto.conf"
        extra = [f"persistence_location {self.data_dir}/"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root Mosquitto switches to the `mosquitto` user, which cannot write our data dir.
            extra.append("user root")
        if self.secure is not None:
            from controller.security.credentials import broker_conf

            text = broker_conf(self.secure, listener=f"{self.port} 127.0.0.1", extra=extra)
        else:
            text = "\n".join([config_file("mosquitto.conf").read_text(encoding="utf-8"), "",
                              f"listener {self.port} 127.0.0.1", *extra]) + "\n"
        conf.write_text(text, encoding="utf-8")
        return conf

    def _write_amqtt_conf(self) -> Path:
        if self.secure is not None:
            raise BrokerError("the secure broker configuration needs Mosquitto, not amqtt")
        conf = self.data_dir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n",
            encoding="utf-8")
        return conf

    async def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while True:
            if self._process.returncode is not None:
                raise BrokerError(f"{self.kind} exited with code {self._process.returncode} "
                                  f"on port {self.port}:\n{self._tail_log()}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            if asyncio.get_running_loop().time() > deadline:
                await self.stop(kill=True)
                raise BrokerError(f"{self.kind} did not listen on port {self.port} within "
                                  f"{READY_TIMEOUT_S:.0f} s:\n{self._tail_log()}")
            await asyncio.sleep(0.01)

    def _tail_log(self) -> str:
        try:
            return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no broker log)"


@contextlib.asynccontextmanager
async def embedded_broker(port: int | None = None, data_dir: Path | None = None,
                          kind: BrokerKind | None = None) -> AsyncIterator[str]:
    """`async with embedded_broker() as url:` a private broker for the duration of the block."""
    async with EmbeddedBroker(port, data_dir, kind) as broker:
        yield broker.url
