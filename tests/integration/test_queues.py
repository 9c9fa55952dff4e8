"""Pausing a queue: its jobs wait, other queues go on, and resuming wakes the workers."""

from __future__ import annotations

import asyncio

import httpx

from backend import defer
from backend.api import create_app
from backend.control import jobs, queues
from backend.db import DictConnection
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
        assert listed["default"]["succeeded"] == 1

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
