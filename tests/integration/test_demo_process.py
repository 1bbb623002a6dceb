"""`floorctl demo` as a process: Ctrl-C prints a summary of every order the controller holds, and a
`kill -9` takes the embedded broker along (no orphaned Mosquitto left listening)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from simulators.broker import available_kind, free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie that its new parent has not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def broker_children(pid: int) -> list[psutil.Process]:
    def is_broker(p: psutil.Process) -> bool:
        try:
            line = " ".join(p.cmdline())
        except psutil.Error:
            return False
        return "mosquitto" in line or "amqtt" in line
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if is_broker(p)]
    except psutil.NoSuchProcess:
        return []


class Demo:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log = tmp_path / "demo.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "demo", "--port", str(self.port),
             "--data-dir", str(tmp_path / "data"), *args],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self) -> None:
        wait_for(lambda: "database" in self.output or self.proc.poll() is not None, 60, "the demo's banner")
        assert self.proc.poll() is None, self.output

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._out.close()


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.close()


def test_kill_9_of_the_demo_takes_its_embedded_broker_along(tmp_path: Path, demo_factory: list[Demo]) -> None:
    demo = Demo(tmp_path, "--speed", "50")
    demo_factory.append(demo)
    demo.wait_started()
    brokers = broker_children(demo.proc.pid)
    assert len(brokers) == 1, demo.output
    broker = brokers[0].pid

    os.kill(demo.proc.pid, signal.SIGKILL)
    demo.proc.wait(10)
    wait_for(lambda: gone(broker), 5, f"the broker (pid {broker}) ends with the demo")


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_a_broker_ends_with_the_process_that_started_it(tmp_path: Path, kind: str) -> None:
    if kind == "mosquitto" and available_kind() != "mosquitto":
        pytest.skip("mosquitto is not installed")
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from simulators.broker import EmbeddedBroker

        async def main():
            async with EmbeddedBroker(data_dir=Path(sys.argv[1]), kind="{kind}"):
                print("up", flush=True)
                await asyncio.sleep(600)

        asyncio.run(main())
        """), str(tmp_path / "broker")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "up\n"
        brokers = broker_children(owner.pid)
        assert len(brokers) == 1
        owner.kill()
        owner.wait(10)
        wait_for(lambda: gone(brokers[0].pid), 5, f"the {kind} broker ends with its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


def test_ctrl_c_summary_counts_every_order_the_controller_holds(tmp_path: Path,
                                                               demo_factory: list[Demo]) -> None:
    demo = Demo(tmp_path, "--orders", "20", "--rate", "20", "--speed", "50")
    demo_factory.append(demo)
    demo.wait_started()
    # As a newcomer would: log in with the password the banner printed, then post.
    password = demo.output.split("log in         admin / ", 1)[1].split()[0]
    with httpx.Client(base_url=f"http://127.0.0.1:{demo.port}", timeout=10) as client:
        me = client.post("/api/auth/login", json={"name": "admin", "password": password})
        assert me.status_code == 200, me.text
        posted = client.post("/api/orders", headers={"X-CSRF-Token": me.json()["csrf"]}, json={
            "external_id": "WMS-CTRL-C", "lines": [{"sku": "SKU-0001", "qty": 1}], "carrier": "DHL"})
    assert posted.status_code in (200, 201), posted.text
    wait_for(lambda: "submitted 20/20" in demo.output or "in flight" in demo.output, 30, "orders fed")
    brokers = broker_children(demo.proc.pid)

    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(60) == 0, demo.output
    out = demo.output
    assert "Traceback" not in out
    total = int(out.split("Orders     ", 1)[1].split(" held by the controller", 1)[0])
    assert "posted through the API 1" in out, out
    submitted = int(out.split("submitted by the demo ", 1)[1].split()[0])
    assert total == submitted + 1 and submitted >= 1
    unfinished = int(out.split("unfinished ", 1)[1].split()[0])
    if unfinished:
        assert f"Unfinished {unfinished}: " in out
    assert all(gone(b.pid) for b in brokers)  # an orderly stop ends it too
