"""A team's own project, outside this repository, served by taskhub with nothing edited:
its task, its business table (its own migration), its router, its transactional defer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port, wait_status
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e

PACKAGE = {
    "acme/__init__.py": "",
    "acme/jobs.py": '''
        """acme's background jobs, loaded with --app acme.jobs."""

        from pathlib import Path
        from typing import Any

        from fastapi import APIRouter
        from psycopg import Connection
        from pydantic import BaseModel

        from backend import defer
        from backend.api.deps import Conn, Operator
        from backend.declare.apps import TaskhubApp
        from backend.declare.policy import TaskDefaults
        from backend.declare.registry import TaskBlueprint

        blueprint = TaskBlueprint()


        class InvoiceArgs(BaseModel):
            invoice_id: int


        @blueprint.task(name="acme.send_invoice")
        def send_invoice(args: InvoiceArgs) -> dict[str, int]:
            return {"sent": args.invoice_id}


        def create_invoice(conn: Connection[Any], amount: int) -> tuple[int, int]:
            """The business row and its job, in the caller's transaction."""
            row = conn.execute(
                "INSERT INTO acme.invoices (amount) VALUES (%s) RETURNING id", (amount,)
            ).fetchone()
            assert row is not None
            job_id = defer.defer_sync(conn, send_invoice, {"invoice_id": row[0]})
            return row[0], job_id


        router = APIRouter(prefix="/acme", tags=["acme"])


        class NewInvoice(BaseModel):
            amount: int


        @router.post("/invoices", status_code=201)
        async def post_invoice(body: NewInvoice, conn: Conn, caller: Operator) -> dict[str, int]:
            cursor = await conn.execute(
                "INSERT INTO acme.invoices (amount) VALUES (%s) RETURNING id", (body.amount,)
            )
            row = await cursor.fetchone()
            assert row is not None
            job_id = await defer.defer(conn, send_invoice, {"invoice_id": row["id"]})
            return {"invoice": row["id"], "job": job_id}


        app = TaskhubApp(
            name="acme",
            blueprints=[blueprint],
            routers=[router],
            migrations=Path(__file__).parent / "migrations",
            defaults=TaskDefaults(queue="acme", time_limit=60, soft_time_limit=50),
        )
    ''',
    "acme/migrations/versions/0001_invoices.py": '''
        """acme's invoices"""

        from alembic import op

        revision = "0001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            op.execute("CREATE SCHEMA acme")
            op.execute(
                "CREATE TABLE acme.invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " amount integer NOT NULL)"
            )


        def downgrade() -> None:
            op.execute("DROP SCHEMA acme CASCADE")
    ''',
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, text in PACKAGE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_a_project_outside_the_repository_runs_under_taskhub(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_TOKENS=f"operate:{OPERATE_TOKEN}",
        TASKHUB_FETCH_POLLING_INTERVAL="0.1",
    )
    migrated = run_cli(["migrate", "--app", "acme.jobs"], project, env)
    assert migrated.returncode == 0, migrated.stderr
    assert "and the schemas of acme" in migrated.stdout
    assert query(db_url, "SELECT version_num FROM alembic_version_acme") == [("0001",)]
    port = free_port()
    api = spawn(["api", "--app", "acme.jobs", "--port", str(port)], project, env)
    worker = spawn(["worker", "--app", "acme.jobs", "--processes", "2"], project, env)
    api.wait_for_line("taskhub is up")
    worker.wait_for_line("taskhub is up")
    base, headers = f"http://127.0.0.1:{port}", bearer(OPERATE_TOKEN)

    tasks = {task["name"]: task for task in httpx.get(f"{base}/tasks", headers=headers).json()}
    assert "taskhub.ping" in tasks, "taskhub's own tasks are always there"
    invoice_task = tasks["acme.send_invoice"]
    assert (invoice_task["queue"], invoice_task["time_limit"]) == ("acme", 60), "app defaults"
    assert invoice_task["args_schema"]["required"] == ["invoice_id"]

    deferred = httpx.post(
        f"{base}/jobs",
        json={"task": "acme.send_invoice", "args": {"invoice_id": 7}},
        headers=headers,
    )
    assert deferred.status_code == 201, deferred.text
    assert wait_status(db_url, deferred.json()["id"], "succeeded")["result"] == {"sent": 7}

    created = httpx.post(f"{base}/acme/invoices", json={"amount": 120}, headers=headers)
    assert created.status_code == 201, created.text
    invoice, job_id = created.json()["invoice"], created.json()["job"]
    assert wait_status(db_url, job_id, "succeeded")["result"] == {"sent": invoice}

    # The project's own code defers in its own transaction: both rows or neither.
    script = (
        "import sys, psycopg\n"
        "from acme.jobs import create_invoice\n"
        "with psycopg.connect(sys.argv[1]) as conn:\n"
        "    invoice, job = create_invoice(conn, 5)\n"
        "    if sys.argv[2] == 'rollback':\n"
        "        conn.rollback()\n"
        "print(invoice, job)\n"
    )
    for outcome in ("rollback", "commit"):
        ran = subprocess.run(
            [sys.executable, "-c", script, db_url, outcome],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
        )
        invoice, job_id = map(int, ran.stdout.split())
        rows = query(db_url, f"SELECT count(*) FROM acme.invoices WHERE id = {invoice}")
        jobs = query(db_url, f"SELECT count(*) FROM procrastinate_jobs WHERE id = {job_id}")
        expected = 0 if outcome == "rollback" else 1
        assert (rows, jobs) == ([(expected,)], [(expected,)]), outcome
    assert wait_status(db_url, job_id, "succeeded")["result"] == {"sent": invoice}
    assert api.stop() == 0
    assert worker.stop() == 0


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("acme.missing", "app acme.missing: cannot import it: ModuleNotFoundError"),
        ("acme.jobs:router", "app acme.jobs:router: acme.jobs.router is a APIRouter, not a"),
    ],
)
def test_an_app_that_cannot_load_stops_the_start_with_one_line(
    project: Path, db_url: str, app: str, message: str
) -> None:
    for command in (["worker"], ["api"], ["migrate"], ["defer", "taskhub.ping"]):
        ran = run_cli([*command, "--app", app], project, clean_env(DATABASE_URL=db_url))
        assert ran.returncode != 0
        lines = ran.stderr.strip().splitlines()
        assert len(lines) == 1, ran.stderr
        assert message in lines[0]
    assert query(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]


def test_taskhub_apps_lists_apps_like_the_option(project: Path, db_url: str) -> None:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_APPS="acme.jobs")
    assert run_cli(["migrate"], project, env).returncode == 0
    ran = run_cli(
        ["defer", "acme.send_invoice", "--args", json.dumps({"invoice_id": 1})], project, env
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["queue"] == "acme"
