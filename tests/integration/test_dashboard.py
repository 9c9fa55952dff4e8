"""The dashboard over HTTP, on a real database: sessions, CSRF, scopes, actions and their audit
rows, masking, the live streams (a real uvicorn: server-sent events), and mounting it under
an application's own prefix. The browser tests (tests/e2e/test_dashboard_in_browser.py) drive
the same pages in Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg.rows import dict_row
from pydantic import BaseModel, SecretStr

from backend import defer
from backend.api import create_app
from backend.dashboard import create_dashboard
from backend.dashboard.passwords import hash_password
from backend.dashboard.settings import DashboardSettings
from backend.db import DictConnection
from backend.declare.apps import LoadedApps, TaskhubApp, load_apps
from backend.declare.registry import TaskBlueprint
from backend.queries import QUERIES
from backend.runtime.context import TaskContext
from backend.settings import Settings
from tests.conftest import BLUEPRINTS, OPERATE_TOKEN, READ_TOKEN, count_jobs, eventually
from tests.integration.conftest import running_api, running_worker

SECRET = "dashboard-signing-secret-0123456789-abcdef"
PASSWORD = "correct horse battery"

shop = TaskBlueprint()


class ChargeArgs(BaseModel):
    customer: str
    card_token: SecretStr


@shop.task(name="shop.charge", queue="payments")
async def charge(args: ChargeArgs) -> str:
    """Charge a card (a test task whose argument is a secret)."""
    return args.customer


class StepsArgs(BaseModel):
    steps: int = 5
    pause: float = 0.3


@shop.task(name="shop.steps", queue="reports")
async def steps(args: StepsArgs, ctx: TaskContext) -> int:
    """Report progress step by step."""
    for done in range(1, args.steps + 1):
        await asyncio.sleep(args.pause)
        ctx.progress(done=done, total=args.steps, message=f"step {done}")
    return args.steps


SHOP = TaskhubApp(name="shop", blueprints=[shop])


def dashboard_settings(**extra: Any) -> DashboardSettings:
    return DashboardSettings(secret=SecretStr(SECRET), **extra)


def shop_apps(settings: Settings) -> LoadedApps:
    return load_apps(settings, [SHOP])


@contextlib.asynccontextmanager
async def dashboard_client(
    settings: Settings,
    db_url: str,
    token: str | None = OPERATE_TOKEN,
    *,
    users: str = "",
    base_url: str = "http://taskhub",
) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard as its own app (as mounted at /dashboard), logged in with ``token``."""
    app = FastAPI()
    dashboard = create_dashboard(
        settings,
        database_url=db_url,
        apps=shop_apps(settings),
        dashboard_settings=dashboard_settings(users=users),
    )
    app.mount("/dashboard", dashboard)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base_url
        ) as client:
            if token:
                answer = await client.post("/dashboard/login", data={"token": token})
                assert answer.status_code == 303, answer.text
            yield client
    finally:
        await dashboard.state.resources.close()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def csrf(client: httpx.AsyncClient) -> str:
    return csrf_of((await client.get("/dashboard/workers")).text)


async def audit_rows(conn: DictConnection) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT actor, action, job_id, details FROM taskhub.audit_log ORDER BY id"
    )
    return await cursor.fetchall()


async def defer_job(conn: DictConnection, apps: LoadedApps, task: str, args: dict[str, Any]) -> int:
    async with conn.transaction():
        return await defer.defer(conn, apps.task(task), args)


async def status_of(conn: DictConnection, job_id: int) -> str:
    cursor = await conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", [job_id]
    )
    row = await cursor.fetchone()
    assert row is not None
    return str(row["status"])


async def fail_job(conn: DictConnection, job_id: int) -> None:
    """Finish a job as failed through procrastinate's own function, with an error row."""
    async with conn.transaction():
        await conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [job_id])
        await conn.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", [job_id])
        await conn.execute(
            "INSERT INTO taskhub.job_errors (job_id, attempt, type, message, traceback)"
            " VALUES (%s, 1, 'ConnectionError', 'ERP answered 503', 'Traceback: line 1')",
            [job_id],
        )


# -- sessions ----------------------------------------------------------------------------------


async def test_every_route_needs_a_session(settings: Settings, db_url: str) -> None:
    """Pages redirect to the login form (keeping where you were going); actions and live
    streams answer 401; nothing changes."""
    async with dashboard_client(settings, db_url, token=None) as client:
        for path in ("/", "/queues", "/jobs", "/jobs/1", "/failed", "/workers", "/schedules",
                     "/backups", "/tasks", "/alerts", "/audit", "/?range=week"):  # fmt: skip
            answer = await client.get(f"/dashboard{path}")
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/dashboard/login?next=%2F"), path
        for path in ("/queues/default/pause", "/jobs/1/retry", "/failed/retry",
                     "/schedules/taskhub.prune_jobs/run", "/backups/run",
                     "/tasks/taskhub.ping/defer", "/logout"):  # fmt: skip
            answer = await client.post(f"/dashboard{path}", data={"csrf": "x"})
            assert answer.status_code == 401, path
        for path in ("/live/overview", "/live/jobs/1"):
            assert (await client.get(f"/dashboard{path}")).status_code == 401, path
        # Static assets carry no data: the login page needs them.
        assert (await client.get("/dashboard/static/dashboard.css")).status_code == 200
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn:
        assert await count_jobs(conn) == 0
        assert await audit_rows(conn) == []


async def test_logging_in_with_a_token_sets_a_safe_cookie(settings: Settings, db_url: str) -> None:
    async with dashboard_client(settings, db_url, token=None) as client:
        wrong = await client.post("/dashboard/login", data={"token": "not-a-token-at-all-0000"})
        assert wrong.status_code == 401
        assert "not valid" in wrong.text
        assert "set-cookie" not in wrong.headers

        answer = await client.post(
            "/dashboard/login", data={"token": OPERATE_TOKEN, "next": "/jobs?status=failed"}
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/jobs?status=failed"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Path=/dashboard" in cookie
        assert "Max-Age=28800" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        assert OPERATE_TOKEN not in cookie
        page = await client.get("/dashboard/")
        assert page.status_code == 200
        assert "ops" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert page.headers["x-frame-options"] == "DENY"


async def test_the_cookie_is_secure_over_https(settings: Settings, db_url: str) -> None:
    async with dashboard_client(settings, db_url, token=None, base_url="https://taskhub") as client:
        answer = await client.post("/dashboard/login", data={"token": OPERATE_TOKEN})
        assert "Secure" in answer.headers["set-cookie"]


async def test_guessing_is_throttled(settings: Settings, db_url: str) -> None:
    """Ten failures from one address within five minutes: that address must wait, even
    with the right token; the answer says how long."""
    async with dashboard_client(settings, db_url, token=None) as client:
        for _ in range(10):
            wrong = await client.post("/dashboard/login", data={"token": "guess-0123456789abc"})
            assert wrong.status_code == 401
        held = await client.post("/dashboard/login", data={"token": OPERATE_TOKEN})
        assert held.status_code == 429
        assert int(held.headers["retry-after"]) > 200
        assert "set-cookie" not in held.headers


async def test_login_never_redirects_to_another_site(settings: Settings, db_url: str) -> None:
    async with dashboard_client(settings, db_url, token=None) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            answer = await client.post(
                "/dashboard/login", data={"token": OPERATE_TOKEN, "next": target}
            )
            assert answer.headers["location"] == "/dashboard/", target


async def test_password_users_log_in_and_a_changed_password_ends_their_sessions(
    settings: Settings, db_url: str
) -> None:
    users = f"alice=operate:{hash_password(PASSWORD)}"
    async with dashboard_client(settings, db_url, token=None, users=users) as client:
        wrong = await client.post(
            "/dashboard/login", data={"username": "alice", "password": "wrong password"}
        )
        assert wrong.status_code == 401
        unknown = await client.post(
            "/dashboard/login", data={"username": "mallory", "password": PASSWORD}
        )
        assert unknown.status_code == 401
        answer = await client.post(
            "/dashboard/login", data={"username": "alice", "password": PASSWORD}
        )
        assert answer.status_code == 303
        cookie = client.cookies["taskhub_session"]
        assert (await client.get("/dashboard/")).status_code == 200

    # The same cookie, once alice's password has changed: back to the login form.
    changed = f"alice=operate:{hash_password('another password')}"
    async with dashboard_client(settings, db_url, token=None, users=changed) as client:
        client.cookies.set("taskhub_session", cookie, path="/dashboard")
        assert (await client.get("/dashboard/")).status_code == 303


async def test_a_removed_token_ends_its_sessions(settings: Settings, db_url: str) -> None:
    async with dashboard_client(settings, db_url) as client:
        cookie = client.cookies["taskhub_session"]
    fewer = settings.model_copy(update={"tokens": f"viewer=read:{READ_TOKEN}"})
    async with dashboard_client(fewer, db_url, token=None) as client:
        client.cookies.set("taskhub_session", cookie, path="/dashboard")
        assert (await client.get("/dashboard/")).status_code == 303
    # A cookie signed with another key is refused too.
    tampered = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    async with dashboard_client(settings, db_url, token=None) as client:
        client.cookies.set("taskhub_session", tampered, path="/dashboard")
        assert (await client.get("/dashboard/")).status_code == 303


async def test_logging_out_ends_the_session(settings: Settings, db_url: str) -> None:
    async with dashboard_client(settings, db_url) as client:
        token = await csrf(client)
        answer = await client.post("/dashboard/logout", data={"csrf": token})
        assert answer.status_code == 303
        assert (await client.get("/dashboard/")).status_code == 303


# -- scopes and CSRF ---------------------------------------------------------------------------


async def test_a_read_only_user_sees_everything_and_changes_nothing(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    job_id = await defer_job(conn, apps, "taskhub.ping", {})
    failed_id = await defer_job(conn, apps, "taskhub.ping", {})
    await fail_job(conn, failed_id)
    async with dashboard_client(settings, db_url, token=READ_TOKEN) as client:
        for path in ("/queues", f"/jobs/{job_id}", f"/jobs/{failed_id}", "/failed", "/tasks",
                     "/schedules", "/backups"):  # fmt: skip
            page = await client.get(f"/dashboard{path}")
            assert page.status_code == 200, path
            # Only the logout form carries a CSRF token: no action button is rendered.
            assert page.text.count('name="csrf"') == 1, path
        token = await csrf(client)
        refused = [
            await client.post(f"/dashboard{path}", data={"csrf": token, **extra})
            for path, extra in (
                ("/queues/default/pause", {}),
                (f"/jobs/{job_id}/cancel", {}),
                (f"/jobs/{failed_id}/retry", {}),
                ("/failed/retry", {}),
                ("/tasks/taskhub.ping/defer", {"args": "{}"}),
                ("/backups/run", {}),
            )
        ]
        assert [answer.status_code for answer in refused] == [403] * 6
        assert "needs the operate scope" in refused[0].text
    assert await status_of(conn, job_id) == "todo"
    assert await status_of(conn, failed_id) == "failed"
    assert await count_jobs(conn) == 2
    assert await audit_rows(conn) == []
    cursor = await conn.execute("SELECT count(*) AS n FROM taskhub.paused_queues")
    assert (await cursor.fetchone()) == {"n": 0}


async def test_an_action_without_the_csrf_token_is_refused(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    job_id = await defer_job(conn, apps, "taskhub.ping", {})
    async with dashboard_client(settings, db_url) as client:
        missing = await client.post(f"/dashboard/jobs/{job_id}/cancel")
        wrong = await client.post(f"/dashboard/jobs/{job_id}/cancel", data={"csrf": "guess"})
        token = await csrf(client)
        elsewhere = await client.post(
            f"/dashboard/jobs/{job_id}/cancel",
            data={"csrf": token},
            headers={"Origin": "https://evil.example"},
        )
    assert (missing.status_code, wrong.status_code, elsewhere.status_code) == (403, 403, 403)
    assert "CSRF" in missing.text
    assert "another site" in elsewhere.text
    assert await status_of(conn, job_id) == "todo"
    assert await audit_rows(conn) == []


# -- actions -----------------------------------------------------------------------------------


async def test_queue_actions_are_audited_with_the_users_name(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    for _ in range(3):
        await defer_job(conn, apps, "taskhub.ping", {})
    async with dashboard_client(settings, db_url) as client:
        token = await csrf(client)
        paused = await client.post("/dashboard/queues/default/pause", data={"csrf": token})
        assert paused.status_code == 303
        page = await client.get("/dashboard/queues")
        assert "Queue default paused." in page.text
        assert re.search(r'data-queue="default".*?status-paused', page.text, re.S)
        await client.post("/dashboard/queues/default/resume", data={"csrf": token})
        purged = await client.post("/dashboard/queues/default/purge", data={"csrf": token})
        assert "3 waiting jobs deleted" in (await client.get("/dashboard/queues")).text
        assert purged.status_code == 303
    assert [(row["actor"], row["action"]) for row in await audit_rows(conn)] == [
        ("dashboard:ops", "pause"),
        ("dashboard:ops", "resume"),
        ("dashboard:ops", "purge"),
    ]
    assert await count_jobs(conn) == 0


async def test_job_actions_retry_cancel_and_conflicts(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    waiting = await defer_job(conn, apps, "taskhub.ping", {})
    failed = await defer_job(conn, apps, "taskhub.ping", {})
    await fail_job(conn, failed)
    async with dashboard_client(settings, db_url) as client:
        token = await csrf(client)
        page = (await client.get(f"/dashboard/jobs/{failed}")).text
        assert "ERP answered 503" in page
        assert "Traceback: line 1" in page
        assert f'action="/dashboard/jobs/{failed}/retry"' in page
        retried = await client.post(f"/dashboard/jobs/{failed}/retry", data={"csrf": token})
        assert retried.headers["location"] == f"/dashboard/jobs/{failed}"
        cancelled = await client.post(f"/dashboard/jobs/{waiting}/cancel", data={"csrf": token})
        assert cancelled.status_code == 303
        assert "was cancelled" in (await client.get(f"/dashboard/jobs/{waiting}")).text
        again = await client.post(f"/dashboard/jobs/{waiting}/cancel", data={"csrf": token})
        assert again.status_code == 409
        assert "only waiting or running jobs can be cancelled" in again.text
        missing = await client.get("/dashboard/jobs/999999")
        assert missing.status_code == 404
    assert await status_of(conn, failed) == "todo"
    assert await status_of(conn, waiting) == "cancelled"
    assert [(row["actor"], row["action"], row["job_id"]) for row in await audit_rows(conn)] == [
        ("dashboard:ops", "retry", failed),
        ("dashboard:ops", "cancel", waiting),
    ]


async def test_failed_jobs_retried_or_cancelled_one_or_all_that_match(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    failed_pings = [await defer_job(conn, apps, "taskhub.ping", {}) for _ in range(3)]
    failed_steps = await defer_job(conn, apps, "shop.steps", {})
    for job_id in [*failed_pings, failed_steps]:
        await fail_job(conn, job_id)
    retrying = await defer_job(conn, apps, "taskhub.ping", {})
    await conn.execute("UPDATE procrastinate_jobs SET attempts = 1 WHERE id = %s", [retrying])
    await conn.commit()
    async with dashboard_client(settings, db_url) as client:
        token = await csrf(client)
        page = (await client.get("/dashboard/failed?task=taskhub.ping")).text
        assert all(f'href="/dashboard/jobs/{job_id}"' in page for job_id in failed_pings)
        assert f'href="/dashboard/jobs/{failed_steps}"' not in page
        assert "retrying" in page
        # Cancel applies to jobs waiting to retry; failed ones stay for a retry.
        cancelled = await client.post(
            "/dashboard/failed/cancel", data={"csrf": token, "task": "taskhub.ping"}
        )
        assert cancelled.status_code == 303
        assert "1 job cancelled" in (await client.get("/dashboard/failed")).text
        one = await client.post(
            "/dashboard/failed/retry", data={"csrf": token, "job_id": str(failed_pings[0])}
        )
        assert one.status_code == 303
        everything = await client.post(
            "/dashboard/failed/retry", data={"csrf": token, "task": "taskhub.ping"}
        )
        assert everything.status_code == 303
        assert "2 jobs will run again" in (await client.get("/dashboard/failed")).text
        stale = await client.post(
            "/dashboard/failed/retry", data={"csrf": token, "job_id": str(failed_pings[0])}
        )
        assert stale.status_code == 409
    assert [await status_of(conn, job_id) for job_id in failed_pings] == ["todo"] * 3
    assert await status_of(conn, failed_steps) == "failed"  # another task: not matched
    assert await status_of(conn, retrying) == "cancelled"
    rows = await audit_rows(conn)
    assert [(row["action"], row["job_id"], row["details"]["bulk"]) for row in rows] == [
        ("cancel", retrying, True),
        ("retry", failed_pings[0], False),
        ("retry", failed_pings[1], True),
        ("retry", failed_pings[2], True),
    ]
    events = await conn.execute(
        "SELECT count(*) AS n FROM procrastinate_events"
        " WHERE type = 'retried' AND job_id = ANY(%s)",
        [failed_pings],
    )
    assert (await events.fetchone()) == {"n": 3}


async def test_deferring_by_hand_validates_and_enqueues_nothing_on_bad_input(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    async with dashboard_client(settings, db_url) as client:
        token = await csrf(client)
        answers = {
            args: await client.post(
                "/dashboard/tasks/taskhub.ping/defer", data={"csrf": token, "args": args}
            )
            for args in ("{not json", "[1, 2]", '{"sleep": -5}', '{"nope": 1}')
        }
        unknown = await client.post(
            "/dashboard/tasks/no.such.task/defer", data={"csrf": token, "args": "{}"}
        )
        assert {args: answer.status_code for args, answer in answers.items()} == {
            "{not json": 422,
            "[1, 2]": 422,
            '{"sleep": -5}': 422,
            '{"nope": 1}': 422,
        }
        assert "not JSON" in answers["{not json"].text
        assert unknown.status_code == 404
        assert await count_jobs(conn) == 0
        good = await client.post(
            "/dashboard/tasks/taskhub.ping/defer",
            data={"csrf": token, "args": '{"message": "from the dashboard"}'},
        )
        assert good.status_code == 303
        job_id = int(good.headers["location"].rsplit("/", 1)[1])
        page = (await client.get(good.headers["location"])).text
        assert "from the dashboard" in page
    assert await count_jobs(conn) == 1
    assert [(row["action"], row["job_id"]) for row in await audit_rows(conn)] == [("defer", job_id)]


async def test_schedules_and_backups_run_now(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    async with dashboard_client(settings, db_url) as client:
        token = await csrf(client)
        ran = await client.post(
            "/dashboard/schedules/taskhub.rollup_stats/run", data={"csrf": token}
        )
        assert ran.status_code == 303
        backup = await client.post("/dashboard/backups/run", data={"csrf": token})
        assert backup.status_code == 303
        not_scheduled = await client.post(
            "/dashboard/schedules/taskhub.ping/run", data={"csrf": token}
        )
        assert not_scheduled.status_code == 404
        # The backup's queueing lock: a second one while the first waits is a conflict.
        twice = await client.post("/dashboard/backups/run", data={"csrf": token})
        assert twice.status_code == 409
    cursor = await conn.execute("SELECT task_name FROM procrastinate_jobs ORDER BY id")
    assert [row["task_name"] for row in await cursor.fetchall()] == [
        "taskhub.rollup_stats",
        "taskhub.backup_database",
    ]


# -- reading -----------------------------------------------------------------------------------


async def test_secret_arguments_are_never_rendered(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    card = "tok_live_4242424242424242"
    job_id = await defer_job(conn, apps, "shop.charge", {"customer": "acme", "card_token": card})
    failed = await defer_job(conn, apps, "shop.charge", {"customer": "acme", "card_token": card})
    await fail_job(conn, failed)
    async with dashboard_client(settings, db_url) as client:
        for path in (f"/jobs/{job_id}", "/jobs", "/jobs?task=shop.charge", f"/jobs/{failed}",
                     "/failed", "/queues", "/"):  # fmt: skip
            page = await client.get(f"/dashboard{path}")
            assert page.status_code == 200, path
            assert card not in page.text, path
        assert "acme" in (await client.get(f"/dashboard/jobs/{job_id}")).text


async def test_hostile_text_is_escaped_everywhere(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """Arguments, errors and queue names come from users: they are shown, never run."""
    apps = shop_apps(settings)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    job_id = await defer_job(conn, apps, "taskhub.ping", {"message": hostile})
    await conn.execute(
        "UPDATE procrastinate_jobs SET queue_name = %s WHERE id = %s", [hostile, job_id]
    )
    await conn.commit()
    async with dashboard_client(settings, db_url) as client:
        for path in (f"/jobs/{job_id}", "/jobs", "/queues", "/"):
            page = (await client.get(f"/dashboard{path}")).text
            assert "<script>alert" not in page, path
            assert "<img src=x" not in page, path
        assert "&lt;script&gt;alert" in (await client.get(f"/dashboard/jobs/{job_id}")).text


async def test_jobs_filter_find_and_page(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    pings = [await defer_job(conn, apps, "taskhub.ping", {}) for _ in range(55)]
    other = await defer_job(conn, apps, "shop.steps", {})
    async with dashboard_client(settings, db_url) as client:
        first = (await client.get("/dashboard/jobs?task=taskhub.ping")).text
        shown = [int(found) for found in re.findall(r'href="/dashboard/jobs/(\d+)"', first)]
        assert shown == sorted(pings, reverse=True)[:50]
        older = re.search(r'href="/dashboard/jobs\?([^"]+)" rel="next"', first)
        assert older
        second = (await client.get(f"/dashboard/jobs?{older.group(1).replace('&amp;', '&')}")).text
        rest = [int(found) for found in re.findall(r'href="/dashboard/jobs/(\d+)"', second)]
        assert rest == sorted(pings, reverse=True)[50:]
        found = await client.get(f"/dashboard/jobs?id={other}")
        assert found.headers["location"] == f"/dashboard/jobs/{other}"
        assert (await client.get("/dashboard/jobs?id=abc")).status_code == 422
        assert (await client.get("/dashboard/jobs?status=bogus")).status_code == 422
        assert (await client.get("/dashboard/jobs?since=yesterday")).status_code == 422
        future = (await client.get("/dashboard/jobs?since=2999-01-01T00:00")).text
        assert "No job matches" in future
        assert (await client.get("/dashboard/?range=year")).status_code == 422


async def test_every_page_renders(settings: Settings, db_url: str, conn: DictConnection) -> None:
    apps = shop_apps(settings)
    job_id = await defer_job(conn, apps, "shop.steps", {})
    async with dashboard_client(settings, db_url) as client:
        for path in ("/", "/?range=day", "/?range=week", "/queues", "/jobs", f"/jobs/{job_id}",
                     "/failed", "/workers", "/schedules", "/backups", "/tasks", "/alerts",
                     "/audit"):  # fmt: skip
            page = await client.get(f"/dashboard{path}")
            assert page.status_code == 200, path
            assert "Log out" in page.text, path
        tasks = (await client.get("/dashboard/tasks")).text
        assert "shop.steps" in tasks
        assert "StepsArgs" in tasks
        schedules = (await client.get("/dashboard/schedules")).text
        assert "taskhub.backup_database" in schedules


async def test_alerts_and_retry_policies_of_every_shape_render(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """An alert raised directly (a failed backup: no firing/resolved state) and a task whose
    retry policy is procrastinate's own strategy still render."""
    from procrastinate import RetryStrategy

    from backend.control.alerts import raise_alert

    async with conn.transaction():
        await raise_alert(conn, kind="backup_failed", message="pg_dump exited with 1")
    odd = TaskBlueprint()

    @odd.task(name="odd.retrying", retry=RetryStrategy(max_attempts=3, wait=5))
    async def retrying(args: StepsArgs) -> None:
        """A task with procrastinate's retry strategy."""

    apps = load_apps(settings, [SHOP, TaskhubApp(name="odd", blueprints=[odd])])
    dashboard = create_dashboard(
        settings, database_url=db_url, apps=apps, dashboard_settings=dashboard_settings()
    )
    app = FastAPI()
    app.mount("/dashboard", dashboard)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://taskhub"
        ) as client:
            await client.post("/dashboard/login", data={"token": READ_TOKEN})
            alerts_page = await client.get("/dashboard/alerts")
            assert alerts_page.status_code == 200
            assert "pg_dump exited with 1" in alerts_page.text
            tasks_page = await client.get("/dashboard/tasks")
            assert tasks_page.status_code == 200
            assert "max_attempts" in tasks_page.text
    finally:
        await dashboard.state.resources.close()


# -- mounting ----------------------------------------------------------------------------------


async def test_mounted_under_an_applications_own_prefix(settings: Settings, db_url: str) -> None:
    """An application mounts the dashboard where it likes; links, redirects and the cookie
    follow the prefix."""
    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"app": "mine"}

    dashboard = create_dashboard(
        settings, database_url=db_url, dashboard_settings=dashboard_settings()
    )
    app.mount("/ops/jobs-ui", dashboard)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://erp"
        ) as client:
            assert (await client.get("/")).json() == {"app": "mine"}
            away = await client.get("/ops/jobs-ui/queues")
            assert away.headers["location"] == "/ops/jobs-ui/login?next=%2Fqueues"
            login = await client.post("/ops/jobs-ui/login", data={"token": OPERATE_TOKEN})
            assert login.headers["location"] == "/ops/jobs-ui/"
            assert "Path=/ops/jobs-ui" in login.headers["set-cookie"]
            page = (await client.get("/ops/jobs-ui/")).text
            assert 'href="/ops/jobs-ui/static/dashboard.css"' in page
            assert 'href="/ops/jobs-ui/queues"' in page
    finally:
        await dashboard.state.resources.close()


async def test_taskhub_api_serves_the_dashboard(settings: Settings, db_url: str) -> None:
    async with running_api(create_app(settings, db_url), token=None) as client:
        answer = await client.get("/dashboard/")
        assert answer.headers["location"].startswith("/dashboard/login")
        assert (await client.get("/dashboard/login")).status_code == 200
        # Not in the REST API's OpenAPI document.
        spec = (await client.get("/openapi.json")).json()
        assert not [path for path in spec["paths"] if path.startswith("/dashboard")]


# -- live ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """A real uvicorn (streams are streamed, as a browser sees them)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _true(server.started))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def read_events(
    client: httpx.AsyncClient, url: str, until: str, within: float = 20
) -> list[tuple[str, Any]]:
    """The server-sent events of ``url`` up to the first of type ``until``."""
    events: list[tuple[str, Any]] = []
    async with asyncio.timeout(within), client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == until:
                    return events
    return events


async def test_a_job_page_streams_its_progress_until_it_finishes(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    app = FastAPI()
    dashboard = create_dashboard(
        settings, database_url=db_url, apps=apps, dashboard_settings=dashboard_settings()
    )
    app.mount("/dashboard", dashboard)
    job_id = await defer_job(conn, apps, "shop.steps", {"steps": 5, "pause": 0.4})
    try:
        async with (
            served(app) as base,
            httpx.AsyncClient(base_url=base) as client,
            running_worker(settings, db_url, blueprints=[*BLUEPRINTS, shop]),
        ):
            await client.post("/dashboard/login", data={"token": READ_TOKEN})
            events = await read_events(client, f"/dashboard/live/jobs/{job_id}", "reload")
    finally:
        await dashboard.state.resources.close()
    jobs = [data for kind, data in events if kind == "job"]
    percents = [job["percent"] for job in jobs if job["percent"] is not None]
    # Woken by NOTIFY at each report (every 0.4 s): several steps seen, in order, then the end.
    assert len(set(percents)) >= 3, jobs
    assert percents == sorted(percents)
    assert jobs[-1]["status"] == "succeeded"
    assert jobs[-1]["state"] == "SUCCESS"
    assert "PROGRESS" in {job["state"] for job in jobs}
    assert jobs[-1]["percent"] == 100
    assert events[-1][0] == "reload"
    cursor = await conn.execute("SELECT count(*) AS n FROM taskhub.job_waiters")
    assert (await cursor.fetchone()) == {"n": 0}  # the stream unregistered itself


async def test_progress_notifies_only_jobs_someone_watches(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """The NOTIFY costs nothing for jobs nobody has open."""
    apps = shop_apps(settings)
    watched = await defer_job(conn, apps, "shop.steps", {})
    unwatched = await defer_job(conn, apps, "shop.steps", {})
    await conn.execute(
        "INSERT INTO taskhub.job_waiters (job_id, waiter) VALUES (%s, gen_random_uuid())",
        [watched],
    )
    await conn.commit()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN taskhub_job_progress")
        for job_id in (unwatched, watched):
            await conn.execute(
                QUERIES["write_progress"],
                {"job_id": job_id, "done": 1, "total": 2, "message": None, "counters": "{}"},
            )
            await conn.commit()
        heard = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                async for notify in listener.notifies():
                    heard.append(int(notify.payload))
    assert heard == [watched]


async def test_the_overview_stream_follows_new_jobs(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    apps = shop_apps(settings)
    app = FastAPI()
    dashboard = create_dashboard(
        settings, database_url=db_url, apps=apps, dashboard_settings=dashboard_settings()
    )
    app.mount("/dashboard", dashboard)
    try:
        async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
            await client.post("/dashboard/login", data={"token": READ_TOKEN})
            seen: list[dict[str, str]] = []

            async def listen() -> None:
                async with client.stream("GET", "/dashboard/live/overview") as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            seen.append(json.loads(line.removeprefix("data: ")))

            listening = asyncio.create_task(listen())
            await eventually(lambda: _true(bool(seen)))
            await defer_job(conn, apps, "shop.charge", {"customer": "a", "card_token": "t"})
            await eventually(
                lambda: _true(
                    any('data-queue="payments"' in update.get("live-queues", "") for update in seen)
                ),
                within=5,
            )
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
    finally:
        await dashboard.state.resources.close()


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("scope", ["read", "operate"])
async def test_buttons_follow_the_scope(
    settings: Settings, db_url: str, conn: DictConnection, scope: str
) -> None:
    apps = shop_apps(settings)
    await defer_job(conn, apps, "taskhub.ping", {})
    token = READ_TOKEN if scope == "read" else OPERATE_TOKEN
    async with dashboard_client(settings, db_url, token=token) as client:
        page = (await client.get("/dashboard/queues")).text
    assert ("Pause</button>" in page) is (scope == "operate")
