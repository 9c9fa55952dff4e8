"""The manufacturing example's monitoring API (the seed's /monitoring/* endpoints) over HTTP,
on a real database: each answer checked against the jobs, queues and alerts behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from backend import defer
from backend.api import create_app
from backend.db import DictConnection
from backend.declare.apps import LoadedApps, load_apps
from backend.examples.manufacturing import app as manufacturing
from backend.examples.manufacturing.queues import QUEUES
from backend.settings import Settings
from tests.conftest import READ_TOKEN, bearer
from tests.integration.conftest import running_api


@pytest.fixture
def apps(settings: Settings) -> LoadedApps:
    return load_apps(settings, [manufacturing])


@pytest.fixture
async def api(
    settings: Settings, db_url: str, apps: LoadedApps
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(create_app(settings, db_url, apps=apps)) as client:
        yield client


async def ping(conn: DictConnection, apps: LoadedApps, queue: str) -> int:
    async with conn.transaction():
        return await defer.defer(conn, apps.task("taskhub.ping"), {}, queue=queue)


async def test_queues_list_the_seeds_fifteen_with_their_tiers(
    api: httpx.AsyncClient, conn: DictConnection, apps: LoadedApps
) -> None:
    await ping(conn, apps, "payment.critical")
    await ping(conn, apps, "payment.critical")
    await ping(conn, apps, "elsewhere")
    answer = (await api.get("/monitoring/queues")).json()
    names = [queue["name"] for queue in answer]
    assert names[:3] == ["monitoring.critical", "order.critical", "payment.critical"]
    assert set(names) == {*QUEUES, "elsewhere"}
    by_name = {queue["name"]: queue for queue in answer}
    assert by_name["payment.critical"] | {"oldest_waiting_at": None} == {
        "name": "payment.critical",
        "priority": 10,
        "tier": "critical",
        "waiting": 2,
        "running": 0,
        "oldest_waiting_at": None,
        "paused": False,
    }
    assert by_name["email.bulk"]["tier"] == "low"
    assert by_name["elsewhere"]["priority"] is None


async def test_health_is_degraded_without_a_live_worker(api: httpx.AsyncClient) -> None:
    answer = (await api.get("/monitoring/health")).json()
    assert answer["status"] == "degraded"  # no worker in this test
    assert answer["workers_alive"] == 0
    assert answer["database"] == "ok"


async def test_schedule_with_a_countdown_and_control_the_job_and_its_queue(
    api: httpx.AsyncClient, conn: DictConnection
) -> None:
    scheduled = await api.post(
        "/monitoring/tasks/schedule",
        json={
            "task": "taskhub.ping",
            "args": {"message": "later"},
            "countdown": 300,
            "queue": "email.normal",
        },
    )
    assert scheduled.status_code == 201, scheduled.text
    body = scheduled.json()
    cursor = await conn.execute(
        "SELECT queue_name, scheduled_at - now() AS wait FROM procrastinate_jobs WHERE id = %s",
        [body["task_id"]],
    )
    row = await cursor.fetchone()
    assert row is not None
    assert row["queue_name"] == "email.normal"
    assert 290 < row["wait"].total_seconds() <= 300
    bad = await api.post("/monitoring/tasks/schedule", json={"task": "taskhub.ping",
                                                             "args": {"sleep": -1}})  # fmt: skip
    assert bad.status_code == 422
    unknown = await api.post("/monitoring/tasks/schedule", json={"task": "no.such"})
    assert unknown.status_code == 404

    cancelled = await api.post(
        "/monitoring/tasks/control", json={"action": "cancel", "task_id": body["task_id"]}
    )
    assert cancelled.json() == {"action": "cancel", "task_id": body["task_id"],
                                "status": "cancelled", "queue": None, "paused": None}  # fmt: skip
    again = await api.post(
        "/monitoring/tasks/control", json={"action": "cancel", "task_id": body["task_id"]}
    )
    assert again.status_code == 409
    retried = await api.post(
        "/monitoring/tasks/control", json={"action": "retry", "task_id": body["task_id"]}
    )
    assert retried.json()["status"] == "todo"
    paused = await api.post(
        "/monitoring/tasks/control", json={"action": "pause", "queue": "email.bulk"}
    )
    assert paused.json()["paused"] is True
    resumed = await api.post(
        "/monitoring/tasks/control", json={"action": "resume", "queue": "email.bulk"}
    )
    assert resumed.json()["paused"] is False
    missing = await api.post("/monitoring/tasks/control", json={"action": "pause"})
    assert missing.status_code == 422
    cursor = await conn.execute("SELECT actor, action FROM taskhub.audit_log ORDER BY id")
    assert [(row["actor"], row["action"]) for row in await cursor.fetchall()] == [
        ("ops", "cancel"),
        ("ops", "retry"),
        ("ops", "pause"),
        ("ops", "resume"),
    ]


async def test_reading_needs_a_token_and_control_needs_operate(
    api: httpx.AsyncClient, conn: DictConnection, apps: LoadedApps
) -> None:
    job_id = await ping(conn, apps, "order.normal")
    for path in ("/monitoring/health", "/monitoring/queues", "/monitoring/workers",
                 "/monitoring/metrics/realtime", "/monitoring/tasks/status",
                 "/monitoring/tasks/failed", "/monitoring/tasks/slow"):  # fmt: skip
        assert (await api.get(path, headers={"Authorization": ""})).status_code == 401, path
        assert (await api.get(path, headers=bearer(READ_TOKEN))).status_code == 200, path
    refused = await api.post(
        "/monitoring/tasks/control",
        json={"action": "cancel", "task_id": job_id},
        headers=bearer(READ_TOKEN),
    )
    assert refused.status_code == 403
    realtime = (await api.get("/monitoring/metrics/realtime")).json()
    assert realtime["waiting"] == 1
    assert realtime["running"] == 0
    assert set(realtime["last_5_minutes"]) == {"succeeded", "failed", "retried", "aborted",
                                               "rescued"}  # fmt: skip
