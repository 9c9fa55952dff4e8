"""A planted secret argument (SecretStr), followed everywhere taskhub shows a job.

The task gets the real value; the API's answers (job, lists, filters, replays, refusals),
the dashboard's pages and forms, /metrics and /stats, the logs (DEBUG, API and worker in
this process) and the error, event and audit rows never hold it.
tests/e2e/test_logs_and_secrets.py does the same across real processes and the CLI.
"""

from __future__ import annotations

import logging
import re

import httpx
import psycopg
import pytest
from pydantic import BaseModel, SecretStr

from backend.api import create_app
from backend.declare.apps import TaskhubApp, load_apps
from backend.declare.registry import TaskBlueprint
from backend.settings import Settings
from tests.conftest import OPERATE_TOKEN
from tests.integration.conftest import running_api, running_worker

SECRET = "planted-s3cret-9b4e1d77"
MASK = "**********"

vault = TaskBlueprint()
SEEN: list[str] = []


class Credentials(BaseModel):
    user: str
    password: SecretStr


class Login(BaseModel):
    account: str
    token: SecretStr
    backups: list[Credentials] = []


@vault.task(name="vault.login", retry=1)
def login(args: Login) -> str:
    """Fails its first attempt (or every one, for account "broken"), naming the secret as
    a careless task would: the SecretStr prints as its mask."""
    SEEN.append(args.token.get_secret_value())
    if args.account == "broken" or len(SEEN) == 1:
        raise ConnectionError(f"the vault refused {args.account} with {args.token}")
    return f"logged in as {args.account}"


VAULT = TaskhubApp(name="vault", blueprints=[vault])
ARGS = {
    "account": "ops",
    "token": SECRET,
    "backups": [{"user": "ops", "password": SECRET}],
}


async def finished(client: httpx.AsyncClient, job_id: int) -> httpx.Response:
    answer = await client.get(f"/jobs/{job_id}", params={"wait": 30})
    assert answer.json()["status"] in ("succeeded", "failed"), answer.text
    return answer


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def rows_as_text(db_url: str) -> list[str]:
    """Every row of the tables a job's story is written to, as text."""
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        found: list[str] = []
        for table in ("taskhub.job_errors", "taskhub.job_results", "taskhub.job_progress",
                      "taskhub.audit_log", "procrastinate_events", "taskhub.task_stats",
                      "taskhub.alert_events", "taskhub.idempotency_keys"):  # fmt: skip
            cursor = await conn.execute(f"SELECT t::text FROM {table} t")
            found += [row[0] for row in await cursor.fetchall()]
        return found


async def test_a_secret_argument_is_seen_by_its_task_alone(
    settings: Settings, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    SEEN.clear()
    apps = load_apps(settings, [VAULT])
    shown: dict[str, str] = {}
    async with (
        running_api(create_app(settings, db_url, apps=apps), OPERATE_TOKEN) as client,
        running_worker(settings, db_url, blueprints=apps.blueprints),
    ):
        body = {"task": "vault.login", "args": ARGS}
        created = await client.post("/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert created.status_code == 201, created.text
        assert created.json()["args"]["token"] == MASK
        job_id = created.json()["id"]
        shown["created"] = created.text
        replay = await client.post("/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert replay.headers.get("Idempotent-Replayed") == "true"
        shown["replay"] = replay.text
        reused = await client.post(
            "/jobs", json={**body, "priority": 3}, headers={"Idempotency-Key": "k-1"}
        )
        assert reused.status_code == 409
        shown["reused key"] = reused.text
        for name, refused_args in {
            "missing field": {"token": SECRET},
            "wrong type": {"account": "ops", "token": [SECRET]},
            "extra nesting": {"account": "ops", "token": {"value": SECRET}},
            "bad backup": {**ARGS, "backups": [{"password": SECRET}]},
        }.items():
            refused = await client.post("/jobs", json={"task": "vault.login", "args": refused_args})
            assert refused.status_code == 422, refused.text
            shown[f"refused: {name}"] = refused.text
        broken = await client.post(
            "/jobs", json={"task": "vault.login", "args": {**ARGS, "account": "broken"}}
        )
        broken_id = broken.json()["id"]

        done = await finished(client, job_id)
        assert done.json()["status"] == "succeeded", done.text
        assert [error["type"] for error in done.json()["errors"]] == ["ConnectionError"]
        failed = await finished(client, broken_id)
        assert failed.json()["status"] == "failed", failed.text
        assert MASK in failed.json()["errors"][-1]["message"], "the task's message, masked"
        shown["job"], shown["failed job"] = done.text, failed.text
        for path, params in {
            "/jobs": {},
            "/jobs ": {"task": "vault.login"},
            "/jobs  ": {"state": "FAILURE"},
            "/metrics": {},
            "/stats": {},
            "/stats/slow": {},
            "/queues": {},
            "/workers": {},
            "/tasks": {},
            "/alerts": {},
        }.items():
            answer = await client.get(path.strip(), params=params)
            assert answer.status_code == 200, (path, answer.text)
            shown[f"GET {path.strip()} {params}"] = answer.text
        retried = await client.post(f"/jobs/{broken_id}/retry")
        assert retried.status_code == 200, retried.text
        shown["retried"] = retried.text

        answer = await client.post("/dashboard/login", data={"token": OPERATE_TOKEN})
        assert answer.status_code == 303
        csrf = csrf_of((await client.get("/dashboard/workers")).text)
        by_hand = await client.post(
            "/dashboard/tasks/vault.login/defer",
            data={"csrf": csrf, "args": f'{{"account": "hand", "token": "{SECRET}"}}'},
        )
        assert by_hand.status_code == 303, by_hand.text
        hand_id = int(by_hand.headers["location"].rsplit("/", 1)[1])
        refused_form = await client.post(
            "/dashboard/tasks/vault.login/defer",
            data={"csrf": csrf, "args": f'{{"token": "{SECRET}"}}'},
        )
        assert refused_form.status_code == 422
        shown["dashboard refused defer"] = refused_form.text
        await finished(client, hand_id)
        for page in ("/", "/queues", "/jobs", "/jobs?task=vault.login", f"/jobs/{job_id}",
                     f"/jobs/{broken_id}", f"/jobs/{hand_id}", "/failed",
                     "/failed?task=vault.login", "/workers", "/schedules", "/tasks",
                     "/alerts", "/audit"):  # fmt: skip
            answer = await client.get(f"/dashboard{page}")
            assert answer.status_code == 200, (page, answer.text[:300])
            shown[f"dashboard {page}"] = answer.text
        job_page = shown[f"dashboard /jobs/{job_id}"]
        assert MASK in job_page, "the job page shows the arguments, masked"

    assert SECRET in SEEN, "the task had the real value"
    for row in await rows_as_text(db_url):
        shown[f"row {row[:60]}"] = row
    assert any("ConnectionError" in key or "ConnectionError" in text for key, text in
               shown.items()), "the error rows were read"  # fmt: skip
    logged = [caplog.text] + [
        f"{record.getMessage()} {record.args!r} {record.__dict__!r}" for record in caplog.records
    ]
    assert any("vault.login" in text for text in logged), "the worker's log was captured"
    shown.update({f"log {n}": text for n, text in enumerate(logged)})
    leaks = [where for where, text in shown.items() if SECRET in text]
    assert leaks == [], [(where, shown[where][:300]) for where in leaks]
