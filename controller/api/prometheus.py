"""Prometheus exposition for one app: a private registry (tests build several apps in one process)
and a collector that renders a reading taken just before, so the database is read asynchronously
and the synchronous `collect` only formats numbers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from controller.domain.alarms import Severity

SEVERITIES = tuple(s.value for s in Severity)
QUANTILES = (("0.5", "p50_s"), ("0.95", "p95_s"), ("0.99", "p99_s"))


@dataclass
class Reading:
    orders_by_state: dict[str, int]
    commands: list[tuple[str, str, int]]  # (device_kind, outcome, count)
    devices: list[dict[str, Any]]
    health: dict[str, Any]
    counters: dict[str, int]
    snapshot: dict[str, Any] = field(default_factory=dict)
    alarms_raised: dict[str, int] = field(default_factory=dict)  # by kind, since start
    alarms_active: dict[str, int] | None = None  # by severity; None: no alarm monitor
    insight: dict[str, Any] | None = None  # what limits the floor (Insight.as_dict()); None: not known
    retention: dict[str, Any] | None = None  # timing retention's counts (RetentionStats.as_dict())


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

        commands = CounterMetricFamily("floorctl_device_commands",
                                       "Device commands recorded, by device kind and outcome",
                                       labels=["kind", "outcome"])
        for kind, outcome, count in r.commands:
            commands.add_metric([kind, outcome], count)
        yield commands

        yield from _device_gauges(r.devices)

        events = CounterMetricFamily("floorctl_engine_events",
                                     "Engine event counters (bad input, retries, ...)",
                                     labels=["event"])
        for name, count in sorted(r.counters.items()):
            events.add_metric([name], count)
        yield events

        yield from _health_gauges(r.health)
        yield from _leadership_metrics(r.health)
        yield from _snapshot_gauges(r.snapshot)
        yield from _alarm_metrics(r.alarms_raised, r.alarms_active)
        yield from _insight_gauges(r.insight)
        yield from _retention_metrics(r.retention)


def _retention_metrics(retention: dict[str, Any] | None) -> Iterator[Metric]:
    """Timing-row retention (docs/site-file.md, retention): what its runs did since start."""
    if retention is None:
        return
    for name, key, what in (("runs", "runs", "Retention runs"),
                            ("failures", "failures", "Retention steps that failed (tried again later)"),
                            ("days_removed", "days_removed", "Days of timing rows removed"),
                            ("partitions_dropped", "partitions_dropped", "Day tables detached and dropped"),
                            ("partitions_made", "partitions_made", "Day tables made ahead"),
                            ("rows_exported", "rows_exported", "Timing rows exported before removal"),
                            ("export_bytes", "export_bytes", "Bytes of gzip CSV exported"),
                            ("rows_deleted", "rows_deleted", "Timing rows deleted in batches")):
        yield CounterMetricFamily(f"floorctl_retention_{name}", what, value=retention[key])
    if retention["last_run_at"] is not None:
        yield GaugeMetricFamily("floorctl_retention_last_run_timestamp_seconds", "When retention last ran",
                                value=retention["last_run_at"])
        yield GaugeMetricFamily("floorctl_retention_last_run_seconds", "How long its last run took",
                                value=retention["last_run_s"])


def _insight_gauges(insight: dict[str, Any] | None) -> Iterator[Metric]:
    """What limits the floor over the last 15 minutes (docs/insight.md), in floor time."""
    if insight is None:
        return
    yield GaugeMetricFamily("floorctl_insight_window_seconds", "Floor seconds the insight gauges cover",
                            value=insight["window_s"])
    device = GaugeMetricFamily("floorctl_device_utilisation", "Busy share of the device's capacity",
                               labels=["device_id", "kind"])
    for d in insight["devices"]:
        if d["utilisation"] is not None:
            device.add_metric([d["resource"], d["kind"]], d["utilisation"])
    kind = GaugeMetricFamily("floorctl_kind_utilisation", "Busy share of the capacity of a kind's devices",
                             labels=["kind"])
    wait = GaugeMetricFamily("floorctl_kind_queue_wait_seconds",
                             "Commands' wait to be sent to a device of the kind", labels=["kind", "stat"])
    for k in insight["kinds"]:
        if k["utilisation"] is not None:
            kind.add_metric([k["kind"]], k["utilisation"])
        for stat in ("mean", "p95"):
            if k[f"queue_wait_{stat}_s"] is not None:
                wait.add_metric([k["kind"], stat], k[f"queue_wait_{stat}_s"])
    capacity = GaugeMetricFamily("floorctl_kind_capacity_orders_per_second",
                                 "Orders per second at which the kind saturates (floor time)",
                                 labels=["kind"])
    for c in insight["capacities"]:
        if c["orders_per_s"] is not None:
            capacity.add_metric([c["kind"]], c["orders_per_s"])
    found = insight["bottleneck"]
    bottleneck = GaugeMetricFamily("floorctl_bottleneck", "1 for the kind of device limiting the floor now",
                                   labels=["kind"])
    for k in insight["kinds"]:
        bottleneck.add_metric([k["kind"]], int(found is not None and found["kind"] == k["kind"]))
    yield from (device, kind, wait, capacity, bottleneck)


def _alarm_metrics(raised: dict[str, int], active: dict[str, int] | None) -> Iterator[Metric]:
    if active is None:
        return
    counter = CounterMetricFamily("floorctl_alarms_raised", "Alarms raised since start, by kind",
                                  labels=["kind"])
    for kind, count in sorted(raised.items()):
        counter.add_metric([kind], count)
    yield counter
    gauge = GaugeMetricFamily("floorctl_alarms_active", "Alarms not cleared yet, by severity",
                              labels=["severity"])
    for severity in SEVERITIES:
        gauge.add_metric([severity], active.get(severity, 0))
    yield gauge


def _health_gauges(health: dict[str, Any]) -> Iterator[Metric]:
    """The engine's health dict, whatever links it reports: every yes/no becomes a check (nested
    dicts such as {"plcs": {"plc-1": true}} as "plcs.plc-1"), every other number a value."""
    yield GaugeMetricFamily("floorctl_healthy", "1 when the engine reports ok",
                            value=int(bool(health.get("ok"))))
    yield GaugeMetricFamily("floorctl_writer_backlog", "Rows waiting for the store writer",
                            value=health.get("writer_backlog", 0))
    checks = GaugeMetricFamily("floorctl_health_check", "1 while a link or part the engine checks is up",
                               labels=["check"])
    values = GaugeMetricFamily("floorctl_health_value", "Other numbers the engine's health reports",
                               labels=["name"])
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


def _leadership_metrics(health: dict[str, Any]) -> Iterator[Metric]:
    """An instance of a hot-standby pair (docs/standby.md): does it lead, its lease's renewals."""
    if "role" not in health:
        return
    ha = health.get("ha") or {}
    yield GaugeMetricFamily("floorctl_leader", "1 while this instance leads the floor (a hot-standby pair)",
                            value=int(health["role"] == "leader"))
    yield GaugeMetricFamily("floorctl_lease_epoch", "The lease's epoch as this instance last saw it",
                            value=health.get("leader_epoch") or 0)
    yield CounterMetricFamily("floorctl_takeovers", "Times this instance took the floor's lease",
                              value=ha.get("takeovers", 0))
    renewals = CounterMetricFamily("floorctl_lease_renewals", "Lease renewals by this instance, by outcome",
                                   labels=["outcome"])
    renewals.add_metric(["ok"], ha.get("renewals", 0))
    renewals.add_metric(["failed"], ha.get("renewal_failures", 0))
    yield renewals
    yield SummaryMetricFamily("floorctl_lease_renewal_seconds", "Round trip of each successful renewal",
                              count_value=ha.get("renewals", 0), sum_value=ha.get("renewal_s_sum", 0.0))
    latest = GaugeMetricFamily("floorctl_lease_renewal_latency_seconds",
                               "Recent renewals' round trip (the last 1000)", labels=["quantile"])
    for quantile, key in (("0.5", "renewal_p50_s"), ("1", "renewal_max_s")):
        if ha.get(key) is not None:
            latest.add_metric([quantile], ha[key])
    yield latest
    yield CounterMetricFamily("floorctl_lease_renewal_cpu_seconds", "CPU time spent renewing the lease",
                              value=ha.get("renewal_cpu_s", 0.0))


def _device_gauges(devices: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["device_id", "kind"]
    online = GaugeMetricFamily("floorctl_device_online", "1 while the device is online",
                               labels=[*labels, "protocol"])
    queued = GaugeMetricFamily("floorctl_device_queue_length", "Commands waiting for the device",
                               labels=labels)
    in_flight = GaugeMetricFamily("floorctl_device_in_flight", "Commands the device is working on",
                                  labels=labels)
    rotation = GaugeMetricFamily("floorctl_device_in_rotation", "1 while the device is given new work",
                                 labels=labels)
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
        gauge = GaugeMetricFamily(family, f"Rolling-window quantiles of time per {label}",
                                  labels=[label, "quantile"])
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
