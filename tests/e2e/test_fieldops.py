"""Field operations with real processes: the Flask app (``flask run``) defers in its requests'
sessions, ``taskhub worker --app backend.examples.fieldops`` runs the jobs; ``taskhub
migrate`` makes its tables and ``taskhub doctor`` checks the setup (the seed's verify script)."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest
from pypdf import PdfReader

from tests.e2e.conftest import TaskhubProcess, clean_env, free_port, wait_status
from tests.e2e.test_processes import jobs_in, run_cli

pytestmark = pytest.mark.e2e

APP = "backend.examples.fieldops"


@pytest.fixture
def env(empty_db_url: str, tmp_path: Path) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=empty_db_url,
        TASKHUB_DATA_DIR=str(tmp_path / "data"),
        TASKHUB_APPS=APP,
        TASKHUB_TIMEZONE="Asia/Riyadh",
        TASKHUB_FIELDOPS_REPORTS_DIR=str(tmp_path / "reports"),
        TASKHUB_FIELDOPS_OFFSITE_TARGET=f"file://{tmp_path / 'offsite'}",
    )


@contextlib.contextmanager
def _flask(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``flask run`` of the app factory, as the seed's team serves it in development."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            f"{APP}.web:create_app",
            "run",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/reports/1", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None, "flask run exited"
            assert time.monotonic() < deadline, "flask run did not answer within 30 s"
            time.sleep(0.1)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_flask_app_defers_and_a_worker_runs_its_jobs(
    spawn: type[TaskhubProcess],
    env: dict[str, str],
    empty_db_url: str,
    tmp_path: Path,
) -> None:
    migrated = run_cli(["migrate"], tmp_path, env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    # A worker process on every queue of the app (and taskhub's own).
    worker = spawn(["worker"], tmp_path, env)
    worker.wait_for_line("taskhub is up", timeout=60)
    doctor = run_cli(["doctor"], tmp_path, env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "fieldops" in doctor.stdout

    with _flask(env, tmp_path) as base:
        created = httpx.post(
            f"{base}/schedules",
            json={"title": "Gate patrol", "day": "2030-01-07", "assignee": "salem"},
        )
        assert created.status_code == 201, created.text
        wait_status(empty_db_url, created.json()["job_id"], "succeeded")
        with psycopg.connect(empty_db_url) as conn:
            notes = conn.execute("SELECT recipient FROM fieldops.notifications").fetchall()
        assert notes == [("salem",)]

        # A refused request leaves nothing for the worker.
        before = jobs_in(empty_db_url)
        day = {"day": "2030-01-08", "assignee": "salem"}
        refused = httpx.post(
            f"{base}/schedules/bulk",
            json={"schedules": [{"title": "Kennels", **day}, {"title": "Kennels", **day}]},
        )
        assert refused.status_code == 409
        assert jobs_in(empty_db_url) == before

        asked = httpx.post(
            f"{base}/reports", json={"day_from": "2030-01-01", "day_to": "2030-01-31"}
        )
        assert asked.status_code == 202
        report = asked.json()["report"]
        wait_status(empty_db_url, report["job_id"], "succeeded")
        pdf = httpx.get(f"{base}/reports/{report['id']}/pdf")
        assert pdf.status_code == 200
        text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
        assert "Gate patrol" in text
        assert "1 schedules" in text

    backup = run_cli(["defer", "fieldops.run_automated_backup"], tmp_path, env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute(
            "SELECT id FROM procrastinate_jobs WHERE task_name = 'fieldops.run_automated_backup'"
        ).fetchone()
    assert row is not None
    finished = wait_status(empty_db_url, row[0], "succeeded", timeout=60)
    local = Path(finished["result"]["backup"]["path"])
    offsite = tmp_path / "offsite" / local.name
    assert offsite.read_bytes() == local.read_bytes()
    assert worker.stop() == 0


def test_up_demo_serves_the_flask_app_and_copies_backups_to_its_s3(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_API_PORT=str(free_port()))
    up = spawn(["up", "--demo"], tmp_path, env)
    up.wait_for_line("Stop with Ctrl-C.")
    flask = re.search(r"demo field operations \(Flask\): (http://\S+)", up.output)
    s3 = re.search(r"demo S3 \(off-site backups\): (http://\S+)/k9-offsite", up.output)
    assert flask is not None, up.output
    assert s3 is not None, up.output
    asked = httpx.post(
        f"{flask[1]}/reports", json={"day_from": "2030-01-01", "day_to": "2030-01-02"}
    )
    assert asked.status_code == 202, asked.text
    wait_status(db_url, asked.json()["report"]["job_id"], "succeeded", timeout=60)
    assert httpx.get(f"{flask[1]}/reports/1/pdf").content.startswith(b"%PDF")

    backup = run_cli(["defer", "--app", APP, "fieldops.run_automated_backup"], tmp_path, env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT id FROM procrastinate_jobs WHERE task_name = 'fieldops.run_automated_backup'"
        ).fetchone()
    assert row is not None
    finished = wait_status(db_url, row[0], "succeeded", timeout=90)
    location = finished["result"]["offsite"]["location"]
    client = boto3.client(
        "s3",
        endpoint_url=s3[1],
        region_name="us-east-1",
        aws_access_key_id="demo-key-id",
        aws_secret_access_key="demo-secret",
    )
    key = location.removeprefix("s3://k9-offsite/")
    size = client.head_object(Bucket="k9-offsite", Key=key)["ContentLength"]
    assert size == Path(finished["result"]["backup"]["path"]).stat().st_size
    assert up.stop() == 0
