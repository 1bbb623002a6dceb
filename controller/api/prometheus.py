"""Prometheus exposition for one app: a private registry (tests build several apps in one process)
and a collector that renders a reading taken just before, so the database is read asynchronously
and the synchronous `collect` only formats numbers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

QUANTILES = (("0.5", "p50_s"), ("0.95", "p95_s"), ("0.99", "p99_s"))


@dataclass
class Reading:
    orders_by_state: dict[str, int]
    commands: list[tuple[str, str, int]]  # (device_kind, outcome, count)
    devices: list[dict[str, Any]]
    health: dict[str, Any]
    counters: dict[str, int]
    snapshot: dict[str, Any] = field(default_factory=dict)


class FloorCollector(Collector):
    def __init__(self) -> None:
        self.reading: Reading | None = None

    def collect(self) -> Iterator[Metric]:
        r = self.reading
        if r is None:
            return
        orders = GaugeMetricFamily("floorctl_orders", "Orders in each state", labels=["state"])
        for state, count in r.orders_by_state.items():
            orders.add_metric([state], count)
        yield orders

        commands = CounterMetricFamily("floorctl_device_commands", "Device commands recorded, by device kind and outcome",
                                       labels=["kind", "outcome"])
        for kind, outcome, count in r.commands:
            commands.add_metric([kind, outcome], count)
        yield commands

        yield from _device_gauges(r.devices)

        events = CounterMetricFamily("floorctl_engine_events", "Engine event counters (bad input, retries, ...)",
                                     labels=["event"])
        for name, count in sorted(r.counters.items()):
            events.add_metric([name], count)
        yield events

        yield from _health_gauges(r.health)
        yield from _snapshot_gauges(r.snapshot)


def _health_gauges(health: dict[str, Any]) -> Iterator[Metric]:
    """The engine's health dict, whatever links it reports: every yes/no becomes a check (nested
    dicts such as {"plcs": {"plc-1": true}} as "plcs.plc-1"), every other number a value."""
    yield GaugeMetricFamily("floorctl_healthy", "1 when the engine reports ok", value=int(bool(health.get("ok"))))
    yield GaugeMetricFamily("floorctl_writer_backlog", "Rows waiting for the store writer",
                            value=health.get("writer_backlog", 0))
    checks = GaugeMetricFamily("floorctl_health_check", "1 while a link or part the engine checks is up",
                               labels=["check"])
    values = GaugeMetricFamily("floorctl_health_value", "Other numbers the engine's health reports", labels=["name"])
    for key, value in sorted(health.items()):
        if key in ("ok", "writer_backlog"):
            continue
        if isinstance(value, bool):
            checks.add_metric([key], int(value))
        elif isinstance(value, int | float):
            values.add_metric([key], value)
        elif isinstance(value, dict):
            for name, up in sorted(value.items()):
                if isinstance(up, bool):
                    checks.add_metric([f"{key}.{name}"], int(up))
    yield from (checks, values)


def _device_gauges(devices: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["device_id", "kind"]
    online = GaugeMetricFamily("floorctl_device_online", "1 while the device is online", labels=[*labels, "protocol"])
    queued = GaugeMetricFamily("floorctl_device_queue_length", "Commands waiting for the device", labels=labels)
    in_flight = GaugeMetricFamily("floorctl_device_in_flight", "Commands the device is working on", labels=labels)
    rotation = GaugeMetricFamily("floorctl_device_in_rotation", "1 while the device is given new work", labels=labels)
    for d in devices:
        key = [d["device_id"], d["kind"]]
        online.add_metric([*key, d["protocol"]], int(bool(d["online"])))
        queued.add_metric(key, d["queue_length"])
        in_flight.add_metric(key, d["in_flight"])
        rotation.add_metric(key, int(bool(d["in_rotation"])))
    yield from (online, queued, in_flight, rotation)


def _snapshot_gauges(snapshot: dict[str, Any]) -> Iterator[Metric]:
    if not snapshot:
        return
    yield GaugeMetricFamily("floorctl_shipped_last_minute", "Orders shipped in the last 60 s",
                            value=snapshot["throughput"]["last_minute"])
    for family, label, key in (("floorctl_stage_seconds", "stage", "stages"),
                               ("floorctl_device_kind_seconds", "kind", "kinds")):
        gauge = GaugeMetricFamily(family, f"Rolling-window quantiles of time per {label}", labels=[label, "quantile"])
        for name, described in snapshot[key].items():
            for quantile, field_name in QUANTILES:
                if described[field_name] is not None:
                    gauge.add_metric([name, quantile], described[field_name])
        yield gauge


class FloorMetrics:
    """The app's registry: floor metrics plus the process's own (CPU, memory, open files)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.floor = FloorCollector()
        self.registry.register(self.floor)
        ProcessCollector(registry=self.registry)

    def render(self, reading: Reading) -> bytes:
        # No await between setting the reading and rendering it: concurrent scrapes cannot interleave.
        self.floor.reading = reading
        return generate_latest(self.registry)
