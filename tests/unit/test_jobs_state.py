"""Celery state names and the job timeline derived from procrastinate's events."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from backend.jobs import JobEvent, JobState, JobView, celery_state

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def event(type_: str, seconds: float) -> dict[str, str]:
    """An event as the get_job query returns it: jsonb, so the time is an ISO string."""
    return {"type": type_, "at": at(seconds).isoformat()}


def job_row(status: str, events: list[dict[str, str]], **overrides: Any) -> dict[str, Any]:
    """A row shaped like the get_job query in backend/sql/queries.sql."""
    row: dict[str, Any] = {
        "id": 42,
        "task_name": "taskhub.ping",
        "queue_name": "default",
        "priority": 0,
        "lock": None,
        "queueing_lock": None,
        "args": {"message": "hello", "sleep": 0},
        "status": status,
        "scheduled_at": None,
        "attempts": 0,
        "abort_requested": False,
        "worker_id": None,
        "events": events,
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    ("status", "attempts", "state"),
    [
        ("todo", 0, JobState.PENDING),
        ("todo", 1, JobState.RETRY),
        ("todo", 4, JobState.RETRY),
        ("doing", 0, JobState.STARTED),
        ("doing", 2, JobState.STARTED),
        ("succeeded", 0, JobState.SUCCESS),
        ("succeeded", 3, JobState.SUCCESS),
        ("failed", 0, JobState.FAILURE),
        ("failed", 3, JobState.FAILURE),
        ("cancelled", 0, JobState.REVOKED),
        ("aborted", 0, JobState.REVOKED),
        ("aborted", 1, JobState.REVOKED),
    ],
)
def test_celery_state(status: str, attempts: int, state: JobState) -> None:
    assert celery_state(status, attempts) is state


def test_celery_state_values_are_celery_names() -> None:
    assert celery_state("succeeded", 0) == "SUCCESS"
    assert celery_state("cancelled", 0) == "REVOKED"


def test_a_succeeded_job() -> None:
    row = job_row(
        "succeeded",
        [event("deferred", 0), event("started", 1), event("succeeded", 2.5)],
        worker_id=7,
        attempts=0,
    )

    view = JobView.from_row(row)

    assert view.state is JobState.SUCCESS
    assert (view.created_at, view.started_at, view.finished_at) == (at(0), at(1), at(2.5))
    assert view.created_at is not None
    assert view.created_at.tzinfo is not None
    assert view.task == "taskhub.ping"
    assert view.queue == "default"
    assert view.args == {"message": "hello", "sleep": 0}
    assert view.worker_id == 7
    assert view.events == [
        JobEvent(type="deferred", at=at(0)),
        JobEvent(type="started", at=at(1)),
        JobEvent(type="succeeded", at=at(2.5)),
    ]


def test_a_retried_job_that_succeeded() -> None:
    """procrastinate records deferred, started, deferred_for_retry, started, succeeded."""
    row = job_row(
        "succeeded",
        [
            event("deferred", 0),
            event("started", 1),
            event("deferred_for_retry", 2),
            event("started", 5),
            event("succeeded", 6),
        ],
        attempts=1,
    )

    view = JobView.from_row(row)

    assert view.state is JobState.SUCCESS
    assert view.created_at == at(0), "deferred_for_retry is not the creation"
    assert view.started_at == at(5), "the last attempt's start"
    assert view.finished_at == at(6)
    assert len(view.events) == 5


def test_a_job_waiting_for_its_retry() -> None:
    row = job_row(
        "todo",
        [event("deferred", 0), event("started", 1), event("deferred_for_retry", 2)],
        attempts=1,
        scheduled_at=at(62),
    )

    view = JobView.from_row(row)

    assert view.state is JobState.RETRY
    assert view.created_at == at(0)
    assert view.started_at == at(1)
    assert view.finished_at is None
    assert view.scheduled_at == at(62)


def test_a_job_that_failed_after_retries() -> None:
    row = job_row(
        "failed",
        [
            event("deferred", 0),
            event("started", 1),
            event("deferred_for_retry", 2),
            event("started", 3),
            event("failed", 4),
        ],
        attempts=2,
    )

    view = JobView.from_row(row)

    assert view.state is JobState.FAILURE
    assert (view.created_at, view.started_at, view.finished_at) == (at(0), at(3), at(4))


def test_a_manually_retried_failed_job_that_runs_again_is_not_finished() -> None:
    row = job_row(
        "doing",
        [
            event("deferred", 0),
            event("started", 1),
            event("failed", 2),
            event("retried", 10),
            event("started", 11),
        ],
        attempts=1,
    )

    view = JobView.from_row(row)

    assert view.state is JobState.STARTED
    assert view.started_at == at(11)
    assert view.finished_at is None, "the earlier 'failed' event is not the end of this run"


def test_a_pending_scheduled_job() -> None:
    """procrastinate's 'scheduled' event carries the scheduled time, so it sorts last."""
    row = job_row(
        "todo",
        [event("deferred", 0), event("scheduled", 3600)],
        scheduled_at=at(3600),
    )

    view = JobView.from_row(row)

    assert view.state is JobState.PENDING
    assert view.created_at == at(0)
    assert (view.started_at, view.finished_at) == (None, None)
    assert view.scheduled_at == at(3600)


def test_a_cancelled_job_never_started() -> None:
    view = JobView.from_row(job_row("cancelled", [event("deferred", 0), event("cancelled", 3)]))

    assert view.state is JobState.REVOKED
    assert view.started_at is None
    assert view.finished_at == at(3)


def test_an_aborted_job() -> None:
    row = job_row(
        "aborted",
        [
            event("deferred", 0),
            event("started", 1),
            event("abort_requested", 2),
            event("aborted", 3),
        ],
        abort_requested=True,
    )

    view = JobView.from_row(row)

    assert view.state is JobState.REVOKED
    assert view.abort_requested is True
    assert (view.created_at, view.started_at, view.finished_at) == (at(0), at(1), at(3))


def test_a_job_whose_events_were_pruned() -> None:
    view = JobView.from_row(job_row("succeeded", []))

    assert view.state is JobState.SUCCESS
    assert (view.created_at, view.started_at, view.finished_at) == (None, None, None)
    assert view.events == []


def test_event_times_with_other_offsets_are_parsed_as_aware() -> None:
    row = job_row("doing", [{"type": "deferred", "at": "2024-05-01T14:00:00+02:00"}])

    view = JobView.from_row(row)

    assert view.created_at == datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
