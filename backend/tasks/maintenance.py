"""Maintenance jobs: each is a periodic task that keeps taskhub's own tables small."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

import psycopg
from pydantic import BaseModel, computed_field

from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.queries import QUERIES
from backend.runtime.app import definition_of
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()

# After each batch, pause twice as long as it took: pruning keeps a database core busy a third
# of the time at most. Deleting costs CPU and WAL that busy workers also need; at half the time
# they lost up to a sixth of their pace on 2 cores, at a third nothing measurable
# (docs/pruning.md).
PAUSE_RATIO = 2.0
LOCK_TIMEOUT = "2s"
LOCK_RETRIES = 3
DAY = 86_400.0
# One pass per terminal event type, oldest finishes first; the failed ones are kept longer.
FINISH_TYPES = ("succeeded", "cancelled", "aborted", "failed")
START_CURSOR = (datetime.datetime.min.replace(tzinfo=datetime.UTC), 0)

logger = logging.getLogger(__name__)


class PruneReport(BaseModel):
    """What one pruning run deleted: jobs per status (each with its events, progress, result
    and errors), idempotency keys, stale waiters and rows of workers dead for 7 days."""

    succeeded_cutoff: datetime.datetime
    failed_cutoff: datetime.datetime
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    aborted: int = 0
    idempotency_keys: int = 0
    waiters: int = 0
    workers: int = 0
    batches: int = 0
    lock_timeouts: int = 0
    seconds: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def jobs(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.aborted


@blueprint.task(
    name="taskhub.prune_jobs",
    queue="maintenance",
    cron="7,22,37,52 * * * *",
    lock="taskhub.prune_jobs",
    queueing_lock="taskhub.prune_jobs",
)
async def prune_jobs(args: PeriodicArgs, ctx: TaskContext) -> PruneReport:
    """Delete jobs finished longer ago than TASKHUB_SUCCEEDED_RETENTION_DAYS (succeeded,
    cancelled, aborted) or TASKHUB_FAILED_RETENTION_DAYS (failed) with all stored about them,
    day-old idempotency keys, dead processes' waiters and workers dead for 7 days. Every 15
    minutes, so a run has little to do; in short transactions that skip locked rows, with
    pauses, so workers never wait."""
    started = time.monotonic()
    settings = ctx.settings
    async with ctx.connection() as conn:
        cursor = await conn.execute(
            QUERIES["prune_cutoffs"],
            {
                "succeeded_age_seconds": settings.succeeded_retention_days * DAY,
                "failed_age_seconds": settings.failed_retention_days * DAY,
            },
        )
        cutoffs = await cursor.fetchone()
    assert cutoffs is not None
    report = PruneReport(**cutoffs)
    for event_type in FINISH_TYPES:
        await _prune_finishes(ctx, report, event_type, settings.prune_batch_size)
    report.idempotency_keys = await _delete_in_batches(
        ctx, "prune_idempotency_keys", settings.prune_batch_size
    )
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["prune_waiters"])
        row = await cursor.fetchone()
    report.waiters = int(row["deleted"]) if row else 0
    report.workers = await _delete_in_batches(ctx, "prune_workers", settings.prune_batch_size)
    report.seconds = round(time.monotonic() - started, 3)
    return report


async def _prune_finishes(
    ctx: TaskContext, report: PruneReport, event_type: str, batch: int
) -> None:
    """Walk one event type's finishes older than its cutoff, a batch per transaction."""
    cutoff = report.failed_cutoff if event_type == "failed" else report.succeeded_cutoff
    message = (
        f"deleting {event_type} jobs finished before"
        f" {cutoff.astimezone(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    after_at, after_id = START_CURSOR
    timeouts = 0
    while True:
        params = {
            "event_type": event_type,
            "cutoff": cutoff,
            "succeeded_cutoff": report.succeeded_cutoff,
            "failed_cutoff": report.failed_cutoff,
            "after_at": after_at,
            "after_id": after_id,
            "batch": batch,
        }
        batch_started = time.monotonic()
        try:
            async with ctx.connection() as conn:
                await conn.execute(QUERIES["prune_batch_settings"], {"lock_timeout": LOCK_TIMEOUT})
                cursor = await conn.execute(QUERIES["prune_jobs"], params)
                row = await cursor.fetchone()
        except psycopg.errors.LockNotAvailable:
            # Something unusual holds rows this batch cascades to: try again after a pause,
            # then leave them to the next run rather than wait.
            report.lock_timeouts += 1
            timeouts += 1
            if timeouts >= LOCK_RETRIES:
                logger.warning(
                    "pruning %s jobs: rows stay locked, left to the next run", event_type
                )
                return
            await asyncio.sleep(1.0)
            continue
        assert row is not None
        timeouts = 0
        report.batches += 1
        for status in ("succeeded", "failed", "cancelled", "aborted"):
            setattr(report, status, getattr(report, status) + int(row[status]))
        ctx.progress(
            done=report.jobs,
            message=message,
            succeeded=report.succeeded,
            failed=report.failed,
            cancelled=report.cancelled,
            aborted=report.aborted,
        )
        if int(row["scanned"]) < batch:
            return
        after_at, after_id = row["last_at"], int(row["last_id"])
        await asyncio.sleep((time.monotonic() - batch_started) * PAUSE_RATIO)


async def _delete_in_batches(ctx: TaskContext, query: str, batch: int) -> int:
    """Run a ``DELETE ... LIMIT batch`` query until it deletes less than a batch."""
    total = 0
    while True:
        async with ctx.connection() as conn:
            cursor = await conn.execute(QUERIES[query], {"batch": batch})
            row = await cursor.fetchone()
        deleted = int(row["deleted"]) if row else 0
        total += deleted
        if deleted < batch:
            return total


class RescueReport(BaseModel):
    rescued: list[int]
    failed: list[int] = []  # poison jobs: lost with their worker LOST_LIMIT times
    superseded: list[int] = []  # failed too: a job with their queueing lock waits already


#: A job lost with its worker this many times fails rather than being rescued again: it is
#: what kills them (Sidekiq's super_fetch calls it a poison pill, and stops at 3 too).
LOST_LIMIT = 3


@blueprint.task(
    name="taskhub.rescue_stalled_jobs",
    queue="maintenance",
    cron="* * * * *",
    queueing_lock="taskhub.rescue_stalled_jobs",
)
async def rescue_stalled_jobs(args: PeriodicArgs, ctx: TaskContext) -> RescueReport:
    """Put back in the queue the jobs of workers silent for TASKHUB_RESCUE_AFTER seconds
    (killed, frozen, cut off), counting the lost attempt. A rescued worker that comes back
    cannot finish or overwrite those jobs: its finish is fenced on the worker id. A job lost
    LOST_LIMIT times fails: rescued again, it would kill worker after worker. So does one
    whose queueing lock another waiting job holds (the next tick of its schedule)."""
    hooked = [
        name
        for name in ctx.app.tasks
        if (definition := definition_of(ctx.app, name)) and definition.on_failure
    ]
    params = {
        "seconds": ctx.settings.rescue_after,
        "lost_limit": LOST_LIMIT,
        "hooked_tasks": hooked,
    }
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["rescue_stalled_jobs"], params)
        rows = await cursor.fetchall()
    failed = [int(row["id"]) for row in rows if row["poison"]]
    for job_id in failed:
        logger.error(
            "job %s failed: its worker was lost %d times while running it (killed, out of "
            "memory?); a poison job is not run again",
            job_id,
            LOST_LIMIT,
            extra={"action": "poison_job", "job_id": job_id},
        )
    superseded = [int(row["id"]) for row in rows if row["superseded"]]
    if superseded:
        logger.warning(
            "jobs %s failed with their lost worker: a job with the same queueing lock waits "
            "already, and runs instead",
            superseded,
            extra={"action": "superseded_jobs", "job_ids": superseded},
        )
    return RescueReport(
        rescued=[int(row["id"]) for row in rows if not (row["poison"] or row["superseded"])],
        failed=failed,
        superseded=superseded,
    )
