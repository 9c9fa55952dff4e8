"""The REST API on a real database, with a real worker where jobs must run."""

from __future__ import annotations

import asyncio
import datetime
import socket
from typing import Any

import httpx
import psycopg
import pytest

from backend.api import create_app
from backend.db import CHECK_AFTER_IDLE, DictConnection, IdleCheck
from backend.settings import Settings
from tests.conftest import count_jobs, eventually
from tests.integration.conftest import running_api, running_worker


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_health_503_when_database_unreachable(settings: Settings) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere?connect_timeout=1"
    impatient = settings.model_copy(update={"database_timeout": 0.5})
    async with running_api(create_app(impatient, url)) as client:
        response = await client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert response.json()["database"].startswith("unreachable")
        # Other endpoints say so too, with a 503 rather than a crash.
        job = await client.post("/jobs", json={"task": "taskhub.ping"})
        assert job.status_code == 503


async def test_health_503_when_not_migrated(settings: Settings, empty_db_url: str) -> None:
    async with running_api(create_app(settings, empty_db_url)) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert "taskhub migrate" in response.json()["database"]


async def test_tasks_lists_policy_and_argument_schema(client: httpx.AsyncClient) -> None:
    response = await client.get("/tasks")
    assert response.status_code == 200
    ping = next(task for task in response.json() if task["name"] == "taskhub.ping")
    assert ping["queue"] == "default"
    assert ping["priority"] == 0
    assert ping["retry"] is None
    assert ping["args_schema"]["properties"]["sleep"]["minimum"] == 0
    assert ping["args_schema"]["additionalProperties"] is False


async def test_post_job_then_worker_runs_it(
    client: httpx.AsyncClient, settings: Settings, db_url: str
) -> None:
    response = await client.post(
        "/jobs", json={"task": "taskhub.ping", "args": {"message": {"order": 42}}}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "todo"
    assert job["state"] == "PENDING"
    assert job["created_at"] is not None
    assert job["started_at"] is None

    async with running_worker(settings, db_url):

        async def done() -> bool:
            return bool((await client.get(f"/jobs/{job['id']}")).json()["status"] == "succeeded")

        await eventually(done)
        final = (await client.get(f"/jobs/{job['id']}")).json()
        assert final["worker_id"] is not None
    assert final["state"] == "SUCCESS"
    assert final["attempts"] == 1
    created, started, finished = (
        datetime.datetime.fromisoformat(final[key])
        for key in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
    assert [event["type"] for event in final["events"]] == ["deferred", "started", "succeeded"]


async def test_post_job_with_options(client: httpx.AsyncClient) -> None:
    at = datetime.datetime(2030, 1, 1, 8, 0, tzinfo=datetime.UTC)
    response = await client.post(
        "/jobs",
        json={
            "task": "taskhub.ping",
            "queue": "payment.critical",
            "priority": 100,
            "schedule_at": at.isoformat(),
            "lock": "customer-7",
            "queueing_lock": "ping-customer-7",
        },
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["queue"], job["priority"], job["lock"], job["queueing_lock"]) == (
        "payment.critical",
        100,
        "customer-7",
        "ping-customer-7",
    )
    assert datetime.datetime.fromisoformat(job["scheduled_at"]) == at
    assert [event["type"] for event in job["events"]] == ["deferred", "scheduled"]

    again = await client.post(
        "/jobs", json={"task": "taskhub.ping", "queueing_lock": "ping-customer-7"}
    )
    assert again.status_code == 409
    assert "ping-customer-7" in again.json()["detail"]


async def test_schedule_in_delays_the_job(client: httpx.AsyncClient) -> None:
    before = datetime.datetime.now(datetime.UTC)
    response = await client.post("/jobs", json={"task": "taskhub.ping", "schedule_in": 3600})
    scheduled = datetime.datetime.fromisoformat(response.json()["scheduled_at"])
    assert datetime.timedelta(minutes=59) < scheduled - before < datetime.timedelta(minutes=61)


async def test_unknown_task_is_404_and_enqueues_nothing(
    client: httpx.AsyncClient, conn: DictConnection
) -> None:
    response = await client.post("/jobs", json={"task": "payroll.run", "args": {}})
    assert response.status_code == 404
    assert "payroll.run" in response.json()["detail"]
    assert "taskhub.ping" in response.json()["detail"]
    assert await count_jobs(conn) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "taskhub.ping", "args": {"sleep": "later"}}, ["body", "args", "sleep"]),
        ({"task": "taskhub.ping", "args": {"sleep": -1}}, ["body", "args", "sleep"]),
        ({"task": "taskhub.ping", "args": {"unknown": 1}}, ["body", "args", "unknown"]),
        ({"task": "taskhub.ping", "args": {"message": "a\u0000b"}}, ["body", "args"]),
        ({"task": "taskhub.ping", "args": []}, ["body", "args"]),
        ({"task": "taskhub.ping", "priority": 2**40}, ["body", "priority"]),
        ({"task": "taskhub.ping", "queue": "x" * 41}, ["body", "queue"]),
        ({"task": "taskhub.ping", "queue": "has space"}, ["body", "queue"]),
        ({"task": "taskhub.ping", "schedule_in": -5}, ["body", "schedule_in"]),
        ({"task": "taskhub.ping", "schedule_at": "2030-01-01T00:00:00"}, ["body", "schedule_at"]),
        (
            {"task": "taskhub.ping", "schedule_in": 1, "schedule_at": "2030-01-01T00:00:00Z"},
            ["body"],
        ),
        ({"task": "taskhub.ping", "colour": "blue"}, ["body", "colour"]),
        ({"args": {}}, ["body", "task"]),
    ],
)
async def test_invalid_body_is_422_naming_the_field(
    client: httpx.AsyncClient, conn: DictConnection, body: dict[str, Any], field: list[str]
) -> None:
    response = await client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert field in locations, locations
    assert await count_jobs(conn) == 0


async def test_malformed_json_is_422(client: httpx.AsyncClient, conn: DictConnection) -> None:
    response = await client.post(
        "/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert await count_jobs(conn) == 0


@pytest.mark.parametrize("job_id", ["999999", "0", "-1", "abc", str(2**63)])
async def test_unknown_or_invalid_job_id(client: httpx.AsyncClient, job_id: str) -> None:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == (404 if job_id == "999999" else 422)


async def drop_connections_of(conn: DictConnection, database: str) -> int:
    """What a server restart does to the API's pooled connections."""
    cursor = await conn.execute(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def test_api_recovers_when_the_server_drops_its_connections(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    await conn.set_autocommit(True)
    async with running_api(create_app(settings, db_url)) as client:
        assert (await client.get("/health")).status_code == 200
        assert await drop_connections_of(conn, conn.info.dbname) >= 1
        # A connection that was back in the pool moments ago is used without a ping: its
        # request fails cleanly (503, not 500), and the broken connection leaves the pool.
        first = await client.get("/jobs?limit=1")
        assert first.status_code == 503, first.text
        assert "connection was lost" in first.json()["detail"]
        # Once idle for the check's window, every connection is pinged before use.
        await client.get("/health")
        await drop_connections_of(conn, conn.info.dbname)
        await asyncio.sleep(CHECK_AFTER_IDLE + 0.2)
        statuses = [(await client.get("/jobs?limit=1")).status_code for _ in range(5)]
        assert statuses == [200] * 5


async def test_idle_check_pings_only_connections_idle_for_a_while(
    db_url: str, conn: DictConnection
) -> None:
    await conn.set_autocommit(True)
    idle_check = IdleCheck(after=0.3)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as pooled:
        await idle_check.check(pooled)  # never returned yet: pinged, and fine
        await idle_check.reset(pooled)
        await conn.execute("SELECT pg_terminate_backend(%s)", (pooled.info.backend_pid,))
        await idle_check.check(pooled)  # just returned: no round trip, so nothing noticed
        await asyncio.sleep(0.4)
        with pytest.raises(psycopg.OperationalError):
            await idle_check.check(pooled)  # idle for longer than ``after``: pinged
