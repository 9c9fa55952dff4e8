"""The rescue's two exceptions: a job lost with its worker LOST_LIMIT times fails, final, with
its failure hook and audit row, instead of being rescued into the next worker's death; and a
lost job whose queueing lock another waiting job holds fails rather than break the rescue."""

from __future__ import annotations

from typing import Any

from backend import defer
from backend.db import DictConnection
from backend.queries import QUERIES
from backend.tasks.builtin import ping
from backend.tasks.maintenance import LOST_LIMIT


async def lose(conn: DictConnection, job_id: int) -> list[dict[str, Any]]:
    """The job runs on a worker that vanishes, then the rescue passes."""
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL WHERE id = %s",
        (job_id,),
    )
    cursor = await conn.execute(
        QUERIES["rescue_stalled_jobs"],
        {"seconds": 60, "lost_limit": LOST_LIMIT, "hooked_tasks": [ping.name]},
    )
    return await cursor.fetchall()


async def test_a_job_lost_three_times_fails_with_its_hook_and_audit(conn: DictConnection) -> None:
    await conn.set_autocommit(True)
    job_id = await defer.defer(conn, ping, {"message": "poison"})
    for _ in range(LOST_LIMIT - 1):
        [row] = await lose(conn, job_id)
        assert (row["id"], row["poison"]) == (job_id, False)
    [row] = await lose(conn, job_id)
    assert (row["id"], row["poison"]) == (job_id, True)

    cursor = await conn.execute(
        "SELECT status::text, attempts,"
        " ARRAY(SELECT message FROM taskhub.job_errors WHERE job_id = job.id ORDER BY id)"
        "   AS errors,"
        " ARRAY(SELECT type::text FROM procrastinate_events WHERE job_id = job.id ORDER BY id)"
        "   AS events"
        " FROM procrastinate_jobs job WHERE id = %s",
        (job_id,),
    )
    job = await cursor.fetchone()
    assert job is not None
    assert (job["status"], job["attempts"]) == ("failed", LOST_LIMIT)
    assert job["events"][-1] == "failed"
    assert len(job["errors"]) == LOST_LIMIT
    assert job["errors"][-1].endswith("; lost with its worker 3 times, the job is not run again")
    cursor = await conn.execute(
        "SELECT actor, details FROM taskhub.audit_log"
        " WHERE job_id = %s AND action = 'final_failure'",
        (job_id,),
    )
    [audit] = await cursor.fetchall()
    assert audit["actor"] == "rescue"
    cursor = await conn.execute(
        "SELECT args FROM procrastinate_jobs WHERE id = %s", (audit["details"]["hook_job_id"],)
    )
    assert await cursor.fetchone() == {"args": {"job_id": job_id}}, "its on_failure hook job"


async def test_a_poison_job_of_a_task_without_hook_defers_none(conn: DictConnection) -> None:
    await conn.set_autocommit(True)
    job_id = await defer.defer(conn, ping, {})
    await conn.execute(
        "INSERT INTO taskhub.job_errors (job_id, attempt, type, message)"
        " SELECT %s, n, 'WorkerLost', 'lost' FROM generate_series(1, %s) n",
        (job_id, LOST_LIMIT - 1),
    )
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL WHERE id = %s",
        (job_id,),
    )
    cursor = await conn.execute(
        QUERIES["rescue_stalled_jobs"],
        {"seconds": 60, "lost_limit": LOST_LIMIT, "hooked_tasks": []},
    )
    assert [(row["id"], row["poison"]) for row in await cursor.fetchall()] == [(job_id, True)]
    cursor = await conn.execute(
        "SELECT count(*) AS n FROM procrastinate_jobs WHERE task_name = 'taskhub.on_failure'"
    )
    assert await cursor.fetchone() == {"n": 0}


async def insert_job(conn: DictConnection, status: str, lock: str) -> int:
    cursor = await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args, status)"
        " VALUES ('maintenance', 'taskhub.ping', %s, '{}', %s) RETURNING id",
        (lock, status),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["id"])


async def rescue(conn: DictConnection) -> dict[int, tuple[bool, bool]]:
    cursor = await conn.execute(
        QUERIES["rescue_stalled_jobs"],
        {"seconds": 60, "lost_limit": LOST_LIMIT, "hooked_tasks": []},
    )
    return {row["id"]: (row["poison"], row["superseded"]) for row in await cursor.fetchall()}


async def statuses(conn: DictConnection, *job_ids: int) -> list[str]:
    cursor = await conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id",
        (list(job_ids),),
    )
    return [row["status"] for row in await cursor.fetchall()]


async def test_a_lost_job_whose_queueing_lock_waits_already_fails_and_the_rest_are_rescued(
    conn: DictConnection,
) -> None:
    """It broke the lock's unique index, and the whole rescue with it: no job was rescued."""
    await conn.set_autocommit(True)
    lost = await insert_job(conn, "doing", "taskhub.evaluate_alerts")
    waiting = await insert_job(conn, "todo", "taskhub.evaluate_alerts")
    other = await insert_job(conn, "doing", "something.else")
    assert await rescue(conn) == {lost: (False, True), other: (False, False)}
    assert await statuses(conn, lost, waiting, other) == ["failed", "todo", "todo"]


async def test_of_lost_jobs_sharing_a_queueing_lock_the_newest_is_rescued(
    conn: DictConnection,
) -> None:
    await conn.set_autocommit(True)
    older = await insert_job(conn, "doing", "taskhub.rescue_stalled_jobs")
    newer = await insert_job(conn, "doing", "taskhub.rescue_stalled_jobs")
    assert await rescue(conn) == {older: (False, True), newer: (False, False)}
    assert await statuses(conn, older, newer) == ["failed", "todo"]
