"""The monitoring family's tasks, on the seed's monitoring queues.

=============================================  ===================  ===========================
``manufacturing.health_check``                 monitoring.critical  every 2 minutes
``manufacturing.collect_performance_metrics``  monitoring.normal    every 5 minutes
=============================================  ===================  ===========================

The health check writes one row per probe into manufacturing.health_checks and raises an
alert through taskhub's alerting when a service goes down or comes back (once per outage, not
per check). The metrics come from taskhub's per-minute rollup and the active jobs, so their
cost never grows with the jobs ever run.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterable
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python

from backend.control import stats
from backend.control.alerts import raise_alert
from backend.db import DictConnection
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.examples.manufacturing.monitoring import checks
from backend.examples.manufacturing.queues import priority
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.queries import QUERIES as CORE_QUERIES
from backend.queries import load_queries
from backend.runtime.context import TaskContext

#: The named statements of monitoring/sql/*.sql.
QUERIES = load_queries("backend.examples.manufacturing.monitoring.sql")

blueprint = TaskBlueprint()

#: Rows one run prunes at most (the next run takes the rest).
PRUNE_BATCH = 1_000
#: The window of the performance metrics, in minutes of the rollup.
WINDOW_MINUTES = 5


class CheckResult(BaseModel):
    service: str
    ok: bool
    latency_ms: float | None
    error: str | None


class HealthReport(BaseModel):
    """What manufacturing.health_check found, and the alerts it raised."""

    checks: list[CheckResult]
    alerts: list[str] = Field(description="Kinds of the alerts raised, with their service")
    pruned: int


class MetricRow(BaseModel):
    """One row of manufacturing.performance_metrics (task None: the queue's own row)."""

    queue: str
    task: str | None
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    throughput_per_minute: float = 0.0
    p95_seconds: float | None = None
    waiting: int | None = None
    running: int | None = None


class MetricsRun(BaseModel):
    """What manufacturing.collect_performance_metrics wrote."""

    window_start: datetime.datetime
    window_end: datetime.datetime
    rows: list[MetricRow]
    written: int = Field(description="Rows new for this window (0 when it was recorded)")
    pruned: int


async def _row(conn: DictConnection, query: str, params: dict[str, Any]) -> dict[str, Any]:
    cursor = await conn.execute(QUERIES[query], params)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def record_checks(
    conn: DictConnection, found: list[checks.Check], job_id: int | None
) -> list[checks.AlertToRaise]:
    """Store the checks (serialized with any other health check) and return the alerts their
    transitions call for."""
    await conn.execute(QUERIES["health_lock"])
    cursor = await conn.execute(
        QUERIES["health_record"],
        {
            "services": [check.service for check in found],
            "oks": [check.ok for check in found],
            "latencies": [check.latency_ms for check in found],
            "errors": [check.error for check in found],
            "details": [Jsonb(to_jsonable_python(check.details)) for check in found],
            "job_id": job_id,
        },
    )
    by_service = {check.service: check for check in found}
    recorded = [
        checks.Recorded(
            check_id=row["id"],
            service=row["service"],
            ok=row["ok"],
            was_ok=row["was_ok"],
            error=by_service[row["service"]].error,
            details=by_service[row["service"]].details,
            down_since=row["down_since"],
        )
        for row in await cursor.fetchall()
    ]
    return checks.transitions(recorded)


@blueprint.task(
    name="manufacturing.health_check",
    queue="monitoring.critical",
    priority=priority("monitoring.critical"),
    cron="*/2 * * * *",
    queueing_lock="manufacturing.health_check",
    lock="manufacturing.health_check",
)
async def health_check(args: PeriodicArgs, ctx: TaskContext) -> HealthReport:
    """Probe the database, the mail server, the payment provider and the host's resources;
    one row each in manufacturing.health_checks. A service going down raises
    external_service_down (error), coming back external_service_recovered (info); a resource
    over its threshold system_resources (warning). Every 2 minutes, as the seed did."""
    settings = ctx.settings_of(ManufacturingSettings)
    smtp, payment = await asyncio.gather(
        checks.check_smtp(settings), checks.check_payment_provider(settings)
    )
    found = [smtp, *([payment] if payment else [])]
    found += checks.check_resources(settings, ctx.settings.data_dir)
    async with ctx.connection() as conn:
        started = time.perf_counter()
        await conn.execute(QUERIES["health_ping"])
        found.insert(
            0, checks.Check("database", True, round((time.perf_counter() - started) * 1000, 3))
        )
        raised = []
        for alert in await record_checks(conn, found, ctx.job_id):
            await raise_alert(
                conn,
                kind=alert.kind,
                severity=alert.severity,
                message=alert.message,
                details=alert.details,
                job_id=ctx.job_id,
            )
            raised.append(f"{alert.kind}:{alert.details['service']}")
        pruned = await _row(
            conn,
            "health_prune",
            {"retention_days": settings.monitoring_retention_days, "batch": PRUNE_BATCH},
        )
    return HealthReport(
        checks=[
            CheckResult(service=c.service, ok=c.ok, latency_ms=c.latency_ms, error=c.error)
            for c in found
        ],
        alerts=raised,
        pruned=pruned["deleted"],
    )


def metric_rows(
    series: Iterable[stats.Series], depths: Iterable[dict[str, Any]], minutes: float
) -> list[MetricRow]:
    """A row per queue and task from the rollup's series (one step over the window), and a
    row per queue with its depth and the sums of its tasks; queues with neither are left out."""
    rows: dict[tuple[str, str | None], MetricRow] = {}
    for item in series:
        succeeded = sum(point.succeeded for point in item.points)
        failed = sum(point.failed for point in item.points)
        p95s = [point.p95 for point in item.points if point.p95 is not None]
        rows[(item.queue, item.task)] = MetricRow(
            queue=item.queue,
            task=item.task,
            succeeded=succeeded,
            failed=failed,
            retried=sum(point.retried for point in item.points),
            throughput_per_minute=round((succeeded + failed) / minutes, 3),
            p95_seconds=max(p95s) if p95s else None,
        )
    depth = {row["queue_name"]: row for row in depths}
    for queue in sorted({queue for queue, _ in rows} | depth.keys()):
        tasks = [row for (name, task), row in rows.items() if name == queue and task is not None]
        found = depth.get(queue)
        succeeded = sum(row.succeeded for row in tasks)
        failed = sum(row.failed for row in tasks)
        rows[(queue, None)] = MetricRow(
            queue=queue,
            task=None,
            succeeded=succeeded,
            failed=failed,
            retried=sum(row.retried for row in tasks),
            throughput_per_minute=round((succeeded + failed) / minutes, 3),
            waiting=int(found["waiting"]) if found else 0,
            running=int(found["running"]) if found else 0,
        )
    return sorted(rows.values(), key=lambda row: (row.queue, row.task is not None, row.task or ""))


@blueprint.task(
    name="manufacturing.collect_performance_metrics",
    queue="monitoring.normal",
    priority=priority("monitoring.normal"),
    cron="*/5 * * * *",
    queueing_lock="manufacturing.collect_performance_metrics",
    lock="manufacturing.collect_performance_metrics",
)
async def collect_performance_metrics(args: PeriodicArgs, ctx: TaskContext) -> MetricsRun:
    """Per queue and task: throughput, failures and p95 over the rollup's last five minutes,
    and each queue's depth now, into manufacturing.performance_metrics. Reads the rollup's rows
    and the active jobs only. Every 5 minutes, as the seed did."""
    settings = ctx.settings_of(ManufacturingSettings)
    async with ctx.connection() as conn:
        window = await _row(conn, "metrics_window", {})
        since, until = window["since"], window["until"]
        answer = await stats.series(conn, since, until, WINDOW_MINUTES * 60)
        cursor = await conn.execute(CORE_QUERIES["metrics_queues"])
        rows = metric_rows(answer.series, await cursor.fetchall(), WINDOW_MINUTES)
        written = await _row(
            conn,
            "metrics_record",
            {
                "since": since,
                "until": until,
                "queues": [row.queue for row in rows],
                "tasks": [row.task for row in rows],
                "succeeded": [row.succeeded for row in rows],
                "failed": [row.failed for row in rows],
                "retried": [row.retried for row in rows],
                "throughput": [row.throughput_per_minute for row in rows],
                "p95": [row.p95_seconds for row in rows],
                "waiting": [row.waiting for row in rows],
                "running": [row.running for row in rows],
                "job_id": ctx.job_id,
            },
        )
        pruned = await _row(
            conn,
            "metrics_prune",
            {"retention_days": settings.monitoring_retention_days, "batch": PRUNE_BATCH},
        )
    return MetricsRun(
        window_start=since,
        window_end=until,
        rows=rows,
        written=written["written"],
        pruned=pruned["deleted"],
    )
