"""`taskhub workers` and `taskhub doctor` against real worker processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import TaskhubProcess, clean_env
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e


def live_workers(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM taskhub.workers WHERE stopped_at IS NULL"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_workers_and_doctor_with_two_worker_processes(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_HEARTBEAT_INTERVAL="1")
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO taskhub.backups (status, finished_at) VALUES ('succeeded', now())"
        )
    worker = spawn(["worker", "--processes", "2", "--concurrency", "5"], tmp_path, env)
    deadline = time.monotonic() + 60
    while live_workers(db_url) < 2:
        assert worker.process.poll() is None, worker.output
        assert time.monotonic() < deadline, worker.output
        time.sleep(0.2)
    for n in range(4):
        args = json.dumps({"message": f"m{n}"})
        assert run_cli(["defer", "taskhub.ping", "--args", args], tmp_path, env).returncode == 0

    doctor = run_cli(["doctor"], tmp_path, env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "apps", "database", "migrations", "queues", "schedules", "backups", "last", "clock",
        "notify", "vacuum",
    ]  # fmt: skip
    # autovacuum is the server's own setting (off on some test machines: a warning then).
    assert all(" ok" in line for line in lines[:-1]), doctor.stdout
    assert lines[-1].split()[1].rstrip(":") in ("ok", "warning"), doctor.stdout

    time.sleep(1.5)  # a heartbeat carries the jobs done
    listed = run_cli(["workers", "--json"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 2
    assert len({row["pid"] for row in rows}) == 2, "one row per process"
    assert all(row["alive"] and row["concurrency"] == 5 for row in rows)
    assert sum(row["jobs_done"] for row in rows) >= 4
    table = run_cli(["workers"], tmp_path, env).stdout
    assert table.count(" live ") == 2, table

    assert worker.stop() == 0
    stopped = [
        json.loads(line)
        for line in run_cli(["workers", "--json"], tmp_path, env).stdout.splitlines()
    ]
    assert [row["alive"] for row in stopped] == [False, False]
    assert all(row["stopped_at"] for row in stopped)
    assert sum(row["jobs_done"] for row in stopped) >= 4

    # No live worker now: a waiting job makes the doctor fail, saying what to do.
    assert run_cli(["defer", "taskhub.ping", "--args", "{}"], tmp_path, env).returncode == 0
    sick = run_cli(["doctor"], tmp_path, env)
    assert sick.returncode == 1
    assert "queues       FAIL: waiting jobs and no live worker on default" in sick.stdout
