"""Reading and controlling jobs: procrastinate's rows seen through taskhub.job_overview.

Every function takes the caller's connection and never commits: the request (or the CLI
command) owns the transaction, so an action and its audit row commit together.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from backend.db import DictConnection
from backend.errors import JobNotFound, TaskhubError
from backend.queries import QUERIES
from backend.runtime.progress import Progress


class JobState(StrEnum):
    """Celery's names for where a job is (computed by the taskhub.job_overview view)."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"


class JobStatus(StrEnum):
    """procrastinate's statuses."""

    todo = "todo"
    doing = "doing"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    aborted = "aborted"


FINISHED = frozenset({"succeeded", "failed", "cancelled", "aborted"})


class JobConflict(TaskhubError):
    """The job is not in a state that allows the action."""

    status_code = 409
    exit_code = 2


class JobEvent(BaseModel):
    type: str = Field(description="procrastinate event: deferred, started, succeeded, ...")
    at: datetime.datetime


class JobError(BaseModel):
    """What one failed attempt raised."""

    attempt: int
    type: str = Field(examples=["ConnectionError"])
    message: str = Field(examples=["ERP answered 503"])
    traceback: str | None = None
    at: datetime.datetime


class LastError(BaseModel):
    attempt: int
    type: str
    message: str
    at: datetime.datetime


class JobSummary(BaseModel):
    """A job as listed: no arguments' history, just where it is."""

    id: int
    task: str
    queue: str
    priority: int
    args: dict[str, Any]
    lock: str | None
    queueing_lock: str | None
    status: JobStatus = Field(description="procrastinate's status")
    state: JobState = Field(description="Celery's name for it; PROGRESS once a task reports")
    attempts: int = Field(description="Runs finished so far (a running job's is not counted)")
    scheduled_at: datetime.datetime | None
    created_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    abort_requested: bool
    worker_id: int | None
    progress: Progress | None
    result: Any = Field(default=None, description="What the task returned (JSON)")
    last_error: LastError | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobSummary:
        return cls(**_summary_fields(row))


class JobView(JobSummary):
    """Everything about one job."""

    events: list[JobEvent]
    errors: list[JobError] = Field(description="One per failed attempt, oldest first")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobView:
        return cls(
            **_summary_fields(row),
            events=[JobEvent.model_validate(event) for event in row["events"]],
            errors=[JobError.model_validate(error) for error in row["errors"]],
        )


def _summary_fields(row: dict[str, Any]) -> dict[str, Any]:
    progress = None
    if row["progress_updated_at"] is not None:
        progress = Progress(
            done=row["progress_done"],
            total=row["progress_total"],
            message=row["progress_message"],
            counters=row["progress_counters"] or {},
        )
    last_error = None
    if row["last_error_type"] is not None:
        last_error = LastError(
            attempt=row["last_error_attempt"],
            type=row["last_error_type"],
            message=row["last_error_message"],
            at=row["last_error_at"],
        )
    return {
        "id": row["id"],
        "task": row["task_name"],
        "queue": row["queue_name"],
        "priority": row["priority"],
        "args": row["args"],
        "lock": row["lock"],
        "queueing_lock": row["queueing_lock"],
        "status": row["status"],
        "state": row["state"],
        "attempts": row["attempts"],
        "scheduled_at": row["scheduled_at"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "abort_requested": row["abort_requested"],
        "worker_id": row["worker_id"],
        "progress": progress,
        "result": row["result"],
        "last_error": last_error,
    }


async def get_job(conn: DictConnection, job_id: int) -> JobView:
    """Read one job; :class:`JobNotFound` if it does not exist (or was pruned)."""
    cursor = await conn.execute(QUERIES["get_job"], {"job_id": job_id})
    row = await cursor.fetchone()
    if row is None:
        raise JobNotFound(f"job {job_id} not found")
    return JobView.from_row(row)


class JobFilters(BaseModel):
    statuses: list[JobStatus] | None = None
    states: list[JobState] | None = None
    task: str | None = None
    queue: str | None = None
    created_after: datetime.datetime | None = None
    created_before: datetime.datetime | None = None
    finished_after: datetime.datetime | None = None
    finished_before: datetime.datetime | None = None


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )


JobT = TypeVar("JobT", bound=JobSummary)
#: Masks a task's secret arguments: ``(task name, args) -> args as shown``.
ArgsMask = Callable[[str, dict[str, Any]], dict[str, Any]]


def masked(job: JobT, mask_args: ArgsMask) -> JobT:
    """The job as shown outside the database: its secret arguments masked."""
    return job.model_copy(update={"args": mask_args(job.task, job.args)})


def masked_page(page: JobPage, mask_args: ArgsMask) -> JobPage:
    return page.model_copy(update={"items": [masked(job, mask_args) for job in page.items]})


class InvalidCursor(TaskhubError):
    """The pagination cursor was not one this API returned."""

    status_code = 422
    exit_code = 2


def encode_cursor(job_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        job_id = int(value)
        if prefix != "id" or not 0 < job_id < 2**63:
            raise ValueError(raw)
    except ValueError:
        raise InvalidCursor("invalid cursor: use the next_cursor of a previous page") from None
    return job_id


async def list_jobs(
    conn: DictConnection, filters: JobFilters, *, limit: int = 50, cursor: str | None = None
) -> JobPage:
    """Newest first. Keyset pagination on the job id, so new jobs never shift later pages.

    Never prepared: each filter needs its own plan (a partial index per status, a creation
    window's bounds), and a prepared statement may settle on one generic plan for all of them,
    which walks every job.
    """
    cursor_row = await conn.execute(
        QUERIES["list_jobs"],
        {
            "before_id": decode_cursor(cursor) if cursor else None,
            "statuses": [status.value for status in filters.statuses] if filters.statuses else None,
            "states": [state.value for state in filters.states] if filters.states else None,
            "task": filters.task,
            "queue": filters.queue,
            "created_after": filters.created_after,
            "created_before": filters.created_before,
            "finished_after": filters.finished_after,
            "finished_before": filters.finished_before,
            "limit": limit + 1,
        },
        prepare=False,
    )
    rows = await cursor_row.fetchall()
    items = [JobSummary.from_row(row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return JobPage(items=items, next_cursor=next_cursor)


async def _record(
    conn: DictConnection, actor: str, action: str, job_id: int, **details: Any
) -> None:
    await conn.execute(
        QUERIES["record_audit"],
        {"actor": actor, "action": action, "job_id": job_id, "details": Jsonb(details)},
    )


async def _locked_status(conn: DictConnection, job_id: int) -> str:
    cursor = await conn.execute(QUERIES["lock_job"], {"job_id": job_id})
    row = await cursor.fetchone()
    if row is None:
        raise JobNotFound(f"job {job_id} not found")
    return str(row["status"])


async def cancel_job(conn: DictConnection, job_id: int, actor: str) -> JobView:
    """A waiting job is cancelled; a running one is asked to abort (the task sees it)."""
    status = await _locked_status(conn, job_id)
    if status not in ("todo", "doing"):
        raise JobConflict(
            f"job {job_id} is {status}: only waiting or running jobs can be cancelled"
        )
    await conn.execute(QUERIES["cancel_job"], {"job_id": job_id})
    action = "cancel" if status == "todo" else "abort"
    await _record(conn, actor, action, job_id, previous_status=status)
    return await get_job(conn, job_id)


async def retry_job(conn: DictConnection, job_id: int, actor: str) -> JobView:
    """Run a failed, cancelled or aborted job again; its history stays."""
    status = await _locked_status(conn, job_id)
    if status not in ("failed", "cancelled", "aborted"):
        raise JobConflict(
            f"job {job_id} is {status}: only failed, cancelled or aborted jobs can be retried"
        )
    await conn.execute(QUERIES["retry_finished_job"], {"job_id": job_id})
    await _record(conn, actor, "retry", job_id, previous_status=status)
    return await get_job(conn, job_id)
