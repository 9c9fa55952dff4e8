"""Maintenance jobs: each is a periodic task that keeps taskhub's own tables small."""

from __future__ import annotations

from pydantic import BaseModel

from backend.queries import QUERIES
from backend.registry import PeriodicArgs, TaskBlueprint
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()

BATCH = 5_000
DAY = 86_400.0


class PruneReport(BaseModel):
    results: int = 0
    progress: int = 0
    errors: int = 0
    idempotency_keys: int = 0


@blueprint.task(
    name="taskhub.prune_job_data",
    queue="maintenance",
    cron="17 * * * *",
    queueing_lock="taskhub.prune_job_data",
)
async def prune_job_data(args: PeriodicArgs, ctx: TaskContext) -> PruneReport:
    """Delete results and progress past TASKHUB_RESULT_RETENTION_DAYS, failed jobs' errors
    past TASKHUB_FAILED_ERROR_RETENTION_DAYS, day-old idempotency keys and waiters left by
    dead processes; in batches, each its own short transaction, so workers never wait on it."""
    settings = ctx.settings
    params = {
        "age_seconds": settings.succeeded_retention_days * DAY,
        "failed_age_seconds": settings.failed_retention_days * DAY,
        "batch": BATCH,
    }
    report = PruneReport()
    for field, query in (
        ("results", "prune_results"),
        ("progress", "prune_progress"),
        ("errors", "prune_errors"),
        ("idempotency_keys", "prune_idempotency_keys"),
    ):
        while True:
            async with ctx.connection() as conn:
                cursor = await conn.execute(QUERIES[query], params)
                row = await cursor.fetchone()
            deleted = int(row["deleted"]) if row else 0
            setattr(report, field, getattr(report, field) + deleted)
            if deleted < BATCH:
                break
    async with ctx.connection() as conn:
        await conn.execute(QUERIES["prune_waiters"])
    return report


class RescueReport(BaseModel):
    rescued: list[int]


@blueprint.task(
    name="taskhub.rescue_stalled_jobs",
    queue="maintenance",
    cron="* * * * *",
    queueing_lock="taskhub.rescue_stalled_jobs",
)
async def rescue_stalled_jobs(args: PeriodicArgs, ctx: TaskContext) -> RescueReport:
    """Put back in the queue the jobs of workers silent for TASKHUB_RESCUE_AFTER seconds
    (killed, frozen, cut off), counting the lost attempt. A rescued worker that comes back
    cannot finish or overwrite those jobs: its finish is fenced on the worker id."""
    async with ctx.connection() as conn:
        cursor = await conn.execute(
            QUERIES["rescue_stalled_jobs"], {"seconds": ctx.settings.rescue_after}
        )
        rows = await cursor.fetchall()
    return RescueReport(rescued=[int(row["id"]) for row in rows])
