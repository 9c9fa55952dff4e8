"""One log line per finished job (text or JSON), and a secret argument seen by its task alone:
never in the API's answers, the CLI's output, the worker's log (even at DEBUG) or error rows."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port, wait_status
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e

SECRET = "planted-s3cret-7f1c2a9e"
MASK = "**********"

VAULT_APP = """
import hashlib

from pydantic import BaseModel, SecretStr

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint

blueprint = TaskBlueprint()
ATTEMPTS: list[int] = []


class Credentials(BaseModel):
    user: str
    password: SecretStr


class Login(BaseModel):
    account: str
    token: SecretStr
    backups: list[Credentials] = []


@blueprint.task(name="vault.login", retry=1)
def login(args: Login) -> str:
    ATTEMPTS.append(1)
    if args.account == "flaky" and len(ATTEMPTS) == 1:
        raise ConnectionError("the vault did not answer")
    return hashlib.sha256(args.token.get_secret_value().encode()).hexdigest()


app = TaskhubApp(name="vault", blueprints=[blueprint])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "vault_app.py").write_text(textwrap.dedent(VAULT_APP))
    return tmp_path


def test_one_line_per_job_and_secrets_stay_in_the_database(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_APPS="vault_app",
        TASKHUB_TOKENS=f"operate:{OPERATE_TOKEN}",
        TASKHUB_FETCH_POLLING_INTERVAL="0.1",
        TASKHUB_LOG_FORMAT="json",
        TASKHUB_LOG_LEVEL="DEBUG",
    )
    port = free_port()
    api = spawn(["api", "--port", str(port)], project, env)
    worker = spawn(["worker", "--processes", "1"], project, env)
    api.wait_for_line("taskhub is up")
    worker.wait_for_line("taskhub is up")
    base, headers = f"http://127.0.0.1:{port}", bearer(OPERATE_TOKEN)
    args = {
        "account": "flaky",
        "token": SECRET,
        "backups": [{"user": "ops", "password": SECRET}],
    }
    shown: list[str] = []

    created = httpx.post(
        f"{base}/jobs", json={"task": "vault.login", "args": args}, headers=headers
    )
    assert created.status_code == 201, created.text
    shown.append(created.text)
    job_id = created.json()["id"]
    assert created.json()["args"] == {
        "account": "flaky",
        "token": MASK,
        "backups": [{"user": "ops", "password": MASK}],
    }
    finished = httpx.get(f"{base}/jobs/{job_id}?wait=30", headers=headers)
    shown.append(finished.text)
    assert finished.json()["status"] == "succeeded", finished.text
    assert finished.json()["result"] == hashlib.sha256(SECRET.encode()).hexdigest(), (
        "the task had the real secret"
    )
    assert [error["type"] for error in finished.json()["errors"]] == ["ConnectionError"]
    shown.append(httpx.get(f"{base}/jobs?task=vault.login", headers=headers).text)

    deferred = run_cli(
        ["defer", "vault.login", "--args", json.dumps({**args, "account": "plain"})],
        project,
        env,
    )
    assert deferred.returncode == 0, deferred.stderr
    shown.append(deferred.stdout)
    cli_id = json.loads(deferred.stdout)["id"]
    wait_status(db_url, cli_id, "succeeded")
    for command in (["jobs", "show", str(job_id), "--json"], ["jobs", "list", "--json"]):
        ran = run_cli(command, project, env)
        assert ran.returncode == 0, ran.stderr
        shown.append(ran.stdout)
    assert worker.stop() == 0
    assert api.stop() == 0
    shown += [worker.output, api.output]

    with psycopg.connect(db_url) as conn:
        error_rows = conn.execute("SELECT error::text FROM taskhub.job_errors error").fetchall()
        stored = conn.execute(
            "SELECT args->>'token' FROM procrastinate_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    shown += [row[0] for row in error_rows]
    assert error_rows, "the failed attempt left its error row"
    assert stored == (SECRET,), "the database keeps the real value: the task needs it"
    leaks = [text[:200] for text in shown if SECRET in text]
    assert leaks == []

    records = [json.loads(line) for line in worker.lines if line.startswith("{")]
    assert records, worker.output
    outcomes = [record for record in records if "outcome" in record]
    lines = {(record["job_id"], record["outcome"], record["level"]) for record in outcomes}
    assert (job_id, "failed, to retry", "WARNING") in lines
    assert (job_id, "succeeded", "INFO") in lines
    assert (cli_id, "succeeded", "INFO") in lines
    success = next(r for r in outcomes if r["job_id"] == job_id and r["outcome"] == "succeeded")
    assert success["task"] == "vault.login"
    assert success["attempt"] == 2
    assert success["queue"] == "default"
    assert success["duration"] >= 0
    assert success["message"].startswith(f"Task vault.login[{job_id}] succeeded in ")
    assert any(MASK in json.dumps(record) for record in records), "DEBUG lines show the mask"


def test_text_logs_have_one_info_line_per_finished_job(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_FETCH_POLLING_INTERVAL="0.1")
    worker = spawn(["worker", "--processes", "1"], project, env)
    worker.wait_for_line("taskhub is up")
    deferred = run_cli(["defer", "taskhub.ping", "--args", '{"message": 1}'], project, env)
    job_id = json.loads(deferred.stdout)["id"]
    wait_status(db_url, job_id, "succeeded")
    worker.wait_for_line(f"Task taskhub.ping[{job_id}] succeeded in ")
    assert worker.stop() == 0
    lines = [line for line in worker.lines if f"[{job_id}]" in line]
    assert len(lines) == 1, lines
    assert " INFO procrastinate.worker.worker: Task taskhub.ping" in lines[0]
