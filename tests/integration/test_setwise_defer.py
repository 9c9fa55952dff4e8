"""New jobs get exactly the events and NOTIFYs procrastinate's own triggers give them.

Migration 0018 replaces procrastinate's two per-row insert triggers (the 'deferred' event; a
NOTIFY on the queue's channel and on the any-queue channel) with one statement-level trigger
doing the same work for all the rows of an INSERT at once. One twin database gets
procrastinate's triggers back (the migration's downgrade file), the other keeps taskhub's; both
then enqueue the same jobs every way taskhub and procrastinate do (a batch with several
queues, scheduled jobs, locks and queueing locks; one job; procrastinate's defer function; a
periodic tick, twice; a job inserted in another status; an empty batch; a rolled-back batch; a
batch refused by a taken queueing lock), and every row and NOTIFY must be the same
(tests/integration/twins.py says how they are compared). The mutation tests make sure the
comparison notices a wrong trigger.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg.types.json import Jsonb

from backend.queries import QUERIES
from tests.integration.twins import Connection, World, differences, run_world

MIGRATIONS_SQL = Path(__file__).resolve().parents[2] / "migrations" / "sql"
UPGRADE = (MIGRATIONS_SQL / "0018_setwise_defer.sql").read_text()
DOWNGRADE = (MIGRATIONS_SQL / "0018_setwise_defer_downgrade.sql").read_text()

LATER = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
SOONER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
CHANNELS = (
    "procrastinate_any_queue_v1",
    "procrastinate_queue_v1#default",
    "procrastinate_queue_v1#mail",
    "procrastinate_queue_v1#reports",
)


def batch(
    rows: list[tuple[str, str, int, str | None, str | None, Any, dt.datetime | None]],
) -> dict[str, Any]:
    """defer_jobs' parameters for (queue, task, priority, lock, queueing lock, args, when)."""
    return {
        "queues": [row[0] for row in rows],
        "tasks": [row[1] for row in rows],
        "priorities": [row[2] for row in rows],
        "locks": [row[3] for row in rows],
        "queueing_locks": [row[4] for row in rows],
        "args": Jsonb([row[5] for row in rows]),
        "scheduled_ats": [row[6] for row in rows],
    }


async def ids(conn: Connection, query: LiteralString, params: Any = None) -> list[Any]:
    cursor = await conn.execute(query, params)
    return [next(iter(row.values())) for row in await cursor.fetchall()]


async def enqueue_every_way(conn: Connection) -> list[Any]:
    """The same jobs on either database; what each step returned."""
    returned: list[Any] = []
    returned += await ids(
        conn,
        QUERIES["defer_jobs"],
        batch(
            [
                ("default", "t.a", 0, None, None, {"n": 1}, None),
                ("mail", "t.b", 5, "L1", None, {"n": 2}, LATER),
                ("reports", "t.c", 0, None, "Q1", {"n": 3}, None),
                ("default", "t.a", -1, "L1", None, {"n": 4}, SOONER),
                ("mail", "t.b", 0, None, None, {"n": [5, "five"]}, None),
            ]
        ),
    )
    returned += await ids(
        conn,
        QUERIES["defer_job"],
        {
            "queue": "reports",
            "task": "t.c",
            "priority": 0,
            "lock": None,
            "queueing_lock": "Q2",
            "args": Jsonb({"one": True}),
            "scheduled_at": LATER,
        },
    )
    returned += await ids(
        conn,
        "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY["
        "ROW('mail', 't.d', 0, NULL, NULL, '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1,"
        "ROW('default', 't.d', 2, NULL, NULL, '{}'::jsonb, %s)::procrastinate_job_to_defer_v1"
        "])) AS id",
        (LATER,),
    )
    for _ in range(2):  # the second tick is the same one: nothing new
        returned += await ids(
            conn,
            "SELECT taskhub.defer_periodic_job('default', NULL, 'P', 't.p', 0, 'every', 1700,"
            " '{}'::jsonb) AS id",
        )
    returned += await ids(
        conn,
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
        " VALUES ('default', 't.x', '{}', 'doing'), ('mail', 't.x', '{}', 'todo') RETURNING id",
    )
    returned += await ids(conn, QUERIES["defer_jobs"], batch([]))
    async with conn.transaction(force_rollback=True):
        await ids(conn, QUERIES["defer_jobs"], batch([("mail", "t.r", 0, None, None, {}, None)]))
    with pytest.raises(psycopg.errors.UniqueViolation):
        await ids(
            conn,
            QUERIES["defer_jobs"],
            batch(
                [
                    ("mail", "t.q", 0, None, None, {}, None),
                    ("reports", "t.q", 0, None, "Q1", {}, None),
                ]
            ),
        )
    # Sequences advanced by the refused and rolled-back rows alike on both: the next ids agree.
    returned += await ids(
        conn, QUERIES["defer_jobs"], batch([("default", "t.z", 0, None, None, {}, None)])
    )
    return returned


async def enqueue_world(url: str, setup: LiteralString | None) -> World:
    async def steps(conn: Connection) -> list[Any]:
        if setup is not None:
            await conn.execute(setup)
        return await enqueue_every_way(conn)

    return await run_world(url, steps, CHANNELS, fixed=[LATER, SOONER])


async def test_the_setwise_insert_trigger_leaves_what_procrastinates_triggers_leave(
    twin_urls: tuple[str, str],
) -> None:
    reference = await enqueue_world(twin_urls[0], DOWNGRADE)
    candidate = await enqueue_world(twin_urls[1], None)

    assert differences(reference, candidate) == []
    events = candidate.tables["procrastinate_events"]
    assert sum(event["type"] == "deferred" for event in events) == 11
    assert sum(event["type"] == "scheduled" for event in events) == 4
    assert len(candidate.notifies) == 2 * 11
    # A scheduled job's events come 'scheduled' then 'deferred', as procrastinate's triggers
    # (fired in name order) write them.
    later_job = candidate.returned[1]
    assert [e["type"] for e in events if e["job_id"] == later_job] == ["scheduled", "deferred"]


MUTATIONS = {
    "no status filter on the events": (
        "'deferred'::procrastinate_job_event_type\n      FROM new_jobs\n"
        "     WHERE status = 'todo'::procrastinate_job_status",
        "'deferred'::procrastinate_job_event_type\n      FROM new_jobs\n     WHERE true",
    ),
    "no status filter on the NOTIFYs": (
        "               FROM new_jobs\n"
        "              WHERE status = 'todo'::procrastinate_job_status",
        "               FROM new_jobs\n              WHERE true",
    ),
    "no NOTIFY on the any-queue channel": (
        "pg_notify('procrastinate_any_queue_v1', payload)",
        "pg_notify('procrastinate_any_queue_v1', NULL)",
    ),
    "the queue channel misnamed": (
        "pg_notify('procrastinate_queue_v1#' || queue_name, payload)",
        "pg_notify('procrastinate_queue_v1#default', payload)",
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
async def test_the_comparison_catches_a_wrong_trigger(
    twin_urls: tuple[str, str], mutation: str
) -> None:
    old, new = MUTATIONS[mutation]
    function = UPGRADE[UPGRADE.index("CREATE FUNCTION") : UPGRADE.index("$$;") + 3]
    assert old in function, mutation
    replace = function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(old, new)
    reference = await enqueue_world(twin_urls[0], DOWNGRADE)
    candidate = await enqueue_world(twin_urls[1], replace)
    assert differences(reference, candidate), f"{mutation}: the comparison saw no difference"


async def test_procrastinates_per_row_triggers_are_gone(conn: Connection) -> None:
    triggers = await ids(
        conn,
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'procrastinate_jobs'::regclass"
        " AND NOT tgisinternal ORDER BY tgname",
    )
    assert "taskhub_jobs_inserted" in triggers
    assert "procrastinate_jobs_notify_queue_job_inserted_v1" not in triggers
    assert "procrastinate_trigger_status_events_insert_v1" not in triggers
    assert "procrastinate_trigger_scheduled_events_v1" in triggers
