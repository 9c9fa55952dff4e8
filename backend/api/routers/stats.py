"""Task statistics that outlive pruning (taskhub.task_stats), slow jobs, Prometheus metrics."""

from __future__ import annotations

import datetime
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from backend.api.deps import Conn, Reader
from backend.api.schemas import (
    UNAUTHENTICATED,
    UNAVAILABLE,
    invalid,
    ok_response,
    parameter_examples,
)
from backend.control import metrics, stats

router = APIRouter(tags=["stats"])

# Answers hold at most this many steps per series: a longer range gets a wider step.
MAX_STEPS = 10_000
MINUTE = 60
POINT = {
    "at": "2030-01-01T09:00:00Z",
    "succeeded": 118,
    "failed": 1,
    "retried": 3,
    "aborted": 0,
    "rescued": 0,
    "rate_limited": 12,
    "durations": 122,
    "duration_sum": 30.5,
    "p50": 0.21,
    "p95": 0.62,
    "p99": 0.94,
}
ANSWER = {
    "since": "2030-01-01T09:00:00Z",
    "until": "2030-01-01T10:00:00Z",
    "step": 3600,
    "series": [{"task": "emails.send", "queue": "emails", "points": [POINT]}],
}
SLOW = {
    "id": 1812,
    "task_name": "emails.send",
    "queue_name": "emails",
    "status": "succeeded",
    "started_at": "2030-01-01T09:12:00Z",
    "finished_at": "2030-01-01T09:12:04.5Z",
    "seconds": 4.5,
    "limit_seconds": 0.62,
}
BAD_STEP = invalid(
    "A parameter is invalid; `loc` names it.",
    ("A step under a minute", ["query", "step"], "Input should be greater than or equal to 60",
     "greater_than_equal"),
)  # fmt: skip
BAD_THRESHOLD = invalid(
    "A parameter is invalid; `loc` names it.",
    ("A threshold of 0", ["query", "threshold"], "Input should be greater than 0", "greater_than"),
)
TASK = Query(
    max_length=128,
    description="Only this task",
    openapi_examples=parameter_examples(one=("One task", "emails.send")),  # type: ignore[arg-type]
)


@router.get(
    "/stats",
    response_model=stats.StatsAnswer,
    summary="Outcomes and run times per task and queue over time",
    responses={
        200: ok_response("Series per task and queue.", hour=("One hourly point", ANSWER)),
        **UNAUTHENTICATED,
        **BAD_STEP,
        **UNAVAILABLE,
    },
)
async def get_stats(
    conn: Conn,
    caller: Reader,
    since: Annotated[
        datetime.datetime | None,
        Query(
            description="Start (default: an hour ago)",
            openapi_examples=parameter_examples(at=("A start", "2030-01-01T09:00:00Z")),
        ),
    ] = None,
    until: Annotated[
        datetime.datetime | None,
        Query(
            description="End (default: now)",
            openapi_examples=parameter_examples(at=("An end", "2030-01-01T10:00:00Z")),
        ),
    ] = None,
    step: Annotated[
        int,
        Query(
            ge=MINUTE,
            le=31 * 86_400,
            description="Seconds per point, whole minutes (widened to 10,000 points at most)",
            openapi_examples=parameter_examples(hour=("Hourly", 3600)),
        ),
    ] = MINUTE,
    task: Annotated[str | None, TASK] = None,
    queue: Annotated[
        str | None,
        Query(
            max_length=128,
            description="Only this queue",
            openapi_examples=parameter_examples(one=("One queue", "emails")),
        ),
    ] = None,
) -> stats.StatsAnswer:
    """Per step, task and queue: attempts succeeded, failed, retried, aborted, rescued and
    rate-limited, and run-time p50/p95/p99 (seconds, interpolated from fixed buckets), from
    the per-minute rollup (kept 30 days, whatever pruning deleted; up to a minute behind).
    Steps with no attempt are left out."""
    now = datetime.datetime.now(datetime.UTC)
    until = _aware(until) if until else now
    since = _aware(since) if since else until - datetime.timedelta(hours=1)
    span = max((until - since).total_seconds(), 0)
    step = max(step // MINUTE * MINUTE, math.ceil(span / MAX_STEPS / MINUTE) * MINUTE)
    return await stats.series(conn, since, until, step, task, queue)


@router.get(
    "/stats/slow",
    response_model=list[stats.SlowJob],
    summary="Jobs that ran longer than usual",
    responses={
        200: ok_response("Slowest first.", one=("One slow job", [SLOW])),
        **UNAUTHENTICATED,
        **BAD_THRESHOLD,
        **UNAVAILABLE,
    },
)
async def slow_jobs(
    conn: Conn,
    caller: Reader,
    task: Annotated[str | None, TASK] = None,
    threshold: Annotated[
        float | None,
        Query(
            gt=0,
            le=10**7,
            description="Seconds; default: each task's p95 over the last day",
            openapi_examples=parameter_examples(five=("Five seconds", 5)),
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=500,
            description="Most jobs listed",
            openapi_examples=parameter_examples(ten=("Ten", 10)),
        ),
    ] = 100,
) -> list[stats.SlowJob]:
    """Jobs still kept (finished in the last day, or running now) that ran longer than
    ``threshold`` seconds or, without one, their task's p95 over the last day; slowest first.
    The scan walks the last day's finishes on an index, never the whole table."""
    return await stats.slow_jobs(conn, task, threshold, limit)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    include_in_schema=False,
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {}}},
        **UNAUTHENTICATED,
        **UNAVAILABLE,
    },
)
async def get_metrics(request: Request, conn: Conn, caller: Reader) -> Response:
    """Queues, per-task counters and run-time histograms, workers alive, the last backup and
    recent alerts, read from the database at each scrape (docs/operations.md#metrics)."""
    found = await metrics.read_metrics(conn, request.app.state.settings.rescue_after)
    return Response(metrics.render(found), media_type="text/plain; version=0.0.4; charset=utf-8")


def _aware(at: datetime.datetime) -> datetime.datetime:
    return at if at.tzinfo else at.replace(tzinfo=datetime.UTC)
