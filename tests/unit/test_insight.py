"""What limits the floor (controller/domain/insight.py) on hand-made floors: orders flow through a few
stations whose service times and counts the test chooses, as FIFO queues, and the analysis of the
rows they leave must name the resource the test made the bottleneck, with the numbers to show it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from controller.domain.insight import (
    SATURATED,
    CommandRecord,
    Insight,
    OrderRecord,
    Resource,
    analyse,
)

T0 = 1_714_552_200.0


@dataclass
class Stage:
    """One step every order takes: the devices that may do it and how long each takes."""

    kind: str
    task: str
    service_s: dict[str, float]  # per device; belts: the ride
    pick: Callable[[int], str] | None = None  # the device of an order (kinds assigned by the order)
    hand_over_s: float = 0.0  # the controller's gap before the next waiting command goes out
    belt: bool = False
    entry_s: float = 0.0  # belts: the least time between two totes going on (the rest wait at the entry)


@dataclass
class Floor:
    stages: list[Stage]
    rated_s: dict[str, float] = field(default_factory=dict)  # belts: pitch / speed

    def resources(self) -> list[Resource]:
        return [Resource(d, s.kind, rated_s=self.rated_s.get(d), zone=_zone(s.kind),
                         ride_s=s.service_s[d] if s.kind == "conveyor" else None)
                for s in self.stages for d in s.service_s]


def _zone(kind: str) -> str | None:
    return "Z1" if kind == "pick_light" else None


def run(floor: Floor, arrivals: Sequence[float], *, priority: Callable[[int], int] = lambda i: 0,
        due: Callable[[int, float], float | None] = lambda i, t: None,
        carrier: Callable[[int], str] = lambda i: "DHL") -> tuple[list[CommandRecord], list[OrderRecord]]:
    """Every order through every stage in turn, each stage a FIFO queue in front of its devices."""
    ready = {i: t for i, t in enumerate(arrivals, start=1)}
    commands: list[CommandRecord] = []
    for stage in floor.stages:
        free = {d: -math.inf for d in stage.service_s}
        for order_id, at in sorted(ready.items(), key=lambda kv: (kv[1], kv[0])):
            if stage.belt:
                device = next(iter(stage.service_s))
                start = at
                on = max(at, free[device] + stage.entry_s)  # sent at once, on when the entry is free
                free[device] = on
                done = on + stage.service_s[device]
            else:
                device = stage.pick(order_id) if stage.pick else min(free, key=lambda d: (free[d], d))
                start = max(at, free[device] + (stage.hand_over_s if free[device] >= at else 0.0))
                done = start + stage.service_s[device]
                free[device] = done
            commands.append(CommandRecord(device, stage.kind, stage.task, order_id, at, start, done, "ok"))
            ready[order_id] = done
    orders = [OrderRecord(i, "shipped", priority(i), carrier(i), due(i, t), t, ready[i])
              for i, t in enumerate(arrivals, start=1)]
    return commands, orders


def every(interval_s: float, count: int, start: float = T0) -> list[float]:
    return [start + i * interval_s for i in range(count)]


def demo_floor(pack_s: Sequence[float] = (6.0, 6.0), pick_s: float = 3.0, print_s: float = 0.5,
               lights: int = 4, belt_s: float = 24.0) -> Floor:
    """Pick lights (one pick per order, by order id), a conveyor, pack stations, printers, a sorter."""
    names = [f"ptl-{n + 1}" for n in range(lights)]
    return Floor([
        Stage("pick_light", "pick", dict.fromkeys(names, pick_s), pick=lambda i: names[i % lights]),
        Stage("conveyor", "convey", {"loop-1": belt_s}, belt=True),
        Stage("pack_station", "pack", {f"PS-{n + 1}": s for n, s in enumerate(pack_s)}),
        Stage("printer", "label", {"prn-1": print_s, "prn-2": print_s}),
        Stage("sorter", "induct", {"sorter-1": 3.0}, belt=True),
    ], rated_s={"loop-1": 1.0, "sorter-1": 0.5})


def insight_of(floor: Floor, arrivals: Sequence[float], *, time_scale: float = 1.0,
               since: float | None = None, until: float | None = None,
               **orders: Callable[..., object]) -> Insight:
    commands, order_rows = run(floor, arrivals, **orders)  # type: ignore[arg-type]
    start = arrivals[0] if since is None else since
    end = max(o.shipped_at or 0.0 for o in order_rows) + 1 if until is None else until
    # The rows as stamped by the wall clock of a floor running time_scale times faster.
    def wall(t: float | None) -> float | None:
        return None if t is None else T0 + (t - T0) / time_scale

    commands = [CommandRecord(c.device_id, c.kind, c.task, c.order_id, wall(c.queued_at) or 0.0,
                              wall(c.sent_at), wall(c.completed_at), c.outcome) for c in commands]
    order_rows = [OrderRecord(o.id, o.state, o.priority, o.carrier, wall(o.due_at), wall(o.received_at),
                              wall(o.shipped_at)) for o in order_rows]
    return analyse(commands, order_rows, floor.resources(), wall(start) or 0.0, wall(end) or 0.0,
                   time_scale=time_scale)


def kind(insight: Insight, name: str) -> dict[str, object]:
    return next(k for k in insight.as_dict()["kinds"] if k["kind"] == name)


def capacity(insight: Insight, name: str) -> dict[str, object]:
    return next(c for c in insight.as_dict()["capacities"] if c["kind"] == name)


# ---- the bottleneck ------------------------------------------------------------------------------------
def test_saturated_pack_stations_with_a_growing_queue_are_the_bottleneck() -> None:
    # 0.4 orders/s against two 6 s stations (0.33/s): their queue grows all the while.
    insight = insight_of(demo_floor(), every(2.5, 400))
    found = insight.bottleneck
    assert found is not None and found.resource == "pack_station" and found.kind == "pack_station"
    assert found.devices == ("PS-1", "PS-2") and found.saturated
    assert found.utilisation is not None and found.utilisation > 0.95
    assert found.growth.grows and found.growth.slope is not None and found.growth.slope > 0.1
    assert (found.growth.late_mean_s or 0) > 2 * (found.growth.early_mean_s or 0)
    assert found.waiting_share is not None and found.waiting_share > 0.5
    assert found.capacity_orders_per_s == pytest.approx(1 / 3, rel=1e-3)
    text = " ".join(found.evidence)
    assert "utilisation 9" in text and "growing" in text and "saturates at 0.333 orders/s" in text
    assert insight.verdict.startswith("Bottleneck: pack stations: utilisation 9")
    # Nothing else queues: the other kinds have headroom.
    assert kind(insight, "printer")["growth"]["grows"] is False  # type: ignore[index]
    assert (kind(insight, "pick_light")["utilisation"] or 1) < 0.5  # type: ignore[operator]


def test_the_runner_up_is_the_kind_that_would_saturate_next() -> None:
    insight = insight_of(demo_floor(), every(2.5, 400))
    second = insight.runner_up
    assert second is not None and second.kind != "pack_station" and not second.saturated
    # Conveyor 1/s (pitch/speed), sorter 2/s, printers 4/s, pick lights 4 x (1/3) = 1.33/s: the conveyor.
    assert second.resource == "conveyor" and second.capacity_orders_per_s == pytest.approx(1.0)
    assert "Runner-up: conveyors (utilisation 32%, saturates at 1 orders/s)." in insight.verdict


def test_of_two_saturated_resources_the_one_with_less_capacity_limits_the_floor() -> None:
    # Every order picks at one light of 2.6 s (0.385/s) and packs at two 6 s stations (0.333/s), 0.4
    # orders/s offered: both queue up; the stations set the pace, the light is the runner-up.
    floor = demo_floor(pick_s=2.6, lights=1)
    insight = insight_of(floor, every(2.5, 400))
    assert insight.bottleneck is not None and insight.bottleneck.resource == "pack_station"
    assert insight.runner_up is not None and insight.runner_up.resource == "ptl-1"
    assert insight.runner_up.label == "pick light ptl-1" and insight.runner_up.saturated
    assert insight.runner_up.capacity_orders_per_s == pytest.approx(1 / 2.6, rel=1e-3)
    assert insight.runner_up.zone == "Z1"


def test_a_window_inside_a_long_overload_sees_the_wait_grow_from_where_it_was() -> None:
    insight = insight_of(demo_floor(), every(2.5, 800), since=T0 + 1000, until=T0 + 1600)
    found = insight.bottleneck
    assert found is not None and found.resource == "pack_station" and found.growth.grows
    assert (found.growth.early_mean_s or 0) > 100  # a long queue already when the window opens


def test_a_live_window_judges_the_commands_that_left_the_queue() -> None:
    """On a live floor only finished commands have rows: those still queued at the window's end are
    missing, and of the commands queued late in the window only those that overtook are there."""
    floor, until = demo_floor(), T0 + 900
    commands, orders = run(floor, every(2.5, 600), priority=lambda i: 5 if i % 10 == 0 else 0)
    written = [c for c in commands if c.completed_at is not None and c.completed_at < until]
    insight = analyse(written, orders, floor.resources(), T0, until)
    found = insight.bottleneck
    assert found is not None and found.resource == "pack_station" and found.growth.grows
    assert (found.growth.slope or 0) > 0.1


def test_an_under_loaded_floor_has_no_bottleneck_and_says_why() -> None:
    insight = insight_of(demo_floor(), every(10.0, 200))  # 0.1 orders/s: the stations 30% busy
    assert insight.bottleneck is None
    assert insight.verdict.startswith("No bottleneck: the floor kept up; no resource is saturated")
    assert "the busiest, pack stations, is at 30%" in insight.verdict
    assert "the first to saturate would be pack stations at 0.333 orders/s (3.3x that)" in insight.verdict
    assert insight.runner_up is not None and insight.runner_up.resource == "pack_station"
    assert not insight.runner_up.saturated
    assert all((k.utilisation or 0) < SATURATED for k in insight.kinds)


def test_a_pack_station_four_times_slower_than_its_peer_is_named() -> None:
    insight = insight_of(demo_floor(pack_s=(6.0, 24.0)), every(2.5, 400))
    found = insight.bottleneck
    assert found is not None and found.resource == "pack_station" and found.device_id == "PS-2"
    assert any("PS-2 takes 4.0x as long per command as its peers" in e for e in found.evidence)
    # A pool of unequal stations completes 1/6 + 1/24 orders a second.
    assert capacity(insight, "pack_station")["orders_per_s"] == pytest.approx(1 / 6 + 1 / 24, rel=1e-3)


def test_a_hot_pick_light_saturates_before_the_kind_would() -> None:
    # Half of all orders pick at ptl-1 (4 s a pick): it saturates at 0.5 orders/s although the four
    # lights together could take 1 order/s; the pack stations are plenty (four of them).
    floor = demo_floor(pick_s=4.0, pack_s=(6.0,) * 4)
    floor.stages[0].pick = lambda i: "ptl-1" if i % 2 else f"ptl-{2 + i % 3}"
    insight = insight_of(floor, every(1.6, 400))  # 0.625 orders/s
    found = insight.bottleneck
    assert found is not None and found.resource == "ptl-1" and found.kind == "pick_light"
    assert found.capacity_orders_per_s == pytest.approx(0.5, rel=0.01)
    c = capacity(insight, "pick_light")
    assert c["limiting_device"] == "ptl-1" and c["orders_per_s"] == pytest.approx(0.5, rel=0.01)
    assert "ptl-1 gets 50% of the kind's commands" in str(c["note"])


def test_how_work_spreads_over_pick_lights_is_what_the_orders_asked_for_not_what_got_done() -> None:
    """Orders held up at the hot light are missing from the rows of a live floor (their commands are
    still queued): counted from the rows, the hot light would seem to get less than its share. The
    orders' lines say what each order needs."""
    floor = demo_floor(pick_s=4.0, pack_s=(6.0,) * 4)
    floor.stages[0].pick = lambda i: "ptl-1" if i % 2 else f"ptl-{2 + i % 3}"
    commands, orders = run(floor, every(1.6, 400))
    until = T0 + 400
    written = [c for c in commands if c.completed_at is not None and c.completed_at < until]
    needs = [OrderRecord(o.id, o.state, o.priority, o.carrier, o.due_at, o.received_at, o.shipped_at,
                         needs=("ptl-1" if o.id % 2 else f"ptl-{2 + o.id % 3}",)) for o in orders]
    counted = analyse(written, orders, floor.resources(), T0, until)
    asked = analyse(written, needs, floor.resources(), T0, until)
    light = next(c for c in asked.capacities if c.kind == "pick_light")
    assert light.limiting_device == "ptl-1" and light.orders_per_s == pytest.approx(0.5, rel=0.02)
    assert light.commands_per_order == pytest.approx(1.0, rel=0.02)
    seen = next(c for c in counted.capacities if c.kind == "pick_light")
    assert (seen.orders_per_s or 0) > 0.55  # the rows alone overstate it
    assert asked.bottleneck is not None and asked.bottleneck.resource == "ptl-1"


def test_a_conveyor_holding_totes_at_its_entry_is_a_bottleneck_with_a_growing_wait() -> None:
    # A tote every 2 s at most goes on the conveyor (0.5/s); 0.625 orders/s come; the pack stations
    # and printers have plenty. The totes wait at the entry, inside the conveyor: that is its queue.
    floor = demo_floor(pack_s=(6.0,) * 8, print_s=0.2)
    floor.stages[1].entry_s = 2.0
    floor.rated_s["loop-1"] = 2.0
    insight = insight_of(floor, every(1.6, 300))
    found = insight.bottleneck
    assert found is not None and found.resource == "conveyor" and found.device_id == "loop-1"
    assert found.growth.grows and (found.utilisation or 0) > 0.9
    assert found.capacity_orders_per_s == pytest.approx(0.5)
    belt = next(d for d in insight.devices if d.resource == "loop-1")
    assert belt.work_s is not None and belt.work_s > 24 + (belt.queue_wait_mean_s or 0) * 0.9


def test_a_belt_past_its_rated_flow_is_a_bottleneck_though_nothing_queues_for_it() -> None:
    floor = demo_floor(pack_s=(6.0,) * 8, print_s=0.2)
    floor.rated_s["loop-1"] = 2.0  # a tote every 2 s at most: 0.5 totes/s
    insight = insight_of(floor, every(1.6, 300))
    found = insight.bottleneck
    assert found is not None and found.resource == "conveyor"
    assert any("more totes a second than its rated flow" in e for e in found.evidence)


# ---- capacity ------------------------------------------------------------------------------------------
def test_capacity_is_count_times_capacity_over_service_times_commands_per_order() -> None:
    floor = demo_floor()
    lights = {f"ptl-{n}": 3.0 for n in range(1, 5)}  # a second line per order, at another light
    floor.stages.insert(1, Stage("pick_light", "pick", lights, pick=lambda i: f"ptl-{(i + 2) % 4 + 1}"))
    insight = insight_of(floor, every(10.0, 200))
    pack = capacity(insight, "pack_station")
    assert pack["devices"] == 2 and pack["servers"] == 2 and pack["commands_per_order"] == 1
    assert pack["service_s"] == pytest.approx(6.0)
    assert pack["orders_per_s"] == pytest.approx(2 * 1 / (6.0 * 1))
    assert pack["orders_per_hour"] == pytest.approx(1200, rel=1e-3)
    assert pack["formula"] == "2 x 1 / (6.00 s x 1 per order) = 0.333 orders/s"
    picks = capacity(insight, "pick_light")
    assert picks["commands_per_order"] == 2 and picks["service_s"] == pytest.approx(3.0)
    assert picks["orders_per_s"] == pytest.approx(4 * 1 / (3.0 * 2))
    belt = capacity(insight, "conveyor")
    assert belt["orders_per_s"] == pytest.approx(1.0) and "pitch / speed" in str(belt["note"])
    assert pack["headroom"] == pytest.approx((1 / 3) / 0.1, rel=1e-3)


def test_the_hand_over_between_commands_counts_as_the_device_busy() -> None:
    # One station, 5 s a tote, and 1 s from a tote done to the next sent while it waits: the station
    # does a tote every 6 s when busy, and is busy all that time.
    floor = Floor([Stage("pack_station", "pack", {"PS-1": 5.0}, hand_over_s=1.0)])
    insight = insight_of(floor, every(4.0, 200))
    ps = insight.devices[0]
    assert ps.service_s == pytest.approx(6.0, rel=0.01) and ps.work_s == pytest.approx(5.0)
    assert (ps.utilisation or 0) > 0.98
    assert capacity(insight, "pack_station")["orders_per_s"] == pytest.approx(1 / 6, rel=0.01)


def test_figures_are_in_floor_time_whatever_the_wall_clock_stamped() -> None:
    floor, arrivals = demo_floor(), every(2.5, 400)
    real = insight_of(floor, arrivals)
    fast = insight_of(floor, arrivals, time_scale=50.0)
    assert fast.window_s == pytest.approx(real.window_s)
    assert fast.bottleneck is not None and real.bottleneck is not None
    assert fast.bottleneck.resource == real.bottleneck.resource
    for a, b in zip(real.kinds, fast.kinds, strict=True):
        assert b.utilisation == pytest.approx(a.utilisation)
        assert b.queue_wait_mean_s == pytest.approx(a.queue_wait_mean_s)
        assert b.arrivals_per_s == pytest.approx(a.arrivals_per_s)
    slow_pack, fast_pack = capacity(real, "pack_station"), capacity(fast, "pack_station")
    assert fast_pack["orders_per_s"] == pytest.approx(slow_pack["orders_per_s"])
    assert fast_pack["orders_per_s_wall"] == pytest.approx(50 * slow_pack["orders_per_s"], rel=1e-4)  # type: ignore[operator]
    assert fast.orders.cycle.p95_s == pytest.approx(real.orders.cycle.p95_s)


def test_a_window_cuts_the_rows_it_is_given() -> None:
    floor, arrivals = demo_floor(), every(10.0, 200)
    whole = insight_of(floor, arrivals)
    half = insight_of(floor, arrivals, since=T0 + 500, until=T0 + 1500)
    assert half.window_s == 1000 and half.orders.received == 100
    assert half.kinds[0].utilisation == pytest.approx(whole.kinds[0].utilisation, rel=0.1)


# ---- orders ---------------------------------------------------------------------------------------------
def test_on_time_shares_per_priority_and_per_carrier() -> None:
    # Express orders (every fourth) are due 60 s after they come, standard ones an hour after; with
    # the stations saturated, the express ones soon miss it.
    insight = insight_of(demo_floor(), every(2.5, 200), priority=lambda i: 5 if i % 4 == 0 else 0,
                         due=lambda i, t: t + (60 if i % 4 == 0 else 3600),
                         carrier=lambda i: ("DHL", "UPS")[i % 2])
    on_time = insight.on_time
    assert on_time.all.orders == 200 and on_time.without_due == 0
    assert list(on_time.by_priority) == ["5", "0"]
    assert on_time.by_priority["0"].share == 1.0
    express = on_time.by_priority["5"]
    assert express.orders == 50 and 0 < (express.share or 0) < 0.5
    assert express.late == express.orders - express.on_time
    assert set(on_time.by_carrier) == {"DHL", "UPS"}
    assert on_time.by_carrier["DHL"].orders + on_time.by_carrier["UPS"].orders == 200


def test_cycle_times_and_throughput_series() -> None:
    insight = insight_of(demo_floor(), every(10.0, 200))
    cycle = insight.orders.cycle
    assert cycle.n == 200 and cycle.p50_s == pytest.approx(3 + 24 + 6 + 0.5 + 3)
    series = insight.series
    assert len(series.starts) == len(series.shipped_per_s) == 60
    assert sum(series.received_per_s) * series.bucket_s == pytest.approx(200)
    assert max(v for v in series.utilisation["pack_station"] if v is not None) < 0.5
    assert set(series.queue_wait_s) >= {"pack_station"}


def test_as_dict_is_json_and_keeps_instants_to_the_millisecond() -> None:
    insight = insight_of(demo_floor(), every(10.0, 50))
    data = json.loads(json.dumps(insight.as_dict()))
    assert data["since"] == pytest.approx(insight.since, abs=0.001)
    assert data["series"]["starts"][1] == pytest.approx(insight.series.starts[1], abs=0.001)
    assert data["bottleneck"] is None and data["runner_up"]["resource"] == "pack_station"
    assert {d["resource"] for d in data["devices"]} == {"ptl-1", "ptl-2", "ptl-3", "ptl-4", "loop-1", "PS-1",
                                                       "PS-2", "prn-1", "prn-2", "sorter-1"}


def test_no_rows_no_bottleneck() -> None:
    insight = analyse([], [], demo_floor().resources(), T0, T0 + 900)
    assert insight.bottleneck is None and insight.runner_up is None
    assert insight.verdict == "No bottleneck: no device command in the window."
    assert all(c.orders_per_s is None for c in insight.capacities)
    with pytest.raises(ValueError, match="must end after it starts"):
        analyse([], [], [], T0, T0)
    with pytest.raises(ValueError, match="time_scale"):
        analyse([], [], [], T0, T0 + 1, time_scale=0)


def test_one_server_per_device_as_the_dispatch_works_them() -> None:
    """The analysis counts one server per pick light, pack station and printer: the dispatch sends a
    pick light and a pack station one command at a time, and a printer two (one printing, one in its
    buffer), which the analysis measures as one label at a time."""
    from controller.engine.dispatch import CAPACITY
    from controller.ports import DeviceKind

    assert CAPACITY[DeviceKind.PICK_LIGHT] == CAPACITY[DeviceKind.PACK_STATION] == 1
    assert CAPACITY[DeviceKind.PRINTER] == 2
