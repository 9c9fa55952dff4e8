"""Pausing a queue: its jobs wait, other queues go on, and resuming wakes the workers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx

from backend import defer
from backend.api import create_app
from backend.control import jobs, queues
from backend.db import DictConnection
from backend.queries import QUERIES
from backend.settings import Settings
from backend.tasks.builtin import ping
from tests.conftest import READ_TOKEN, eventually
from tests.integration.conftest import running_api, running_worker


async def test_a_paused_queue_waits_while_others_run(
    client: httpx.AsyncClient, conn: DictConnection, settings: Settings, db_url: str
) -> None:
    paused = await client.post("/queues/emails/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["paused"], paused.json()["paused_by"]) == (True, "ops")
    assert (await client.post("/queues/emails/pause")).status_code == 200, "idempotent"

    async with conn.transaction():
        email = await defer.defer(conn, ping, {"message": "newsletter"}, queue="emails")
        other = await defer.defer(conn, ping, {"message": "invoice"}, queue="default")
    slow_polling = settings.model_copy(update={"fetch_polling_interval": 600})
    async with running_worker(slow_polling, db_url):

        async def other_done() -> bool:
            return (await jobs.get_job(conn, other)).status == "succeeded"

        await eventually(other_done)
        await asyncio.sleep(0.5)
        assert (await jobs.get_job(conn, email)).status == "todo"
        listed = {queue["name"]: queue for queue in (await client.get("/queues")).json()}
        assert listed["emails"]["paused"] is True
        assert listed["emails"]["todo"] == 1
        # Figures of waiting and running jobs only: a queue whose jobs all finished is gone.
        assert "default" not in listed
        assert set(listed["emails"]) == {
            "name", "todo", "doing", "oldest_todo_at", "paused", "paused_at", "paused_by"
        }  # fmt: skip

        resumed = await client.post("/queues/emails/resume")
        assert resumed.json()["paused"] is False

        async def email_done() -> bool:
            return (await jobs.get_job(conn, email)).status == "succeeded"

        await eventually(email_done, within=5)  # woken, not polled (polling is 10 minutes)

    cursor = await conn.execute(
        "SELECT actor, action, details FROM taskhub.audit_log WHERE job_id IS NULL ORDER BY id"
    )
    assert await cursor.fetchall() == [
        {"actor": "ops", "action": "pause", "details": {"queue": "emails"}},
        {"actor": "ops", "action": "resume", "details": {"queue": "emails"}},
    ]


async def test_pausing_needs_operate_and_a_valid_name(settings: Settings, db_url: str) -> None:
    async with running_api(create_app(settings, db_url), token=READ_TOKEN) as reader:
        assert (await reader.get("/queues")).status_code == 200
        assert (await reader.post("/queues/emails/pause")).status_code == 403
    async with running_api(create_app(settings, db_url)) as operator:
        assert (await operator.post("/queues/no%20spaces/pause")).status_code == 422
        assert (await operator.post(f"/queues/{'x' * 41}/pause")).status_code == 422


async def test_pause_and_resume_say_whether_they_changed_anything(conn: DictConnection) -> None:
    """The bare state changes (no figures, so no count of the queue's jobs): idempotent, and
    audited only when they change something."""
    async with conn.transaction():
        assert await queues.pause(conn, "reports", "ops") is True
        assert await queues.pause(conn, "reports", "ops") is False
        assert (await queues.get_queue(conn, "reports")).paused is True
        assert await queues.resume(conn, "reports", "ops") is True
        assert await queues.resume(conn, "reports", "ops") is False
        assert (await queues.get_queue(conn, "reports")).paused is False
        cursor = await conn.execute(
            "SELECT action FROM taskhub.audit_log WHERE details->>'queue' = 'reports' ORDER BY id"
        )
        assert [row["action"] for row in await cursor.fetchall()] == ["pause", "resume"]


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def test_queue_figures_read_only_waiting_and_running_jobs(conn: DictConnection) -> None:
    """The plan walks the partial index of waiting and running jobs: finished jobs, however
    many, are never read."""
    await conn.set_autocommit(True)
    await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args)"
        " SELECT 'bulk', 'taskhub.ping', 'succeeded', '{}' FROM generate_series(1, 20000)"
    )
    await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args)"
        " SELECT 'bulk', 'taskhub.ping', 'todo', '{}' FROM generate_series(1, 3)"
    )
    await conn.execute("ANALYZE procrastinate_jobs")
    cursor = await conn.execute("EXPLAIN (FORMAT JSON) " + QUERIES["list_queues"], {"queue": None})
    row = await cursor.fetchone()
    assert row is not None
    jobs_scans = [
        (node["Node Type"], node.get("Index Name"))
        for node in plan_nodes(row["QUERY PLAN"][0]["Plan"])
        if node.get("Relation Name") == "procrastinate_jobs"
    ]
    assert jobs_scans == [("Index Only Scan", "taskhub_jobs_active_queue_idx")], jobs_scans
    [bulk] = await queues.list_queues(conn)
    assert (bulk.name, bulk.todo, bulk.doing) == ("bulk", 3, 0)


async def test_purge_deletes_waiting_jobs_only_and_is_audited(
    client: httpx.AsyncClient, conn: DictConnection, settings: Settings, db_url: str
) -> None:
    await conn.set_autocommit(True)
    waiting = [
        await defer.defer(conn, ping, {"message": f"m{n}"}, queue="emails") for n in range(3)
    ]
    kept = await defer.defer(conn, ping, {"message": "other queue"}, queue="default")
    running = await defer.defer(conn, ping, {"message": "busy"}, queue="emails")
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %(id)s", {"id": running}
    )

    answer = await client.post("/queues/emails/purge")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"name": "emails", "purged": 3}
    cursor = await conn.execute("SELECT id, status FROM procrastinate_jobs ORDER BY id")
    assert [(row["id"], row["status"]) for row in await cursor.fetchall()] == [
        (kept, "todo"),
        (running, "doing"),
    ]
    assert not set(waiting) & {kept, running}
    again = await client.post("/queues/emails/purge")
    assert again.json() == {"name": "emails", "purged": 0}
    cursor = await conn.execute(
        "SELECT actor, action, details FROM taskhub.audit_log WHERE action = 'purge'"
    )
    assert await cursor.fetchall() == [
        {"actor": "ops", "action": "purge", "details": {"queue": "emails", "jobs": 3}}
    ]
    async with running_api(create_app(settings, db_url), token=READ_TOKEN) as reader:
        assert (await reader.post("/queues/emails/purge")).status_code == 403


async def test_purge_takes_a_schedule_s_waiting_job_too(conn: DictConnection) -> None:
    """A schedule's latest run points at its job without a cascade: the link is cleared."""
    await conn.set_autocommit(True)
    job = await defer.defer(conn, ping, {"message": "tick"}, queue="maintenance")
    await conn.execute(
        "INSERT INTO procrastinate_periodic_defers (task_name, defer_timestamp, job_id,"
        " periodic_id) VALUES ('taskhub.ping', 1, %(job)s, 'taskhub.ping')",
        {"job": job},
    )
    async with conn.transaction():
        result = await queues.purge(conn, "maintenance", "cli:ops")
    assert result.purged == 1
    cursor = await conn.execute("SELECT job_id FROM procrastinate_periodic_defers")
    assert await cursor.fetchall() == [{"job_id": None}]
