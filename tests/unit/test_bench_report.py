"""The bench's measuring tools and its report, without any protocol."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from controller.bench.gc_pauses import GcPauses
from controller.bench.measure import Latencies, LoopLag, ratio
from controller.bench.report import FIGURES, Figure, render, targets


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    lat = Latencies([n / 1000 for n in range(100, 0, -1)], elapsed_s=2.0)
    summary = lat.summary()
    assert (summary["p50_ms"], summary["p99_ms"], summary["max_ms"]) == (50.0, 99.0, 100.0)
    assert summary["per_s"] == 50.0
    assert Latencies().summary()["p50_ms"] is None


def test_ratio_needs_both_figures() -> None:
    assert ratio(0.5, 0.25) == 2.0
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0.0) is None


def test_targets_know_which_way_is_better() -> None:
    assert Figure("a.b", "", "ms", target=10).met(9.9) is True
    assert Figure("a.b", "", "ms", target=10).met(10.1) is False
    assert Figure("a.b", "", "/s", target=1000, better="higher").met(999) is False
    assert Figure("a.b", "", "ms").met(5) is None


def test_every_required_figure_has_a_row() -> None:
    paths = {f.path for f in FIGURES}
    for path in ("mqtt.ctl_p50_ms", "opcua.ctl_p99_ms", "divert.held_per_s", "divert.p99_ms",
                 "surge.orders_per_s", "writer.sqlite_rows_per_s", "writer.stall_p99_ms",
                 "memory.rss_mb_before", "memory.rss_mb_after"):
        assert path in paths


def test_table_marks_misses_and_names_broken_benchmarks() -> None:
    results = {"mqtt": {"bare_p50_ms": 0.3, "ctl_p50_ms": 0.6, "p50_ratio": 2.0},
               "divert": {"held_per_s": 2000, "p99_ms": 4.0, "at_rate": 1000},
               "surge": {"error": "RuntimeError: the broker went away"}}
    table = render(results)
    ratio_line = next(line for line in table.splitlines() if "p50 controller / bare" in line)
    assert ratio_line.rstrip().endswith("MISSED")
    held_line = next(line for line in table.splitlines() if "held" in line)
    assert held_line.rstrip().endswith("ok")
    assert "p99 at 1,000/s" in table
    assert "surge: error: RuntimeError: the broker went away" in table
    assert "PostgreSQL" not in table  # not measured in this run, so not shown
    verdicts = targets(results)
    assert verdicts["mqtt.p50_ratio"]["met"] is False
    assert verdicts["divert.held_per_s"]["met"] is True
    assert verdicts["surge.orders_per_s"]["met"] is None


async def test_loop_lag_sees_a_blocked_loop() -> None:
    async with LoopLag() as lag:
        await asyncio.sleep(0.02)
        until = time.perf_counter() + 0.05
        while time.perf_counter() < until:  # the stall being measured: nothing else can run meanwhile
            pass
        await asyncio.sleep(0.02)
    assert lag.lags.summary()["max_ms"] >= 45


def test_gc_pauses_are_recorded() -> None:
    with GcPauses() as pauses:
        gc.collect()
    assert pauses.summary()["full_collections"] >= 1


def test_bench_only_names_the_run_s_steps_and_refuses_others() -> None:
    import argparse

    from controller.bench.runner import BENCHMARKS
    from controller.cli import BENCH_STEPS, _bench_steps

    assert BENCH_STEPS == tuple(b.key for b in BENCHMARKS)
    assert _bench_steps("surge, divert") == ("surge", "divert")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown step warp; the steps are mqtt"):
        _bench_steps("divert,warp")


def test_a_started_process_freezes_its_heap_and_collects_less_often() -> None:
    from controller.bench.gc_pauses import frozen_start_up
    from controller.bootstrap import GC_THRESHOLDS, freeze_startup_heap

    before = gc.get_threshold()
    with frozen_start_up():  # the bench's form, which puts everything back afterwards
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    try:
        freeze_startup_heap()  # what run, demo and sim do once up
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
