"""FloorStats: rolling windows, percentiles, throughput and "slowest right now"."""

from __future__ import annotations

import pytest

from controller.engine.stats import FloorStats, percentile, summarise

T0 = 1_700_000_000.0


def test_percentile_is_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]  # 1..100
    assert percentile(ordered, 50) == 50
    assert percentile(ordered, 95) == 95
    assert percentile(ordered, 99) == 99
    assert percentile(ordered, 100) == 100
    assert percentile([7.0], 99) == 7
    assert percentile([1.0, 2.0, 3.0], 50) == 2


def test_summarise_empty_and_full() -> None:
    assert summarise([]) == {"count": 0, "p50_s": None, "p95_s": None, "p99_s": None, "max_s": None}
    assert summarise([3.0, 1.0, 2.0]) == {"count": 3, "p50_s": 2.0, "p95_s": 3.0, "p99_s": 3.0, "max_s": 3.0}


def test_stage_percentiles_over_the_window() -> None:
    stats = FloorStats(window_s=900)
    for n in range(1, 101):
        stats.record_stage("picking", float(n), at=T0 + n)
    picking = stats.snapshot(T0 + 101)["stages"]["picking"]
    assert picking["count"] == 100
    assert (picking["p50_s"], picking["p95_s"], picking["p99_s"], picking["max_s"]) == (50, 95, 99, 100)
    # Only the last minute counts as "right now": samples at T0+41..T0+100 (60 of them).
    assert picking["recent_count"] == 60


def test_old_samples_leave_the_window() -> None:
    stats = FloorStats(window_s=120)
    stats.record_stage("packed", 500.0, at=T0)
    stats.record_stage("packed", 5.0, at=T0 + 100)
    packed = stats.snapshot(T0 + 150)["stages"]["packed"]
    assert packed["count"] == 1
    assert packed["max_s"] == 5.0
    # Recording far later drops everything older than the window without a snapshot.
    stats.record_stage("packed", 6.0, at=T0 + 1000)
    assert list(stats.stages["packed"].seconds) == [6.0]


def test_memory_is_capped_per_series() -> None:
    stats = FloorStats(window_s=900, max_samples=50)
    for n in range(500):
        stats.record_device("prn-1", "printer", float(n), at=T0 + n * 0.001)
        stats.record_order(10.0, at=T0 + n * 0.001, outcome="shipped")
    assert len(stats.devices["prn-1"].seconds) == 50
    assert len(stats.kinds["printer"].seconds) == 50
    assert len(stats.orders) == 50
    snap = stats.snapshot(T0 + 1)
    assert snap["devices"]["prn-1"]["count"] == 50
    assert snap["devices"]["prn-1"]["p50_s"] >= 450  # the newest samples are the ones kept
    assert snap["orders"]["totals"]["shipped"] == 500  # totals are counters, not samples


def test_devices_and_kinds() -> None:
    stats = FloorStats()
    for n in range(10):
        stats.record_device("prn-1", "printer", 0.5, at=T0 + n)
        stats.record_device("prn-2", "printer", 3.0, at=T0 + n)
        stats.record_device("PS-1", "pack_station", 8.0, at=T0 + n)
    snap = stats.snapshot(T0 + 10)
    assert snap["devices"]["prn-1"]["kind"] == "printer"
    assert snap["kinds"]["printer"]["count"] == 20
    assert snap["kinds"]["printer"]["slowest"] == "prn-2"
    assert snap["kinds"]["pack_station"]["slowest"] == "PS-1"
    assert snap["slowest_device"] == {"device_id": "PS-1", "kind": "pack_station", "recent_p95_s": 8.0}


def test_slowest_is_judged_on_the_last_minute() -> None:
    stats = FloorStats()
    stats.record_stage("picking", 100.0, at=T0)  # long ago: slow then, not now
    stats.record_stage("picking", 2.0, at=T0 + 290)
    stats.record_stage("labelled", 9.0, at=T0 + 295)
    snap = stats.snapshot(T0 + 300)
    assert snap["stages"]["picking"]["p95_s"] == 100.0  # the window still remembers it
    assert snap["slowest_stage"] == {"stage": "labelled", "recent_p95_s": 9.0}


def test_nothing_recent_means_no_slowest() -> None:
    stats = FloorStats()
    assert stats.snapshot(T0)["slowest_stage"] is None
    stats.record_stage("picking", 1.0, at=T0)
    stats.record_device("prn-1", "printer", 1.0, at=T0)
    snap = stats.snapshot(T0 + 61)
    assert snap["slowest_stage"] is None
    assert snap["slowest_device"] is None
    assert snap["kinds"]["printer"]["slowest"] is None
    assert snap["stages"]["picking"]["count"] == 1


def test_throughput_per_minute() -> None:
    stats = FloorStats(window_s=300)
    now = T0 + 300
    for n in range(3):
        stats.record_order(60.0, at=now - 10 - n, outcome="shipped")  # last minute
    for n in range(5):
        stats.record_order(60.0, at=now - 130 - n, outcome="shipped")  # third minute back
    stats.record_order(60.0, at=now - 5, outcome="cancelled")
    stats.record_order(60.0, at=now - 6, outcome="exception")
    throughput = stats.snapshot(now)["throughput"]
    assert throughput["last_minute"] == 3
    assert [m["shipped"] for m in throughput["per_minute"]] == [0, 0, 5, 0, 3]
    assert throughput["per_minute"][0]["start"] == now - 300
    assert throughput["per_minute"][-1]["start"] == now - 60


def test_order_outcomes_and_cycle_time() -> None:
    stats = FloorStats(window_s=600)
    stats.record_order(1000.0, at=T0, outcome="shipped")  # falls out of the window
    for cycle in (100.0, 200.0, 300.0):
        stats.record_order(cycle, at=T0 + 700, outcome="shipped")
    stats.record_order(50.0, at=T0 + 700, outcome="cancelled")
    stats.record_order(50.0, at=T0 + 700, outcome="rerouted")  # an outcome nobody planned for
    orders = stats.snapshot(T0 + 701)["orders"]
    assert orders["in_window"] == {"shipped": 3, "exception": 0, "cancelled": 1, "rerouted": 1}
    assert orders["totals"]["shipped"] == 4
    assert orders["cycle"]["count"] == 3
    assert orders["cycle"]["p50_s"] == 200.0


def test_window_shorter_than_a_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 60"):
        FloorStats(window_s=30)
