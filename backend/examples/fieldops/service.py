"""What the workers do, on a connection the task owns (they never commit): lock a day's
schedules, clean up notifications, notify an assignee, write a report."""

from __future__ import annotations

import datetime
from pathlib import Path

from pydantic import BaseModel

from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.examples.fieldops import pdf
from backend.queries import load_queries

QUERIES = load_queries("backend.examples.fieldops.sql")


class ReportGone(TaskhubError):
    """The report a job was deferred for does not exist (its request's rows are gone)."""


class LockResult(BaseModel):
    day: datetime.date
    locked: list[int]


class CleanupResult(BaseModel):
    before: datetime.datetime
    deleted: int


class NotifyResult(BaseModel):
    schedule_id: int
    notification_id: int | None


class ReportResult(BaseModel):
    report_id: int
    file_name: str
    schedules: int


def yesterday(at: datetime.datetime, zone: datetime.tzinfo) -> datetime.date:
    """The day before ``at``'s date where the teams work (TASKHUB_TIMEZONE)."""
    return at.astimezone(zone).date() - datetime.timedelta(days=1)


async def lock_day(conn: DictConnection, day: datetime.date, job_id: int | None) -> LockResult:
    """Lock the day's unlocked schedules, one audit row each; a rerun locks nothing more."""
    cursor = await conn.execute(QUERIES["fieldops_lock_day"], {"day": day, "job_id": job_id})
    locked = sorted(int(row["schedule_id"]) for row in await cursor.fetchall())
    return LockResult(day=day, locked=locked)


async def cleanup_notifications(
    conn: DictConnection, now: datetime.datetime, retention_days: int
) -> CleanupResult:
    before = now - datetime.timedelta(days=retention_days)
    cursor = await conn.execute(QUERIES["fieldops_cleanup_notifications"], {"before": before})
    return CleanupResult(before=before, deleted=cursor.rowcount)


async def notify_assignee(conn: DictConnection, schedule_id: int) -> NotifyResult:
    """A notification for the schedule's assignee; None when the schedule is gone."""
    cursor = await conn.execute(QUERIES["fieldops_add_notification"], {"schedule_id": schedule_id})
    row = await cursor.fetchone()
    return NotifyResult(schedule_id=schedule_id, notification_id=row["id"] if row else None)


def report_file_name(report_id: int) -> str:
    return f"report-{report_id}.pdf"


async def generate_report(conn: DictConnection, report_id: int, reports_dir: Path) -> ReportResult:
    """Write the report's PDF (replacing one a previous attempt wrote) and mark it ready."""
    cursor = await conn.execute(QUERIES["fieldops_get_report"], {"report_id": report_id})
    report = await cursor.fetchone()
    if report is None:
        raise ReportGone(f"report {report_id} does not exist: nothing to generate")
    cursor = await conn.execute(
        QUERIES["fieldops_report_rows"],
        {"day_from": report["day_from"], "day_to": report["day_to"]},
    )
    rows = await cursor.fetchall()
    name = report_file_name(report_id)
    count = pdf.render_report(
        reports_dir / name,
        report_id=report_id,
        day_from=report["day_from"],
        day_to=report["day_to"],
        rows=rows,
    )
    await conn.execute(
        QUERIES["fieldops_finish_report"], {"report_id": report_id, "file_name": name}
    )
    return ReportResult(report_id=report_id, file_name=name, schedules=count)
