"""Pruning of finished jobs: what goes when, what stays, in batches, through a real worker.

Time is controlled by moving a job's events back in time, never by waiting.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer
from backend.control import jobs
from backend.db import DictConnection
from backend.process import migrate
from backend.settings import Settings
from backend.tasks.builtin import ping
from backend.tasks.maintenance import prune_jobs
from tests.conftest import eventually
from tests.integration.conftest import running_worker

FINISHED = ("succeeded", "failed", "cancelled", "aborted")


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[DictConnection]:
    """Autocommit: a read must not leave a transaction open, or the worker would not see the
    jobs deferred after it."""
    async with await psycopg.AsyncConnection.connect(
        db_url, row_factory=dict_row, autocommit=True
    ) as connection:
        yield connection


async def new_jobs(conn: DictConnection, count: int) -> list[int]:
    async with conn.transaction():
        return await defer.batch_defer(conn, ping, [{"message": n} for n in range(count)])


async def finish(conn: DictConnection, job_id: int, status: str, days_ago: float = 0) -> None:
    """End a waiting job as a worker (or an operator, for 'cancelled') would, then move all
    its events ``days_ago`` back in time."""
    async with conn.transaction():
        if status == "cancelled":
            await jobs.cancel_job(conn, job_id, actor="test")
        else:
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,)
            )
            await conn.execute(
                "SELECT procrastinate_finish_job_v1(%s, %s::procrastinate_job_status, false)",
                (job_id, status),
            )
        await age(conn, job_id, days_ago)


async def age(conn: DictConnection, job_id: int, days: float) -> None:
    await conn.execute(
        "UPDATE procrastinate_events SET at = at - make_interval(secs => %s) WHERE job_id = %s",
        (days * 86_400, job_id),
    )


async def store_job_data(conn: DictConnection, job_id: int) -> None:
    """Everything taskhub keeps about a job: progress, result, an error, an idempotency key,
    an audit row."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO taskhub.job_progress (job_id, done, total) VALUES (%s, 1, 1)", (job_id,)
        )
        await conn.execute(
            "INSERT INTO taskhub.job_results (job_id, result) VALUES (%s, '1')", (job_id,)
        )
        await conn.execute(
            "INSERT INTO taskhub.job_errors (job_id, attempt, type, message)"
            " VALUES (%s, 1, 'E', 'boom')",
            (job_id,),
        )
        await conn.execute(
            "INSERT INTO taskhub.idempotency_keys (actor, key, request_hash, job_id)"
            " VALUES ('test', %s, 'hash', %s)",
            (f"key-{job_id}", job_id),
        )
        await conn.execute(
            "INSERT INTO taskhub.audit_log (actor, action, job_id) VALUES ('test', 'look', %s)",
            (job_id,),
        )


async def rows_of(conn: DictConnection, job_id: int) -> dict[str, int]:
    """How many rows each table holds for a job."""
    cursor = await conn.execute(
        """
        SELECT (SELECT count(*) FROM procrastinate_jobs WHERE id = %(id)s) AS jobs,
               (SELECT count(*) FROM procrastinate_events WHERE job_id = %(id)s) AS events,
               (SELECT count(*) FROM taskhub.job_progress WHERE job_id = %(id)s) AS progress,
               (SELECT count(*) FROM taskhub.job_results WHERE job_id = %(id)s) AS results,
               (SELECT count(*) FROM taskhub.job_errors WHERE job_id = %(id)s) AS errors,
               (SELECT count(*) FROM taskhub.idempotency_keys WHERE job_id = %(id)s) AS keys,
               (SELECT count(*) FROM taskhub.audit_log WHERE job_id = %(id)s) AS audit
        """,
        {"id": job_id},
    )
    row = await cursor.fetchone()
    assert row is not None
    return {name: int(value) for name, value in row.items()}


async def existing(conn: DictConnection, ids: list[int]) -> set[int]:
    cursor = await conn.execute("SELECT id FROM procrastinate_jobs WHERE id = ANY(%s)", (ids,))
    return {int(row["id"]) for row in await cursor.fetchall()}


async def run_prune(
    conn: DictConnection, settings: Settings, db_url: str, **overrides: Any
) -> dict[str, Any]:
    """Defer taskhub.prune_jobs on its own queue, let a real worker of that queue run it, and
    return its report. The worker's own schedule of it is off: only this run prunes."""
    async with conn.transaction():
        job_id = await defer.defer(conn, prune_jobs, {})
    worker_settings = settings.model_copy(
        update={"schedules": "taskhub.prune_jobs=off", **overrides}
    )
    async with running_worker(worker_settings, db_url, queues=["maintenance"]):

        async def done() -> bool:
            return (await jobs.get_job(conn, job_id)).status in FINISHED

        await eventually(done, within=30)
    job = await jobs.get_job(conn, job_id)
    assert job.status == "succeeded", job.errors
    assert isinstance(job.result, dict)
    return job.result


def counts(report: dict[str, Any]) -> dict[str, int]:
    return {key: report[key] for key in ("succeeded", "failed", "cancelled", "aborted", "jobs")}


async def test_ages_per_status_and_what_goes_with_the_job(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    assert (settings.succeeded_retention_days, settings.failed_retention_days) == (7, 30)
    ids = await new_jobs(conn, 12)
    old_ok, old_cancelled, old_aborted, old_failed = ids[:4]
    young_ok, young_cancelled, young_aborted, failed_8d, recent = ids[4:9]
    waiting_old, running, _waiting = ids[9:]  # the last one just waits
    for job_id, status, days in [
        (old_ok, "succeeded", 7.1),
        (old_cancelled, "cancelled", 8),
        (old_aborted, "aborted", 9),
        (old_failed, "failed", 31),
        (young_ok, "succeeded", 6.9),
        (young_cancelled, "cancelled", 6),
        (young_aborted, "aborted", 5),
        (failed_8d, "failed", 29.9),  # older than 7 days, but failed jobs stay 30
        (recent, "succeeded", 0),
    ]:
        await finish(conn, job_id, status, days)
    async with conn.transaction():
        await age(conn, waiting_old, 90)  # deferred 90 days ago, still waiting: not finished
        # Running on a live worker (the rescuer would otherwise take it back).
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing',"
            " worker_id = (SELECT worker_id FROM procrastinate_register_worker_v1())"
            " WHERE id = %s",
            (running,),
        )
        await age(conn, running, 60)
    for job_id in ids:
        await store_job_data(conn, job_id)
    doomed = [old_ok, old_cancelled, old_aborted, old_failed]
    kept = [job_id for job_id in ids if job_id not in doomed]
    kept_before = {job_id: await rows_of(conn, job_id) for job_id in kept}
    assert all(rows["events"] >= 1 for rows in kept_before.values())

    report = await run_prune(conn, settings, db_url)

    assert counts(report) == {
        "succeeded": 1,
        "failed": 1,
        "cancelled": 1,
        "aborted": 1,
        "jobs": 4,
    }
    for job_id in doomed:
        assert await rows_of(conn, job_id) == {
            "jobs": 0,
            "events": 0,
            "progress": 0,
            "results": 0,
            "errors": 0,
            "keys": 0,
            "audit": 2 if job_id == old_cancelled else 1,  # the operator's cancel, and ours
        }
    for job_id in kept:
        assert await rows_of(conn, job_id) == kept_before[job_id], job_id
    cutoff = datetime.datetime.fromisoformat(report["succeeded_cutoff"])
    failed_cutoff = datetime.datetime.fromisoformat(report["failed_cutoff"])
    assert cutoff - failed_cutoff == datetime.timedelta(days=23)


async def test_a_job_is_judged_by_its_latest_finish(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    """Failed 40 days ago, retried by an operator: what counts is how the retry ended."""
    succeeded_yesterday, succeeded_10d, waiting_again, failed_again_10d = await new_jobs(conn, 4)
    for job_id in (succeeded_yesterday, succeeded_10d, waiting_again, failed_again_10d):
        await finish(conn, job_id, "failed", days_ago=40)
        async with conn.transaction():
            await jobs.retry_job(conn, job_id, actor="test")
    await finish(conn, succeeded_yesterday, "succeeded", days_ago=1)
    await finish(conn, succeeded_10d, "succeeded")
    await finish(conn, failed_again_10d, "failed")
    async with conn.transaction():
        # The second run ended 10 days ago; the first ended 40 + 10 days ago.
        await age(conn, succeeded_10d, 10)
        await age(conn, failed_again_10d, 10)

    report = await run_prune(conn, settings, db_url)

    assert counts(report) == {
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
        "aborted": 0,
        "jobs": 1,
    }
    assert await existing(
        conn, [succeeded_yesterday, succeeded_10d, waiting_again, failed_again_10d]
    ) == {succeeded_yesterday, waiting_again, failed_again_10d}


async def test_the_latest_run_of_a_schedule_is_skipped(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    """procrastinate_periodic_defers points at each schedule's latest job: that job stays, and
    the batch it is in still deletes the others."""
    referenced, *others = await new_jobs(conn, 3)
    for job_id in (referenced, *others):
        await finish(conn, job_id, "succeeded", days_ago=20)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO procrastinate_periodic_defers (task_name, defer_timestamp, job_id)"
            " VALUES ('reports.daily', 1, %s)",
            (referenced,),
        )

    report = await run_prune(conn, settings, db_url)

    assert report["succeeded"] == 2
    assert await existing(conn, [referenced, *others]) == {referenced}
    cursor = await conn.execute(
        "SELECT job_id FROM procrastinate_periodic_defers WHERE task_name = 'reports.daily'"
    )
    assert await cursor.fetchall() == [{"job_id": referenced}]


async def test_many_batches_with_a_keyset_cursor(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    """Batches of 3: every old job goes, including finishes that share one timestamp (the
    cursor breaks ties on the event id) and around jobs the batches pass over."""
    ids = await new_jobs(conn, 16)
    succeeded, failed, skipped = ids[:10], ids[10:14], ids[14:]
    for job_id in succeeded + skipped:
        await finish(conn, job_id, "succeeded")
    for job_id in failed:
        await finish(conn, job_id, "failed")
    async with conn.transaction():
        await conn.execute(
            "UPDATE procrastinate_events SET at = now() - interval '40 days'"
            " WHERE type IN ('succeeded', 'failed')"
        )
        await conn.execute(
            "INSERT INTO procrastinate_periodic_defers (task_name, defer_timestamp, job_id)"
            " SELECT 'reports.daily', id, id FROM unnest(%s::bigint[]) id",
            (skipped,),
        )

    report = await run_prune(conn, settings, db_url, prune_batch_size=3)

    assert counts(report) == {
        "succeeded": 10,
        "failed": 4,
        "cancelled": 0,
        "aborted": 0,
        "jobs": 14,
    }
    # succeeded: 12 finishes scanned as 3+3+3+3 and an empty batch; cancelled and aborted: one
    # empty batch each; failed: 3+1.
    assert report["batches"] == 5 + 1 + 1 + 2
    assert await existing(conn, ids) == set(skipped)


async def test_locked_jobs_are_skipped_not_waited_for(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    """A job row someone holds a lock on (an operator's transaction, a waiting client) is left
    for the next run; the run neither waits nor fails."""
    locked, free = await new_jobs(conn, 2)
    for job_id in (locked, free):
        await finish(conn, job_id, "succeeded", days_ago=8)
    async with (
        await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as holder,
        holder.transaction(),
    ):
        await holder.execute("SELECT 1 FROM procrastinate_jobs WHERE id = %s FOR UPDATE", (locked,))
        report = await run_prune(conn, settings, db_url)
    assert report["succeeded"] == 1
    assert report["lock_timeouts"] == 0
    assert await existing(conn, [locked, free]) == {locked}
    report = await run_prune(conn, settings, db_url)
    assert report["succeeded"] == 1
    assert await existing(conn, [locked, free]) == set()


async def test_a_batch_gives_up_on_a_lock_rather_than_wait(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    """A row the delete cascades to is locked (SKIP LOCKED covers only the jobs): the batch
    times out instead of queueing, is tried three times, and its event type is left to the
    next run; the other types are pruned and the run succeeds."""
    stuck, other_ok, old_failed = await new_jobs(conn, 3)
    for job_id, status in ((stuck, "succeeded"), (other_ok, "succeeded"), (old_failed, "failed")):
        await finish(conn, job_id, status, days_ago=40)
    await store_job_data(conn, stuck)
    async with (
        await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as holder,
        holder.transaction(),
    ):
        await holder.execute(
            "SELECT 1 FROM taskhub.job_results WHERE job_id = %s FOR UPDATE", (stuck,)
        )
        report = await run_prune(conn, settings, db_url)
    assert report["lock_timeouts"] == 3
    assert counts(report) == {
        "succeeded": 0,
        "failed": 1,
        "cancelled": 0,
        "aborted": 0,
        "jobs": 1,
    }
    assert await existing(conn, [stuck, other_ok, old_failed]) == {stuck, other_ok}


async def test_idempotency_keys_and_stale_waiters(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    [job_id] = await new_jobs(conn, 1)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO taskhub.idempotency_keys (actor, key, request_hash, job_id, created_at)"
            " VALUES ('a', 'old', 'h', %(id)s, now() - interval '25 hours'),"
            "        ('a', 'new', 'h', %(id)s, now() - interval '23 hours')",
            {"id": job_id},
        )
        await conn.execute(
            "INSERT INTO taskhub.job_waiters (job_id, waiter, since) VALUES"
            " (%(id)s, gen_random_uuid(), now() - interval '2 hours'),"
            " (%(id)s, gen_random_uuid(), now())",
            {"id": job_id},
        )

    report = await run_prune(conn, settings, db_url, prune_batch_size=1)

    assert (report["idempotency_keys"], report["waiters"], report["jobs"]) == (1, 1, 0)
    cursor = await conn.execute("SELECT key FROM taskhub.idempotency_keys")
    assert await cursor.fetchall() == [{"key": "new"}]
    cursor = await conn.execute("SELECT count(*) AS n FROM taskhub.job_waiters")
    assert await cursor.fetchone() == {"n": 1}


def test_downgrade_removes_the_pruning_indexes(db_url: str) -> None:
    def indexes() -> set[str]:
        with psycopg.connect(db_url) as connection:
            rows = connection.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)",
                (["taskhub_events_finished_idx", "idempotency_keys_job_id_idx"],),
            ).fetchall()
        return {row[0] for row in rows}

    assert indexes() == {"taskhub_events_finished_idx", "idempotency_keys_job_id_idx"}
    migrate.downgrade(db_url, "0004")
    assert indexes() == set()
    migrate.upgrade(db_url)
    assert len(indexes()) == 2
