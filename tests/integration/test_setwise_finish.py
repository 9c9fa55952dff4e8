"""The set-wise finish leaves exactly what procrastinate's own functions leave.

The worker finishes a batch of outcomes with two set-wise UPDATEs (``finish_jobs`` in
backend/sql/queries.sql) instead of one ``procrastinate_finish_job_v1`` or
``procrastinate_retry_job_v2`` call per job (``finish_jobs_by_function``, kept as the reference in
tests/integration/finish_reference/). Two identical databases get the same jobs in the same
states and the same batch of outcomes, one through each statement; then every row and every
NOTIFY must be the same (tests/integration/twins.py says how they are compared). The mutation
tests make sure the comparison notices a wrong finish.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, LiteralString

import pytest
from psycopg.types.json import Jsonb

from backend.queries import QUERIES, load_queries
from backend.runtime.finisher import FINISH_CONNECTION_SETTINGS, finish_entry
from tests.integration.twins import Connection, World, differences, run_world

SETWISE = QUERIES["finish_jobs"]
# The same statement up to its set-wise UPDATEs, then procrastinate's functions, one call per job.
SHARED_CTES = SETWISE[: SETWISE.index("), finished AS (")] + ")\n"
REFERENCE = (
    SHARED_CTES + load_queries("tests.integration.finish_reference")["finish_jobs_by_function_tail"]
)

WAITER = uuid.UUID(int=7)
RETRY_AT = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
CHANNELS = (
    "procrastinate_any_queue_v1",
    "procrastinate_queue_v1#default",
    "procrastinate_queue_v1#mail",
    "procrastinate_queue_v1#slow",
    "taskhub_job_finished",
    "taskhub_job_progress",
)
DEFER_ONE = (
    "SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, %s, NULL, %s, NULL)"
    "::procrastinate_job_to_defer_v1]))[1] AS id"
)


async def defer(conn: Connection, queue: str, task: str, lock: str | None = None) -> int:
    cursor = await conn.execute(DEFER_ONE, (queue, task, lock, Jsonb({"task": task})))
    row = await cursor.fetchone()
    assert row is not None
    return int(row["id"])


async def seed(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
    """The same jobs in the same states on either database; the batch worker A submits."""
    cursor = await conn.execute("SELECT procrastinate_register_worker_v1() AS id")
    worker_a = int((await cursor.fetchone() or {})["id"])
    cursor = await conn.execute("SELECT procrastinate_register_worker_v1() AS id")
    worker_b = int((await cursor.fetchone() or {})["id"])

    succeeded = await defer(conn, "default", "tests.ok")
    succeeded_watched = await defer(conn, "default", "tests.ok")
    failed = await defer(conn, "mail", "tests.boom")
    failed_hooked = await defer(conn, "mail", "tests.boom")
    retry_later = await defer(conn, "default", "tests.flaky", lock="L1")
    retry_now_moved = await defer(conn, "default", "tests.flaky")
    retry_abort_asked = await defer(conn, "slow", "tests.flaky")
    aborted = await defer(conn, "slow", "tests.long")
    succeeded_abort_asked = await defer(conn, "slow", "tests.long")
    taken_over = await defer(conn, "default", "tests.ok")
    cancelled = await defer(conn, "default", "tests.ok")
    cancelled_watched = await defer(conn, "mail", "tests.ok")
    failed_once = await defer(conn, "mail", "tests.boom")
    mine = [
        succeeded,
        succeeded_watched,
        failed,
        failed_hooked,
        retry_later,
        retry_now_moved,
        retry_abort_asked,
        aborted,
        succeeded_abort_asked,
        failed_once,
    ]
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = ANY(%s)",
        (worker_a, mine),
    )
    # A job rescued from A and now run by B; A's outcome for it comes late.
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        (worker_b, taken_over),
    )
    # Cancelled while waiting (A's outcome for it is a stale one) and an abort asked of B.
    await conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, false)", (cancelled,))
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        (worker_b, cancelled_watched),
    )
    await conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", (cancelled_watched,))
    for job_id in (retry_abort_asked, aborted, succeeded_abort_asked):
        await conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", (job_id,))
    for job_id in (succeeded_watched, failed_hooked, retry_now_moved, cancelled_watched):
        await conn.execute(
            "INSERT INTO taskhub.job_waiters (job_id, waiter) VALUES (%s, %s)", (job_id, WAITER)
        )
    await conn.execute(
        "INSERT INTO taskhub.job_progress (job_id, done, total, message) VALUES (%s, 1, 4, 'a')",
        (retry_later,),
    )
    await conn.execute(
        "INSERT INTO taskhub.job_errors (job_id, attempt, type, message) VALUES (%s, 1, 'E', 'm')",
        (failed_once,),
    )
    await conn.execute("UPDATE procrastinate_jobs SET attempts = 1 WHERE id = %s", (failed_once,))
    error = {"error_type": "ValueError", "error_message": "no\x00pe", "traceback": "tb"}
    batch = [
        finish_entry(
            succeeded,
            "succeeded",
            1,
            has_result=True,
            result={"n": 1},
            has_progress=True,
            done=4,
            total=4,
            message="done",
            counters={"rows": 4},
        ),
        finish_entry(succeeded_watched, "succeeded", 1, has_result=True, result=[1, "two"]),
        finish_entry(failed, "failed", 1, **error),
        finish_entry(failed_hooked, "failed", 1, run_failure_hook=True, **error),
        finish_entry(retry_later, "retry", 1, retry_at=RETRY_AT.isoformat(), **error),
        finish_entry(retry_now_moved, "retry", 1, priority=5, queue="mail", lock="L2", **error),
        finish_entry(retry_abort_asked, "retry", 1, retry_at=RETRY_AT.isoformat(), **error),
        finish_entry(aborted, "aborted", 1, error_type="Aborted", error_message="asked"),
        finish_entry(succeeded_abort_asked, "succeeded", 1, has_result=True, result=None),
        finish_entry(taken_over, "succeeded", 1, has_result=True, result={"stale": True}),
        finish_entry(cancelled, "failed", 1, **error),
        finish_entry(cancelled_watched, "aborted", 1),
        finish_entry(failed_once, "failed", 2, run_failure_hook=True, **error),
    ]
    return worker_a, batch


async def finish_world(url: str, statement: LiteralString, *, quiet_trigger: bool) -> World:
    """Seed, finish the batch with ``statement`` as worker A, collect what it left."""

    async def steps(conn: Connection) -> list[Any]:
        worker_a, batch = await seed(conn)
        if quiet_trigger:
            for name, value in FINISH_CONNECTION_SETTINGS.items():
                await conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        cursor = await conn.execute(statement, {"batch": Jsonb(batch), "worker_id": worker_a})
        return sorted(int(row["job_id"]) for row in await cursor.fetchall())

    return await run_world(url, steps, CHANNELS, fixed=[RETRY_AT])


@pytest.mark.parametrize("quiet_trigger", [False, True], ids=["any-connection", "worker-finish"])
async def test_the_setwise_finish_leaves_what_procrastinates_functions_leave(
    twin_urls: tuple[str, str], quiet_trigger: bool
) -> None:
    reference = await finish_world(twin_urls[0], REFERENCE, quiet_trigger=quiet_trigger)
    candidate = await finish_world(twin_urls[1], SETWISE, quiet_trigger=quiet_trigger)

    assert differences(reference, candidate) == []
    # The batch covers what it should: 10 owned jobs finished, the stale and cancelled ones
    # fenced off, a hook job deferred for each hooked final failure.
    assert len(candidate.returned) == 10
    statuses = [job["status"] for job in candidate.tables["procrastinate_jobs"]]
    assert statuses.count("todo") == 2 + 2  # two retries, two hook jobs
    assert {event["type"] for event in candidate.tables["procrastinate_events"]} >= {
        "succeeded",
        "failed",
        "aborted",
        "deferred_for_retry",
        "scheduled",
        "abort_requested",
    }
    if not quiet_trigger:
        assert ("taskhub_job_finished", str(candidate.returned[1])) in candidate.notifies


MUTATIONS = {
    "attempts not counted on finish": (
        "attempts = job.attempts + 1\n      FROM owned\n     WHERE job.id = owned.job_id"
        " AND owned.outcome <> 'retry'",
        "attempts = job.attempts\n      FROM owned\n     WHERE job.id = owned.job_id"
        " AND owned.outcome <> 'retry'",
    ),
    "abort request kept on finish": ("abort_requested = false,\n", ""),
    "an abort-asked retry counted as an attempt": (
        "CASE WHEN job.abort_requested THEN job.attempts ELSE",
        "CASE WHEN job.abort_requested THEN job.attempts + 1 ELSE",
    ),
    "abort request in the retry's SET list": (
        "lock = CASE WHEN job.abort_requested THEN job.lock",
        "abort_requested = job.abort_requested,\n"
        "           lock = CASE WHEN job.abort_requested THEN job.lock",
    ),
    "retry due now": ("ELSE owned.retry_at END", "ELSE NULL END"),
    "retry keeps its queue": (
        "ELSE COALESCE(owned.queue, job.queue_name) END",
        "ELSE job.queue_name END",
    ),
    "no fence on the worker": (
        "AND job.worker_id = %(worker_id)s",
        "AND %(worker_id)s IS NOT NULL",
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
async def test_the_comparison_catches_a_wrong_finish(
    twin_urls: tuple[str, str], mutation: str
) -> None:
    old, new = MUTATIONS[mutation]
    assert old in SETWISE, mutation
    mutated = SETWISE.replace(old, new)
    reference = await finish_world(twin_urls[0], REFERENCE, quiet_trigger=False)
    candidate = await finish_world(twin_urls[1], mutated, quiet_trigger=False)
    assert differences(reference, candidate), f"{mutation}: the comparison saw no difference"


def test_the_reference_is_procrastinates_functions() -> None:
    """The reference calls procrastinate's functions once per job; the worker's statement calls
    neither."""
    assert "procrastinate_finish_job_v1(" in REFERENCE
    assert "procrastinate_retry_job_v2(" in REFERENCE
    body = "\n".join(line for line in SETWISE.splitlines() if not line.lstrip().startswith("--"))
    assert "procrastinate_finish_job_v1" not in body
    assert "procrastinate_retry_job_v2" not in body
