"""Helpers the benchmarks run in processes of their own, so that their CPU is theirs and not the
controller's (on a real floor the devices and the broker are other machines)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from controller.config_files import CODE_ROOT, from_checkout
from simulators.broker import die_with_parent

READY_TIMEOUT_S = 30.0
LINE_LIMIT = 64 * 2**20  # helpers answer with one JSON line, which can hold every scan of a run


class HelperFailed(RuntimeError):
    """A helper process exited or did not say it was ready."""


@dataclass
class Helper:
    name: str
    process: asyncio.subprocess.Process
    ready_line: str

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ask(self, line: str, timeout: float = 120.0) -> str:
        """Send one request line and read the one-line answer."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(line.encode() + b"\n")
        await stdin.drain()
        answer = await asyncio.wait_for(stdout.readline(), timeout)
        if not answer:
            raise HelperFailed(f"{self.name} exited while answering {line!r}")
        return answer.decode().rstrip("\n")


@contextlib.asynccontextmanager
async def helper(name: str, *argv: str, ready: str = "ready",
                 ready_timeout: float = READY_TIMEOUT_S) -> AsyncIterator[Helper]:
    """Run `python -m <argv>` until the block ends; it is ready when it prints a line starting with
    `ready`. Its stderr is shown only when it fails to start, so a healthy run prints nothing.

    The helper imports the same floorctl as this process: the same interpreter, run with `-P` so
    that no directory it starts in can shadow a package, and, from a checkout (installed or not),
    with the checkout first on its path."""
    env, cwd = dict(os.environ), None
    if from_checkout():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")]))
        cwd = str(CODE_ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd, start_new_session=True, limit=LINE_LIMIT,
        preexec_fn=die_with_parent())  # a bench killed mid-run leaves no simulator running
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    try:
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), ready_timeout)).decode(errors="replace")
        except TimeoutError:
            line = ""
        if not line.startswith(ready):
            proc.kill()
            await proc.wait()
            detail = (await errors).decode(errors="replace")[-2000:]
            raise HelperFailed(f"{name} did not start: {line}{detail}")
        yield Helper(name, proc, line.rstrip("\n"))
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        errors.cancel()
        await asyncio.gather(errors, return_exceptions=True)
