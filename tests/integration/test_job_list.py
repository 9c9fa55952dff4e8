"""The jobs list (jobs.list_jobs: REST /jobs, the dashboard, the CLI) answers exactly what its
definition on taskhub.job_overview says, whichever index a filter takes: every status, task,
queue, state, creation and finish window, paged with the cursor; creation times out of step
with the job ids (a job deferred in a long transaction gets a later id than jobs created after
it), so an id bound computed from a window must still hold every job created in it."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pytest

from backend.control import jobs
from backend.db import DictConnection

T0 = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.UTC)
STATUSES = ["todo", "doing", "succeeded", "failed", "cancelled", "aborted"]


def minutes(n: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=n)


@pytest.fixture
async def jobs_in_disorder(conn: DictConnection) -> list[dict[str, Any]]:
    """120 jobs of 3 tasks in 2 queues, in every status (through procrastinate's triggers, so
    each has its events), created a minute apart but shuffled against their ids by up to
    15 minutes, finished 30 minutes after creation; one job without a 'deferred' event."""
    rng = random.Random(17)
    cursor = await conn.execute(
        """
        INSERT INTO procrastinate_jobs (queue_name, task_name, args)
        SELECT CASE WHEN g % 3 = 0 THEN 'emails' ELSE 'default' END,
               (ARRAY['a.send', 'b.sync', 'c.rare'])[CASE WHEN g % 40 = 0 THEN 3
                                                        ELSE 1 + g % 2 END],
               '{}'::jsonb
          FROM generate_series(1, 120) g
        RETURNING id
        """
    )
    ids = [row["id"] for row in await cursor.fetchall()]
    for n, job_id in enumerate(ids):
        status = STATUSES[rng.randrange(len(STATUSES))] if n % 7 else "succeeded"
        created = minutes(n + rng.uniform(-15, 15))
        if status != "todo":
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,)
            )
        if status in ("succeeded", "failed", "aborted"):
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = %s, abort_requested = %s WHERE id = %s",
                (status, status == "aborted", job_id),
            )
        if status == "cancelled":
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'todo' WHERE id = %s", (job_id,)
            )
            await conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, false)", (job_id,))
        await conn.execute(
            "UPDATE procrastinate_events SET at = CASE type WHEN 'deferred' THEN %(created)s"
            " WHEN 'started' THEN %(created)s + interval '10 minutes'"
            " ELSE %(created)s + interval '30 minutes' END WHERE job_id = %(job)s",
            {"created": created, "job": job_id},
        )
    await conn.execute(
        "DELETE FROM procrastinate_events WHERE job_id = %s AND type = 'deferred'", (ids[5],)
    )
    await conn.execute("ANALYZE procrastinate_jobs")
    await conn.execute("ANALYZE procrastinate_events")
    cursor = await conn.execute("SELECT * FROM taskhub.job_overview ORDER BY id DESC")
    return list(await cursor.fetchall())


def expected(rows: list[dict[str, Any]], filters: jobs.JobFilters) -> list[int]:
    """The definition: the overview's rows that pass every filter, newest first."""

    def passes(row: dict[str, Any]) -> bool:
        created, finished = row["created_at"], row["finished_at"]
        return all(
            [
                not filters.statuses or row["status"] in filters.statuses,
                not filters.states or row["state"] in filters.states,
                filters.task is None or row["task_name"] == filters.task,
                filters.queue is None or row["queue_name"] == filters.queue,
                filters.created_after is None
                or (created is not None and created >= filters.created_after),
                filters.created_before is None
                or (created is not None and created < filters.created_before),
                filters.finished_after is None
                or (finished is not None and finished >= filters.finished_after),
                filters.finished_before is None
                or (finished is not None and finished < filters.finished_before),
            ]
        )

    return [row["id"] for row in rows if passes(row)]


async def listed(conn: DictConnection, filters: jobs.JobFilters, limit: int) -> list[int]:
    """Every page, following the cursor."""
    found: list[int] = []
    cursor = None
    while True:
        page = await jobs.list_jobs(conn, filters, limit=limit, cursor=cursor)
        found += [job.id for job in page.items]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


FILTERS = [
    jobs.JobFilters(),
    *[jobs.JobFilters(statuses=[jobs.JobStatus(status)]) for status in STATUSES],
    jobs.JobFilters(statuses=[jobs.JobStatus.cancelled, jobs.JobStatus.aborted]),
    jobs.JobFilters(statuses=[jobs.JobStatus.failed, jobs.JobStatus.todo]),
    jobs.JobFilters(states=[jobs.JobState.REVOKED, jobs.JobState.PENDING]),
    jobs.JobFilters(task="c.rare"),
    jobs.JobFilters(task="b.sync", queue="emails", statuses=[jobs.JobStatus.succeeded]),
    jobs.JobFilters(task="nothing.like.this"),
    jobs.JobFilters(created_after=minutes(30), created_before=minutes(50)),
    jobs.JobFilters(created_after=minutes(30.5), created_before=minutes(31)),
    jobs.JobFilters(created_after=minutes(90)),
    jobs.JobFilters(created_before=minutes(20)),
    jobs.JobFilters(created_before=minutes(-60)),
    jobs.JobFilters(created_after=minutes(500)),
    jobs.JobFilters(created_after=minutes(50), created_before=minutes(40)),
    jobs.JobFilters(
        created_after=minutes(10), created_before=minutes(100), statuses=[jobs.JobStatus.failed]
    ),
    jobs.JobFilters(created_after=minutes(0), created_before=minutes(120), task="c.rare"),
    jobs.JobFilters(finished_after=minutes(60), finished_before=minutes(80)),
]


@pytest.mark.parametrize("limit", [7, 50])
async def test_list_jobs_answers_its_definition(
    conn: DictConnection, jobs_in_disorder: list[dict[str, Any]], limit: int
) -> None:
    for filters in FILTERS:
        want = expected(jobs_in_disorder, filters)
        assert await listed(conn, filters, limit) == want, filters


async def test_the_fixture_has_creation_times_out_of_step_with_ids(
    jobs_in_disorder: list[dict[str, Any]],
) -> None:
    by_id = sorted(
        (row for row in jobs_in_disorder if row["created_at"]), key=lambda row: row["id"]
    )
    created = [row["created_at"] for row in by_id]
    assert created != sorted(created)
    assert {row["status"] for row in jobs_in_disorder} == set(STATUSES)
    assert any(row["created_at"] is None for row in jobs_in_disorder)
