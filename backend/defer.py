"""Deferring jobs inside the caller's transaction: a leaf (the declaration, one statement).

``defer`` runs one INSERT on the connection you pass (no pool, no BEGIN or COMMIT of its
own), so the job commits or rolls back with your business rows; procrastinate's triggers
record the job's 'deferred' event and NOTIFY the workers, and NOTIFY is transactional too,
so a rolled-back job never wakes a worker.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, LiteralString

from procrastinate.jobs import Job
from psycopg import AsyncConnection, Connection, errors
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from backend import tracing
from backend.declare.registry import TaskDefinition, describe_validation_error
from backend.errors import AlreadyQueued
from backend.queries import QUERIES
from backend.runtime.internals import QUEUEING_LOCK_CONSTRAINT

Args = Mapping[str, Any] | BaseModel

# procrastinate NOTIFYs on "procrastinate_queue_v1#<queue>", and channel names stop at 63 bytes.
QUEUE_PATTERN = r"^[A-Za-z0-9_.:\-]{1,40}$"
# Locks are labels. procrastinate reads a taken queueing lock back out of PostgreSQL's error
# message with a pattern that stops at a line break, so control characters are refused.
LOCK_PATTERN = r"^[^\x00-\x1f\x7f]{1,255}$"
PRIORITY = Field(default=None, ge=-(2**31), le=2**31 - 1, description="Higher runs first.")
#: How deep ``args`` may nest: far more than any job needs, far less than a recursion limit.
MAX_ARGS_DEPTH = 64
#: ``schedule_at`` bounds: a day inside what Python and psycopg represent, whatever the zone.
SCHEDULE_AT_MIN = datetime.datetime(1, 1, 2, tzinfo=datetime.UTC)
SCHEDULE_AT_MAX = datetime.datetime(9999, 12, 30, tzinfo=datetime.UTC)


def args_problem(args: dict[Any, Any]) -> str | None:
    """What makes ``args`` unfit for a JSON column, if anything; iterative, so depth is safe."""
    stack: list[tuple[Any, int]] = [(args, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return "strings in args cannot contain NUL (\\u0000) characters"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "strings in args must be valid Unicode (no lone surrogates such as \\ud800)"
        elif isinstance(value, float) and not math.isfinite(value):
            return "args cannot contain NaN or Infinity: JSON has no such numbers"
        elif isinstance(value, dict | list):
            if depth > MAX_ARGS_DEPTH:
                return f"args cannot nest deeper than {MAX_ARGS_DEPTH} levels"
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return None


def in_utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """An aware time in UTC (naive ones as they are): PostgreSQL refuses UTC offsets beyond
    ±15:59, which Python and ISO 8601 allow up to ±23:59."""
    if value is None or value.utcoffset() is None:
        return value
    try:
        return value.astimezone(datetime.UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


class DeferRequest(BaseModel):
    """A job to enqueue. Options left out take the task's defaults."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"task": "taskhub.ping", "args": {"message": "hello"}}],
        },
    )

    task: str = Field(min_length=1, max_length=200, description="Registered task name.")
    args: dict[str, Any] = Field(default_factory=dict, description="Validated by the task's model.")
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    priority: int | None = PRIORITY
    schedule_in: float | None = Field(
        default=None, ge=0, le=10 * 365 * 86400, description="Run after this many seconds."
    )
    schedule_at: AwareDatetime | None = Field(default=None, description="Run at this time.")
    queueing_lock: str | None = Field(
        default=None, pattern=LOCK_PATTERN, description="At most one waiting job per value."
    )
    lock: str | None = Field(
        default=None, pattern=LOCK_PATTERN, description="Jobs sharing a lock run one at a time."
    )

    @field_validator("args", mode="before")
    @classmethod
    def _json_args(cls, value: Any) -> Any:
        if isinstance(value, dict) and (problem := args_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("schedule_at")
    @classmethod
    def _schedule_at_in_utc(cls, value: datetime.datetime | None) -> datetime.datetime | None:
        if value is None:
            return None
        if not SCHEDULE_AT_MIN <= value <= SCHEDULE_AT_MAX:
            raise ValueError(
                f"must be between {SCHEDULE_AT_MIN:%Y-%m-%d} and {SCHEDULE_AT_MAX:%Y-%m-%d} (UTC)"
            )
        return in_utc(value)

    @model_validator(mode="after")
    def _one_schedule(self) -> DeferRequest:
        if self.schedule_in is not None and self.schedule_at is not None:
            raise ValueError("give schedule_in or schedule_at, not both")
        return self

    def options(self) -> dict[str, Any]:
        """The keyword options of :func:`defer` this request sets."""
        return self.model_dump(exclude={"task", "args"})

    @classmethod
    def parse(cls, data: dict[str, Any]) -> DeferRequest:
        """Validate a request from the CLI, with the same errors REST gives."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise describe_validation_error(exc, ()) from None


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
    queue = queue or task.queue
    task_kwargs = task.validate_args(args)
    if tracing.enabled():
        with tracing.defer_span(task.name, queue) as trace_context:
            if trace_context:  # a trace is active: the run joins it
                task_kwargs[tracing.TRACE_KEY] = trace_context
    return Job(
        task_name=task.name,
        task_kwargs=task_kwargs,
        queue=queue,
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
    return await insert_jobs(conn, [make_job(task, args, **options) for args in many_args])


def _insert_statement(jobs: list[Job]) -> tuple[LiteralString, dict[str, Any]]:
    if len(jobs) == 1:
        [job] = jobs
        return QUERIES["defer_job"], {
            "queue": job.queue,
            "task": job.task_name,
            "priority": job.priority,
            "lock": job.lock,
            "queueing_lock": job.queueing_lock,
            "args": Jsonb(job.task_kwargs),
            "scheduled_at": job.scheduled_at,
        }
    return QUERIES["defer_jobs"], {
        "queues": [job.queue for job in jobs],
        "tasks": [job.task_name for job in jobs],
        "priorities": [job.priority for job in jobs],
        "locks": [job.lock for job in jobs],
        "queueing_locks": [job.queueing_lock for job in jobs],
        "args": Jsonb([job.task_kwargs for job in jobs]),
        "scheduled_ats": [job.scheduled_at for job in jobs],
    }


def _already_queued(exc: errors.UniqueViolation, jobs: list[Job]) -> Exception:
    """procrastinate's message for a taken queueing lock; any other violation as it is."""
    if exc.diag.constraint_name != QUEUEING_LOCK_CONSTRAINT:
        return exc
    taken = re.search(r"\(queueing_lock\)=\((.*)\)", exc.diag.message_detail or "")
    lock = taken.group(1) if taken else next(job.queueing_lock for job in jobs if job.queueing_lock)
    return AlreadyQueued(
        f"Job cannot be enqueued: there is already a job in the queue with the queueing lock {lock}"
    )


async def insert_jobs(conn: AsyncConnection[Any], jobs: list[Job]) -> list[int]:
    """Insert jobs built (and validated) by :func:`make_job`, in one statement on ``conn``."""
    if not jobs:
        return []
    query, params = _insert_statement(jobs)
    try:
        async with conn.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(query, params)
            rows = await cursor.fetchall()
    except errors.UniqueViolation as exc:
        raise _already_queued(exc, jobs) from None
    return [row[0] for row in rows]


def defer_sync(conn: Connection[Any], task: TaskDefinition[Any], args: Args, **options: Any) -> int:
    """Like :func:`defer`, for synchronous psycopg connections (Flask, Django, scripts)."""
    return batch_defer_sync(conn, task, [args], **options)[0]


def batch_defer_sync(
    conn: Connection[Any], task: TaskDefinition[Any], many_args: Iterable[Args], **options: Any
) -> list[int]:
    """Like :func:`batch_defer`, for synchronous psycopg connections."""
    jobs = [make_job(task, args, **options) for args in many_args]
    if not jobs:
        return []
    query, params = _insert_statement(jobs)
    try:
        with conn.cursor(row_factory=tuple_row) as cursor:
            cursor.execute(query, params)
            rows = cursor.fetchall()
    except errors.UniqueViolation as exc:
        raise _already_queued(exc, jobs) from None
    return [row[0] for row in rows]
