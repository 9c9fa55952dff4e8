"""The external schedule sync's jobs (queue ``scheduling``): thin, the steps live in
``service.py``.

Each write defers its job with the schedule's (or employee's) lock, so the jobs of one row run
one at a time, in order. Every sync pushes the row's current state, so a late job never
writes an old one. Queue, retry and limits are the app's defaults (:data:`DEFAULTS`), which
an operator may change per app in ``TASKHUB_TASK_DEFAULTS``; each job follows the policy it
actually runs under.
"""

from __future__ import annotations

from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict

from backend.declare.policy import Retry, TaskDefaults
from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.examples.scheduling import service
from backend.examples.scheduling.blueprint import (
    DELETE_REMOTE_SCHEDULE,
    QUEUE,
    REFRESH_EVENTS,
    SYNC_EMPLOYEE,
    SYNC_SCHEDULE,
    blueprint,
    declared,
)
from backend.examples.scheduling.schemas import RowId
from backend.examples.scheduling.settings import SchedulingSettings
from backend.runtime.context import TaskContext
from backend.runtime.isolation import SoftTimeLimitExceeded, TimeLimitExceeded

__all__ = ["DEFAULTS", "RETRY", "blueprint"]

#: The seed's policy: 3 retries with exponential backoff (60, 120, 240 s, ±10%), for what a
#: retry can fix; a refusal (4xx) or a missing setting fails at once.
RETRY = Retry(
    retries=3,
    backoff=60,
    factor=2,
    jitter=0.1,
    on=(
        service.SchedulingUnavailable,
        SoftTimeLimitExceeded,
        TimeLimitExceeded,
        psycopg.OperationalError,
    ),
)
#: The seed's 4 min soft / 5 min hard limits. At the soft limit the job stops itself and
#: records why on the row; the hard limit is the worker's backstop.
SOFT_TIME_LIMIT = 240
TIME_LIMIT = 300
#: What every task of the app runs under unless it says otherwise.
DEFAULTS = TaskDefaults(
    queue=QUEUE, retry=RETRY, soft_time_limit=SOFT_TIME_LIMIT, time_limit=TIME_LIMIT
)


class ScheduleArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"schedule_id": 42}]})

    schedule_id: RowId


class EmployeeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"employee_id": 7}]})

    employee_id: RowId


def _run(ctx: TaskContext, task: TaskDefinition[Any]) -> service.SyncRun:
    return service.SyncRun(
        settings=ctx.settings_of(SchedulingSettings),
        transaction=ctx.connection,
        job_id=ctx.job_id,
        attempt=ctx.attempt,
        retry=task.retry,
        soft_time_limit=task.soft_time_limit,
    )


@blueprint.task(name=SYNC_SCHEDULE)
async def sync_schedule(args: ScheduleArgs, ctx: TaskContext) -> service.ScheduleSyncResult:
    """Bring the schedule's remote event to the row's current state: create it (under the
    schedule's Idempotency-Key, so a retry never makes a second) or update it."""
    return await service.sync_schedule(_run(ctx, declared(SYNC_SCHEDULE)), args.schedule_id)


@blueprint.task(name=DELETE_REMOTE_SCHEDULE)
async def delete_remote_schedule(
    args: ScheduleArgs, ctx: TaskContext
) -> service.ScheduleSyncResult:
    """Delete a deleted schedule's remote event, if it has one (a never-synced schedule needs
    no remote call)."""
    run = _run(ctx, declared(DELETE_REMOTE_SCHEDULE))
    return await service.delete_remote_schedule(run, args.schedule_id)


@blueprint.task(name=SYNC_EMPLOYEE)
async def sync_employee(args: EmployeeArgs, ctx: TaskContext) -> service.EmployeeSyncResult:
    """Push the employee's current name, email and active flag."""
    return await service.sync_employee(_run(ctx, declared(SYNC_EMPLOYEE)), args.employee_id)


@blueprint.task(
    name=REFRESH_EVENTS,
    cron="0 * * * *",
    # Never two at once, and no pile of waiting refreshes while the queue is not served.
    lock=REFRESH_EVENTS,
    queueing_lock=REFRESH_EVENTS,
)
async def refresh_events(args: PeriodicArgs, ctx: TaskContext) -> service.RefreshReport:
    """Hourly: fold the remote's events into the local schedules (changes made on the remote
    side, events created there); rows with a local change waiting to be pushed keep it."""
    return await service.refresh_events(ctx.settings_of(SchedulingSettings), ctx.connection)
