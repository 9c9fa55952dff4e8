"""taskhub.workers: a worker's row from its start to its stop, GET /workers, and pruning."""

from __future__ import annotations

import asyncio
import os
import socket

import httpx

from backend import defer
from backend.control import workers
from backend.db import DictConnection
from backend.settings import Settings
from backend.tasks.builtin import ping
from backend.tasks.maintenance import prune_jobs
from tests.conftest import eventually
from tests.integration.conftest import running_worker


async def test_a_worker_is_listed_live_with_its_jobs_then_dead_once_stopped(
    client: httpx.AsyncClient, conn: DictConnection, settings: Settings, db_url: str
) -> None:
    await conn.set_autocommit(True)
    fast = settings.model_copy(update={"heartbeat_interval": 0.2})
    async with running_worker(fast, db_url, queues=["emails", "default"], concurrency=3):
        [live] = (await client.get("/workers")).json()
        assert (live["host"], live["pid"]) == (socket.gethostname(), os.getpid())
        assert (live["queues"], live["concurrency"]) == (["emails", "default"], 3)
        assert (live["alive"], live["stopped_at"], live["jobs_done"]) == (True, None, 0)

        # Two jobs running now (sleeping), three done: counted with the next heartbeat.
        for n in range(3):
            await defer.defer(conn, ping, {"message": f"quick {n}"}, queue="emails")
        for n in range(2):
            await defer.defer(conn, ping, {"message": f"slow {n}", "sleep": 2}, queue="default")

        async def counted() -> bool:
            [row] = await workers.list_workers(conn, fast.rescue_after)
            return (row.jobs_running, row.jobs_done) == (2, 3)

        await eventually(counted)
        first_beat = (await workers.list_workers(conn, fast.rescue_after))[0].last_heartbeat
        await asyncio.sleep(0.5)
        [row] = await workers.list_workers(conn, fast.rescue_after)
        assert row.last_heartbeat > first_beat, "the heartbeat writes the row"
    [stopped] = (await client.get("/workers")).json()
    assert stopped["alive"] is False
    assert stopped["stopped_at"] is not None
    assert stopped["id"] == live["id"]


async def test_a_silent_worker_is_dead_and_pruned_after_seven_days(
    client: httpx.AsyncClient, conn: DictConnection, settings: Settings, db_url: str
) -> None:
    await conn.set_autocommit(True)
    await conn.execute(
        "INSERT INTO taskhub.workers (worker_id, host, pid, queues, concurrency, started_at,"
        " last_heartbeat) VALUES"
        " (1, 'gone', 10, NULL, 5, now() - interval '9 days', now() - interval '8 days'),"
        " (2, 'silent', 11, '{emails}', 5, now() - interval '1 hour', now() - interval '5 min'),"
        " (3, 'here', 12, NULL, 5, now() - interval '1 hour', now())"
    )
    listed = (await client.get("/workers")).json()
    assert [(row["host"], row["alive"]) for row in listed] == [
        ("here", True),
        ("silent", False),
        ("gone", False),
    ]
    async with conn.transaction():
        job = await defer.defer(conn, prune_jobs, {"timestamp": 0})
    async with running_worker(settings, db_url):

        async def pruned() -> bool:
            cursor = await conn.execute(
                "SELECT status FROM procrastinate_jobs WHERE id = %s", [job]
            )
            row = await cursor.fetchone()
            return row is not None and row["status"] == "succeeded"

        await eventually(pruned)
    cursor = await conn.execute(
        "SELECT result->'workers' AS workers FROM taskhub.job_results WHERE job_id = %s", [job]
    )
    assert await cursor.fetchone() == {"workers": 1}
    names = [row.host for row in await workers.list_workers(conn, settings.rescue_after)]
    assert "gone" not in names
    assert "silent" in names


async def test_an_idle_worker_whose_row_was_pruned_registers_again_and_keeps_working(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    """As after a freeze or a cut longer than TASKHUB_RESCUE_AFTER: another worker's start
    pruned its row. Its next heartbeat finds out, without waiting for a job to fetch."""
    await conn.set_autocommit(True)
    fast = settings.model_copy(update={"heartbeat_interval": 0.2})
    async with running_worker(fast, db_url, queues=["default"]):
        cursor = await conn.execute("DELETE FROM procrastinate_workers RETURNING id")
        [pruned] = await cursor.fetchall()

        async def registered_again() -> bool:
            cursor = await conn.execute("SELECT id FROM procrastinate_workers")
            rows = await cursor.fetchall()
            return len(rows) == 1 and rows[0]["id"] != pruned["id"]

        await eventually(registered_again, within=5)
        job_id = await defer.defer(conn, ping, {"message": "after"})

        async def done() -> bool:
            cursor = await conn.execute(
                "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)
            )
            return await cursor.fetchone() == {"status": "succeeded"}

        await eventually(done)
    cursor = await conn.execute("SELECT count(*) AS n FROM taskhub.workers")
    assert await cursor.fetchone() == {"n": 2}, "the old row and the new one"
