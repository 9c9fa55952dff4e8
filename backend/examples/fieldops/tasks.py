"""Field operations' jobs: thin, the work lives in ``service.py`` and ``offsite.py``.

========================================  =============  ======================================
task                                      queue          when
========================================  =============  ======================================
``fieldops.notify_assignee``              k9_tasks       deferred by the Flask app with a schedule
``fieldops.run_automated_backup``         backups        daily 00:30: pg_dump + off-site copy
``fieldops.cleanup_old_notifications``    notifications  Mondays 02:00
``fieldops.auto_lock_yesterday_schedules`` schedules     daily at TASKHUB_FIELDOPS_AUTO_LOCK_HOUR
``fieldops.generate_pdf_report``          reports        deferred by the Flask app with a report
========================================  =============  ======================================

Crons run in ``TASKHUB_TIMEZONE`` (the seed's is ``Asia/Riyadh``); every task runs under the
seed's 25-minute soft and 30-minute hard limits (:data:`DEFAULTS`).
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from backend.control import alerts
from backend.declare.apps import load_app_settings
from backend.declare.policy import TaskDefaults
from backend.declare.registry import PeriodicArgs
from backend.examples.fieldops import offsite, service
from backend.examples.fieldops.blueprint import (
    AUTO_LOCK_YESTERDAY_SCHEDULES,
    BACKUPS_QUEUE,
    CLEANUP_OLD_NOTIFICATIONS,
    DEFAULT_QUEUE,
    GENERATE_PDF_REPORT,
    NOTIFICATIONS_QUEUE,
    NOTIFY_ASSIGNEE,
    REPORTS_QUEUE,
    RUN_AUTOMATED_BACKUP,
    SCHEDULES_QUEUE,
    blueprint,
)
from backend.examples.fieldops.settings import FieldopsSettings
from backend.maintenance import backups
from backend.runtime.context import TaskContext
from backend.tasks.backups import database_conninfo

__all__ = ["DEFAULTS", "blueprint"]

#: The seed's Celery limits (task_soft_time_limit 25 min, task_time_limit 30 min) for every
#: task of the app, and its default queue.
DEFAULTS = TaskDefaults(queue=DEFAULT_QUEUE, soft_time_limit=25 * 60, time_limit=30 * 60)

#: The seed's Config.SCHEDULE_AUTO_LOCK_HOUR, read once when the app is imported (a cron is
#: part of the task's declaration); TASKHUB_SCHEDULES still overrides it.
AUTO_LOCK_CRON = f"0 {load_app_settings(FieldopsSettings).auto_lock_hour} * * *"


class ScheduleArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule_id: int = Field(gt=0)


class ReportArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_id: int = Field(gt=0)


class BackupResult(BaseModel):
    backup: backups.BackupReport
    offsite: offsite.OffsiteCopy | None


def _tick(args: PeriodicArgs) -> datetime.datetime:
    """The tick the job was deferred for (now when deferred by hand)."""
    if args.timestamp is None:
        return datetime.datetime.now(datetime.UTC)
    return datetime.datetime.fromtimestamp(args.timestamp, datetime.UTC)


@blueprint.task(name=NOTIFY_ASSIGNEE)
async def notify_assignee(args: ScheduleArgs, ctx: TaskContext) -> service.NotifyResult:
    """Tell the assignee of a new schedule (the job exists only if the schedule committed)."""
    async with ctx.connection() as conn:
        return await service.notify_assignee(conn, args.schedule_id)


@blueprint.task(
    name=RUN_AUTOMATED_BACKUP,
    queue=BACKUPS_QUEUE,
    cron="30 0 * * *",
    lock=RUN_AUTOMATED_BACKUP,
    queueing_lock=RUN_AUTOMATED_BACKUP,
)
async def run_automated_backup(args: PeriodicArgs, ctx: TaskContext) -> BackupResult:
    """taskhub's own backup (pg_dump checked, recorded, TASKHUB_BACKUP_KEEP retention), then
    the copy off-site. A failed copy fails the job and raises ``backup_offsite_failed``; the
    local backup stays, recorded."""
    report = await backups.run_backup(
        backups.BackupRun(
            settings=ctx.settings,
            conninfo=database_conninfo(ctx),
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            transaction=ctx.connection,
            progress=ctx.progress,
        )
    )
    settings = ctx.settings_of(FieldopsSettings)
    try:
        copy = await asyncio.to_thread(
            offsite.copy_offsite, settings, Path(report.path), report.retention.deleted
        )
    except offsite.OffsiteCopyError as exc:
        async with ctx.connection() as conn:
            await alerts.raise_alert(
                conn,
                kind="backup_offsite_failed",
                message=exc.message,
                details={"backup_id": report.backup_id, "path": report.path},
                job_id=ctx.job_id,
            )
        raise
    return BackupResult(backup=report, offsite=copy)


@blueprint.task(name=CLEANUP_OLD_NOTIFICATIONS, queue=NOTIFICATIONS_QUEUE, cron="0 2 * * 1")
async def cleanup_old_notifications(args: PeriodicArgs, ctx: TaskContext) -> service.CleanupResult:
    """Remove read notifications older than TASKHUB_FIELDOPS_NOTIFICATION_RETENTION_DAYS."""
    days = ctx.settings_of(FieldopsSettings).notification_retention_days
    async with ctx.connection() as conn:
        return await service.cleanup_notifications(conn, _tick(args), days)


@blueprint.task(
    name=AUTO_LOCK_YESTERDAY_SCHEDULES,
    queue=SCHEDULES_QUEUE,
    cron=AUTO_LOCK_CRON,
    lock=AUTO_LOCK_YESTERDAY_SCHEDULES,
)
async def auto_lock_yesterday_schedules(args: PeriodicArgs, ctx: TaskContext) -> service.LockResult:
    """Lock the previous day's schedules (the day before the tick, in TASKHUB_TIMEZONE), an
    audit row per lock."""
    day = service.yesterday(_tick(args), ctx.settings.tzinfo())
    async with ctx.connection() as conn:
        return await service.lock_day(conn, day, ctx.job_id)


@blueprint.task(name=GENERATE_PDF_REPORT, queue=REPORTS_QUEUE)
async def generate_pdf_report(args: ReportArgs, ctx: TaskContext) -> service.ReportResult:
    """Write the report's PDF where the Flask app serves it from, and mark it ready."""
    reports_dir = ctx.settings_of(FieldopsSettings).reports_path(ctx.settings.data_dir)
    async with ctx.connection() as conn:
        return await service.generate_report(conn, args.report_id, reports_dir)
