"""The event loop a floorctl process runs on is chosen by name, and a wrong name is a clear error."""

from __future__ import annotations

import importlib.util

import pytest

from controller import loops


async def _which() -> str:
    return loops.running()


def test_asyncio_by_name_runs_on_asyncios_loop() -> None:
    assert loops.chosen("asyncio") == "asyncio"
    assert loops.run(_which(), "asyncio") == "asyncio"


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_uvloop_by_name_or_auto_runs_on_uvloop() -> None:
    assert loops.chosen("uvloop") == loops.chosen("auto") == "uvloop"
    assert loops.run(_which(), "uvloop") == "uvloop"


def test_the_environment_chooses_when_no_name_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOORCTL_LOOP", "asyncio")
    assert loops.chosen() == "asyncio"


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(loops.LoopUnavailable, match="auto, uvloop, asyncio"):
        loops.chosen("trio")
