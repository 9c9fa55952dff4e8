"""Prometheus metrics, read from the database at scrape time: right with any number of worker
processes and hosts, and costing the jobs in flight and the small totals table, never the
finished jobs."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from backend.control import stats
from backend.db import DictConnection
from backend.queries import QUERIES

COUNTERS = {
    "succeeded": "Attempts that succeeded",
    "failed": "Attempts that failed for good",
    "retried": "Attempts that failed and were retried",
    "aborted": "Attempts aborted",
    "rescued": "Attempts lost with their worker and put back in the queue",
    "rate_limited": "Runs postponed by the task's rate limit",
}


class Snapshot(Collector):
    """A collector of figures read once per scrape."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


async def read_metrics(conn: DictConnection, alive_seconds: float) -> list[Metric]:
    waiting = GaugeMetricFamily("taskhub_queue_jobs_waiting", "Jobs due, waiting", labels=["queue"])
    scheduled = GaugeMetricFamily(
        "taskhub_queue_jobs_scheduled", "Jobs waiting for a later time", labels=["queue"]
    )
    running = GaugeMetricFamily("taskhub_queue_jobs_running", "Jobs running", labels=["queue"])
    oldest = GaugeMetricFamily(
        "taskhub_queue_oldest_waiting_seconds",
        "How long the oldest due job has waited",
        labels=["queue"],
    )
    cursor = await conn.execute(QUERIES["metrics_queues"])
    for row in await cursor.fetchall():
        queue = [row["queue_name"]]
        waiting.add_metric(queue, row["waiting"])
        scheduled.add_metric(queue, row["scheduled"])
        running.add_metric(queue, row["running"])
        oldest.add_metric(queue, row["oldest_waiting_seconds"])

    counters = {
        key: CounterMetricFamily(f"taskhub_jobs_{key}", help_text, labels=["task"])
        for key, help_text in COUNTERS.items()
    }
    started = CounterMetricFamily(
        "taskhub_jobs_started",
        "Attempts started, counted when they end (running ones: taskhub_queue_jobs_running)",
        labels=["task"],
    )
    durations = HistogramMetricFamily(
        "taskhub_job_duration_seconds", "Run time of attempts", labels=["task"]
    )
    limits = await stats.bounds(conn)
    cursor = await conn.execute(QUERIES["metrics_totals"])
    for row in await cursor.fetchall():
        task = [row["task_name"]]
        for key, counter in counters.items():
            counter.add_metric(task, row[key])
        started.add_metric(
            task,
            sum(row[key] for key in ("succeeded", "failed", "retried", "aborted", "rescued")),
        )
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, limits), "+Inf"], row["buckets"], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        durations.add_metric(task, buckets, row["duration_sum"])

    cursor = await conn.execute(QUERIES["metrics_overview"], {"alive_seconds": alive_seconds})
    overview = await cursor.fetchone()
    assert overview is not None
    workers = GaugeMetricFamily(
        "taskhub_workers_alive",
        "Worker processes with a recent heartbeat",
        overview["workers_alive"],
    )
    backup = GaugeMetricFamily(
        "taskhub_last_backup_timestamp_seconds", "End of the last successful backup (Unix time)"
    )
    if overview["last_backup"] is not None:
        backup.add_metric([], float(overview["last_backup"]))
    alerts = GaugeMetricFamily(
        "taskhub_alerts_firing", "Alerts firing now (rule and subject)", labels=["severity"]
    )
    for severity in ("info", "warning", "error", "critical"):
        alerts.add_metric([severity], overview["alerts_firing"].get(severity, 0))
    return [
        waiting, scheduled, running, oldest, started, *counters.values(), durations,
        workers, backup, alerts,
    ]  # fmt: skip


def render(metrics: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(metrics))
    return generate_latest(registry)
