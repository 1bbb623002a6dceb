"""A hot-standby pair's pure parts: the command gate, the standby's answer, the lease settings, the alarm."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from controller.api.leadership import standby_refusal
from controller.engine.alarms import _takeover
from controller.engine.dispatch import CommandGate
from controller.site import HaSettings


def test_gate_closes_at_its_deadline_whatever_the_loop_did() -> None:
    gate = CommandGate(open_=False)
    assert not gate.is_open()
    gate.open_until(time.monotonic() + 0.05)
    assert gate.is_open()
    time.sleep(0.06)  # a frozen loop: nothing ran, the gate closed all the same
    assert not gate.is_open()
    assert CommandGate().is_open()  # a lone controller's gate


async def test_waiting_at_the_gate_ends_when_it_opens() -> None:
    gate = CommandGate(open_=False)
    waiter = asyncio.create_task(gate.wait_open())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    gate.open_until(time.monotonic() + 10)
    await asyncio.wait_for(waiter, 1)


def test_a_standby_names_the_leader() -> None:
    answer = standby_refusal({"role": "standby", "instance": "b", "leader": "a", "leader_epoch": 4})
    assert answer.status_code == 503
    assert answer.headers["X-Floorctl-Leader"] == "a"
    assert b"a leads the floor (epoch 4)" in answer.body
    nobody = standby_refusal({"role": "stepped_down", "instance": "a", "leader": "a", "leader_epoch": 4})
    assert b"no instance leads" in nobody.body


def test_renewals_must_fit_inside_the_fenced_lease() -> None:
    assert HaSettings().lease_s - HaSettings().fence_margin_s > HaSettings().renew_every_s
    with pytest.raises(ValidationError, match="renew_every_s"):
        HaSettings(lease_s=2.0, fence_margin_s=1.0, renew_every_s=1.0)


def test_a_takeover_is_an_alarm_for_a_while() -> None:
    health = {"role": "leader", "instance": "b", "epoch": 3,
              "ha": {"took_over_at": 1000.0, "previous_leader": "a", "takeover_gap_s": 3.2}}
    (condition,) = _takeover(health, 1010.0)
    assert condition.source == "epoch-3" and "from a 3.2 s after" in condition.text
    assert list(_takeover(health, 1000.0 + 901)) == []
    assert list(_takeover({**health, "role": "standby"}, 1010.0)) == []
    first = {**health, "ha": {"took_over_at": 1000.0, "previous_leader": None}}
    assert list(_takeover(first, 1010.0)) == []  # the first leader of a new database took nothing over
