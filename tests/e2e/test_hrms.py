"""The HRMS Django project with real processes: the team's own ``manage.py migrate`` and
``runserver``, ``taskhub migrate``, ``taskhub worker`` processes (one SIGKILLed mid-job), an upload
over HTTP whose chart sync job waits for a worker and then succeeds."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import TaskhubProcess, clean_env, free_port
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ROOT / "backend" / "examples" / "hrms" / "manage.py"
APP = "backend.examples.hrms.app"
CSV = b"employee_id,name,department,salary\nE1,Asha,Sales,50000\nE2,Ravi,Ops,70000\n"


def wait_state(base: str, task_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = httpx.get(f"{base}/api/tasks/{task_id}/").json()
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, f"task {task_id} is {body['state']}, not {state}"
        time.sleep(0.1)


def wait_http(base: str, server: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, "runserver exited"
        try:
            httpx.get(f"{base}/api/tasks/0/")
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "runserver did not answer"
            time.sleep(0.1)


def test_upload_waits_for_a_worker_and_survives_one_killed_mid_job(
    spawn: type[TaskhubProcess], tmp_path: Path, empty_db_url: str
) -> None:
    env = clean_env(
        DATABASE_URL=empty_db_url,
        TASKHUB_DATA_DIR=str(tmp_path / ".taskhub"),
        # A killed worker's job is rescued within seconds.
        TASKHUB_HEARTBEAT_INTERVAL="0.5",
        TASKHUB_RESCUE_AFTER="2",
        TASKHUB_SCHEDULES="taskhub.rescue_stalled_jobs=* * * * * *",
    )
    migrated = run_cli(["migrate", "--app", APP], ROOT, env)
    assert migrated.returncode == 0, migrated.stderr
    django_migrate = subprocess.run(
        [sys.executable, str(MANAGE), "migrate"], env=env, capture_output=True, text=True
    )
    assert django_migrate.returncode == 0, django_migrate.stderr
    assert "Applying salaries.0001_initial... OK" in django_migrate.stdout

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, str(MANAGE), "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_http(base, server)
        worker_args = ["worker", "--app", APP, "--queues", "chart_sync,maintenance"]
        doomed = spawn(worker_args, ROOT, env)
        time.sleep(2)
        doomed.stop(signal.SIGKILL)

        tenant = httpx.post(f"{base}/api/tenants/", json={"name": "acme"}).json()
        answer = httpx.post(
            f"{base}/api/salary-uploads/",
            data={"tenant_id": tenant["id"], "year": 2025, "month": "JAN"},
            files={"file": ("jan.csv", CSV, "text/csv")},
        )
        assert answer.status_code == 201, answer.text
        task_id = answer.json()["task_id"]
        time.sleep(1)
        assert wait_state(base, task_id, "PENDING")["attempts"] == 0  # no worker alive

        # A worker takes it and is killed mid-job: the test holds a lock on the chart table,
        # so the job waits inside its transaction, then the worker dies with nothing committed.
        holder = psycopg.connect(empty_db_url)
        holder.execute("LOCK TABLE salaries_chartaggregateddata IN ACCESS EXCLUSIVE MODE")
        killed = spawn([*worker_args, "--processes", "1"], ROOT, env)  # the worker itself
        wait_state(base, task_id, "STARTED")
        killed.stop(signal.SIGKILL)
        holder.rollback()
        holder.close()

        workers = [spawn(worker_args, ROOT, env) for _ in range(2)]
        done = wait_state(base, task_id, "SUCCESS")
        assert done["result"]["employees"] == 2
        assert done["attempts"] == 2, done  # the lost attempt counted, then a clean one
        with psycopg.connect(empty_db_url) as conn:
            rows = conn.execute(
                "SELECT department, employees FROM salaries_chartaggregateddata ORDER BY 1"
            ).fetchall()
            errors = conn.execute(
                "SELECT type FROM taskhub.job_errors WHERE job_id = %s", (int(task_id),)
            ).fetchall()
        assert rows == [("Ops", 1), ("Sales", 1)]
        assert errors == [("WorkerLost",)]
        for worker in workers:
            assert worker.stop() == 0, worker.output
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_up_demo_serves_the_django_project_and_runs_its_upload(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    """`taskhub up --demo` migrates the project's tables with its own manage.py, serves its
    views, and its workers run the upload's chart sync."""
    env = clean_env(DATABASE_URL=db_url, TASKHUB_API_PORT=str(free_port()))
    up = spawn(["up", "--demo"], tmp_path, env)
    up.wait_for_line("Stop with Ctrl-C.")
    found = re.search(r"demo HRMS \(Django\): (http://\S+)", up.output)
    assert found is not None, up.output
    base = found[1]
    tenant = httpx.post(f"{base}/api/tenants/", json={"name": "demo"}).json()
    answer = httpx.post(
        f"{base}/api/salary-uploads/",
        data={"tenant_id": tenant["id"], "year": 2025, "month": "FEB"},
        files={"file": ("feb.csv", CSV, "text/csv")},
    )
    assert answer.status_code == 201, answer.text
    done = wait_state(base, answer.json()["task_id"], "SUCCESS")
    assert done["result"]["employees"] == 2
    assert up.stop() == 0, up.output
