"""Reading jobs: procrastinate's row and events, plus the Celery state names users know."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from backend.db import DictConnection
from backend.errors import JobNotFound
from backend.queries import QUERIES


class JobState(StrEnum):
    """Celery's names for where a job is, derived from procrastinate's status."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"


FINISHED_EVENTS = frozenset({"succeeded", "failed", "cancelled", "aborted"})


def celery_state(status: str, attempts: int) -> JobState:
    """Map procrastinate's status to Celery's state.

    A ``todo`` job that has already been tried is waiting for a retry.
    """
    if status == "todo":
        return JobState.RETRY if attempts > 0 else JobState.PENDING
    if status in ("doing", "aborting"):
        return JobState.STARTED
    if status == "succeeded":
        return JobState.SUCCESS
    if status == "failed":
        return JobState.FAILURE
    return JobState.REVOKED  # cancelled, aborted


class JobEvent(BaseModel):
    type: str = Field(description="procrastinate event type: deferred, started, succeeded, ...")
    at: datetime.datetime


class JobView(BaseModel):
    """What taskhub reports about one job."""

    id: int
    task: str
    queue: str
    priority: int
    args: dict[str, Any]
    lock: str | None
    queueing_lock: str | None
    status: str = Field(description="procrastinate's status: todo, doing, succeeded, failed, ...")
    state: JobState = Field(description="Celery's name for the status")
    attempts: int
    scheduled_at: datetime.datetime | None
    created_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    abort_requested: bool
    worker_id: int | None
    events: list[JobEvent]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobView:
        events = [JobEvent.model_validate(event) for event in row["events"]]

        def last(types: frozenset[str]) -> datetime.datetime | None:
            times = [event.at for event in events if event.type in types]
            return times[-1] if times else None

        return cls(
            id=row["id"],
            task=row["task_name"],
            queue=row["queue_name"],
            priority=row["priority"],
            args=row["args"],
            lock=row["lock"],
            queueing_lock=row["queueing_lock"],
            status=row["status"],
            state=celery_state(row["status"], row["attempts"]),
            attempts=row["attempts"],
            scheduled_at=row["scheduled_at"],
            created_at=next((event.at for event in events if event.type == "deferred"), None),
            started_at=last(frozenset({"started"})),
            finished_at=last(FINISHED_EVENTS) if row["status"] in FINISHED_EVENTS else None,
            abort_requested=row["abort_requested"],
            worker_id=row["worker_id"],
            events=events,
        )


async def get_job(conn: DictConnection, job_id: int) -> JobView:
    """Read one job; :class:`JobNotFound` if it does not exist (or was pruned)."""
    cursor = await conn.execute(QUERIES["get_job"], {"job_id": job_id})
    row = await cursor.fetchone()
    if row is None:
        raise JobNotFound(f"job {job_id} not found")
    return JobView.from_row(row)
