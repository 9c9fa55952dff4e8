"""The schedule sync with real processes: `taskhub migrate --app`, `taskhub api`, `taskhub
worker` with ``TASKHUB_APPS=backend.examples.scheduling``, and the stand-in scheduling API
served for real, which fails twice before it answers."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from backend.examples.scheduling.standin import Fault, SchedulingStandin
from backend.examples.serving import serving
from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TASKHUB, TaskhubProcess, clean_env, free_port, job_row

pytestmark = pytest.mark.e2e

APP = "backend.examples.scheduling"
REMOTE_TOKEN = "remote-scheduling-token-0123456789"
MIGRATION_SQL = (
    Path(__file__).resolve().parents[2]
    / "backend/examples/scheduling/migrations/sql/0001_scheduling.sql"
)


def migrate(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [TASKHUB, "migrate", *args],
        cwd=cwd,
        env=clean_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def scheduling_objects(url: str) -> list[str]:
    """What schema ``scheduling`` holds (tables, views, indexes), and the app's version."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relkind::text || ' ' || c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'scheduling' AND c.relkind IN ('r', 'v', 'i') ORDER BY 1"
        ).fetchall()
        version = conn.execute(
            "SELECT to_regclass('alembic_version_scheduling') IS NOT NULL"
        ).fetchone()
        assert version is not None
        if version[0]:
            rows += conn.execute(
                "SELECT 'version ' || version_num FROM alembic_version_scheduling"
            ).fetchall()
    return [row[0] for row in rows]


def test_migrate_makes_the_scheduling_schema_only_with_the_app(
    tmp_path: Path, empty_db_url: str
) -> None:
    migrate(empty_db_url, tmp_path)
    assert scheduling_objects(empty_db_url) == []
    with psycopg.connect(empty_db_url) as conn:
        schema = conn.execute("SELECT to_regnamespace('scheduling')").fetchone()
    assert schema == (None,)

    migrate(empty_db_url, tmp_path, "--app", APP)
    made = scheduling_objects(empty_db_url)
    assert "r employees" in made
    assert "v schedule_overview" in made
    assert made[-1] == "version 0001"

    migrate(empty_db_url, tmp_path, "--app", APP)
    assert scheduling_objects(empty_db_url) == made


def test_migrate_adopts_the_tables_taskhub_0008_made(tmp_path: Path, empty_db_url: str) -> None:
    """A database from before the example was an app: taskhub's 0008 made the tables (the
    same SQL without IF NOT EXISTS); the app's first revision keeps them and their rows."""
    migrate(empty_db_url, tmp_path)
    old_0008 = (
        MIGRATION_SQL.read_text(encoding="utf-8")
        .replace(" IF NOT EXISTS", "")
        .replace(" OR REPLACE", "")
    )
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(old_0008.encode())
        conn.execute("INSERT INTO scheduling.employees (code, name) VALUES ('E1001', 'Dana')")

    migrate(empty_db_url, tmp_path, "--app", APP)
    assert "version 0001" in scheduling_objects(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        names = conn.execute("SELECT name FROM scheduling.employee_overview").fetchall()
    assert names == [("Dana",)]


def run_through_retries(db_url: str, job_id: int, timeout: float = 60) -> dict[str, object]:
    """Wait for the job to end, cutting each retry's backoff short (scheduled_at moved to
    now: the test does not wait the policy's 60 s and 120 s)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as conn:
        while (row := job_row(db_url, job_id))["status"] not in ("succeeded", "failed"):
            conn.execute(
                "UPDATE procrastinate_jobs SET scheduled_at = now()"
                " WHERE id = %s AND status = 'todo' AND scheduled_at > now()",
                (job_id,),
            )
            assert time.monotonic() < deadline, f"job {job_id} is still {row['status']}"
            time.sleep(0.1)
    return row


def test_a_worker_process_makes_one_event_through_a_lost_answer_and_a_500(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    standin = SchedulingStandin(token=REMOTE_TOKEN)
    # The first create is made on the remote but its answer never comes; the second is a 500.
    standin.inject(Fault.timeout(), Fault.error(500), route="POST /events")
    with serving(standin.app) as remote_url:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        migrate(db_url, tmp_path, "--app", APP)
        env = clean_env(
            DATABASE_URL=db_url,
            TASKHUB_APPS=APP,
            TASKHUB_TOKENS=f"ops=operate:{OPERATE_TOKEN}",
            TASKHUB_SCHEDULING_BASE_URL=remote_url,
            TASKHUB_SCHEDULING_TOKEN=REMOTE_TOKEN,
            TASKHUB_SCHEDULING_TIMEOUT="1",
            TASKHUB_FETCH_POLLING_INTERVAL="0.1",
            TASKHUB_SCHEDULES="scheduling.refresh_events=off",
        )
        api = spawn(["api", "--port", str(port)], tmp_path, env)
        worker = spawn(["worker", "--queues", "scheduling"], tmp_path, env)
        api.wait_for_line("Stop with Ctrl-C.")
        worker.wait_for_line("worker:   scheduling")

        headers = bearer(OPERATE_TOKEN)
        employee = httpx.post(
            f"{base}/scheduling/employees",
            json={"code": "E1001", "name": "Dana Reyes"},
            headers=headers,
        )
        assert employee.status_code == 201, employee.text
        created = httpx.post(
            f"{base}/scheduling/schedules",
            json={
                "employee_id": employee.json()["id"],
                "title": "Store 112 reset",
                "starts_at": "2030-01-07T08:00:00Z",
                "ends_at": "2030-01-07T12:00:00Z",
            },
            headers=headers,
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["last_job_id"]
        job = run_through_retries(db_url, job_id)
        schedule = httpx.get(
            f"{base}/scheduling/schedules/{created.json()['id']}", headers=headers
        ).json()

        assert api.stop(signal.SIGTERM) == 0, api.output
        assert worker.stop(signal.SIGTERM) == 0, worker.output

    assert (job["status"], job["attempts"]) == ("succeeded", 3), worker.output
    assert job["errors"] == ["SchedulingUnavailable@1", "SchedulingUnavailable@2"]
    [event] = standin.events()
    creates = standin.requests("POST /events")
    assert [(r.fault, r.status) for r in creates] == [
        ("timeout", None),
        ("error", 500),
        (None, 201),
    ]
    assert len({r.idempotency_key for r in creates}) == 1
    assert (schedule["external_id"], schedule["sync_status"]) == (event.id, "synced")
    assert (schedule["last_job_id"], schedule["last_job_status"]) == (job_id, "succeeded")
    assert REMOTE_TOKEN not in worker.output
