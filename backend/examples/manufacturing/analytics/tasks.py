"""The analytics family's tasks, on the seed's analytics queues with their priorities.

=========================================  ==================  ================================
``manufacturing.update_realtime_metrics``  analytics.realtime  every 2 min: a metric snapshot
``manufacturing.update_dashboard_metrics`` analytics.realtime  every 5 min: 5-minute buckets
``manufacturing.analyze_user_behavior``    analytics.batch     every 6 hours: customer activity
``manufacturing.generate_daily_report``    analytics.batch     daily 00:30 UTC: yesterday's KPIs
=========================================  ==================  ================================

The segment rule of analyze_user_behavior is in sql/analytics.sql (analytics_customer_activity).
"""

from __future__ import annotations

import csv
import datetime
import io
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.examples.manufacturing.queues import priority
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.queries import load_queries
from backend.runtime.context import TaskContext

#: The named statements of sql/analytics.sql.
QUERIES = load_queries("backend.examples.manufacturing.analytics.sql")

blueprint = TaskBlueprint()

#: The daily report's figures, in the CSV's order (revenue follows, one row per currency).
KPI_FIELDS = (
    "orders_created",
    "orders_shipped",
    "orders_cancelled",
    "payments_paid",
    "payments_failed",
    "emails_sent",
    "emails_failed",
    "emails_bounced",
)


class Snapshot(BaseModel):
    """What manufacturing.update_realtime_metrics recorded."""

    id: int
    taken_at: datetime.datetime
    orders_pending: int
    orders_matched: int
    orders_unmatched: int
    orders_in_production: int
    orders_shipped_last_hour: int
    orders_cancelled_last_hour: int
    payments_pending_last_hour: int
    payments_paid_last_hour: int
    payments_failed_last_hour: int
    emails_queued_last_hour: int
    emails_sent_last_hour: int
    emails_failed_last_hour: int


class DashboardRollup(BaseModel):
    """The buckets manufacturing.update_dashboard_metrics wrote, and the snapshots it pruned."""

    buckets: list[datetime.datetime]
    pruned_snapshots: int
    pruned_buckets: int = Field(
        description="Buckets older than TASKHUB_MANUFACTURING_MONITORING_RETENTION_DAYS, dropped."
    )


class BehaviorRun(BaseModel):
    """What manufacturing.analyze_user_behavior found."""

    analyzed_at: datetime.datetime
    customers: int
    at_risk: int
    active: int
    quiet: int
    removed: int = Field(description="Rows of customers with no activity in 7 days, dropped.")


class ReportArgs(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{}, {"day": "2026-12-03"}]}
    )

    timestamp: int | None = None
    day: datetime.date | None = Field(
        default=None,
        description="The UTC day to report; by default the day before the tick (or before now).",
    )


class DailyReport(BaseModel):
    """What manufacturing.generate_daily_report wrote (manufacturing.daily_kpis)."""

    day: datetime.date
    kpis: dict[str, int]
    revenue_cents: dict[str, int]
    report_bytes: int
    generated_at: datetime.datetime


def report_day(args: ReportArgs) -> datetime.date:
    """The day asked for, or the UTC day before the tick: a retried tick reports the same day."""
    if args.day is not None:
        return args.day
    now = (
        datetime.datetime.fromtimestamp(args.timestamp, datetime.UTC)
        if args.timestamp is not None
        else datetime.datetime.now(datetime.UTC)
    )
    return now.date() - datetime.timedelta(days=1)


def render_csv(day: datetime.date, figures: dict[str, Any]) -> str:
    """The report: one ``kpi,value`` row per figure, revenue per currency in cents."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kpi", "value"])
    writer.writerow(["day", day.isoformat()])
    for name in KPI_FIELDS:
        writer.writerow([name, figures[name]])
    for currency, cents in sorted(figures["revenue_cents"].items()):
        writer.writerow([f"revenue_cents_{currency}", cents])
    return out.getvalue()


@blueprint.task(
    name="manufacturing.update_realtime_metrics",
    queue="analytics.realtime",
    priority=priority("analytics.realtime"),
    cron="*/2 * * * *",
    queueing_lock="manufacturing.update_realtime_metrics",
)
async def update_realtime_metrics(args: PeriodicArgs, ctx: TaskContext) -> Snapshot:
    """Record a snapshot of the business (open orders; payments and emails of the last hour)
    into manufacturing.metric_snapshots. Every 2 minutes, as the seed did."""
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["analytics_take_snapshot"])
        row = await cursor.fetchone()
    assert row is not None
    return Snapshot.model_validate(row)


@blueprint.task(
    name="manufacturing.update_dashboard_metrics",
    queue="analytics.realtime",
    priority=priority("analytics.realtime"),
    cron="*/5 * * * *",
    queueing_lock="manufacturing.update_dashboard_metrics",
    lock="manufacturing.update_dashboard_metrics",
)
async def update_dashboard_metrics(args: PeriodicArgs, ctx: TaskContext) -> DashboardRollup:
    """Roll the snapshots into 5-minute buckets in manufacturing.dashboard_metrics and prune
    snapshots older than a day and buckets older than the monitoring retention, in one
    transaction. Every 5 minutes, as the seed did."""
    days = ctx.settings_of(ManufacturingSettings).monitoring_retention_days
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["analytics_roll_dashboard"])
        buckets = [row["bucket_start"] for row in await cursor.fetchall()]
        pruned = await conn.execute(QUERIES["analytics_prune_snapshots"])
        pruned_buckets = await conn.execute(QUERIES["analytics_prune_buckets"], {"days": days})
    return DashboardRollup(
        buckets=sorted(buckets),
        pruned_snapshots=pruned.rowcount,
        pruned_buckets=pruned_buckets.rowcount,
    )


@blueprint.task(
    name="manufacturing.analyze_user_behavior",
    queue="analytics.batch",
    priority=priority("analytics.batch"),
    cron="45 */6 * * *",
    queueing_lock="manufacturing.analyze_user_behavior",
    lock="manufacturing.analyze_user_behavior",
)
async def analyze_user_behavior(args: PeriodicArgs, ctx: TaskContext) -> BehaviorRun:
    """Rebuild manufacturing.customer_activity: per customer, orders in the last 6 h and 7 days,
    cancellations, payments paid and failed, emails bounced, and a segment (at_risk, active,
    quiet). Every 6 hours, as the seed did."""
    ended = datetime.datetime.now(datetime.UTC)
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["analytics_customer_activity"], {"ended": ended})
        row = await cursor.fetchone()
    assert row is not None
    return BehaviorRun(analyzed_at=ended, **row)


@blueprint.task(
    name="manufacturing.generate_daily_report",
    queue="analytics.batch",
    priority=priority("analytics.batch"),
    cron="30 0 * * *",
    queueing_lock="manufacturing.generate_daily_report",
)
async def generate_daily_report(args: ReportArgs, ctx: TaskContext) -> DailyReport:
    """Compute a UTC day's KPIs and write them with their CSV report into
    manufacturing.daily_kpis (GET /manufacturing/reports/{day}.csv serves it from any API
    replica). A rerun for the same day replaces the row. Daily, for the day before."""
    day = report_day(args)
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["analytics_day_kpis"], {"day": day})
        figures = await cursor.fetchone()
        assert figures is not None
        report = render_csv(day, figures)
        cursor = await conn.execute(
            QUERIES["analytics_save_day"],
            {
                **figures,
                "revenue_cents": Jsonb(figures["revenue_cents"]),
                "report_csv": report,
                "job_id": ctx.job_id,
            },
        )
        saved = await cursor.fetchone()
    assert saved is not None
    return DailyReport(
        day=day,
        kpis={name: figures[name] for name in KPI_FIELDS},
        revenue_cents=figures["revenue_cents"],
        report_bytes=len(report.encode()),
        generated_at=saved["generated_at"],
    )
