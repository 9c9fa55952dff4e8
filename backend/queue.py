"""The procrastinate app factory, and deferring jobs inside the caller's transaction.

``defer`` runs procrastinate's own defer statement on the connection you pass, so the
job commits or rolls back with your business rows; NOTIFY is transactional too, so a
rolled-back job never wakes a worker.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import procrastinate
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate.jobs import Job
from procrastinate.manager import JobManager
from psycopg import AsyncConnection, Connection
from pydantic import BaseModel

from backend.errors import AlreadyQueued, UnknownTask
from backend.registry import TaskDefinition
from backend.settings import Settings
from backend.tasks import all_tasks

Args = Mapping[str, Any] | BaseModel


def build_task_app(url: str, settings: Settings) -> procrastinate.App:
    """A procrastinate App with every declared task, on its own (unopened) pool."""
    connector = procrastinate.PsycopgConnector(
        conninfo=url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
    )
    app = procrastinate.App(connector=connector)
    for definition in all_tasks().values():
        app.task(
            name=definition.name,
            queue=definition.queue,
            priority=definition.priority,
            retry=definition.retry or False,
            lock=definition.lock,
            queueing_lock=definition.queueing_lock,
        )(definition.procrastinate_function())
    return app


def get_task(name: str) -> TaskDefinition[Any]:
    try:
        return all_tasks()[name]
    except KeyError:
        known = ", ".join(sorted(all_tasks()))
        raise UnknownTask(f"unknown task {name!r}; registered tasks: {known}") from None


@functools.cache
def _job_manager() -> JobManager:
    # The connector is never opened: every call below passes the caller's connection.
    return JobManager(procrastinate.PsycopgConnector())


def _scheduled_at(
    schedule_at: datetime.datetime | None, schedule_in: datetime.timedelta | float | None
) -> datetime.datetime | None:
    if schedule_at is not None and schedule_in is not None:
        raise ValueError("give schedule_at or schedule_in, not both")
    if schedule_in is not None:
        delta = (
            schedule_in
            if isinstance(schedule_in, datetime.timedelta)
            else datetime.timedelta(seconds=schedule_in)
        )
        return datetime.datetime.now(datetime.UTC) + delta
    if schedule_at is not None and schedule_at.utcoffset() is None:
        raise ValueError("schedule_at must carry a timezone")
    return schedule_at


def make_job(
    task: TaskDefinition[Any],
    args: Args,
    *,
    queue: str | None = None,
    priority: int | None = None,
    schedule_at: datetime.datetime | None = None,
    schedule_in: datetime.timedelta | float | None = None,
    lock: str | None = None,
    queueing_lock: str | None = None,
) -> Job:
    """Validate the arguments and build the job row to insert, with the task's defaults."""
    return Job(
        task_name=task.name,
        task_kwargs=task.validate_args(args),
        queue=queue or task.queue,
        priority=task.priority if priority is None else priority,
        lock=lock if lock is not None else task.lock,
        queueing_lock=queueing_lock if queueing_lock is not None else task.queueing_lock,
        scheduled_at=_scheduled_at(schedule_at, schedule_in),
    )


async def defer(
    conn: AsyncConnection[Any], task: TaskDefinition[Any], args: Args, **options: Any
) -> int:
    """Enqueue one job on ``conn``, inside whatever transaction ``conn`` has open.

    Nothing is committed here: the caller's transaction decides.
    """
    return (await batch_defer(conn, task, [args], **options))[0]


async def batch_defer(
    conn: AsyncConnection[Any], task: TaskDefinition[Any], many_args: Iterable[Args], **options: Any
) -> list[int]:
    """Enqueue many jobs of one task in a single statement on ``conn``."""
    jobs = [make_job(task, args, **options) for args in many_args]
    try:
        deferred = await _job_manager().batch_defer_jobs_async(jobs, connection=conn)
    except procrastinate_exceptions.AlreadyEnqueued as exc:
        raise AlreadyQueued(str(exc)) from None
    return [job.id for job in deferred if job.id is not None]


def defer_sync(conn: Connection[Any], task: TaskDefinition[Any], args: Args, **options: Any) -> int:
    """Like :func:`defer`, for synchronous psycopg connections (Flask, Django, scripts)."""
    job = make_job(task, args, **options)
    try:
        deferred = _job_manager().batch_defer_jobs([job], connection=conn)
    except procrastinate_exceptions.AlreadyEnqueued as exc:
        raise AlreadyQueued(str(exc)) from None
    assert deferred[0].id is not None
    return deferred[0].id
