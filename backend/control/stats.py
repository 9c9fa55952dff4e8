"""Task statistics that outlive pruning: the per-minute rollup and queue depth samples (written
by taskhub.rollup_stats) and what is read from them (GET /stats, GET /stats/slow, `taskhub
stats`, /metrics, the dashboard's charts)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import NamedTuple

from pydantic import BaseModel, Field

from backend.db import DictConnection
from backend.queries import QUERIES

# Longest window one rollup transaction aggregates, and the longest it waits for a transaction
# still open (an event's `at` is its transaction's start): see stats_claim_window.
WINDOW_SECONDS = 600.0
MAX_WAIT_SECONDS = 300.0
# Per-minute rows and queue depth samples are kept this long (taskhub.task_totals forever),
# deleted in batches.
RETENTION_DAYS = 30
PRUNE_BATCH = 5000
QUANTILES = (0.5, 0.95, 0.99)


class RollupReport(BaseModel):
    attempts: int = 0
    windows: int = 0
    pruned: int = Field(default=0, description="Per-minute rows of taskhub.task_stats deleted")
    rolled_up_to: datetime.datetime | None = None
    queues_sampled: int = Field(default=0, description="Queue depth samples written")
    depth_pruned: int = Field(default=0, description="Queue depth samples deleted")


class Window(NamedTuple):
    until: datetime.datetime
    attempts: int
    caught_up: bool  # the window reached the horizon: nothing more is due


async def rollup_window(conn: DictConnection) -> Window | None:
    """Roll up the next window in the caller's transaction, or return None when another
    rollup holds the watermark or nothing is due yet."""
    cursor = await conn.execute(
        QUERIES["stats_claim_window"],
        {"max_seconds": WINDOW_SECONDS, "max_wait_seconds": MAX_WAIT_SECONDS},
    )
    window = await cursor.fetchone()
    if window is None or window["until"] <= window["since"]:
        return None
    cursor = await conn.execute(QUERIES["stats_rollup"], dict(window))
    row = await cursor.fetchone()
    assert row is not None
    length = (window["until"] - window["since"]).total_seconds()
    return Window(window["until"], int(row["attempts"]), length < WINDOW_SECONDS)


async def prune_batch(conn: DictConnection, retention_days: float = RETENTION_DAYS) -> int:
    return await _prune(conn, "stats_prune", retention_days)


async def prune_depth_batch(conn: DictConnection, retention_days: float = RETENTION_DAYS) -> int:
    return await _prune(conn, "queue_depth_prune", retention_days)


async def _prune(conn: DictConnection, query: str, retention_days: float) -> int:
    cursor = await conn.execute(
        QUERIES[query], {"retention_seconds": retention_days * 86_400, "batch": PRUNE_BATCH}
    )
    row = await cursor.fetchone()
    return int(row["deleted"]) if row else 0


async def sample_queue_depth(conn: DictConnection) -> int:
    """Write this minute's depth of every queue with jobs in flight (one statement, on the
    active jobs alone); the number of queues sampled."""
    cursor = await conn.execute(QUERIES["queue_depth_sample"])
    row = await cursor.fetchone()
    return int(row["queues"]) if row else 0


def quantile(bounds: Sequence[float], buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile of a histogram (``buckets[i]`` counts values up to ``bounds[i]``, the
    last one those above every bound), interpolated linearly inside its bucket; above the last
    bound, that bound."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[index - 1]) if index else 0.0
            return lower + (float(bounds[index]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])


async def bounds(conn: DictConnection) -> list[float]:
    cursor = await conn.execute(QUERIES["stats_bounds"])
    row = await cursor.fetchone()
    assert row is not None
    return [float(bound) for bound in row["bounds"]]


class Point(BaseModel):
    at: datetime.datetime = Field(description="Start of the step")
    succeeded: int
    failed: int
    retried: int
    aborted: int
    rescued: int
    rate_limited: int
    durations: int = Field(description="Attempts with a duration (every outcome but rate limits)")
    duration_sum: float
    p50: float | None
    p95: float | None
    p99: float | None


class Series(BaseModel):
    task: str
    queue: str
    points: list[Point]


class StatsAnswer(BaseModel):
    since: datetime.datetime
    until: datetime.datetime
    step: int
    series: list[Series]


async def series(
    conn: DictConnection,
    since: datetime.datetime,
    until: datetime.datetime,
    step: int,
    task: str | None = None,
    queue: str | None = None,
) -> StatsAnswer:
    """Outcomes and duration percentiles per step, task and queue (steps with no attempt are
    left out)."""
    limits = await bounds(conn)
    cursor = await conn.execute(
        QUERIES["stats_series"],
        {"since": since, "until": until, "step": step, "task": task, "queue": queue},
    )
    found: dict[tuple[str, str], list[Point]] = {}
    for row in await cursor.fetchall():
        p50, p95, p99 = (quantile(limits, row["buckets"], q) for q in QUANTILES)
        found.setdefault((row["task_name"], row["queue_name"]), []).append(
            Point(
                at=row["at"],
                succeeded=row["succeeded"],
                failed=row["failed"],
                retried=row["retried"],
                aborted=row["aborted"],
                rescued=row["rescued"],
                rate_limited=row["rate_limited"],
                durations=row["duration_count"],
                duration_sum=row["duration_sum"],
                p50=p50,
                p95=p95,
                p99=p99,
            )
        )
    return StatsAnswer(
        since=since,
        until=until,
        step=step,
        series=[Series(task=t, queue=q, points=points) for (t, q), points in found.items()],
    )


class SlowJob(BaseModel):
    id: int
    task_name: str
    queue_name: str
    status: str = Field(description="succeeded, failed, aborted, or doing (running now)")
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    seconds: float = Field(description="Run time (so far, when running)")
    limit_seconds: float = Field(description="The threshold, or the task's p95 over the day")


async def slow_jobs(
    conn: DictConnection,
    task: str | None = None,
    threshold: float | None = None,
    limit: int = 100,
) -> list[SlowJob]:
    """Jobs still kept that ran longer than ``threshold`` seconds or, without one, than their
    task's p95 over the last day (from the rollup): finished in the last day, or running."""
    now = datetime.datetime.now(datetime.UTC)
    since = now - datetime.timedelta(days=1)
    per_task: dict[str, float] = {}
    if threshold is None or task is None:
        limits = await bounds(conn)
        cursor = await conn.execute(QUERIES["stats_task_buckets"], {"since": since, "task": task})
        for row in await cursor.fetchall():
            p95 = quantile(limits, row["buckets"], 0.95)
            if p95 is not None:
                per_task[row["task_name"]] = threshold if threshold is not None else p95
    if threshold is not None and task is not None:
        per_task = {task: threshold}
    if not per_task:
        return []
    cursor = await conn.execute(
        QUERIES["slow_jobs"], {"limits": json.dumps(per_task), "since": since, "limit": limit}
    )
    return [SlowJob.model_validate(row) for row in await cursor.fetchall()]
