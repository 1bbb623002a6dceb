"""The order time breakdown (controller.domain.breakdown) from hand-written stage stamps and timing rows.

Times are seconds after T0. Each test states the time line it builds; the parts must add up to the
cycle time and none may be negative, whatever the rows (the last test throws random ones at it).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller.domain.breakdown import PRECEDENCE, Breakdown, CommandTimes, Part, breakdown
from controller.domain.model import OrderState

T0 = 1_714_552_200.0
S = OrderState


def cmd(device: str, kind: str, task: str, queued: float, sent: float | None = None,
        acked: float | None = None, done: float | None = None, ended: float | None | str = "done",
        down_queued: float = 0.0, down_in_hand: float = 0.0) -> CommandTimes:
    """A timing row at T0 + the given seconds; `ended` defaults to `done` (None: still under way)."""
    end = done if ended == "done" else ended
    assert not isinstance(end, str)

    def at(t: float | None) -> float | None:
        return None if t is None else T0 + t
    return CommandTimes(device, kind, task, T0 + queued, at(sent), at(acked), at(done), at(end),
                        down_queued, down_in_hand)


def stamps(**at: float) -> dict[str, float]:
    return {state: T0 + t for state, t in at.items()}


def seconds(found: Breakdown) -> dict[str, float]:
    """The parts that are not zero, to 10 us (an epoch float holds a time to ~0.2 us)."""
    return {p.value: round(t.seconds, 5) for p, t in found.parts.items() if round(t.seconds, 5)}


def adds_up(found: Breakdown) -> None:
    total = sum(t.seconds for t in found.parts.values())
    assert total == pytest.approx(found.cycle_s, abs=1e-9)
    assert all(t.seconds >= 0 for t in found.parts.values())
    for t in found.parts.values():
        assert all(0 <= s <= t.seconds + 1e-9 for s in t.devices.values())


def test_a_shipped_order_in_one_line_of_commands() -> None:
    """received 0, allocated and picking at once; a pick, a convey, a pack that queued a second behind
    another tote, a label, the sorter's induct with the divert answer inside it; shipped at 14.01."""
    found = breakdown(S.SHIPPED, stamps(received=0, allocated=0.001, picking=0.002, conveyed=5.0, packed=9.0,
                                        labelled=10.0, sorted=13.995, shipped=14.01), [
        cmd("ptl-01", "pick_light", "pick", 0.002, 0.003, 0.004, 3.0),
        cmd("loop-1", "conveyor", "convey", 3.001, 3.002, 3.003, 4.9),
        cmd("pack-1", "pack_station", "pack", 5.0, 6.0, 6.001, 8.9),
        cmd("prn-1", "printer", "label", 9.0, 9.001, 9.002, 9.9),
        cmd("sorter-1", "sorter", "induct", 10.0, 10.001, 10.002, 13.99),
        cmd("sorter-1", "sorter", "divert", 12.0, 12.0005, 12.001, 13.98),
    ], now=T0 + 100)
    adds_up(found)
    assert found.finished and found.cycle_s == pytest.approx(14.01)
    assert seconds(found) == {
        "queued": round(0.001 + 0.001 + 1.0 + 0.001 + 0.001, 6),
        "transmission": 0.005,
        "execution": round(2.996 + 2.899 + 0.898, 6),
        "transit": round(1.897 + 3.988, 6),  # the belt, and the sorter from induct to divert
        "controller": round(14.01 - 1.004 - 0.005 - 6.793 - 5.885, 6),
    }
    parts = found.parts
    assert parts[Part.QUEUED].devices == pytest.approx({"pack-1": 1.0, "ptl-01": 0.001, "loop-1": 0.001,
                                                        "prn-1": 0.001, "sorter-1": 0.001}, abs=1e-6)
    assert next(iter(parts[Part.QUEUED].devices)) == "pack-1"  # most first
    assert parts[Part.TRANSIT].devices == pytest.approx({"sorter-1": 3.988, "loop-1": 1.897}, abs=1e-6)
    assert parts[Part.CONTROLLER].devices == {}


def test_parallel_pick_lines_waiting_goes_before_working() -> None:
    """Line 1 waits 5 s at a busy ptl-01 and then takes 2 s; line 2 is shown at once on ptl-02 and
    picked in 3 s, all inside line 1's wait: the order waited for ptl-01, then picked."""
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=7.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, 5.0, 5.001, 7.0),
        cmd("ptl-02", "pick_light", "pick", 0.0, 0.001, 0.002, 3.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"queued": 5.0, "transmission": 0.001, "execution": 1.999}
    # both lines were queued in the first millisecond
    assert found.parts[Part.QUEUED].devices == pytest.approx({"ptl-01": 5.0, "ptl-02": 0.001}, abs=1e-6)
    assert found.parts[Part.EXECUTION].devices == pytest.approx({"ptl-01": 1.999}, abs=1e-6)


def test_overlapping_parts_of_one_kind_count_each_device_once_per_instant() -> None:
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=4.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, 0.0, 0.0, 4.0),
        cmd("ptl-02", "pick_light", "pick", 0.0, 0.0, 0.0, 2.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"execution": 4.0}
    assert found.parts[Part.EXECUTION].devices == {"ptl-01": 4.0, "ptl-02": 2.0}


def test_a_re_sent_command_counts_its_time_outs_in_the_phase_they_happened_in() -> None:
    """The pack station acknowledged only the third send (two 2 s ack time-outs): 4 s of
    transmission; then it packed for 3 s."""
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=7.5), [
        cmd("pack-1", "pack_station", "pack", 0.5, 0.5, 4.5, 7.5),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"controller": 0.5, "transmission": 4.0, "execution": 3.0}


def test_time_in_exception_runs_until_the_resolve_and_the_timed_out_pick_before_it_is_execution() -> None:
    """The pick timed out at 10 (no completion): the order went to exception; a person resolved it
    at 70, which stamps picking again; the pick was shown anew and the order went on."""
    found = breakdown(S.SHIPPED, stamps(received=0, allocated=0.001, picking=70.0, exception=10.0,
                                        conveyed=75.0, shipped=76.0), [
        cmd("ptl-01", "pick_light", "pick", 0.002, 0.003, 0.004, None, ended=10.0),
        cmd("ptl-01", "pick_light", "pick", 70.001, 70.002, 70.003, 74.0),
        cmd("loop-1", "conveyor", "convey", 74.001, 74.001, 74.001, 75.0),
    ], now=T0 + 100)
    adds_up(found)
    parts = seconds(found)
    assert parts["exception"] == 60.0
    assert parts["execution"] == round(9.996 + 3.997, 6)
    assert parts["transit"] == 0.999


def test_an_order_still_in_exception_counts_it_until_now() -> None:
    found = breakdown(S.EXCEPTION, stamps(received=0, allocated=0.0, picking=0.0, exception=2.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, 0.0, 0.0, 2.0),
    ], now=T0 + 32.0)
    adds_up(found)
    assert not found.finished
    assert seconds(found) == {"execution": 2.0, "exception": 30.0}


def test_held_for_stock_from_received_until_allocated_whatever_reason_it_was_held_for_last() -> None:
    """Held at once for one SKU, held again at 20 for another (the stamp moves), allocated at 30."""
    found = breakdown(S.SHIPPED, stamps(received=0, held=20.0, allocated=30.0, picking=30.0, shipped=31.0), [
        cmd("ptl-01", "pick_light", "pick", 30.0, 30.0, 30.0, 31.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"held": 30.0, "execution": 1.0}


def test_a_held_order_cancelled_while_held() -> None:
    found = breakdown(S.CANCELLED, stamps(received=0, held=0.001, cancelled=12.0), [], now=T0 + 100)
    adds_up(found)
    assert found.finished and found.cycle_s == 12.0
    assert seconds(found) == {"held": 12.0}


def test_waits_on_a_device_that_took_no_work_are_their_own_part() -> None:
    """ptl-01 was faulted for the first 7 s of the pick's 10 s in its queue (then it worked through
    its backlog); the belt jammed for 4 s with the tote on it (in hand)."""
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=18.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, 10.0, 10.0, 12.0, down_queued=7.0),
        cmd("loop-1", "conveyor", "convey", 12.0, 12.0, 12.0, 18.0, down_in_hand=4.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"queued": 3.0, "device_down": 11.0, "execution": 2.0, "transit": 2.0}
    assert found.parts[Part.DEVICE_DOWN].devices == {"ptl-01": 7.0, "loop-1": 4.0}


def test_a_wait_longer_than_its_phase_is_cut_to_it() -> None:
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=3.0), [
        cmd("pack-1", "pack_station", "pack", 0.0, 1.0, 1.0, 3.0, down_queued=50.0, down_in_hand=50.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"device_down": 3.0}


def test_a_device_down_while_another_line_works_is_what_the_order_waits_for() -> None:
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=6.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, 5.0, 5.0, 6.0, down_queued=5.0),
        cmd("ptl-02", "pick_light", "pick", 0.0, 0.0, 0.0, 5.5),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"device_down": 5.0, "execution": 1.0}


def test_a_queued_wait_is_laid_at_the_start_of_the_queue_and_an_in_hand_one_at_the_end() -> None:
    """Line 1 is queued at ptl-01 while it is down (2 s), then behind its backlog until 5; line 2 is
    picked on ptl-02 from 0 to 3. A convey then holds its tote through a 1 s jam just before arriving."""
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=9.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, 5.0, 5.0, 6.0, down_queued=2.0),
        cmd("ptl-02", "pick_light", "pick", 0.0, 0.0, 0.0, 3.0),
        cmd("loop-1", "conveyor", "convey", 6.0, 6.0, 6.0, 9.0, down_in_hand=1.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"device_down": 3.0, "queued": 3.0, "execution": 1.0, "transit": 2.0}
    assert found.parts[Part.DEVICE_DOWN].devices == {"ptl-01": 2.0, "loop-1": 1.0}


def test_an_active_order_runs_to_now_with_its_command_under_way() -> None:
    """Picking since 1; the pick light was shown at 1.002 and is still lit at now = 11; a second line
    waits, queued behind it on the same light."""
    found = breakdown(S.PICKING, stamps(received=0, allocated=0.5, picking=1.0), [
        cmd("ptl-01", "pick_light", "pick", 1.0, 1.001, 1.002, None, ended=None),
        cmd("ptl-01", "pick_light", "pick", 1.0, None, None, None, ended=None),
    ], now=T0 + 11.0)
    adds_up(found)
    assert not found.finished
    assert found.cycle_s == pytest.approx(11.0)
    assert seconds(found) == {"controller": 1.0, "queued": 10.0}


def test_a_command_handed_back_while_queued_ends_where_it_ended() -> None:
    """Queued at ptl-01 (down for 2 s), handed back at 4 when the line moved to ptl-02."""
    found = breakdown(S.SHIPPED, stamps(received=0, shipped=6.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, None, None, None, ended=4.0, down_queued=2.0),
        cmd("ptl-02", "pick_light", "pick", 4.0, 4.0, 4.0, 6.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"queued": 2.0, "device_down": 2.0, "execution": 2.0}


def test_rows_outside_the_cycle_are_cut_to_it() -> None:
    """A divert answer that lands after the order shipped, and a clock that put one row before received."""
    found = breakdown(S.SHIPPED, stamps(received=1.0, shipped=3.0), [
        cmd("ptl-01", "pick_light", "pick", 0.0, 0.5, 0.6, 2.0),
        cmd("sorter-1", "sorter", "divert", 2.5, 2.6, 2.7, 9.0),
    ], now=T0 + 100)
    adds_up(found)
    assert seconds(found) == {"execution": 1.0, "controller": 0.5, "transit": 0.5}


def test_precedence_names_every_part_once() -> None:
    assert sorted(PRECEDENCE) == sorted(Part)
    assert PRECEDENCE[-1] is Part.CONTROLLER


def _random_order(rng: random.Random) -> tuple[OrderState, dict[str, float], list[CommandTimes], float]:
    t = rng.uniform(0, 1)
    at: dict[str, float] = {"received": t}
    if rng.random() < 0.2:
        at["held"] = t + rng.uniform(0, 1)
    commands = []
    for _ in range(rng.randint(0, 12)):
        q = t + rng.uniform(-1, 40)
        phases: list[Any] = [q]
        for _ in range(3):
            last = phases[-1]
            phases.append(None if rng.random() < 0.15 or last is None else last + rng.expovariate(1))
        ended: float | None = max(p for p in phases if p is not None) + rng.uniform(0, 2)
        if rng.random() < 0.1:
            ended = None
        kind, task = rng.choice([("pick_light", "pick"), ("conveyor", "convey"), ("pack_station", "pack"),
                                 ("printer", "label"), ("sorter", "induct"), ("sorter", "divert")])
        queued, sent, acked, done = phases
        down = [rng.choice([0.0, rng.uniform(0, 20)]) for _ in range(2)]
        device = f"{kind}-{rng.randint(1, 3)}"
        commands.append(CommandTimes(device, kind, task, queued, sent, acked, done, ended, down[0], down[1]))
    for state in ("allocated", "picking", "conveyed", "exception", "packed", "shipped", "cancelled"):
        if rng.random() < 0.6:
            at[state] = t + rng.uniform(0, 50)
    state = rng.choice(list(OrderState))
    if state.value not in at:
        at[state.value] = t + rng.uniform(0, 50)
    return state, at, commands, t + rng.uniform(0, 60)


def test_random_rows_always_add_up_and_are_never_negative() -> None:
    rng = random.Random(9)
    for _ in range(2000):
        state, at, commands, now = _random_order(rng)
        found = breakdown(state, at, commands, now=now)
        adds_up(found)
        assert found.cycle_s >= 0
