"""The external schedule sync's jobs (queue ``scheduling``): thin, the steps live in
``backend/scheduling.py``.

Each write defers its job with the schedule's (or employee's) lock, so the jobs of one row run
one at a time, in order. Every sync pushes the row's current state, so a late job never
writes an old one.
"""

from __future__ import annotations

import psycopg
from pydantic import BaseModel, ConfigDict

from backend import scheduling
from backend.declare.policy import Retry
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.runtime.context import TaskContext
from backend.runtime.isolation import SoftTimeLimitExceeded, TimeLimitExceeded

blueprint = TaskBlueprint()

#: The seed's policy: 3 retries with exponential backoff (60, 120, 240 s, ±10%), for what a
#: retry can fix; a refusal (4xx) or a missing setting fails at once.
RETRY = Retry(
    retries=3,
    backoff=60,
    factor=2,
    jitter=0.1,
    on=(
        scheduling.SchedulingUnavailable,
        SoftTimeLimitExceeded,
        TimeLimitExceeded,
        psycopg.OperationalError,
    ),
)
#: The seed's 4 min soft / 5 min hard limits. At the soft limit the job stops itself and
#: records why on the row; the hard limit is the worker's backstop.
SOFT_TIME_LIMIT = 240
TIME_LIMIT = 300


class ScheduleArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"schedule_id": 42}]})

    schedule_id: scheduling.RowId


class EmployeeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"employee_id": 7}]})

    employee_id: scheduling.RowId


def _run(ctx: TaskContext) -> scheduling.SyncRun:
    return scheduling.SyncRun(
        settings=ctx.settings,
        transaction=ctx.connection,
        job_id=ctx.job_id,
        attempt=ctx.attempt,
        retry=RETRY,
        soft_time_limit=SOFT_TIME_LIMIT,
    )


@blueprint.task(
    name=scheduling.SYNC_SCHEDULE,
    queue=scheduling.QUEUE,
    retry=RETRY,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=TIME_LIMIT,
)
async def sync_schedule(args: ScheduleArgs, ctx: TaskContext) -> scheduling.ScheduleSyncResult:
    """Bring the schedule's remote event to the row's current state: create it (under the
    schedule's Idempotency-Key, so a retry never makes a second) or update it."""
    return await scheduling.sync_schedule(_run(ctx), args.schedule_id)


@blueprint.task(
    name=scheduling.DELETE_REMOTE_SCHEDULE,
    queue=scheduling.QUEUE,
    retry=RETRY,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=TIME_LIMIT,
)
async def delete_remote_schedule(
    args: ScheduleArgs, ctx: TaskContext
) -> scheduling.ScheduleSyncResult:
    """Delete a deleted schedule's remote event, if it has one (a never-synced schedule needs
    no remote call)."""
    return await scheduling.delete_remote_schedule(_run(ctx), args.schedule_id)


@blueprint.task(
    name=scheduling.SYNC_EMPLOYEE,
    queue=scheduling.QUEUE,
    retry=RETRY,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=TIME_LIMIT,
)
async def sync_employee(args: EmployeeArgs, ctx: TaskContext) -> scheduling.EmployeeSyncResult:
    """Push the employee's current name, email and active flag."""
    return await scheduling.sync_employee(_run(ctx), args.employee_id)


@blueprint.task(
    name=scheduling.REFRESH_EVENTS,
    queue=scheduling.QUEUE,
    cron="0 * * * *",
    retry=RETRY,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=TIME_LIMIT,
    # Never two at once, and no pile of waiting refreshes while the queue is not served.
    lock=scheduling.REFRESH_EVENTS,
    queueing_lock=scheduling.REFRESH_EVENTS,
)
async def refresh_events(args: PeriodicArgs, ctx: TaskContext) -> scheduling.RefreshReport:
    """Hourly: fold the remote's events into the local schedules (changes made on the remote
    side, events created there); rows with a local change waiting to be pushed keep it."""
    return await scheduling.refresh_events(ctx.settings, ctx.connection)
