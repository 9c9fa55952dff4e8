"""Least-privilege roles (migration 0017): each component, connected as a login granted its
group role, can do its work and nothing more."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import SecretStr

from backend import defer
from backend.api import create_app
from backend.control import jobs, queues
from backend.dashboard import create_dashboard
from backend.dashboard.settings import DashboardSettings
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.process import migrate
from backend.queries import QUERIES
from backend.settings import Settings, load_settings
from backend.tasks.backups import backup_database
from backend.tasks.builtin import ping
from backend.tasks.maintenance import prune_jobs, rescue_stalled_jobs
from backend.tasks.stats import rollup_stats
from tests.conftest import OPERATE_TOKEN, RUN_ID, TOKENS, eventually
from tests.integration.conftest import running_api, running_worker

GROUPS = ("taskhub_owner", "taskhub_api", "taskhub_worker", "taskhub_readonly")
PASSWORD = "roles-test-password"


def as_user(url: str, user: str) -> str:
    """The same database, connecting as ``user``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{user}:{PASSWORD}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def logins(admin_url: str, db_url: str) -> Iterator[dict[str, str]]:
    """One LOGIN user per group role, named for this test only, and its URL to ``db_url``;
    dropped afterwards (the group roles stay: other databases on the server use them)."""
    suffix = f"{RUN_ID}_{uuid.uuid4().hex[:6]}"
    users = {group: f"th_{group.removeprefix('taskhub_')}_{suffix}" for group in GROUPS}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for group, user in users.items():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(user), sql.Literal(PASSWORD), sql.Identifier(group)
                )
            )
    try:
        yield {group: as_user(db_url, user) for group, user in users.items()}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for user in users.values():
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (user,),
                )
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


@pytest.fixture
async def admin(db_url: str) -> AsyncIterator[DictConnection]:
    async with await psycopg.AsyncConnection.connect(
        db_url, row_factory=dict_row, autocommit=True
    ) as conn:
        yield conn


async def connect(url: str) -> DictConnection:
    return await psycopg.AsyncConnection.connect(url, row_factory=dict_row, autocommit=True)


async def refused(conn: DictConnection, statement: str, params: Any = None) -> None:
    """``statement`` fails for lack of privilege (42501), changing nothing."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await conn.execute(statement, params)


async def defer_ping(conn: DictConnection, queue: str = "default") -> int:
    async with conn.transaction():
        return await defer.defer(conn, ping, {"message": "hi"}, queue=queue)


async def status_of(conn: DictConnection, job_id: int) -> str:
    cursor = await conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,)
    )
    row = await cursor.fetchone()
    assert row is not None
    return str(row["status"])


def test_the_group_roles_exist_without_login(admin_url: str, db_url: str) -> None:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
            " WHERE rolname = ANY(%s) ORDER BY rolname",
            (list(GROUPS),),
        ).fetchall()
    assert [row[0] for row in rows] == sorted(GROUPS)
    assert all(row[1:] == (False, False, False, False) for row in rows)


async def test_the_api_role_defers_reads_cancels_retries_but_never_deletes_alters_or_fetches(
    logins: dict[str, str], admin: DictConnection
) -> None:
    async with await connect(logins["taskhub_api"]) as api:
        job_id = await defer_ping(api)
        assert (await jobs.get_job(api, job_id)).status == "todo"
        async with api.transaction():
            assert (await jobs.cancel_job(api, job_id, "api:test")).status == "cancelled"
        async with api.transaction():
            assert (await jobs.retry_job(api, job_id, "api:test")).status == "todo"
        cursor = await api.execute("SELECT action FROM taskhub.audit_log ORDER BY id")
        assert [row["action"] for row in await cursor.fetchall()] == ["cancel", "retry"]

        await refused(api, "DELETE FROM procrastinate_jobs WHERE id = %s", (job_id,))
        await refused(api, "SELECT procrastinate_cancel_job_v1(%s, false, true)", (job_id,))
        await refused(api, "TRUNCATE procrastinate_jobs CASCADE")
        await refused(api, "ALTER TABLE procrastinate_jobs ADD COLUMN stolen text")
        await refused(api, "DROP TABLE taskhub.audit_log")
        await refused(api, "CREATE TABLE taskhub.mine (id int)")
        await refused(api, "SELECT * FROM taskhub.fetch_job(NULL, 1)")
        await refused(api, "SELECT * FROM procrastinate_fetch_job_v2(NULL, 1)")
        await refused(api, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (job_id,))
        await refused(api, "SELECT procrastinate_register_worker_v1()")
        await refused(api, "UPDATE procrastinate_jobs SET worker_id = 1 WHERE id = %s", (job_id,))
        await refused(api, "UPDATE taskhub.audit_log SET actor = 'someone else'")
        await refused(api, "DELETE FROM taskhub.audit_log")

    assert await status_of(admin, job_id) == "todo", "nothing the API was refused took effect"
    cursor = await admin.execute("SELECT count(*) AS n FROM procrastinate_jobs")
    assert (await cursor.fetchone()) == {"n": 1}


async def test_a_real_api_serves_requests_as_the_api_role(
    logins: dict[str, str], admin: DictConnection, tmp_path: Path
) -> None:
    url = logins["taskhub_api"]
    settings = load_settings(database_url=url, data_dir=tmp_path / ".taskhub", tokens=TOKENS)
    async with running_api(create_app(settings, url)) as client:
        assert (await client.get("/health")).status_code == 200
        created = await client.post("/jobs", json={"task": "taskhub.ping", "queue": "emails"})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "todo"
        assert (await client.get("/jobs")).status_code == 200
        assert (await client.post(f"/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
        assert (await client.post(f"/jobs/{job_id}/retry")).json()["status"] == "todo"
        assert (await client.post("/queues/emails/pause")).json()["paused"] is True
        assert (await client.post("/queues/emails/resume")).json()["paused"] is False
        purged = await client.post("/queues/emails/purge")
        assert purged.status_code == 200, purged.text
        assert purged.json()["purged"] == 1
        assert (await client.get("/queues")).status_code == 200

    cursor = await admin.execute("SELECT count(*) AS n FROM procrastinate_jobs")
    assert (await cursor.fetchone()) == {"n": 0}, "the purge deleted the waiting job"
    cursor = await admin.execute("SELECT action FROM taskhub.audit_log ORDER BY id")
    actions = [row["action"] for row in await cursor.fetchall()]
    assert actions == ["cancel", "retry", "pause", "resume", "purge"]


async def test_the_dashboard_reads_and_acts_as_the_api_role(
    logins: dict[str, str], admin: DictConnection, tmp_path: Path
) -> None:
    """Every page and every action of the dashboard (served by the API, on its pool)."""
    url = logins["taskhub_api"]
    settings = load_settings(database_url=url, data_dir=tmp_path / ".taskhub", tokens=TOKENS)
    waiting = await defer_ping(admin)
    failed = await defer_ping(admin)
    retrying = await defer_ping(admin)
    purged = await defer_ping(admin, queue="emails")
    async with admin.transaction():
        await admin.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s",
                            (failed,))  # fmt: skip
        await admin.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (failed,))
        await admin.execute("UPDATE procrastinate_jobs SET attempts = 1 WHERE id = %s",
                            (retrying,))  # fmt: skip
    app = FastAPI()
    dashboard = create_dashboard(
        settings,
        database_url=url,
        apps=load_apps(settings, []),
        dashboard_settings=DashboardSettings(secret=SecretStr("roles-dashboard-secret-" * 2)),
    )
    app.mount("/dashboard", dashboard)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://taskhub"
        ) as client:
            login = await client.post("/dashboard/login", data={"token": OPERATE_TOKEN})
            assert login.status_code == 303, login.text
            pages = "/ /?range=week /queues /jobs /failed /workers /schedules /backups /tasks"
            for path in [*pages.split(), "/alerts", "/audit", f"/jobs/{failed}"]:
                page = await client.get(f"/dashboard{path}")
                assert page.status_code == 200, (path, page.text[-500:])
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert found
            csrf = found.group(1)
            for path, extra in (
                (f"/jobs/{waiting}/cancel", {}),
                (f"/jobs/{waiting}/retry", {}),
                ("/failed/retry", {"job_id": str(failed)}),
                ("/failed/cancel", {"job_id": str(retrying)}),
                ("/queues/emails/pause", {}),
                ("/queues/emails/resume", {}),
                ("/queues/emails/purge", {}),
                ("/schedules/taskhub.prune_jobs/run", {}),
                ("/backups/run", {}),
                ("/tasks/taskhub.ping/defer", {"args": "{}"}),
            ):
                answer = await client.post(f"/dashboard{path}", data={"csrf": csrf, **extra})
                assert answer.status_code == 303, (path, answer.text[-500:])
    finally:
        await dashboard.state.resources.close()

    assert await status_of(admin, waiting) == "todo"
    assert await status_of(admin, failed) == "todo"
    assert await status_of(admin, retrying) == "cancelled"
    cursor = await admin.execute("SELECT count(*) AS n FROM procrastinate_jobs WHERE id = %s",
                                 (purged,))  # fmt: skip
    assert (await cursor.fetchone()) == {"n": 0}
    cursor = await admin.execute("SELECT action FROM taskhub.audit_log ORDER BY id")
    assert [row["action"] for row in await cursor.fetchall()] == [
        "cancel", "retry", "retry", "cancel", "pause", "resume", "purge", "run_now", "run_now",
        "defer",
    ]  # fmt: skip


async def test_a_real_worker_fetches_finishes_heartbeats_and_maintains_as_the_worker_role(
    logins: dict[str, str], admin: DictConnection, tmp_path: Path
) -> None:
    url = logins["taskhub_worker"]
    settings: Settings = load_settings(
        database_url=url,
        data_dir=tmp_path / ".taskhub",
        tokens=TOKENS,
        heartbeat_interval=0.2,
        rescue_after=1,
    )
    job_id = await defer_ping(admin)
    async with admin.transaction():
        maintenance = [
            await defer.defer(admin, task, {})
            for task in (prune_jobs, rescue_stalled_jobs, rollup_stats, backup_database)
        ]
    async with running_worker(settings, url):

        async def all_done() -> bool:
            statuses = [await status_of(admin, job) for job in (job_id, *maintenance)]
            return all(status in ("succeeded", "failed") for status in statuses)

        await eventually(all_done, within=60)
        cursor = await admin.execute("SELECT last_heartbeat FROM procrastinate_workers")
        first = (await cursor.fetchone() or {}).get("last_heartbeat")

        async def heartbeat_moved() -> bool:
            cursor = await admin.execute("SELECT last_heartbeat FROM procrastinate_workers")
            row = await cursor.fetchone()
            return row is not None and row["last_heartbeat"] != first

        await eventually(heartbeat_moved, within=10)

    for job in (job_id, *maintenance):
        view = await jobs.get_job(admin, job)
        assert view.status == "succeeded", (view.task, view.errors)
    cursor = await admin.execute("SELECT status FROM taskhub.backups")
    assert [row["status"] for row in await cursor.fetchall()] == ["succeeded"]

    async with await connect(url) as worker:
        await refused(worker, "CREATE TABLE taskhub.mine (id int)")
        await refused(worker, "ALTER TABLE procrastinate_jobs ADD COLUMN stolen text")
        await refused(worker, "DROP TABLE taskhub.job_results")
        await refused(worker, "CREATE INDEX mine ON procrastinate_jobs (args)")
        await refused(worker, "TRUNCATE taskhub.task_stats")
        await refused(worker, "ALTER FUNCTION taskhub.fetch_job(varchar[], bigint) RENAME TO x")
        await refused(worker, "DELETE FROM taskhub.audit_log")
        await refused(worker, "SELECT taskhub.purge_queue('default', 'worker')")


async def test_the_readonly_role_reads_the_reporting_views_and_writes_nothing(
    logins: dict[str, str], admin: DictConnection
) -> None:
    job_id = await defer_ping(admin)
    waiting_id = await defer_ping(admin, queue="emails")
    async with admin.transaction():
        await jobs.cancel_job(admin, job_id, "api:test")
    async with await connect(logins["taskhub_readonly"]) as reader:
        for view in (
            "job_overview",
            "job_history",
            "failures_by_day",
            "task_durations",
            "operator_actions",
            "throughput_hourly",
        ):
            cursor = await reader.execute(f"SELECT * FROM taskhub.{view}")
            await cursor.fetchall()
        cursor = await reader.execute("SELECT action FROM taskhub.operator_actions")
        assert [row["action"] for row in await cursor.fetchall()] == ["cancel"]
        assert (await jobs.get_job(reader, job_id)).status == "cancelled"
        assert [queue.name for queue in await queues.list_queues(reader)] == ["emails"]
        cursor = await reader.execute(QUERIES["stats_bounds"])
        assert (await cursor.fetchone()) is not None

        await refused(reader, QUERIES["defer_job"], {
            "queue": "default", "task": "taskhub.ping", "priority": 0, "lock": None,
            "queueing_lock": None, "args": "{}", "scheduled_at": None,
        })  # fmt: skip
        await refused(reader, "UPDATE procrastinate_jobs SET status = 'todo'")
        await refused(reader, "DELETE FROM procrastinate_jobs")
        await refused(reader, "SELECT procrastinate_retry_job_v2(%s, now(), NULL, NULL, NULL)",
                      (job_id,))  # fmt: skip
        await refused(reader, "INSERT INTO taskhub.audit_log (actor, action) VALUES ('r', 'x')")
        await refused(reader, "INSERT INTO taskhub.paused_queues (queue_name, paused_by)"
                      " VALUES ('default', 'r')")  # fmt: skip
        await refused(reader, "SELECT taskhub.wake_workers(NULL, 'default')")
        await refused(reader, "SELECT taskhub.purge_queue('default', 'r')")
        await refused(reader, "CREATE TABLE taskhub.mine (id int)")
    assert await status_of(admin, job_id) == "cancelled"
    assert await status_of(admin, waiting_id) == "todo"


def test_a_login_granted_taskhub_owner_migrates_and_its_objects_stay_owned_by_the_role(
    logins: dict[str, str], admin_url: str, db_url: str
) -> None:
    owner = logins["taskhub_owner"]
    migrate.downgrade(owner, "0016")
    migrate.upgrade(owner)
    with psycopg.connect(db_url) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'taskhub'::regnamespace"
            "    OR relname LIKE 'procrastinate\\_%%' OR relname = 'alembic_version'"
        ).fetchall()
        assert owners == [("taskhub_owner",)]
        purge_owner = conn.execute(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'purge_queue'"
        ).fetchone()
        assert purge_owner == ("taskhub_owner",)
    with pytest.raises(
        psycopg.errors.InsufficientPrivilege, match=r"must be owner of (function|relation|table)"
    ):
        migrate.downgrade(logins["taskhub_api"], "0016")
